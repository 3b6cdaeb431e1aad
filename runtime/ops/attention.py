"""``scaled_dot_product_attention`` (iOS18): softmax(q k^T / sqrt(E) + mask) v."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ._params import check_broadcast_shapes, check_rank
from .activation import softmax

__all__ = ["scaled_dot_product_attention"]


def scaled_dot_product_attention(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    attn_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Attend ``query`` to ``key``/``value``: ``softmax(q @ k^T / sqrt(E) + mask) @ v``.

    A bool ``attn_mask`` keeps the positions where it is True and sets the others to -inf
    before the softmax. A float mask is added to the scores. There is no dropout and no causal
    flag. A query row whose every position is masked out gives NaN, as PyTorch's reference
    (math) implementation does.

    Shapes:
        query: ``tensor<T, [B, *H, L, E]>``, rank at least 3.
        key: ``tensor<T, [B, *H, S, E]>``.
        value: ``tensor<T, [B, *H, S, EV]>``.
        attn_mask: ``tensor<bool or T, [*M]>``, broadcastable to ``[B, *H, L, S]``; default none.
        output: ``tensor<T, [B, *H, L, EV]>``.

    Raises:
        ShapeError: ranks below 3, E or S differ between the operands, or shapes that do not
            broadcast.

    Example:
        q, k, v of shape [1, 4, 16, 16] give [1, 4, 16, 16].
    """
    op = "scaled_dot_product_attention"
    query, key, value = np.asarray(query), np.asarray(key), np.asarray(value)
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        check_rank(tensor, op=op, param=name, minimum=3)
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ShapeError(
            f"{op}: query {list(query.shape)}, key {list(key.shape)} and value "
            f"{list(value.shape)} must share E (last dim of query and key) and S (dim -2 of "
            "key and value)"
        )
    batch = check_broadcast_shapes(
        op, query=query.shape[:-2], key=key.shape[:-2], value=value.shape[:-2]
    )
    scores_shape = batch + (query.shape[-2], key.shape[-2])

    scale = np.asarray(1 / math.sqrt(query.shape[-1]), dtype=query.dtype)
    # A contiguous k^T lets numpy hand each batch matrix to BLAS directly.
    keys = np.ascontiguousarray(np.swapaxes(key, -1, -2), dtype=query.dtype)
    scores = np.matmul(query, keys) * scale
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        check_broadcast_shapes(op, scores=scores_shape, attn_mask=mask.shape)
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, np.asarray(-np.inf, dtype=scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype, copy=False)
    return np.matmul(softmax(scores, axis=-1), value.astype(query.dtype, copy=False))
