"""Activation ops against onnx.reference, closed-form numpy formulas and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparseblob.runtime.errors import OpParameterError, ParameterShapeError, UnsupportedOpError
from sparseblob.runtime.ops import activation
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node

# Spans both signs, the kinks at 0, 6 and -3, and values where exp overflows fp32.
GRID = np.concatenate(
    [np.linspace(-8, 8, 97), [-3.0, 0.0, 6.0, -0.0, 1e-3, -1e-3, 30.0, -30.0]]
).astype(np.float32)
X = GRID.reshape(5, 7, 3)

# (op, MIL parameters, ONNX op, ONNX inputs after x, ONNX attributes)
ONNX_CASES = [
    ("relu", {}, "Relu", [], {}),
    ("relu6", {}, "Clip", [np.float32(0), np.float32(6)], {}),
    ("clip", {"alpha": -1.5, "beta": 2.25}, "Clip", [np.float32(-1.5), np.float32(2.25)], {}),
    ("leaky_relu", {"alpha": 0.1}, "LeakyRelu", [], {"alpha": 0.1}),
    ("elu", {"alpha": 0.7}, "Elu", [], {"alpha": 0.7}),
    ("sigmoid", {}, "Sigmoid", [], {}),
    ("sigmoid_hard", {"alpha": 1 / 6, "beta": 0.5}, "HardSigmoid", [], {"alpha": 1 / 6}),
    ("softplus", {}, "Softplus", [], {}),
    ("softsign", {}, "Softsign", [], {}),
    ("gelu", {"mode": "EXACT"}, "Gelu", [], {}),
    ("gelu", {"mode": "TANH_APPROXIMATION"}, "Gelu", [], {"approximate": "tanh"}),
    ("softmax", {"axis": -1}, "Softmax", [], {"axis": -1}),
    ("softmax", {"axis": 1}, "Softmax", [], {"axis": 1}),
    ("softmax", {"axis": -3}, "Softmax", [], {"axis": 0}),
]


@pytest.mark.parametrize(
    "op, params, onnx_op, onnx_inputs, attributes",
    ONNX_CASES,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(ONNX_CASES)],
)
def test_activation_matches_onnx(op, params, onnx_op, onnx_inputs, attributes):
    actual = getattr(activation, op)(X, **params)
    expected = run_onnx_node(onnx_op, [X, *onnx_inputs], **attributes)[0]
    assert actual.dtype == np.float32
    assert_close(actual, expected, name=op)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


# (op, parameters, closed form in float64)
FORMULA_CASES = [
    ("silu", {}, lambda x: x * _sigmoid(x)),
    ("gelu", {"mode": "SIGMOID_APPROXIMATION"}, lambda x: x * _sigmoid(1.702 * x)),
    ("thresholded_relu", {"alpha": -3.0}, lambda x: np.where(x >= -3, x, 0)),
    ("thresholded_relu", {"alpha": 1.0}, lambda x: np.where(x >= 1, x, 0)),
    ("relu6", {}, lambda x: np.minimum(np.maximum(x, 0), 6)),
    (
        "gelu",
        {"mode": "EXACT"},
        lambda x: np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x),
    ),
]


@pytest.mark.parametrize("op, params, formula", FORMULA_CASES, ids=[c[0] for c in FORMULA_CASES])
def test_activation_matches_formula(op, params, formula):
    with np.errstate(over="ignore"):
        expected = formula(X.astype(np.float64)).astype(np.float32)
    assert_close(getattr(activation, op)(X, **params), expected, name=op)


def test_thresholded_relu_keeps_value_equal_to_alpha():
    x = np.array([-4.0, -3.0, 2.0], np.float32)
    np.testing.assert_array_equal(activation.thresholded_relu(x, alpha=-3.0), [0.0, -3.0, 2.0])


def test_prelu_matches_onnx():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    alpha = np.array([0.1, -0.5, 2.0], np.float32)
    expected = run_onnx_node("PRelu", [x, alpha.reshape(3, 1, 1)])[0]
    np.testing.assert_array_equal(activation.prelu(x, alpha), expected)


def test_gelu_modes_example_values():
    one = np.array([1.0])
    assert activation.gelu(one, "EXACT")[0] == pytest.approx(0.841345, abs=1e-6)
    assert activation.gelu(one, "TANH_APPROXIMATION")[0] == pytest.approx(0.841192, abs=1e-6)
    assert activation.gelu(one, "SIGMOID_APPROXIMATION")[0] == pytest.approx(0.845796, abs=1e-6)


def test_gelu_matches_torch():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X)
    assert_close(activation.gelu(X), torch.nn.functional.gelu(t).numpy())
    assert_close(
        activation.gelu(X, "TANH_APPROXIMATION"),
        torch.nn.functional.gelu(t, approximate="tanh").numpy(),
    )
    assert_close(activation.silu(X), torch.nn.functional.silu(t).numpy())
    assert_close(
        activation.sigmoid_hard(X, 1 / 6, 0.5), torch.nn.functional.hardsigmoid(t).numpy()
    )


def test_hardswish_decomposition_matches_onnx():
    # Converted hardswish: thresholded_relu(alpha=-3) * sigmoid_hard(alpha=1/6, beta=0.5).
    decomposed = activation.thresholded_relu(X, -3.0) * activation.sigmoid_hard(X, 1 / 6, 0.5)
    assert_close(decomposed, run_onnx_node("HardSwish", [X])[0])


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, 1000.0, -90.0], np.float32)
    tiny = np.float32(1 / (1 + math.exp(90)))  # a subnormal fp32, not 0
    np.testing.assert_array_equal(activation.sigmoid(x), np.array([0.0, 1.0, tiny], np.float32))


def test_softmax_of_large_values_is_finite():
    y = activation.softmax(np.array([1000.0, 1000.0, -1000.0], np.float32))
    np.testing.assert_array_equal(y, [0.5, 0.5, 0.0])


def test_fp32_alpha_on_fp16_x_keeps_fp16():
    x = np.array([-2.0, 3.0], np.float16)
    alpha = np.array(0.1, np.float32)
    assert activation.leaky_relu(x, alpha).dtype == np.float16
    assert activation.thresholded_relu(x, alpha).dtype == np.float16
    assert activation.sigmoid_hard(x, alpha, np.array(0.5, np.float32)).dtype == np.float16


def test_fp32_alpha_on_fp16_x_through_run_op():
    x = np.array([-2.0, 3.0, -0.5], np.float16)
    (y,) = run_op(
        "leaky_relu", {"x": x, "alpha": np.array(0.1, np.float32)}, name="leaky_relu_0"
    )
    expected = (x.astype(np.float32) * np.float32(0.1)).astype(np.float16)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, np.where(x >= 0, x, expected))


def test_gelu_rejects_unknown_mode():
    with pytest.raises(UnsupportedOpError, match="'ERF'"):
        activation.gelu(X, mode="ERF")


def test_softmax_rejects_axis_out_of_range():
    with pytest.raises(OpParameterError, match="axis=3"):
        activation.softmax(X, axis=3)


def test_prelu_rejects_wrong_alpha_length():
    with pytest.raises(ParameterShapeError, match="alpha"):
        activation.prelu(np.zeros((1, 3, 2), np.float32), np.ones(2, np.float32))


def test_clip_rejects_vector_alpha():
    with pytest.raises(ParameterShapeError, match="alpha must be a scalar"):
        activation.clip(X, np.array([0.0, 1.0]), 2.0)
