"""Loads libgradnorm.so (gradnorm's C ABI, client/c_api/gradnorm.h) with
ctypes, declares its functions, and turns its error codes into exceptions.

The library is looked for in this order: $GRADNORM_LIBRARY; the package's own
``lib/`` folder (an installed wheel: libgradnorm.so with the libraries it
needs); ``client/c_api/`` beside ``client/python/`` (a Bazel build tree).
"""

import ctypes
import os

# absl::StatusCode names by number (gn_code).
CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
INVALID_ARGUMENT = 3

ABI_VERSION = 2


class Error(RuntimeError):
    """A gradnorm error: ``code`` is the status code's name
    ("DEADLINE_EXCEEDED", ...), ``message`` what was wrong and what was
    expected. str() is "CODE: message"."""

    def __init__(self, code: int, message: str):
        self.code_number = code
        self.code = CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else "UNKNOWN"
        self.message = message
        super().__init__(f"{self.code}: {message}")


class InvalidArgumentError(Error, ValueError):
    """INVALID_ARGUMENT: a bad value (also a ValueError)."""


def error(code: int, message: str) -> Error:
    cls = InvalidArgumentError if code == INVALID_ARGUMENT else Error
    return cls(code, message)


class gn_tensors(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("numel", ctypes.c_void_p),
        ("dtype", ctypes.c_void_p),
        ("device", ctypes.c_void_p),
        ("replication", ctypes.c_void_p),
        ("error", ctypes.c_char_p),
    ]


class gn_exec_options(ctypes.Structure):
    _fields_ = [("num_threads", ctypes.c_int32), ("cuda_stream", ctypes.c_void_p),
                ("exact", ctypes.c_int32)]


class gn_grad_norm_result(ctypes.Structure):
    _fields_ = [
        ("total_norm", ctypes.c_double),
        ("partial", ctypes.c_double),
        ("nonfinite", ctypes.c_int32),
        ("num_elements", ctypes.c_uint64),
    ]


class gn_clip_result(ctypes.Structure):
    _fields_ = [
        ("clip_coef", ctypes.c_double),
        ("clipped", ctypes.c_int32),
        ("nonfinite", ctypes.c_int32),
    ]


ALL_REDUCE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_double), ctypes.c_size_t,
                              ctypes.c_int32)
BROADCAST = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_double), ctypes.c_size_t,
                             ctypes.c_int32)
BROADCAST_BYTES = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_uint8),
                                   ctypes.c_size_t, ctypes.c_int32)
BARRIER = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
RELEASE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class gn_communicator_callbacks(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_void_p),
        ("rank", ctypes.c_int32),
        ("size", ctypes.c_int32),
        ("all_reduce", ALL_REDUCE),
        ("broadcast", BROADCAST),
        ("broadcast_bytes", BROADCAST_BYTES),
        ("barrier", BARRIER),
        ("release", RELEASE),
    ]


class gn_client_options(ctypes.Structure):
    _fields_ = [
        ("target", ctypes.c_char_p),
        ("security", ctypes.c_int32),
        ("root_certs_pem", ctypes.c_char_p),
        ("client_cert_pem", ctypes.c_char_p),
        ("client_key_pem", ctypes.c_char_p),
        ("tls_server_name", ctypes.c_char_p),
        ("bearer_token", ctypes.c_char_p),
    ]


class gn_clipper_options(ctypes.Structure):
    _fields_ = [
        ("norm_type", ctypes.c_double),
        ("max_norm", ctypes.c_double),
        ("error_if_nonfinite", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("exact", ctypes.c_int32),
    ]


class gn_coordinator_binding(ctypes.Structure):
    _fields_ = [
        ("client", ctypes.c_void_p),
        ("run_id", ctypes.c_char_p),
        ("participant", ctypes.c_uint32),
        ("run_config_json", ctypes.c_char_p),
        ("report_timeout_s", ctypes.c_double),
        ("progress_interval_s", ctypes.c_double),
    ]


class gn_step_result(ctypes.Structure):
    _fields_ = [
        ("total_norm", ctypes.c_double),
        ("clip_coef", ctypes.c_double),
        ("action", ctypes.c_int32),
        ("reason", ctypes.c_int32),
        ("effective_max_norm", ctypes.c_double),
        ("nonfinite", ctypes.c_int32),
        ("job_partial", ctypes.c_double),
        ("slowest_participant", ctypes.c_uint32),
        ("arrival_spread_seconds", ctypes.c_double),
        ("reason_detail", ctypes.c_char_p),
        ("exact", ctypes.c_int32),
    ]


def _candidates():
    env = os.environ.get("GRADNORM_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "lib", "libgradnorm.so")
    yield os.path.join(here, os.pardir, os.pardir, "c_api", "libgradnorm.so")


def _load():
    tried = []
    for path in _candidates():
        path = os.path.normpath(path)
        if not os.path.exists(path):
            tried.append(f"{path} (absent)")
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
    raise ImportError(
        "gradnorm: cannot load libgradnorm.so; tried " + "; ".join(tried) +
        ". Install the gradnorm wheel, or set GRADNORM_LIBRARY to the library")


lib = _load()

_c = ctypes
_P = _c.POINTER
_SIGNATURES = {
    "gn_version": (_c.c_char_p, []),
    "gn_abi_version": (_c.c_int32, []),
    "gn_last_error": (_c.c_char_p, []),
    "gn_free": (None, [_c.c_void_p]),
    "gn_partial_norm": (_c.c_int32, [_P(gn_tensors), _c.c_double,
                                     _P(gn_exec_options), _P(_c.c_double),
                                     _P(_c.c_int32)]),
    "gn_scale": (_c.c_int32, [_P(gn_tensors), _c.c_double, _P(gn_exec_options)]),
    "gn_use_openmp": (_c.c_int32, [_c.c_char_p]),
    "gn_communicator_create": (_c.c_int32, [_P(gn_communicator_callbacks),
                                            _P(_c.c_void_p)]),
    "gn_communicator_destroy": (None, [_c.c_void_p]),
    "gn_set_callback_error": (None, [_c.c_char_p]),
    "gn_get_grad_norm": (_c.c_int32, [_P(gn_tensors), _c.c_void_p, _c.c_void_p,
                                      _c.c_double, _c.c_int32,
                                      _P(gn_exec_options),
                                      _P(gn_grad_norm_result)]),
    "gn_clip_grad_by_total_norm": (_c.c_int32, [_P(gn_tensors), _c.c_double,
                                                _c.c_double, _c.c_int32,
                                                _P(gn_exec_options),
                                                _P(gn_clip_result)]),
    "gn_coordinator_client_create": (_c.c_int32, [_P(gn_client_options),
                                                  _P(_c.c_void_p)]),
    "gn_coordinator_client_destroy": (None, [_c.c_void_p]),
    "gn_coordinator_client_call": (_c.c_int32, [_c.c_void_p, _c.c_char_p,
                                                _c.c_char_p, _c.c_double,
                                                _P(_c.c_void_p)]),
    "gn_clipper_create": (_c.c_int32, [_c.c_void_p, _c.c_void_p, _c.c_void_p,
                                       _P(gn_clipper_options),
                                       _P(gn_coordinator_binding),
                                       _P(_c.c_void_p)]),
    "gn_clipper_destroy": (None, [_c.c_void_p]),
    "gn_clipper_step": (_c.c_int32, [_c.c_void_p, _c.c_uint64, _P(gn_tensors),
                                     _c.c_void_p, _P(gn_step_result)]),
}
for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _f = getattr(lib, _name)
    _f.restype = _restype
    _f.argtypes = _argtypes

if lib.gn_abi_version() != ABI_VERSION:
    raise ImportError(
        f"gradnorm: libgradnorm.so has ABI version {lib.gn_abi_version()}; "
        f"this package expects {ABI_VERSION}")

VERSION = lib.gn_version().decode()


def check(code: int):
    """Raises the Error for a non-zero gn_code."""
    if code != 0:
        raise error(code, lib.gn_last_error().decode(errors="replace"))
