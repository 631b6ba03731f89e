"""gradnorm: the true global gradient norm of a distributed training run, and
clipping by it, computed by gradnorm's C++ library (libgradnorm.so, through
its C ABI; no torch needed here).

For PyTorch trainers:

    import gradnorm.torch as gn
    total = gn.get_grad_norm(model.parameters(), dp_cp_group, tp_group)
    gn.clip_grad_by_total_norm_(model.parameters(), max_grad_norm=1.0,
                                total_norm=total)
    gn.clip_grad_norm_(model.parameters(), max_norm=1.0)   # one process
    clipper = gn.Clipper(...)                               # with a coordinator

Framework-free, over numpy arrays:

    import gradnorm
    value, nonfinite = gradnorm.partial_norm([a, b], p=2.0)   # sum of squares
    gradnorm.scale_([a, b], 0.5)

The coordinator's client and run configs: gradnorm.coordinator,
gradnorm.config. Errors are gradnorm.Error ("CODE: message"; code names as
absl::StatusCode), InvalidArgumentError also a ValueError.
"""

from gradnorm import _lib, _tensors
from gradnorm._lib import Error, InvalidArgumentError

__version__ = _lib.VERSION

__all__ = ["Error", "InvalidArgumentError", "partial_norm", "scale_",
           "__version__"]


def partial_norm(arrays, p: float = 2.0, num_threads: int = 0):
    """(value, nonfinite) of a numpy array or a sequence of them
    (float32/16/64, C-contiguous): sum |g|^p accumulated in fp64, or max |g| for p = inf; nonfinite is True
    when an element was NaN or Inf (NaN wins)."""
    return _tensors.partial_norm(_tensors.from_arrays(arrays), p, num_threads)


def scale_(arrays, coef: float, num_threads: int = 0) -> None:
    """Multiplies every element of the array or arrays by coef in place
    (>= 0, finite), in their own dtype."""
    _tensors.scale_(_tensors.from_arrays(arrays, writable=True), coef,
                    num_threads)
