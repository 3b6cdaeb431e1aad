"""Activation MIL ops: relu family, sigmoid family, gelu, softmax and friends.

Each op maps ``x: tensor<T, [*D]>`` (T fp16/fp32) to ``tensor<T, [*D]>``. In iOS17+ programs
scalar parameters (``alpha``, ``beta``) may be fp32 on an fp16 x. They are converted to x's
dtype first, so the result keeps x's dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ParameterShapeError
from ._numeric import erf
from ._params import as_float, as_str, check_rank, normalize_axis

__all__ = [
    "relu",
    "relu6",
    "clip",
    "leaky_relu",
    "thresholded_relu",
    "elu",
    "prelu",
    "sigmoid",
    "sigmoid_hard",
    "silu",
    "softplus",
    "softsign",
    "gelu",
    "GELU_MODES",
    "softmax",
]


def _typed(x: np.ndarray, value: float) -> np.ndarray:
    """Return a scalar parameter as a 0-d array of x's dtype, so numpy keeps that dtype."""
    return np.asarray(value, dtype=x.dtype)


def relu(x: np.ndarray) -> np.ndarray:
    """Return ``max(x, 0)``."""
    x = np.asarray(x)
    return np.maximum(x, _typed(x, 0))


def relu6(x: np.ndarray) -> np.ndarray:
    """Return ``min(max(x, 0), 6)``."""
    x = np.asarray(x)
    return np.minimum(np.maximum(x, _typed(x, 0)), _typed(x, 6))


def clip(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Return ``min(max(x, alpha), beta)``; alpha and beta are required.

    iOS17 programs require ``alpha < beta``; earlier ones do not, so this does not check it.
    """
    x = np.asarray(x)
    low = as_float(alpha, op="clip", param="alpha")
    high = as_float(beta, op="clip", param="beta")
    return np.minimum(np.maximum(x, _typed(x, low)), _typed(x, high))


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``x`` where ``x >= 0``, else ``alpha * x``; alpha is required."""
    x = np.asarray(x)
    slope = as_float(alpha, op="leaky_relu", param="alpha")
    return np.where(x >= 0, x, x * _typed(x, slope))


def thresholded_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``x`` where ``x >= alpha``, else 0; alpha is required.

    Example: alpha=-3 on [-4, -3, 2] gives [0, -3, 2].
    """
    x = np.asarray(x)
    bound = as_float(alpha, op="thresholded_relu", param="alpha")
    return np.where(x >= _typed(x, bound), x, _typed(x, 0))


def elu(x: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``; alpha is required."""
    x = np.asarray(x)
    scale = as_float(alpha, op="elu", param="alpha")
    negative = np.expm1(np.minimum(x, _typed(x, 0))) * _typed(x, scale)
    return np.where(x > 0, x, negative)


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Return ``x`` where ``x >= 0``, else ``alpha[c] * x`` with one slope per channel (axis 1).

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, rank 3 to 5.
        alpha: ``tensor<T, [C]>``.
    """
    x, alpha = np.asarray(x), np.asarray(alpha)
    check_rank(x, op="prelu", minimum=3, maximum=5)
    if alpha.shape != (x.shape[1],):
        raise ParameterShapeError(
            f"prelu: alpha has shape {list(alpha.shape)}; expected [{x.shape[1]}] (one per channel)"
        )
    slopes = alpha.astype(x.dtype, copy=False).reshape((-1,) + (1,) * (x.ndim - 2))
    return np.where(x >= 0, x, x * slopes)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Return ``1 / (1 + exp(-x))``, evaluated without overflow for large ``|x|``."""
    x = np.asarray(x)
    decay = np.exp(-np.abs(x))
    one = _typed(x, 1)
    return np.where(x >= 0, one / (one + decay), decay / (one + decay))


def sigmoid_hard(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Return ``min(max(alpha * x + beta, 0), 1)``; alpha and beta are required.

    PyTorch's hardsigmoid converts to alpha=1/6, beta=0.5.
    """
    x = np.asarray(x)
    slope = as_float(alpha, op="sigmoid_hard", param="alpha")
    offset = as_float(beta, op="sigmoid_hard", param="beta")
    linear = x * _typed(x, slope) + _typed(x, offset)
    return np.minimum(np.maximum(linear, _typed(x, 0)), _typed(x, 1))


def silu(x: np.ndarray) -> np.ndarray:
    """Return ``x * sigmoid(x)``."""
    x = np.asarray(x)
    return x * sigmoid(x)


def softplus(x: np.ndarray) -> np.ndarray:
    """Return ``log(1 + exp(x))``, evaluated as ``log1p(exp(-|x|)) + max(x, 0)``."""
    x = np.asarray(x)
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, _typed(x, 0))


def softsign(x: np.ndarray) -> np.ndarray:
    """Return ``x / (1 + |x|)``."""
    x = np.asarray(x)
    return x / (_typed(x, 1) + np.abs(x))


GELU_MODES = ("EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION")


def gelu(x: np.ndarray, mode: str = "EXACT") -> np.ndarray:
    """Apply the Gaussian error linear unit in one of three forms.

    * ``EXACT``: ``0.5 * x * (1 + erf(x / sqrt(2)))``.
    * ``TANH_APPROXIMATION``: ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``.
    * ``SIGMOID_APPROXIMATION``: ``x * sigmoid(1.702 * x)``.

    Args:
        x: ``tensor<T, [*D]>``.
        mode: one of :data:`GELU_MODES`; default ``EXACT``.

    Raises:
        UnsupportedOpError: unknown mode.

    Example:
        gelu(1.0) is 0.8413 (EXACT), 0.8412 (TANH_APPROXIMATION), 0.8458 (SIGMOID_APPROXIMATION).
    """
    x = np.asarray(x)
    mode = as_str(mode, op="gelu", param="mode", choices=GELU_MODES)
    half = _typed(x, 0.5)

    if mode == "EXACT":
        return half * x * (_typed(x, 1) + erf(x * _typed(x, 1 / math.sqrt(2))))

    if mode == "TANH_APPROXIMATION":
        with np.errstate(over="ignore"):
            inner = _typed(x, math.sqrt(2 / math.pi)) * (x + _typed(x, 0.044715) * x**3)
        return half * x * (_typed(x, 1) + np.tanh(inner))

    return x * sigmoid(_typed(x, 1.702) * x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Return ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Args:
        x: ``tensor<T, [*D]>``, rank at least 1.
        axis: ``int32``, negative counts from the end; default -1.

    Raises:
        OpParameterError: axis out of range.
    """
    x = np.asarray(x)
    check_rank(x, op="softmax", minimum=1)
    axis = normalize_axis(axis, x.ndim, op="softmax")
    with np.errstate(invalid="ignore"):
        shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)
