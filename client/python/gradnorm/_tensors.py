"""Tensor views for the C ABI: the parallel arrays of one gn_tensors, and the
objects whose memory they point into (kept alive while the views are used).

Framework-free inputs are read here: numpy arrays, or any object with the
``__array_interface__`` of host memory. gradnorm.torch reads torch tensors
into the same TensorList.
"""

import ctypes
from array import array
from typing import Optional, Sequence

from gradnorm import _lib

FLOAT32, BFLOAT16, FLOAT16, FLOAT64 = 0, 1, 2, 3
DEVICE_CPU, DEVICE_OTHER = -1, -2
SHARDED, TP_REPLICATED, COUNTED_ELSEWHERE = 0, 1, 2

# Little-endian typestrs of __array_interface__.
_TYPESTR_CODES = {"<f4": FLOAT32, "<f2": FLOAT16, "<f8": FLOAT64}


def _address(a: Optional[array]) -> Optional[int]:
    return None if a is None else a.buffer_info()[0]


class TensorList:
    """One call's tensor views. data and numel are arrays of 'Q' and 'q';
    dtype ('i'), device ('i') and replication ('B') may be None (all
    float32, all host, all sharded). error: what the caller could not view
    (the call fails with INVALID_ARGUMENT and it, after joining the group)."""

    __slots__ = ("objects", "data", "numel", "dtype", "device", "replication",
                 "error", "struct", "_error_bytes")

    def __init__(self, objects: Sequence, data: array, numel: array,
                 dtype: Optional[array] = None, device: Optional[array] = None,
                 replication: Optional[array] = None,
                 error: Optional[str] = None):
        self.objects = objects
        self.data, self.numel = data, numel
        self.dtype, self.device, self.replication = dtype, device, replication
        self.error = error
        self._error_bytes = None if error is None else error.encode()
        self.struct = _lib.gn_tensors(
            len(data), _address(data), _address(numel), _address(dtype),
            _address(device), _address(replication), self._error_bytes)

    def __len__(self):
        return len(self.data)

    def ref(self):
        return ctypes.byref(self.struct)


def from_arrays(arrays, writable: bool = False) -> TensorList:
    """Views of numpy arrays (or other objects with a host
    ``__array_interface__``): one array or a sequence of them, float32,
    float16 or float64, C-contiguous. Raises InvalidArgumentError naming the
    first array that is not, and for read-only arrays when ``writable``."""
    # One array is one tensor, not a sequence of its elements (whose
    # interfaces would each point into a temporary copy).
    if hasattr(arrays, "__array_interface__"):
        arrays = [arrays]
    arrays = list(arrays)
    # The interfaces are kept with the views: a numpy scalar's points into a
    # temporary array that only its dict holds (under "__ref").
    interfaces = []
    data, numel, dtype = array("Q"), array("q"), array("i")
    for i, a in enumerate(arrays):
        interface = getattr(a, "__array_interface__", None)
        interfaces.append(interface)
        if interface is None:
            raise _lib.error(_lib.INVALID_ARGUMENT, (
                f"tensors[{i}] is a {type(a).__name__}, which has no "
                "__array_interface__; expected a numpy array (use "
                "gradnorm.torch for torch tensors)"))
        code = _TYPESTR_CODES.get(interface["typestr"])
        if code is None:
            raise _lib.error(_lib.INVALID_ARGUMENT, (
                f"tensors[{i}] has typestr {interface['typestr']!r}; expected "
                "float32, float16 or float64 ('<f4', '<f2', '<f8')"))
        count = 1
        for extent in interface["shape"]:
            count *= extent
        strides = interface.get("strides")
        if strides is not None and count > 1 and not _c_contiguous(
                interface["shape"], strides, int(interface["typestr"][2:])):
            raise _lib.error(_lib.INVALID_ARGUMENT, (
                f"tensors[{i}] has strides {tuple(strides)} for shape "
                f"{tuple(interface['shape'])}; expected a C-contiguous array "
                "(numpy.ascontiguousarray)"))
        pointer, read_only = interface["data"]
        if writable and read_only:
            raise _lib.error(_lib.INVALID_ARGUMENT, (
                f"tensors[{i}] is read-only; expected writable memory to "
                "scale in place"))
        data.append(pointer or 0)
        numel.append(count)
        dtype.append(code)
    return TensorList((arrays, interfaces), data, numel, dtype)


def _c_contiguous(shape, strides, itemsize) -> bool:
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides)):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


def exec_options(num_threads: int = 0, cuda_stream: int = 0):
    return _lib.gn_exec_options(int(num_threads), cuda_stream or None)


def partial_norm(views: TensorList, p: float, num_threads: int = 0,
                 cuda_stream: int = 0):
    """(value, nonfinite) of the views: sum |g|^p, or max |g| for p = inf."""
    value = ctypes.c_double()
    nonfinite = ctypes.c_int32()
    options = exec_options(num_threads, cuda_stream)
    _lib.check(_lib.lib.gn_partial_norm(
        views.ref(), float(p), ctypes.byref(options), ctypes.byref(value),
        ctypes.byref(nonfinite)))
    return value.value, bool(nonfinite.value)


def scale_(views: TensorList, coef: float, num_threads: int = 0,
           cuda_stream: int = 0) -> None:
    options = exec_options(num_threads, cuda_stream)
    _lib.check(_lib.lib.gn_scale(views.ref(), float(coef),
                                 ctypes.byref(options)))
