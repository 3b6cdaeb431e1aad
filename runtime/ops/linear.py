"""``linear`` (fully connected layer) and ``matmul`` (batched matrix product), through BLAS."""

from __future__ import annotations

import numpy as np

from ..errors import OpParameterError, ParameterShapeError, ShapeError
from ._params import as_bool, check_broadcast_shapes, check_rank

__all__ = ["linear", "matmul"]


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Apply ``y = x @ weight.T + bias`` over x's last dim.

    Shapes:
        x: ``tensor<T, [*D, Din]>``, any rank from 1 (MIL documents 1 to 3).
        weight: ``tensor<T, [Dout, Din]>``.
        bias: ``tensor<T, [Dout]>``; default none (zeros).
        output: ``tensor<T, [*D, Dout]>``.

    A weight or bias dtype other than x's (iOS17+) is converted to x's dtype.

    Raises:
        ShapeError: weight not rank 2, or Din differs between x and weight.
        ParameterShapeError: bias not of shape [Dout].

    Example:
        x [1, 16, 64] with weight [128, 64] gives [1, 16, 128].
    """
    op = "linear"
    x, weight = np.asarray(x), np.asarray(weight)
    check_rank(x, op=op, minimum=1)
    check_rank(weight, op=op, param="weight", minimum=2, maximum=2)
    if weight.shape[1] != x.shape[-1]:
        raise ShapeError(
            f"{op}: x has shape {list(x.shape)} but weight has shape {list(weight.shape)}; "
            f"the last dim of x must equal weight dim 1"
        )
    y = np.matmul(x, weight.astype(x.dtype, copy=False).T)
    if bias is None:
        return y
    bias = np.asarray(bias)
    if bias.shape != (weight.shape[0],):
        raise ParameterShapeError(
            f"{op}: bias has shape {list(bias.shape)}; expected [{weight.shape[0]}]"
        )
    return y + bias.astype(x.dtype, copy=False)


def matmul(
    x: np.ndarray, y: np.ndarray, transpose_x: bool = False, transpose_y: bool = False
) -> np.ndarray:
    """Multiply the last two dims of x and y, broadcasting the leading (batch) dims.

    ``transpose_x``/``transpose_y`` swap the last two dims of that operand first. A rank-1
    operand is promoted to a matrix (x to ``[1, K]``, y to ``[K, 1]``) and the added dim is
    removed from the result, as in ``np.matmul``. Transposing a rank-1 y has no effect, and
    transposing a rank-1 x is invalid.

    Shapes:
        x: ``tensor<T, [*Bx, M, K]>`` (or ``[K, M]`` with transpose_x).
        y: ``tensor<T, [*By, K, N]>`` (or ``[N, K]`` with transpose_y).
        output: ``tensor<T, [*broadcast(Bx, By), M, N]>``.

    Args:
        x, y: fp16/fp32/int32 operands of the same dtype.
        transpose_x, transpose_y: default False.

    Raises:
        ShapeError: rank-0 operand, inner dims differ, or batch dims do not broadcast.
        OpParameterError: transpose_x with a rank-1 x.

    Example:
        q [1, 4, 16, 16] and k [1, 4, 16, 16] with transpose_y=True give scores [1, 4, 16, 16].
    """
    op = "matmul"
    x, y = np.asarray(x), np.asarray(y)
    check_rank(x, op=op, minimum=1)
    check_rank(y, op=op, param="y", minimum=1)
    if as_bool(transpose_x, op=op, param="transpose_x"):
        if x.ndim == 1:
            raise OpParameterError(f"{op}: transpose_x is set but x has rank 1")
        x = np.swapaxes(x, -1, -2)
    if as_bool(transpose_y, op=op, param="transpose_y") and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)

    inner_y = y.shape[0] if y.ndim == 1 else y.shape[-2]
    if x.shape[-1] != inner_y:
        raise ShapeError(
            f"{op}: inner dims differ: x (after transpose) has shape {list(x.shape)} and y "
            f"{list(y.shape)}"
        )
    if x.ndim > 2 and y.ndim > 2:
        check_broadcast_shapes(op, x_batch=x.shape[:-2], y_batch=y.shape[:-2])
    return np.matmul(x, y.astype(x.dtype, copy=False))
