"""Reduction ops against onnx.reference."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import OpParameterError, UnsupportedOpError
from sparseblob.runtime.ops import reduce
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node

X = np.random.default_rng(0).uniform(0.1, 2.0, (2, 3, 4, 5)).astype(np.float32)

OPS = [
    ("reduce_mean", "ReduceMean"),
    ("reduce_sum", "ReduceSum"),
    ("reduce_max", "ReduceMax"),
    ("reduce_min", "ReduceMin"),
    ("reduce_prod", "ReduceProd"),
    ("reduce_sum_square", "ReduceSumSquare"),
    ("reduce_l1_norm", "ReduceL1"),
    ("reduce_l2_norm", "ReduceL2"),
    ("reduce_log_sum", "ReduceLogSum"),
    ("reduce_log_sum_exp", "ReduceLogSumExp"),
]

# (axes, keep_dims): global pooling, x.mean((2, 3)), the 1-D form, every axis.
AXES = [
    ([-2, -1], True),
    ([2, 3], False),
    ([-1], False),
    ([0, 2], True),
    (None, False),
    (None, True),
]


@pytest.mark.parametrize("axes, keep_dims", AXES)
@pytest.mark.parametrize("op, onnx_op", OPS, ids=[c[0] for c in OPS])
def test_reduction_matches_onnx(op, onnx_op, axes, keep_dims):
    actual = getattr(reduce, op)(X, axes=axes, keep_dims=keep_dims)
    onnx_axes = None if axes is None else np.array(axes, np.int64)
    expected = run_onnx_node(onnx_op, [X, onnx_axes], keepdims=int(keep_dims))[0]
    assert actual.shape == expected.shape
    assert_close(actual, expected, name=op)


def test_reduce_every_axis_gives_rank_0():
    actual = reduce.reduce_sum(X)
    assert actual.shape == ()
    assert_close(actual, np.float32(X.astype(np.float64).sum()))


def test_reduce_sum_of_int32_is_exact():
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    actual = reduce.reduce_sum(x, axes=[0])
    assert actual.dtype == np.int32
    np.testing.assert_array_equal(actual, [12, 15, 18, 21])


def test_reduce_max_propagates_nan():
    x = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(reduce.reduce_max(x, axes=[1]), [np.nan, 3.0])


def test_log_sum_exp_large_values_finite():
    x = np.array([1000.0, 1000.0], np.float32)
    assert_close(reduce.reduce_log_sum_exp(x), np.float32(1000 + np.log(2)))


@pytest.mark.parametrize("keep_dims", [False, True])
@pytest.mark.parametrize("axis", [-1, 0, 2])
@pytest.mark.parametrize("op, onnx_op", [("reduce_argmax", "ArgMax"), ("reduce_argmin", "ArgMin")])
def test_reduce_arg_matches_onnx(op, onnx_op, axis, keep_dims):
    # Rounded values make ties: both pick the first index.
    x = np.round(X * 2).astype(np.float32)
    actual = getattr(reduce, op)(x, axis=axis, keep_dims=keep_dims)
    expected = run_onnx_node(onnx_op, [x], axis=axis, keepdims=int(keep_dims))[0]
    assert actual.dtype == np.int32
    np.testing.assert_array_equal(actual, expected)


def test_reduce_argmax_uint16_output():
    actual = reduce.reduce_argmax(X, output_dtype="uint16")
    assert actual.dtype == np.uint16


def test_reduce_argmax_through_run_op_stays_int32():
    (y,) = run_op("reduce_argmax", {"x": X.astype(np.float16)}, name="argmax_0")
    assert y.dtype == np.int32


def test_reduce_mean_fp16_run_op():
    x16 = X.astype(np.float16)
    (y,) = run_op(
        "reduce_mean",
        {"x": x16, "axes": np.array([-2, -1], np.int32), "keep_dims": np.array(True)},
        name="mean_0",
    )
    expected = x16.astype(np.float64).mean(axis=(-2, -1), keepdims=True).astype(np.float16)
    assert y.dtype == np.float16
    assert_close(y, expected)


def test_reduction_rejects_repeated_axis():
    with pytest.raises(OpParameterError, match="names an axis twice"):
        reduce.reduce_mean(X, axes=[1, -3])


def test_reduction_rejects_axis_out_of_range():
    with pytest.raises(OpParameterError, match="axes=4"):
        reduce.reduce_sum(X, axes=[4])


def test_reduce_arg_rejects_unknown_output_dtype():
    with pytest.raises(UnsupportedOpError, match="'int64'"):
        reduce.reduce_argmin(X, output_dtype="int64")
