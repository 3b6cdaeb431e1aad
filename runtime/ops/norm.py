"""Normalization MIL ops: layer_norm, batch_norm, instance_norm and l2_norm.

Variances are population variances (divided by the element count). In iOS17+ programs
``gamma``, ``beta``, ``mean``, ``variance`` and ``epsilon`` may have a dtype other than x's.
They are converted to x's dtype, and the result has x's dtype.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterShapeError
from ._params import as_float, check_rank, normalize_axes

__all__ = ["layer_norm", "batch_norm", "instance_norm", "l2_norm"]


def _per_channel(
    op: str, param: str, value: np.ndarray | None, x: np.ndarray
) -> np.ndarray | None:
    """Return a ``[C]`` parameter reshaped to broadcast over x's channel axis 1."""
    if value is None:
        return None
    value = np.asarray(value)
    channels = x.shape[1]
    if value.shape != (channels,):
        raise ParameterShapeError(
            f"{op}: {param} has shape {list(value.shape)}; expected [{channels}], one per channel"
        )
    return value.astype(x.dtype, copy=False).reshape((channels,) + (1,) * (x.ndim - 2))


def _affine(y: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    variance = np.square(centered).mean(axis=axes, keepdims=True)
    return centered / np.sqrt(variance + np.asarray(epsilon, dtype=x.dtype))


def layer_norm(
    x: np.ndarray,
    axes: np.ndarray | None = None,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    """Normalize over ``axes``: ``(x - mean) / sqrt(var + epsilon) * gamma + beta``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        axes: ``tensor<int32, [K]>``; default None, which is every axis.
        gamma, beta: ``tensor<T, [D[axes]]>``, the normalized dims in increasing axis order;
            default none (1 and 0).
        output: ``tensor<T, [*D]>``.

    Raises:
        OpParameterError: an axis out of range or repeated.
        ParameterShapeError: gamma or beta not of shape D[axes].

    Example:
        x of shape [1, 16, 64] with axes=[-1], gamma and beta of shape [64] normalizes each of
        the 16 rows.
    """
    op = "layer_norm"
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, op=op)
    eps = as_float(epsilon, op=op, param="epsilon")

    # gamma and beta cover the normalized dims; reshape them to broadcast over x.
    ordered = sorted(axes)
    expected = [x.shape[a] for a in ordered]
    broadcast = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    params = []
    for name, value in (("gamma", gamma), ("beta", beta)):
        if value is None:
            params.append(None)
            continue
        value = np.asarray(value)
        if list(value.shape) != expected:
            raise ParameterShapeError(
                f"{op}: {name} has shape {list(value.shape)}; expected {expected} "
                f"(x's dims at axes {ordered})"
            )
        params.append(value.astype(x.dtype, copy=False).reshape(broadcast))

    return _affine(_standardize(x, axes, eps), *params)


def batch_norm(
    x: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    """Normalize with stored statistics: ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``.

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, rank 3 to 5 (rank 2 accepted too).
        mean, variance, gamma, beta: ``tensor<T, [C]>``; gamma and beta default to none.
        output: ``tensor<T, [N, C, *D]>``.

    Raises:
        ShapeError: rank of x below 2 or above 5.
        ParameterShapeError: a parameter not of shape [C].
    """
    op = "batch_norm"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=2, maximum=5)
    eps = as_float(epsilon, op=op, param="epsilon")
    mean = _per_channel(op, "mean", mean, x)
    variance = _per_channel(op, "variance", variance, x)
    gamma = _per_channel(op, "gamma", gamma, x)
    beta = _per_channel(op, "beta", beta, x)
    y = (x - mean) / np.sqrt(variance + np.asarray(eps, dtype=x.dtype))
    return _affine(y, gamma, beta)


def instance_norm(
    x: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    epsilon: float = 1e-5,
) -> np.ndarray:
    """Normalize each (sample, channel) over its spatial dims, then scale by ``gamma[c]`` and
    shift by ``beta[c]``.

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, rank 3 or 4 (rank 5 accepted too).
        gamma, beta: ``tensor<T, [C]>``; default none.
        output: ``tensor<T, [N, C, *D]>``.
    """
    op = "instance_norm"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=3, maximum=5)
    eps = as_float(epsilon, op=op, param="epsilon")
    gamma = _per_channel(op, "gamma", gamma, x)
    beta = _per_channel(op, "beta", beta, x)
    return _affine(_standardize(x, tuple(range(2, x.ndim)), eps), gamma, beta)


def l2_norm(x: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """Divide x by ``sqrt(sum(x**2) + epsilon)`` over its last three dims.

    Shapes:
        x: ``tensor<T, [*B, D1, D2, D3]>``, rank at least 3; the leading dims are batches.
        output: same shape.
    """
    op = "l2_norm"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=3)
    eps = as_float(epsilon, op=op, param="epsilon")
    total = np.square(x).sum(axis=(-3, -2, -1), keepdims=True)
    return x / np.sqrt(total + np.asarray(eps, dtype=x.dtype))
