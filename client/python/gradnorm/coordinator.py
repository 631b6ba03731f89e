"""The coordinator client: registers runs and reads their norm history
(gradnorm.v1.Coordinator, through libgradnorm's C++ client, with its TLS,
bearer tokens and retries on UNAVAILABLE until the deadline).

    from gradnorm.coordinator import CoordinatorClient
    client = CoordinatorClient("coordinator:7443", security="tls",
                               root_certs_pem=ca, token=token)
    client.register_run("run7", RunConfig(participants=2, max_norm=1.0))
    for bucket in client.history("run7", max_points=50)["buckets"]:
        print(bucket["first_step"], bucket["max"])

Answers are dicts in the proto3 JSON mapping (proto field names, every field
present; 64-bit integers as strings, as that mapping writes them). Errors
raise gradnorm.Error with the coordinator's code and message.
"""

import ctypes
import json
from typing import Optional

from gradnorm import _lib
from gradnorm.config import RunConfig

_SECURITY = {"insecure": 0, "tls": 1, "mtls": 2}


def _bytes(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode()


class CoordinatorClient:
    """A channel to one coordinator. security: "insecure", "tls" (verify the
    server with root_certs_pem, or the system's roots) or "mtls" (also
    present client_cert_pem / client_key_pem). token: sent as a bearer
    token. Thread-safe."""

    _handle = None  # until __init__ creates the C++ client

    def __init__(self, target: str, security: str = "insecure",
                 root_certs_pem: str = "", client_cert_pem: str = "",
                 client_key_pem: str = "", tls_server_name: str = "",
                 token: str = "", timeout_s: float = 10.0):
        if security not in _SECURITY:
            raise _lib.error(_lib.INVALID_ARGUMENT, (
                f"security {security!r} is not supported; expected 'insecure', "
                "'tls' or 'mtls'"))
        self.timeout_s = float(timeout_s)
        self._handle = ctypes.c_void_p()
        options = _lib.gn_client_options(
            _bytes(target), _SECURITY[security], _bytes(root_certs_pem),
            _bytes(client_cert_pem), _bytes(client_key_pem),
            _bytes(tls_server_name), _bytes(token))
        _lib.check(_lib.lib.gn_coordinator_client_create(
            ctypes.byref(options), ctypes.byref(self._handle)))

    @property
    def handle(self):
        return self._handle

    def call(self, method: str, request: dict,
             timeout_s: Optional[float] = None) -> dict:
        """One rpc by name (RegisterRun, GetRun, ListRuns, GetHistory,
        GetSummary, FinishRun, DeleteRun), request and answer in the proto3
        JSON mapping."""
        response = ctypes.c_void_p()
        _lib.check(_lib.lib.gn_coordinator_client_call(
            self._handle, method.encode(), json.dumps(request).encode(),
            float(self.timeout_s if timeout_s is None else timeout_s),
            ctypes.byref(response)))
        try:
            return json.loads(ctypes.string_at(response.value).decode())
        finally:
            _lib.lib.gn_free(response)

    def register_run(self, run_id: str, config: RunConfig) -> dict:
        """Registers the run (a no-op when it exists with the same config):
        {"created": bool, "run": RunInfo}."""
        return self.call("RegisterRun",
                         {"run_id": run_id, "config": config.to_dict()})

    def get_run(self, run_id: str) -> dict:
        return self.call("GetRun", {"run_id": run_id})["run"]

    def list_runs(self) -> list:
        return self.call("ListRuns", {})["runs"]

    def history(self, run_id: str, from_step: int = 0, to_step: int = 0,
                max_points: int = 0) -> dict:
        """Finalized rounds over [from_step, to_step] (to_step 0: the
        latest), in at most max_points buckets (0: one per round)."""
        return self.call("GetHistory", {
            "run_id": run_id, "from_step": from_step, "to_step": to_step,
            "max_points": max_points})

    def summary(self, run_id: str, from_step: int = 0, to_step: int = 0,
                top_slowest: int = 5) -> dict:
        return self.call("GetSummary", {
            "run_id": run_id, "from_step": from_step, "to_step": to_step,
            "top_slowest": top_slowest})

    def finish_run(self, run_id: str) -> dict:
        """Says the run is over (role trainer): it opens no new rounds, its
        waiting rounds are abandoned, watches of it end. Idempotent.
        {"run": RunInfo, "abandoned_rounds": int}."""
        return self.call("FinishRun", {"run_id": run_id})

    def delete_run(self, run_id: str) -> int:
        """Deletes the run and its history (role admin); returns how many
        finalized rounds went with it."""
        return int(self.call("DeleteRun", {"run_id": run_id})["rounds"])

    def close(self):
        if self._handle:
            _lib.lib.gn_coordinator_client_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        self.close()
