"""A run's configuration for the coordinator: the norm, the threshold, the
number of jobs and every policy (gradnorm.v1.RunConfig in
proto/gradnorm/v1/coordinator.proto, whose defaults apply to what is left
out).

    from gradnorm.config import RunConfig, ZClip, SpikeRule
    config = RunConfig(participants=2, max_norm=1.0,
                       clip_policy=ZClip(z_threshold=2.5),
                       spike_rule=SpikeRule(sigma=6.0),
                       nonfinite="skip", round_timeout_ms=60000)

The coordinator validates the values (INVALID_ARGUMENT names the field); this
module checks only the kinds of the arguments. As in the proto, a number
left None, or 0, takes the coordinator's default (a warm-up of 0 steps is
therefore the default warm-up, not none).
"""

import json
import math
from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class StaticClip:
    """Clip at RunConfig.max_norm (the default policy)."""


@dataclass(frozen=True)
class AutoClip:
    """Clip at a percentile of the run's recent finite totals; max_norm
    during warm-up. None: the coordinator's default."""
    percentile: Optional[float] = None       # (0, 100], default 10
    history_length: Optional[int] = None     # >= 1, default 1000
    warmup_steps: Optional[int] = None       # default 10


@dataclass(frozen=True)
class ZClip:
    """Clip at mean + z_threshold * std of an EMA of the totals; max_norm
    during warm-up."""
    alpha: Optional[float] = None            # (0, 1), default 0.97
    z_threshold: Optional[float] = None      # > 0, default 2.5
    warmup_steps: Optional[int] = None       # default 25


@dataclass(frozen=True)
class SpikeRule:
    """Skip a step whose total is more than sigma standard deviations above
    the mean of the recent window."""
    sigma: Optional[float] = None            # > 0, default 6
    window: Optional[int] = None             # default 128
    warmup_steps: Optional[int] = None       # default 16


ClipPolicy = Union[StaticClip, AutoClip, ZClip]

_NONFINITE = {"skip": "NON_FINITE_POLICY_SKIP",
              "error": "NON_FINITE_POLICY_ERROR"}


def _number(value):
    """A JSON number, with the proto3 JSON spelling of the infinities."""
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _fields(obj) -> dict:
    return {k: _number(v) for k, v in vars(obj).items() if v is not None}


@dataclass(frozen=True)
class RunConfig:
    """participants: the number of jobs (>= 1) that report every step.
    norm_type: p (> 0, or math.inf). max_norm: the static threshold (and the
    adaptive policies' during warm-up). nonfinite: "skip" (the step is
    skipped) or "error" (every report fails). round_timeout_ms: a step not
    complete this long after its first report fails with ABORTED.
    inexact: for p = 1 or 2, let reports carry only a double partial (clients
    that do not compute exact partials); by default every report must carry
    its exact partial, and each total is the same bits for any layout."""
    participants: int
    norm_type: float = 2.0
    max_norm: float = 1.0
    clip_policy: Optional[ClipPolicy] = None
    spike_rule: Optional[SpikeRule] = None
    nonfinite: str = "skip"
    round_timeout_ms: Optional[int] = None
    inexact: bool = False

    def __post_init__(self):
        if self.clip_policy is not None and not isinstance(
                self.clip_policy, (StaticClip, AutoClip, ZClip)):
            raise ValueError(
                f"INVALID_ARGUMENT: clip_policy {self.clip_policy!r} is not a "
                "policy; expected StaticClip(), AutoClip(...) or ZClip(...)")
        if self.spike_rule is not None and not isinstance(self.spike_rule,
                                                          SpikeRule):
            raise ValueError(
                f"INVALID_ARGUMENT: spike_rule {self.spike_rule!r} is not a "
                "SpikeRule")
        if self.nonfinite not in _NONFINITE:
            raise ValueError(
                f"INVALID_ARGUMENT: nonfinite {self.nonfinite!r} is unknown; "
                "expected 'skip' or 'error'")

    def to_dict(self) -> dict:
        """The proto3 JSON mapping of gradnorm.v1.RunConfig."""
        out = {
            "norm_type": _number(float(self.norm_type)),
            "max_norm": _number(float(self.max_norm)),
            "participants": int(self.participants),
            "nonfinite_policy": _NONFINITE[self.nonfinite],
        }
        policy = self.clip_policy
        if isinstance(policy, StaticClip):
            out["clip_policy"] = {"static_clip": {}}
        elif isinstance(policy, AutoClip):
            out["clip_policy"] = {"auto_clip": _fields(policy)}
        elif isinstance(policy, ZClip):
            out["clip_policy"] = {"zclip": _fields(policy)}
        if self.spike_rule is not None:
            out["spike_rule"] = dict(enabled=True, **_fields(self.spike_rule))
        if self.round_timeout_ms is not None:
            out["round_timeout_ms"] = int(self.round_timeout_ms)
        if self.inexact:
            out["inexact"] = True
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
