"""Pruning masks for weights, and checks that a tensor has a declared sparsity pattern.

A mask is a bool array with the weight's shape, True where the element is kept. Every mask
is a function of the weight passed in and nothing else, so pruning again after the weights
changed starts from scratch: masks never accumulate.

Magnitudes are compared exactly, through the bit patterns of the values with the sign bit
cleared, which order like the magnitudes themselves for finite floats. Where several elements
(or blocks) tie at the cut, the ones with the lower C-order index are pruned first. Every mask
function rejects NaN and infinite weights.

Core ML describes n:m sparsity as "n zeros in every m consecutive elements", and this module
uses that convention everywhere. :func:`n_m_from_kept` converts the "keep n of m" convention.

Shapes: weights are ``tensor<fp16 or fp32, [d0, ..., d(K-1)]>``, for linear ``[out, in]`` and
for conv ``[Cout, Cin/groups, kH, kW]``. Block sparsity defaults to axis 0 and n:m sparsity to
axis 1, as in Core ML's pruning.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from sparseblob.runtime.errors import EncodingError, PatternError, ShapeError

from ._validate import as_weight, check_axis, check_fraction, check_int, first_index, magnitude_bits, nonzero

__all__ = [
    "threshold_mask",
    "magnitude_mask",
    "block_mask",
    "n_m_mask",
    "n_m_from_kept",
    "apply_mask",
    "pruned_count",
    "check_n_m",
    "check_blocks",
]

logger = logging.getLogger(__name__)

# Pairwise ranking costs m*m comparisons per group, so beyond this group size a stable sort is cheaper.
_PAIRWISE_MAX_M = 8


def pruned_count(size: int, sparsity: float) -> int:
    """Return ``floor(size * sparsity)``, reading a product within 1e-9 (relative) of an integer as it.

    Binary floats make 0.29 * 100 come out as 28.999..., which would prune 28 instead of 29.
    """
    product = size * float(sparsity)
    nearest = round(product)
    if abs(product - nearest) <= 1e-9 * max(1.0, product):
        return int(nearest)
    return math.floor(product)


def _smallest(keys: np.ndarray, count: int) -> np.ndarray:
    """Return a bool array marking the ``count`` smallest keys, ties going to the lower index.

    ``keys`` is 1-D. Selection uses a partition, so it takes linear time.
    """
    selected = np.zeros(keys.shape, dtype=bool)
    if count <= 0:
        return selected
    if count >= keys.size:
        selected[:] = True
        return selected

    cut = np.partition(keys, count - 1)[count - 1]
    np.less(keys, cut, out=selected)
    missing = count - int(np.count_nonzero(selected))
    tied = np.flatnonzero(keys == cut)[:missing]
    selected[tied] = True
    return selected


def threshold_mask(weight: np.ndarray, threshold: float, *, name: str = "weight") -> np.ndarray:
    """Mask every element whose magnitude is at most ``threshold``.

    The comparison is inclusive, ``|w| <= threshold`` is pruned, and it is made in the weight's
    dtype, with ``threshold`` rounded to nearest in that dtype, as in Core ML's threshold pruner.
    So an fp32 weight equal to ``float32(0.1)`` is pruned at threshold 0.1.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        threshold: a finite number ``>= 0``.
        name: tensor name for error messages.

    Returns:
        ``tensor<bool, shape>``, True where ``|w| > threshold``.
    """
    weight = as_weight(weight, name)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise EncodingError(f"threshold={threshold!r} is not a number")
    if not math.isfinite(threshold) or threshold < 0:
        raise EncodingError(f"threshold={threshold} must be a finite number >= 0")

    largest = float(np.finfo(weight.dtype).max)
    if threshold >= largest:
        return np.zeros(weight.shape, dtype=bool)
    return np.abs(weight) > weight.dtype.type(threshold)


def magnitude_mask(weight: np.ndarray, target_sparsity: float, *, name: str = "weight") -> np.ndarray:
    """Mask the ``floor(N * target_sparsity)`` elements of smallest magnitude.

    Exactly that many elements are pruned. Among equal magnitudes at the cut, the lower C-order
    index is pruned first. Elements that are already zero have the smallest magnitude, so they
    are pruned first.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        target_sparsity: fraction of elements to prune, in [0, 1].
        name: tensor name for error messages.

    Returns:
        ``tensor<bool, shape>``, True where the element is kept.
    """
    weight = as_weight(weight, name)
    sparsity = check_fraction(target_sparsity, "target_sparsity")

    count = pruned_count(weight.size, sparsity)
    keys = magnitude_bits(weight).reshape(-1)
    return ~_smallest(keys, count).reshape(weight.shape)


def _block_scores(weight: np.ndarray, block_size: int, axis: int) -> np.ndarray:
    """Return the sum of squares of each block, ``tensor<fp32 or fp64, grid>``.

    The grid is the weight shape with ``shape[axis]`` replaced by ``ceil(shape[axis] / b)``. A
    trailing partial block sums its real elements only. fp16 squares and their sums fit fp32,
    and fp32 weights are summed in fp64 so that no square overflows.
    """
    accumulate = np.float32 if weight.dtype == np.float16 else np.float64
    front = np.moveaxis(weight, axis, 0).astype(accumulate)
    channels = front.shape[0]
    blocks = -(-channels // block_size)
    padding = blocks * block_size - channels
    if padding:
        front = np.concatenate([front, np.zeros((padding, *front.shape[1:]), dtype=accumulate)])

    grouped = front.reshape(blocks, block_size, *front.shape[1:])
    scores = np.einsum("ij...,ij...->i...", grouped, grouped)
    return np.moveaxis(scores, 0, axis)


def _expand_blocks(block_keep: np.ndarray, block_size: int, axis: int, channels: int) -> np.ndarray:
    front = np.moveaxis(block_keep, axis, 0)
    expanded = np.repeat(front, block_size, axis=0)[:channels]
    return np.ascontiguousarray(np.moveaxis(expanded, 0, axis))


def block_mask(
    weight: np.ndarray,
    target_sparsity: float,
    block_size: int,
    *,
    axis: int = 0,
    name: str = "weight",
) -> np.ndarray:
    """Mask whole blocks of ``block_size`` consecutive elements along ``axis``.

    Each block is scored by its L2 norm. The ``floor(nblocks * target_sparsity)`` blocks with the
    smallest norm are pruned, ties going to the block with the lower C-order index in the block
    grid (the weight shape with ``shape[axis]`` replaced by ``ceil(shape[axis] / block_size)``).
    When ``block_size`` does not divide ``shape[axis]``, the trailing partial block counts as one
    block and is scored by the norm of its real elements, as in Core ML's pruning.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        target_sparsity: fraction of blocks to prune, in [0, 1].
        block_size: elements per block, ``> 1``.
        axis: the axis along which blocks run, 0 (output channels) by default.
        name: tensor name for error messages.

    Returns:
        ``tensor<bool, shape>``, True where the element is kept. Every block is all True or all
        False.
    """
    weight = as_weight(weight, name)
    sparsity = check_fraction(target_sparsity, "target_sparsity")
    block_size = check_int(block_size, "block_size", minimum=2)
    axis = check_axis(axis, weight.ndim)

    scores = _block_scores(weight, block_size, axis)
    count = pruned_count(scores.size, sparsity)
    block_keep = ~_smallest(scores.reshape(-1), count).reshape(scores.shape)
    return _expand_blocks(block_keep, block_size, axis, weight.shape[axis])


def _check_n_m(n, m) -> tuple[int, int]:
    m = check_int(m, "m", minimum=1)
    n = check_int(n, "n", minimum=0)
    if n > m:
        raise EncodingError(f"n={n} must not exceed m={m}: an n:m pattern has n zeros in every m")
    return n, m


def n_m_from_kept(kept: int, m: int) -> tuple[int, int]:
    """Convert "keep ``kept`` of every ``m``" into Core ML's "n zeros of every m": ``(m - kept, m)``."""
    m = check_int(m, "m", minimum=1)
    kept = check_int(kept, "kept", minimum=0)
    if kept > m:
        raise EncodingError(f"kept={kept} must not exceed m={m}")
    return m - kept, m


def _grouped_last(array: np.ndarray, m: int, fill) -> tuple[np.ndarray, int]:
    """Return ``array`` padded along its last axis to a multiple of ``m`` and split into groups.

    Returns:
        ``tensor<T, [..., ngroups, m]>`` and the number of padding elements.
    """
    length = array.shape[-1]
    padding = (-length) % m
    if padding:
        pad = np.full((*array.shape[:-1], padding), fill, dtype=array.dtype)
        array = np.concatenate([array, pad], axis=-1)
    return array.reshape(*array.shape[:-1], -1, m), padding


def _ranks_in_groups(keys: np.ndarray) -> np.ndarray:
    """Return each element's rank within its group (last axis) by (key, position)."""
    m = keys.shape[-1]
    if m <= _PAIRWISE_MAX_M:
        ranks = np.zeros(keys.shape, dtype=np.int16)
        for i in range(m):
            for j in range(m):
                if j == i:
                    continue
                # Element j ranks before element i when smaller, or equal and earlier.
                before = keys[..., j] < keys[..., i] if j > i else keys[..., j] <= keys[..., i]
                ranks[..., i] += before
        return ranks

    order = np.argsort(keys, axis=-1, kind="stable")
    ranks = np.empty(keys.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(m, dtype=np.int64), axis=-1)
    return ranks


def n_m_mask(weight: np.ndarray, n: int, m: int, *, axis: int = 1, name: str = "weight") -> np.ndarray:
    """Mask the ``n`` smallest-magnitude elements of every ``m`` consecutive ones along ``axis``.

    Groups are ``m`` consecutive elements along ``axis`` at one fixed index on every other axis.
    Within a group, smaller magnitude is pruned first and, among equal magnitudes, the lower
    position. When ``m`` does not divide ``shape[axis]``, the last group is padded with zeros
    that are pruned before any real element, as in Core ML's pruning, so a last group with
    ``pad`` padding elements loses ``max(0, n - pad)`` real elements.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        n: zeros per group, ``0 <= n <= m``, in Core ML's convention (see :func:`n_m_from_kept`).
        m: group length, ``>= 1``.
        axis: the axis along which groups run, 1 (input channels) by default.
        name: tensor name for error messages.

    Returns:
        ``tensor<bool, shape>``, True where the element is kept.
    """
    weight = as_weight(weight, name)
    n, m = _check_n_m(n, m)
    axis = check_axis(axis, weight.ndim)

    # Finite magnitudes stay below 0x7F800000, so int32 holds every key and the padding key.
    keys = np.moveaxis(magnitude_bits(weight), axis, -1).astype(np.int32)
    # Padding gets key -1: below every real magnitude, so it is pruned first.
    groups, _ = _grouped_last(keys, m, -1)
    keep = _ranks_in_groups(groups) >= n

    keep = keep.reshape(*keep.shape[:-2], -1)[..., : weight.shape[axis]]
    return np.ascontiguousarray(np.moveaxis(keep, -1, axis))


def apply_mask(weight: np.ndarray, mask: np.ndarray, *, name: str = "weight") -> np.ndarray:
    """Return the pruned weight: ``weight`` where ``mask`` is set, +0.0 elsewhere.

    Core ML's sparse format stores a value only where it is non-zero, so -0.0 cannot survive
    encoding. This function writes +0.0 for every zero, including a kept -0.0, so that the
    pruned weight equals its decoded form bit for bit.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        mask: ``tensor<bool or 0/1 integers, shape>``.
        name: tensor name for error messages.

    Returns:
        ``tensor<weight dtype, shape>``, a new array.
    """
    weight = as_weight(weight, name)
    mask = np.asarray(mask)
    if mask.shape != weight.shape:
        raise ShapeError(f"{name}: mask shape {list(mask.shape)} differs from weight shape {list(weight.shape)}")
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) or (mask.size and not np.isin(mask, (0, 1)).all()):
            raise EncodingError(f"{name}: mask must be bool or 0/1 integers, got dtype {mask.dtype}")
        mask = mask.astype(bool)

    # Multiplying the raw bits by 0 or 1 keeps a value or writes +0.0, without float arithmetic.
    bits = np.ascontiguousarray(weight).view(np.uint16 if weight.dtype == np.float16 else np.uint32)
    return (bits * (mask & nonzero(weight))).view(weight.dtype)


def _describe_group(index: tuple[int, ...], axis: int, start: int, stop: int) -> str:
    """Write a group's position as an index with a slice on ``axis``, e.g. ``[3, 8:12]``."""
    parts = [str(i) for i in index]
    parts[axis] = f"{start}:{stop}"
    return "[" + ", ".join(parts) + "]"


def check_n_m(tensor: np.ndarray, n: int, m: int, *, axis: int = 1, name: str = "weight") -> None:
    """Check that every ``m`` consecutive elements along ``axis`` hold at least ``n`` zeros.

    A partial last group counts as padded with zeros, as :func:`n_m_mask` does. The check never
    changes the tensor.

    Args:
        tensor: any array; an element counts as zero when it equals 0 (so -0.0 is a zero).
        n: zeros required per group.
        m: group length.
        axis: the axis along which groups run.
        name: tensor name for error messages.

    Raises:
        PatternError: names the first violating group in C order, its position and its count.
    """
    tensor = np.asarray(tensor)
    if tensor.ndim == 0:
        raise ShapeError(f"{name}: expected an array of rank 1 or more, got a scalar")
    n, m = _check_n_m(n, m)
    axis = check_axis(axis, tensor.ndim)

    nonzero_elements = np.moveaxis(tensor != 0, axis, -1)
    groups, _ = _grouped_last(nonzero_elements, m, False)
    zeros = m - np.count_nonzero(groups, axis=-1)
    bad = zeros < n
    if not bad.any():
        return

    where = first_index(np.moveaxis(bad, -1, axis))
    group = where[axis]
    found = int(np.moveaxis(zeros, -1, axis)[where])
    position = _describe_group(where, axis, group * m, min((group + 1) * m, tensor.shape[axis]))
    raise PatternError(
        f"{name}: group {group} along axis {axis} at {position} has {m - found} nonzero values "
        f"({found} zeros, padding included); {n}:{m} sparsity needs at least {n} zeros in every "
        f"{m} ({int(np.count_nonzero(bad))} groups violate it)"
    )


def check_blocks(tensor: np.ndarray, block_size: int, *, axis: int = 0, name: str = "weight") -> None:
    """Check that every block of ``block_size`` elements along ``axis`` is all zero or all nonzero.

    A trailing partial block is checked over its real elements. Pass the mask rather than the
    weight when a kept block may hold an exact zero. The check never changes the tensor.

    Args:
        tensor: any array; an element counts as zero when it equals 0.
        block_size: elements per block, ``> 1``.
        axis: the axis along which blocks run.
        name: tensor name for error messages.

    Raises:
        PatternError: names the first mixed block in C order of the block grid and its count.
    """
    tensor = np.asarray(tensor)
    if tensor.ndim == 0:
        raise ShapeError(f"{name}: expected an array of rank 1 or more, got a scalar")
    block_size = check_int(block_size, "block_size", minimum=2)
    axis = check_axis(axis, tensor.ndim)

    channels = tensor.shape[axis]
    nonzero_elements = np.moveaxis(tensor != 0, axis, -1)
    groups, padding = _grouped_last(nonzero_elements, block_size, False)
    counts = np.count_nonzero(groups, axis=-1)
    sizes = np.full(counts.shape[-1], block_size)
    sizes[-1] -= padding
    bad = (counts > 0) & (counts < sizes)
    if not bad.any():
        return

    where = first_index(np.moveaxis(bad, -1, axis))
    block = where[axis]
    found = int(np.moveaxis(counts, -1, axis)[where])
    position = _describe_group(where, axis, block * block_size, min((block + 1) * block_size, channels))
    raise PatternError(
        f"{name}: block {block} along axis {axis} at {position} has {found} nonzero values out "
        f"of {sizes[block]}; each block of {block_size} must be all zero or all nonzero "
        f"({int(np.count_nonzero(bad))} blocks are mixed)"
    )
