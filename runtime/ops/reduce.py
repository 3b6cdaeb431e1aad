"""Reduction MIL ops over a set of axes (``reduce_*``) or one axis (``reduce_argmax/argmin``).

Shapes: ``x: tensor<T, [*D]>`` gives ``tensor<T, [*D_out]>`` where ``D_out`` drops the reduced
axes, or keeps them as size 1 with ``keep_dims=True``. Reducing every axis without keep_dims
gives a rank-0 tensor. ``axes`` defaults to None, which means every axis; negative axes count
from the end.
"""

from __future__ import annotations

import numpy as np

from ._numeric import convert
from ._params import as_bool, as_str, check_rank, normalize_axes, normalize_axis

__all__ = [
    "reduce_mean",
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_sum_square",
    "reduce_l1_norm",
    "reduce_l2_norm",
    "reduce_log_sum",
    "reduce_log_sum_exp",
    "reduce_argmax",
    "reduce_argmin",
]


def _reduce(op: str, function, x: np.ndarray, axes: object, keep_dims: object) -> np.ndarray:
    x = np.asarray(x)
    keep = as_bool(keep_dims, op=op, param="keep_dims")
    axis = tuple(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, op=op)
    with np.errstate(all="ignore"):
        result = np.asarray(function(x, axis=axis, keepdims=keep))

    # numpy accumulates int32 in int64; MIL returns x's dtype (an int32 mean truncates).
    if np.issubdtype(x.dtype, np.integer) and result.dtype != x.dtype:
        result = convert(result, x.dtype)
    return result


def reduce_mean(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return the mean over ``axes``.

    Example: x of shape [1, 8, 7, 7] with axes=[-2, -1], keep_dims=True gives shape
    [1, 8, 1, 1] (global average pooling).
    """
    return _reduce("reduce_mean", np.mean, x, axes, keep_dims)


def reduce_sum(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return the sum over ``axes``; T is fp16, fp32 or int32."""
    return _reduce("reduce_sum", np.sum, x, axes, keep_dims)


def reduce_max(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return the maximum over ``axes``; NaN propagates."""
    return _reduce("reduce_max", np.max, x, axes, keep_dims)


def reduce_min(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return the minimum over ``axes``; NaN propagates."""
    return _reduce("reduce_min", np.min, x, axes, keep_dims)


def reduce_prod(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return the product over ``axes``."""
    return _reduce("reduce_prod", np.prod, x, axes, keep_dims)


def reduce_sum_square(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return ``sum(x**2)`` over ``axes``."""
    return _reduce(
        "reduce_sum_square", lambda v, **kw: np.sum(np.square(v), **kw), x, axes, keep_dims
    )


def reduce_l1_norm(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return ``sum(|x|)`` over ``axes``."""
    return _reduce("reduce_l1_norm", lambda v, **kw: np.sum(np.abs(v), **kw), x, axes, keep_dims)


def reduce_l2_norm(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return ``sqrt(sum(x**2))`` over ``axes``."""
    return _reduce(
        "reduce_l2_norm", lambda v, **kw: np.sqrt(np.sum(np.square(v), **kw)), x, axes, keep_dims
    )


def reduce_log_sum(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return ``log(sum(x))`` over ``axes``."""
    return _reduce("reduce_log_sum", lambda v, **kw: np.log(np.sum(v, **kw)), x, axes, keep_dims)


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    if x.size == 0:
        return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return total if keepdims else np.squeeze(total, axis=axis)


def reduce_log_sum_exp(
    x: np.ndarray, axes: np.ndarray | None = None, keep_dims: bool = False
) -> np.ndarray:
    """Return ``log(sum(exp(x)))`` over ``axes``, shifted by the maximum to avoid overflow."""
    return _reduce("reduce_log_sum_exp", _log_sum_exp, x, axes, keep_dims)


ARG_OUTPUT_DTYPES = {"int32": np.int32, "uint16": np.uint16}


def _reduce_arg(
    op: str, function, x: np.ndarray, axis: object, keep_dims: object, output_dtype: object
) -> np.ndarray:
    x = np.asarray(x)
    check_rank(x, op=op, minimum=1)
    axis = normalize_axis(axis, x.ndim, op=op)
    keep = as_bool(keep_dims, op=op, param="keep_dims")
    name = as_str(output_dtype, op=op, param="output_dtype", choices=tuple(ARG_OUTPUT_DTYPES))
    dtype = ARG_OUTPUT_DTYPES[name]
    return np.asarray(function(x, axis=axis, keepdims=keep)).astype(dtype)


def reduce_argmax(
    x: np.ndarray, axis: int = -1, keep_dims: bool = False, output_dtype: str = "int32"
) -> np.ndarray:
    """Return the index of the first maximum along ``axis``.

    Shapes:
        x: ``tensor<T, [*D]>``, rank at least 1.
        output: ``tensor<int32, [*D_out]>`` (``uint16`` with ``output_dtype="uint16"``).

    Args:
        x: the input.
        axis: ``int32``; default -1.
        keep_dims: keep the reduced axis as size 1; default False.
        output_dtype: ``int32`` (default) or ``uint16`` (iOS17+).
    """
    return _reduce_arg("reduce_argmax", np.argmax, x, axis, keep_dims, output_dtype)


def reduce_argmin(
    x: np.ndarray, axis: int = -1, keep_dims: bool = False, output_dtype: str = "int32"
) -> np.ndarray:
    """Return the index of the first minimum along ``axis``; see :func:`reduce_argmax`."""
    return _reduce_arg("reduce_argmin", np.argmin, x, axis, keep_dims, output_dtype)
