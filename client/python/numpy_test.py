"""gradnorm's framework-free API over numpy arrays: gradnorm.partial_norm and
gradnorm.scale_ (the seed's vectors, dtypes, NaN over Inf, in-place scaling,
and the errors for arrays the kernels cannot view), and that ``import
gradnorm`` needs no torch."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import gradnorm


def f32(*values):
    return np.array(values, dtype=np.float32)


def test_seed_vectors():
    grads = [f32(3, 4), f32(1, 2)]
    assert gradnorm.partial_norm(grads, 2.0) == (30.0, False)
    assert gradnorm.partial_norm(grads) == (30.0, False)  # p = 2 by default
    assert gradnorm.partial_norm(grads, 1.0) == (10.0, False)
    value, nonfinite = gradnorm.partial_norm(grads, 3.0)
    assert value == 100.0 and not nonfinite
    assert value ** (1 / 3) == pytest.approx(4.641588833612778, rel=1e-15)
    assert gradnorm.partial_norm([f32(-3, 7)], math.inf) == (7.0, False)


def test_one_array_is_one_tensor():
    x = f32(3, 4)
    assert gradnorm.partial_norm(x, 2.0) == (25.0, False)
    gradnorm.scale_(x, 0.5)
    np.testing.assert_array_equal(x, f32(1.5, 2))


def test_numpy_scalars_are_read_as_they_are():
    # Each scalar's __array_interface__ points into a temporary copy, which
    # must live until the library has read it (else later copies reuse it).
    scalars = list(np.array([3, 4, 12], dtype=np.float64))
    assert gradnorm.partial_norm(scalars, 2.0) == (169.0, False)


def test_each_float_dtype_is_widened_to_fp64():
    for dtype in (np.float16, np.float32, np.float64):
        x = np.array([3, 4], dtype=dtype)
        assert gradnorm.partial_norm([x], 2.0) == (25.0, False), dtype
    mixed = [np.array([3], np.float16), f32(4), np.array([12], np.float64)]
    assert gradnorm.partial_norm(mixed, 2.0) == (169.0, False)
    # 6e31 squared overflows fp32 but not the fp64 accumulator.
    value, nonfinite = gradnorm.partial_norm([f32(6e31, 4)], 2.0)
    assert not nonfinite and math.isfinite(value)
    assert math.sqrt(value) == pytest.approx(float(np.float32(6e31)), rel=1e-15)


def test_multidimensional_and_offset_arrays():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert gradnorm.partial_norm([m], 1.0) == (66.0, False)
    # A C-contiguous slice that starts inside its base: rows 1 and 2 only.
    assert gradnorm.partial_norm([m[1:]], 1.0) == (60.0, False)


def test_nan_wins_and_is_flagged():
    value, nonfinite = gradnorm.partial_norm(
        [f32(1, math.inf), f32(math.nan)], math.inf)
    assert math.isnan(value) and nonfinite
    value, nonfinite = gradnorm.partial_norm(
        [f32(math.inf, 1), f32(math.nan)], 2.0)
    assert math.isnan(value) and nonfinite
    value, nonfinite = gradnorm.partial_norm([f32(math.inf, 1)], 2.0)
    assert value == math.inf and nonfinite


def test_scale_writes_in_place_in_own_dtype():
    x = f32(3, 4)
    before = x.ctypes.data
    gradnorm.scale_([x], 0.5)
    assert x.ctypes.data == before
    np.testing.assert_array_equal(x, f32(1.5, 2))
    h = np.array([3, 5], dtype=np.float16)
    d = np.array([1, 10], dtype=np.float64)
    gradnorm.scale_([h, d], 0.25)
    assert h.dtype == np.float16 and d.dtype == np.float64
    assert h.tolist() == [0.75, 1.25] and d.tolist() == [0.25, 2.5]
    gradnorm.scale_([d], 0.0)
    assert d.tolist() == [0.0, 0.0]


def test_empty_input_is_zero():
    assert gradnorm.partial_norm([], 2.0) == (0.0, False)
    assert gradnorm.partial_norm([], math.inf) == (0.0, False)
    assert gradnorm.partial_norm([np.zeros((0, 3), np.float32)], 2.0) == (
        0.0, False)
    gradnorm.scale_([], 0.5)


def test_rejects_integer_dtype():
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: tensors\[1\] has typestr "
                       r"'<i4'; expected float32, float16 or float64"):
        gradnorm.partial_norm([f32(1), np.array([1], np.int32)], 2.0)


def test_rejects_non_contiguous():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"tensors\[0\] has strides \(16, 8\) for shape "
                       r"\(3, 2\); expected a C-contiguous array"):
        gradnorm.partial_norm([x], 2.0)
    with pytest.raises(gradnorm.InvalidArgumentError, match="C-contiguous"):
        gradnorm.scale_([x], 0.5)
    assert x.tolist() == [[0, 2], [4, 6], [8, 10]]


def test_rejects_read_only_array_for_scale():
    x = f32(3, 4)
    x.flags.writeable = False
    assert gradnorm.partial_norm([x], 2.0) == (25.0, False)  # reading is fine
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"tensors\[0\] is read-only; expected writable "
                       "memory"):
        gradnorm.scale_([x], 0.5)
    assert x.tolist() == [3.0, 4.0]


@pytest.mark.parametrize("p", [0.0, -1.0, math.nan])
def test_rejects_bad_norm_type(p):
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: norm_type (0|-1|nan) is "
                       r"invalid: expected p > 0"):
        gradnorm.partial_norm([f32(1)], p)


@pytest.mark.parametrize("coef", [-1.0, math.nan, math.inf])
def test_rejects_bad_coef(coef):
    x = f32(1, 2)
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: scale coefficient is "
                       r"(-1|nan|inf); expected a finite value >= 0"):
        gradnorm.scale_([x], coef)
    np.testing.assert_array_equal(x, f32(1, 2))


def test_rejects_objects_that_are_not_arrays():
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"tensors\[0\] is a list, which has no "
                       "__array_interface__; expected a numpy array"):
        gradnorm.partial_norm([[1.0, 2.0]], 2.0)


def test_errors_are_runtime_and_value_errors():
    with pytest.raises(gradnorm.InvalidArgumentError) as info:
        gradnorm.partial_norm([f32(1)], 0.0)
    error = info.value
    assert isinstance(error, gradnorm.Error)
    assert isinstance(error, RuntimeError) and isinstance(error, ValueError)
    assert error.code == "INVALID_ARGUMENT"
    assert str(error) == "INVALID_ARGUMENT: " + error.message


def test_import_gradnorm_does_not_import_torch():
    # A fresh interpreter with this process's sys.path and environment (the
    # library the suite runs against).
    code = ("import sys, gradnorm, gradnorm.config, gradnorm.coordinator; "
            "assert 'torch' not in sys.modules, sorted("
            "m for m in sys.modules if m.startswith('torch')); "
            "print(gradnorm.__file__)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    # The very package under test, not another one on the path.
    assert run.stdout.strip() == gradnorm.__file__


class _Group:
    """A one-rank communicator implementation whose next all_reduce raises
    `fail_with` (then works again)."""
    rank, size = 0, 1

    def __init__(self):
        self.fail_with = None

    def all_reduce(self, values, op):
        if self.fail_with is not None:
            e, self.fail_with = self.fail_with, None
            raise e
        return values

    def broadcast(self, values, root):
        return values

    def broadcast_bytes(self, data, root):
        return data

    def barrier(self):
        pass


def _norm_over(communicator, arrays):
    import ctypes
    from gradnorm import _lib, _tensors
    views = _tensors.from_arrays(arrays)
    result = _lib.gn_grad_norm_result()
    code = _lib.lib.gn_get_grad_norm(views.ref(), communicator.handle, None,
                                     2.0, 0, None, ctypes.byref(result))
    return code, result.total_norm


def test_callback_errors_mark_the_communicator_failed_and_keep_interrupts():
    from gradnorm import _communicator, _lib
    impl = _Group()
    comm = _communicator.Communicator(impl)
    assert _norm_over(comm, [f32(3, 4)]) == (0, 5.0)
    assert not comm.failed

    impl.fail_with = TimeoutError("gloo: timed out after 30000 ms")
    code, _ = _norm_over(comm, [f32(3, 4)])
    assert _lib.CODE_NAMES[code] == "DEADLINE_EXCEEDED"
    assert "TimeoutError: gloo: timed out" in _lib.lib.gn_last_error().decode()
    assert comm.failed
    comm.raise_interrupt()  # nothing kept: not an interrupt
    code, _ = _norm_over(comm, [f32(3, 4)])  # unusable from now on
    assert _lib.CODE_NAMES[code] == "FAILED_PRECONDITION"

    # Ctrl-C inside a reduction: CANCELLED from the library, and the
    # KeyboardInterrupt itself for the caller to raise again.
    comm = _communicator.Communicator(impl)
    impl.fail_with = KeyboardInterrupt()
    code, _ = _norm_over(comm, [f32(3, 4)])
    assert _lib.CODE_NAMES[code] == "CANCELLED"
    with pytest.raises(KeyboardInterrupt):
        comm.raise_interrupt()
    comm.raise_interrupt()  # once
