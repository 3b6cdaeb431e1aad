"""linear, matmul and scaled_dot_product_attention against onnx.reference and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparseblob.runtime.errors import OpParameterError, ParameterShapeError, ShapeError
from sparseblob.runtime.ops.attention import scaled_dot_product_attention
from sparseblob.runtime.ops.linear import linear, matmul
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_bits_equal, assert_close
from tests.runtime.onnx_node import run_onnx_node


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("x_shape", [(1, 64), (16, 64), (1, 16, 64), (2, 3, 4, 64), (64,)])
def test_linear_matches_onnx(x_shape):
    x, weight, bias = _random(x_shape, 1), _random((32, 64), 2), _random(32, 3)
    actual = linear(x, weight, bias)
    flat = x.reshape(-1, 64)
    expected = run_onnx_node("Gemm", [flat, weight, bias], transB=1)[0]
    expected = expected.reshape(x_shape[:-1] + (32,))
    assert actual.shape == x_shape[:-1] + (32,)
    assert_close(actual, expected, name="linear")


def test_linear_without_bias_matches_onnx_matmul():
    x, weight = _random((2, 5, 8), 1), _random((3, 8), 2)
    expected = run_onnx_node("MatMul", [x, weight.T.copy()])[0]
    assert_close(linear(x, weight), expected)


def test_linear_fp32_weight_on_fp16_x():
    x, weight, bias = _random((4, 8), 1), _random((3, 8), 2), _random(3, 3)
    (y,) = run_op(
        "linear", {"x": x.astype(np.float16), "weight": weight, "bias": bias}, name="linear_0"
    )
    expected = linear(x.astype(np.float16).astype(np.float32), weight, bias).astype(np.float16)
    assert y.dtype == np.float16
    assert_bits_equal(y, expected, "linear")


@pytest.mark.parametrize(
    "weight_shape, bias_shape, error, match",
    [
        ((3, 7), None, ShapeError, "weight dim 1"),
        ((3, 8, 1), None, ShapeError, "rank 3"),
        ((3, 8), (4,), ParameterShapeError, "bias"),
    ],
)
def test_linear_rejects_mismatched_weight(weight_shape, bias_shape, error, match):
    bias = None if bias_shape is None else np.zeros(bias_shape, np.float32)
    with pytest.raises(error, match=match):
        linear(np.zeros((2, 8), np.float32), np.zeros(weight_shape, np.float32), bias)


# (x shape, y shape, transpose_x, transpose_y)
MATMULS = [
    ((1, 4, 16, 16), (1, 4, 16, 16), False, False),
    ((1, 4, 16, 8), (1, 4, 12, 8), False, True),
    ((2, 1, 5, 3), (4, 5, 6), True, False),
    ((3, 4), (5, 3), True, True),
    ((7,), (7, 2), False, False),
    ((2, 3, 7), (7,), False, False),
    ((7,), (7,), False, True),
]


@pytest.mark.parametrize("x_shape, y_shape, transpose_x, transpose_y", MATMULS)
def test_matmul_matches_onnx(x_shape, y_shape, transpose_x, transpose_y):
    x, y = _random(x_shape, 1), _random(y_shape, 2)
    actual = matmul(x, y, transpose_x=transpose_x, transpose_y=transpose_y)
    onnx_x = np.swapaxes(x, -1, -2).copy() if transpose_x else x
    onnx_y = np.swapaxes(y, -1, -2).copy() if transpose_y and y.ndim > 1 else y
    expected = run_onnx_node("MatMul", [onnx_x, onnx_y])[0]
    assert actual.shape == expected.shape
    assert_close(actual, expected, name="matmul")


def test_matmul_of_int32_is_exact():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    y = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    expected = np.array(
        [[sum(int(x[i, k]) * int(y[k, j]) for k in range(3)) for j in range(4)] for i in range(2)],
        np.int32,
    )
    assert_bits_equal(matmul(x, y), expected, "matmul")


@pytest.mark.parametrize(
    "x_shape, y_shape, kwargs, error, match",
    [
        ((2, 3), (4, 5), {}, ShapeError, "inner dims"),
        ((2, 2, 3), (3, 3, 4), {}, ShapeError, "x_batch"),
        ((3,), (3, 2), {"transpose_x": True}, OpParameterError, "rank 1"),
        ((), (3,), {}, ShapeError, "rank 0"),
    ],
)
def test_matmul_rejects_incompatible_shapes(x_shape, y_shape, kwargs, error, match):
    with pytest.raises(error, match=match):
        matmul(np.zeros(x_shape), np.zeros(y_shape), **kwargs)


# ---- scaled_dot_product_attention ----


def _attention_formula(q, k, v, mask=None):
    """softmax(q k^T / sqrt(E) + mask) v, in float64 with an explicit loop over the softmax."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_sdpa_matches_onnx_attention(mask_kind):
    q, k, v = _random((2, 4, 6, 8), 1), _random((2, 4, 5, 8), 2), _random((2, 4, 5, 3), 3)
    rng = np.random.default_rng(4)
    mask = None
    if mask_kind == "bool":
        mask = rng.random((6, 5)) > 0.3
        mask[:, 0] = True  # no fully masked row
    elif mask_kind == "float":
        mask = rng.standard_normal((2, 1, 6, 5)).astype(np.float32)
    actual = scaled_dot_product_attention(q, k, v, mask)
    expected = run_onnx_node("Attention", [q, k, v, mask], opset=23)[0]
    assert actual.shape == (2, 4, 6, 3)
    assert_close(actual, expected, name="scaled_dot_product_attention")


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_sdpa_rank_3_matches_formula(mask_kind):
    q, k, v = _random((3, 6, 8), 1), _random((3, 5, 8), 2), _random((3, 5, 4), 3)
    rng = np.random.default_rng(5)
    mask = None
    if mask_kind == "bool":
        mask = np.tril(np.ones((6, 5), bool))
    elif mask_kind == "float":
        mask = rng.standard_normal((3, 6, 5)).astype(np.float32)
    expected = _attention_formula(q, k, v, mask).astype(np.float32)
    assert_close(scaled_dot_product_attention(q, k, v, mask), expected)


def test_sdpa_matches_torch():
    torch = pytest.importorskip("torch")
    q, k, v = _random((1, 4, 16, 16), 1), _random((1, 4, 16, 16), 2), _random((1, 4, 16, 16), 3)
    mask = np.tril(np.ones((16, 16), bool))
    expected = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), torch.from_numpy(mask)
    ).numpy()
    assert_close(scaled_dot_product_attention(q, k, v, mask), expected)


def test_sdpa_equals_its_ios16_decomposition():
    # iOS16 programs spell attention as mul(q, 1/sqrt(E)), matmul(transpose_y), softmax, matmul.
    q, k, v = _random((1, 4, 16, 16), 1), _random((1, 4, 16, 16), 2), _random((1, 4, 16, 16), 3)
    scores = matmul(q * np.float32(0.25), k, transpose_y=True)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    assert_close(scaled_dot_product_attention(q, k, v), matmul(weights, v))


@pytest.mark.parametrize(
    "shapes, mask_shape, match",
    [
        (((1, 4, 8), (1, 4, 7), (1, 4, 7)), None, "share E"),
        (((1, 4, 8), (1, 5, 8), (1, 4, 8)), None, "share E"),
        (((4, 8), (4, 8), (4, 8)), None, "rank 2"),
        (((1, 4, 8), (1, 5, 8), (1, 5, 8)), (3, 5), "attn_mask"),
        (((2, 4, 8), (3, 5, 8), (3, 5, 8)), None, "query"),
    ],
)
def test_sdpa_rejects_incompatible_shapes(shapes, mask_shape, match):
    q, k, v = (np.zeros(s, np.float32) for s in shapes)
    mask = None if mask_shape is None else np.zeros(mask_shape, bool)
    with pytest.raises(ShapeError, match=match):
        scaled_dot_product_attention(q, k, v, mask)
