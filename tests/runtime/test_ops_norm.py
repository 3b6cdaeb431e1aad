"""Normalization ops against onnx.reference, float64 formulas and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import OpParameterError, ParameterShapeError, ShapeError
from sparseblob.runtime.ops import norm
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node


def _random(shape, seed=0, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


# (x shape, MIL axes, ONNX axis: LayerNormalization normalizes from `axis` to the end)
TRAILING_AXES = [((1, 16, 64), [-1], -1), ((2, 3, 4, 5), [-2, -1], -2), ((2, 3, 4), [2, 1], 1)]


@pytest.mark.parametrize("x_shape, axes, onnx_axis", TRAILING_AXES)
def test_layer_norm_matches_onnx(x_shape, axes, onnx_axis):
    x = _random(x_shape, 1, scale=3, offset=2)
    normalized = x_shape[onnx_axis:]
    gamma, beta = _random(normalized, 2), _random(normalized, 3)
    axes = np.array(axes, np.int32)
    actual = norm.layer_norm(x, axes=axes, gamma=gamma, beta=beta, epsilon=1e-5)
    expected = run_onnx_node(
        "LayerNormalization", [x, gamma, beta], axis=onnx_axis, epsilon=1e-5
    )[0]
    assert_close(actual, expected, name="layer_norm")


def test_layer_norm_over_non_trailing_axes_matches_formula():
    x = _random((2, 3, 4, 5), 1, scale=2)
    gamma, beta = _random((3, 5), 2), _random((3, 5), 3)
    actual = norm.layer_norm(x, axes=[3, 1], gamma=gamma, beta=beta, epsilon=1e-3)

    # Move the normalized axes last and normalize each (n, h) slice of 15 elements.
    moved = np.transpose(x, (0, 2, 1, 3)).astype(np.float64).reshape(2, 4, 15)
    mean = moved.mean(axis=-1, keepdims=True)
    variance = ((moved - mean) ** 2).mean(axis=-1, keepdims=True)
    scaled = (moved - mean) / np.sqrt(variance + 1e-3) * gamma.reshape(15) + beta.reshape(15)
    expected = np.transpose(scaled.reshape(2, 4, 3, 5), (0, 2, 1, 3)).astype(np.float32)
    assert_close(actual, expected, name="layer_norm")


def test_layer_norm_defaults_normalize_every_axis():
    x = _random((3, 4), 1)
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    assert_close(norm.layer_norm(x), expected)


def test_layer_norm_fp32_epsilon_on_fp16():
    x = _random((1, 4, 8), 1).astype(np.float16)
    gamma = _random(8, 2).astype(np.float16)
    (y,) = run_op(
        "layer_norm",
        {"x": x, "axes": np.array([-1], np.int32), "gamma": gamma, "epsilon": np.float32(1e-5)},
        name="layer_norm_0",
    )
    expected = norm.layer_norm(x.astype(np.float64), axes=[-1], gamma=gamma.astype(np.float64))
    assert y.dtype == np.float16
    assert_close(y, expected.astype(np.float16))


def test_layer_norm_rejects_gamma_of_wrong_shape():
    with pytest.raises(ParameterShapeError, match=r"expected \[4\]"):
        norm.layer_norm(np.zeros((2, 4)), axes=[-1], gamma=np.ones(2))


def test_layer_norm_rejects_repeated_axis():
    with pytest.raises(OpParameterError, match="twice"):
        norm.layer_norm(np.zeros((2, 4)), axes=[1, -1])


@pytest.mark.parametrize("x_shape", [(2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 4)])
def test_batch_norm_matches_onnx(x_shape):
    x = _random(x_shape, 1, scale=2)
    mean, variance = _random(3, 2), np.abs(_random(3, 3)) + 0.1
    gamma, beta = _random(3, 4), _random(3, 5)
    actual = norm.batch_norm(x, mean, variance, gamma, beta, epsilon=1e-3)
    expected = run_onnx_node(
        "BatchNormalization", [x, gamma, beta, mean, variance], epsilon=1e-3
    )[0]
    assert_close(actual, expected, name="batch_norm")


def test_batch_norm_without_gamma_beta_matches_formula():
    x = _random((2, 3, 4), 1)
    mean, variance = _random(3, 2), np.abs(_random(3, 3)) + 0.1
    expected = (x - mean[:, None]) / np.sqrt(variance[:, None] + 1e-5)
    assert_close(norm.batch_norm(x, mean, variance), expected)


def test_batch_norm_rejects_statistics_of_wrong_length():
    with pytest.raises(ParameterShapeError, match="variance"):
        norm.batch_norm(np.zeros((1, 3, 4)), np.zeros(3), np.ones(4))


@pytest.mark.parametrize("x_shape", [(2, 3, 7), (2, 3, 4, 5)])
def test_instance_norm_matches_onnx(x_shape):
    x = _random(x_shape, 1, scale=3, offset=1)
    gamma, beta = _random(3, 2), _random(3, 3)
    actual = norm.instance_norm(x, gamma, beta, epsilon=1e-5)
    expected = run_onnx_node("InstanceNormalization", [x, gamma, beta], epsilon=1e-5)[0]
    assert_close(actual, expected, name="instance_norm")


def test_instance_norm_rejects_rank_2():
    with pytest.raises(ShapeError, match="rank 2"):
        norm.instance_norm(np.zeros((2, 3)))


def test_group_norm_decomposition_matches_torch():
    # torch GroupNorm converts to reshape / reduce_mean / sub / square / ... ; instance_norm on
    # the grouped reshape is the same computation.
    torch = pytest.importorskip("torch")
    x = _random((2, 6, 4, 4), 1)
    grouped = norm.instance_norm(x.reshape(2, 3, 32), epsilon=1e-5).reshape(x.shape)
    expected = torch.nn.functional.group_norm(torch.from_numpy(x), 3, eps=1e-5).numpy()
    assert_close(grouped, expected)


@pytest.mark.parametrize("x_shape", [(2, 3, 4), (2, 5, 2, 3, 4)])
def test_l2_norm_matches_formula(x_shape):
    x = _random(x_shape, 1)
    flat = x.astype(np.float64).reshape(-1, 24)
    expected = flat / np.sqrt((flat**2).sum(axis=1, keepdims=True) + 1e-6)
    assert_close(norm.l2_norm(x), expected.reshape(x_shape).astype(np.float32))
