"""gradnorm._gradnorm over DLPack: numpy and torch producers, the capsule
protocol, dtypes, and the errors for tensors the kernels cannot view."""

import ctypes
import math
import sys

import numpy as np
import pytest
import torch

from gradnorm import _gradnorm

_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]


def f32(*values):
    return np.array(values, dtype=np.float32)


def test_seed_vectors_over_numpy():
    grads = [f32(3, 4), f32(1, 2)]
    assert _gradnorm.partial_norm(grads, 2.0) == (30.0, False)
    assert _gradnorm.partial_norm(grads, 1.0) == (10.0, False)
    value, nonfinite = _gradnorm.partial_norm(grads, 3.0)
    assert value == 100.0 and not nonfinite
    assert value ** (1 / 3) == pytest.approx(4.641588833612778, rel=1e-15)
    assert _gradnorm.partial_norm([f32(-3, 7)], math.inf) == (7.0, False)


def test_each_float_dtype_is_widened_to_fp64():
    for dtype in (np.float16, np.float32, np.float64):
        x = np.array([3, 4], dtype=dtype)
        assert _gradnorm.partial_norm([x], 2.0) == (25.0, False), dtype
    bf16 = torch.tensor([3.0, 4.0], dtype=torch.bfloat16)
    assert _gradnorm.partial_norm([bf16], 2.0) == (25.0, False)
    # 6e31 squared overflows fp32 but not the fp64 accumulator.
    value, nonfinite = _gradnorm.partial_norm([f32(6e31, 4)], 2.0)
    assert not nonfinite
    assert math.sqrt(value) == pytest.approx(float(np.float32(6e31)), rel=1e-15)


def test_nan_wins_and_is_flagged():
    value, nonfinite = _gradnorm.partial_norm([f32(1, math.inf), f32(math.nan)],
                                              math.inf)
    assert math.isnan(value) and nonfinite
    value, nonfinite = _gradnorm.partial_norm([f32(math.inf, 1)], 2.0)
    assert value == math.inf and nonfinite


def test_scale_writes_in_place_in_own_dtype():
    x = f32(3, 4)
    before = x.ctypes.data
    _gradnorm.scale_([x], 0.5)
    assert x.ctypes.data == before
    np.testing.assert_array_equal(x, f32(1.5, 2))
    b = torch.tensor([3.0, 5.0], dtype=torch.bfloat16)
    _gradnorm.scale_([b], 0.25)
    assert b.dtype == torch.bfloat16
    assert b.tolist() == [0.75, 1.25]


def test_capsule_is_consumed_per_protocol():
    x = f32(3, 4)
    baseline = sys.getrefcount(x)
    capsule = x.__dlpack__()
    assert _capsule_name(capsule) == b"dltensor"
    assert sys.getrefcount(x) == baseline + 1  # the producer holds x
    assert _gradnorm.partial_norm([capsule], 2.0) == (25.0, False)
    assert _capsule_name(capsule) == b"used_dltensor"
    # The deleter ran exactly once: numpy released its reference.
    assert sys.getrefcount(x) == baseline
    with pytest.raises(ValueError, match='unused "dltensor" capsule'):
        _gradnorm.partial_norm([capsule], 2.0)
    del capsule
    assert sys.getrefcount(x) == baseline


def test_views_hold_memory_until_release():
    x = f32(3, 4)
    baseline = sys.getrefcount(x)
    views = _gradnorm.TensorViews.from_dlpack([x])
    assert len(views) == 1
    assert sys.getrefcount(x) == baseline + 1
    assert views.partial_norm(2.0) == (25.0, False)
    views.release()
    assert sys.getrefcount(x) == baseline
    with pytest.raises(RuntimeError, match="FAILED_PRECONDITION: .*after release"):
        views.partial_norm(2.0)


def test_empty_input_is_zero():
    assert _gradnorm.partial_norm([], 2.0) == (0.0, False)
    assert _gradnorm.partial_norm([np.zeros((0, 3), np.float32)], 2.0) == (0.0, False)


def test_rejects_integer_dtype():
    with pytest.raises(ValueError, match=r"tensor 1: .*\(code 0, bits 32, lanes 1\) "
                       r"is not supported; expected float32"):
        _gradnorm.partial_norm([f32(1), np.array([1], np.int32)], 2.0)


def test_rejects_non_contiguous():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    with pytest.raises(ValueError, match="expected a contiguous"):
        _gradnorm.partial_norm([x], 2.0)


def test_rejects_bad_norm_type_and_coef():
    with pytest.raises(ValueError, match="INVALID_ARGUMENT"):
        _gradnorm.partial_norm([f32(1)], 0.0)
    with pytest.raises(ValueError, match="INVALID_ARGUMENT"):
        _gradnorm.partial_norm([f32(1)], math.nan)
    x = f32(1, 2)
    with pytest.raises(ValueError, match="INVALID_ARGUMENT"):
        _gradnorm.scale_([x], -1.0)
    np.testing.assert_array_equal(x, f32(1, 2))


def test_rejects_objects_without_dlpack():
    with pytest.raises(AttributeError):
        _gradnorm.partial_norm([[1.0, 2.0]], 2.0)
