"""Shape and indexing MIL ops: reshape, transpose, squeeze, expand_dims, concat, split, stack,
slicing, gather, pad, tile, crop and shape.

These ops move values without arithmetic, so results equal the selected input elements bit for
bit, in any dtype (fp16, fp32, int32, bool, ...).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OpParameterError, ParameterShapeError, ShapeError
from ..limits import element_count
from ._params import (
    as_bool,
    as_bool_tuple,
    as_int,
    as_int_tuple,
    as_str,
    check_rank,
    normalize_axes,
    normalize_axis,
)

__all__ = [
    "reshape",
    "transpose",
    "squeeze",
    "expand_dims",
    "concat",
    "split",
    "stack",
    "slice_by_index",
    "slice_by_size",
    "gather",
    "gather_along_axis",
    "pad",
    "PAD_MODES",
    "tile",
    "crop",
    "shape_",
]


def reshape(x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Return x's elements, in row-major order, with a new shape.

    ``shape`` entries are positive sizes, at most one ``-1`` (inferred from the element count),
    or ``0``, which copies a dimension of x. Zeros align with x's shape from the right (iOS17
    rule); a zero with no counterpart becomes 1. When ``len(shape) == rank(x)`` this equals the
    iOS15/16 rule, where a zero copies the dimension at the same index.

    Shapes:
        x: ``tensor<T, [*D]>``.
        shape: ``tensor<int32, [K]>``.
        output: ``tensor<T, [*shape]>``.

    Raises:
        OpParameterError: more than one -1, or an entry below -1.
        ShapeError: the element counts differ.

    Example:
        x of shape [2, 50] with shape [1, 0, -1, 0] gives shape [1, 1, 2, 50].
    """
    op = "reshape"
    x = np.asarray(x)
    target = list(as_int_tuple(shape, op=op, param="shape", minimum=-1))
    if target.count(-1) > 1:
        raise OpParameterError(f"{op}: shape={target} has more than one -1")

    # Zeros copy x's dims, aligned from the right.
    for offset in range(1, len(target) + 1):
        if target[-offset] == 0:
            target[-offset] = x.shape[-offset] if offset <= x.ndim else 1

    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if known == 0 or x.size % known:
            raise ShapeError(
                f"{op}: cannot infer the -1 in shape {target} for x of shape {list(x.shape)} "
                f"({x.size} elements)"
            )
        target[target.index(-1)] = x.size // known
    elif known != x.size:
        raise ShapeError(
            f"{op}: shape {target} has {known} elements but x of shape {list(x.shape)} has "
            f"{x.size}"
        )
    return x.reshape(target)


def transpose(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Permute x's axes: output axis ``i`` is input axis ``perm[i]``.

    Entries may be negative and count from the end: ``[0, 2, -3, -1]`` on rank 4 is
    ``[0, 2, 1, 3]``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        perm: ``tensor<int32, [rank(x)]>``.
        output: ``tensor<T, [D[perm[0]], D[perm[1]], ...]>``.

    Raises:
        ParameterShapeError: perm does not have rank(x) entries.
        OpParameterError: an entry out of range or repeated.
    """
    op = "transpose"
    x = np.asarray(x)
    values = as_int_tuple(perm, op=op, param="perm", length=x.ndim)
    axes = normalize_axes(values, x.ndim, op=op, param="perm")
    return np.transpose(x, axes)


def squeeze(x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    """Remove size-1 axes: all of them (default), or those listed in ``axes``.

    A listed axis whose size is not 1 is left in place, as PyTorch's squeeze does. Squeezing
    every axis gives a rank-0 tensor.

    Shapes:
        x: ``tensor<T, [*D]>``.
        axes: ``tensor<int32, [K]>``; default None.
        output: ``tensor<T, [*D without the squeezed axes]>``.
    """
    x = np.asarray(x)
    listed = range(x.ndim) if axes is None else normalize_axes(axes, x.ndim, op="squeeze")
    return np.squeeze(x, axis=tuple(a for a in listed if x.shape[a] == 1))


def expand_dims(x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Insert size-1 axes at the positions ``axes`` of the output.

    Negative axes count from the end of the output, whose rank is ``rank(x) + len(axes)``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        axes: ``tensor<int32, [K]>`` (required).
        output: ``tensor<T, [*D with K ones inserted]>``.

    Example:
        x of shape [2, 3] with axes=[0, -1] gives shape [1, 2, 3, 1].
    """
    x = np.asarray(x)
    values = as_int_tuple(axes, op="expand_dims", param="axes")
    positions = normalize_axes(values, x.ndim + len(values), op="expand_dims")
    return np.expand_dims(x, tuple(sorted(positions)))


def _check_same_rank(op: str, values: list[np.ndarray]) -> None:
    if not values:
        raise OpParameterError(f"{op}: values is empty; expected at least one tensor")
    ranks = {v.ndim for v in values}
    if len(ranks) != 1:
        raise ShapeError(f"{op}: values have different ranks: {[list(v.shape) for v in values]}")


def concat(values: list[np.ndarray], axis: int, interleave: bool = False) -> np.ndarray:
    """Join tensors along ``axis``.

    With ``interleave=True`` the inputs, which must all have the same shape, are interleaved
    along ``axis``: for two inputs of shape [2, C] on axis 0 the output rows are
    ``a[0], b[0], a[1], b[1]``.

    Shapes:
        values: ``tensor<T, [*D_i]>`` each, equal except along ``axis``.
        output: ``tensor<T, [*D with D[axis] = sum of D_i[axis]]>``.

    Args:
        values: the tensors (a MIL tuple parameter).
        axis: ``int32`` (required).
        interleave: default False.

    Raises:
        ShapeError: ranks differ, or shapes differ off ``axis`` (or anywhere, with interleave).
    """
    op = "concat"
    values = [np.asarray(v) for v in values]
    _check_same_rank(op, values)
    check_rank(values[0], op=op, param="values[0]", minimum=1)
    axis = normalize_axis(axis, values[0].ndim, op=op)
    shapes = [list(v.shape) for v in values]

    if as_bool(interleave, op=op, param="interleave"):
        if any(v.shape != values[0].shape for v in values):
            raise ShapeError(f"{op}: interleave requires equal shapes; got {shapes}")
        stacked = np.stack(values, axis=axis + 1)
        merged = list(values[0].shape)
        merged[axis] *= len(values)
        return stacked.reshape(merged)

    for v in values:
        if np.delete(v.shape, axis).tolist() != np.delete(values[0].shape, axis).tolist():
            raise ShapeError(f"{op}: shapes {shapes} differ outside axis {axis}")
    return np.concatenate(values, axis=axis)


def split(
    x: np.ndarray,
    axis: int,
    num_splits: int | None = None,
    split_sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Cut x along ``axis`` into ``num_splits`` equal pieces or pieces of ``split_sizes``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        output: one ``tensor<T, [*D with D[axis] = size_i]>`` per piece.

    Args:
        x: the input.
        axis: ``int32`` (required).
        num_splits: ``int32``; D[axis] must be a multiple of it.
        split_sizes: ``tensor<int32, [K]>``, summing to D[axis].

    Raises:
        OpParameterError: neither or both of num_splits and split_sizes, or num_splits below 1.
        ShapeError: the sizes do not add up to D[axis].

    Example:
        x of shape [1, 16, 192], axis=-1, split_sizes=[64, 64, 64] gives three [1, 16, 64].
    """
    op = "split"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=1)
    axis = normalize_axis(axis, x.ndim, op=op)
    length = x.shape[axis]

    if (num_splits is None) == (split_sizes is None):
        raise OpParameterError(f"{op}: exactly one of num_splits and split_sizes must be given")
    if split_sizes is not None:
        sizes = as_int_tuple(split_sizes, op=op, param="split_sizes", minimum=0)
        if sum(sizes) != length:
            raise ShapeError(
                f"{op}: split_sizes={list(sizes)} add up to {sum(sizes)}, but x has {length} "
                f"elements along axis {axis}"
            )
    else:
        count = as_int(num_splits, op=op, param="num_splits")
        if count < 1:
            raise OpParameterError(f"{op}: num_splits={count}; expected a positive integer")
        if length % count:
            raise ShapeError(
                f"{op}: num_splits={count} does not divide the {length} elements along axis {axis}"
            )
        sizes = (length // count,) * count

    boundaries = np.cumsum(sizes)[:-1]
    return tuple(np.split(x, boundaries, axis=axis))


def stack(values: list[np.ndarray], axis: int) -> np.ndarray:
    """Stack equal-shaped tensors along a new axis at position ``axis`` of the output.

    Shapes:
        values: ``tensor<T, [*D]>`` each, K of them.
        output: ``tensor<T, [*D with K inserted at axis]>``.
    """
    op = "stack"
    values = [np.asarray(v) for v in values]
    _check_same_rank(op, values)
    if any(v.shape != values[0].shape for v in values):
        raise ShapeError(f"{op}: values have different shapes {[list(v.shape) for v in values]}")
    axis = normalize_axis(axis, values[0].ndim + 1, op=op)
    return np.stack(values, axis=axis)


def slice_by_index(
    x: np.ndarray,
    begin: np.ndarray,
    end: np.ndarray,
    stride: np.ndarray | None = None,
    begin_mask: np.ndarray | None = None,
    end_mask: np.ndarray | None = None,
    squeeze_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Slice ``x[begin[i]:end[i]:stride[i]]`` on every axis, with Python index rules.

    * ``begin_mask[i]``: ignore ``begin[i]`` and start at the first element in the stride's
      direction (the last one for a negative stride).
    * ``end_mask[i]``: ignore ``end[i]`` and run to the end in the stride's direction.
    * ``squeeze_mask[i]``: take the single index ``begin[i]`` (0 with ``begin_mask[i]``) and
      drop the axis; ``end[i]`` and ``stride[i]`` are ignored.

    Shapes:
        x: ``tensor<T, [*D]>``.
        begin, end, stride: ``tensor<int32, [rank(x)]>``; stride defaults to all 1.
        begin_mask, end_mask, squeeze_mask: ``tensor<bool, [rank(x)]>``; default all False.
        output: ``tensor<T, [*D_out]>``, rank 0 when every axis is squeezed.

    Raises:
        ParameterShapeError: a vector without rank(x) entries.
        OpParameterError: a zero stride, or a squeezed index out of range.

    Example:
        x of shape [4, 16, 1, 64], begin=[1, 0, 0, 0], end=[2, 16, 1, 64],
        end_mask=[F, T, T, T], squeeze_mask=[T, F, F, F] gives x[1] of shape [16, 1, 64].
    """
    op = "slice_by_index"
    x = np.asarray(x)
    rank = x.ndim
    begins = as_int_tuple(begin, op=op, param="begin", length=rank)
    ends = as_int_tuple(end, op=op, param="end", length=rank)
    strides = (1,) * rank
    if stride is not None:
        strides = as_int_tuple(stride, op=op, param="stride", length=rank)

    def flags(mask: np.ndarray | None, param: str) -> tuple[bool, ...]:
        if mask is None:
            return (False,) * rank
        return as_bool_tuple(mask, op=op, param=param, length=rank)

    begin_flags = flags(begin_mask, "begin_mask")
    end_flags = flags(end_mask, "end_mask")
    squeeze_flags = flags(squeeze_mask, "squeeze_mask")

    index: list[int | slice] = []
    for axis in range(rank):
        size = x.shape[axis]
        if squeeze_flags[axis]:
            position = 0 if begin_flags[axis] else begins[axis]
            if not -size <= position < size:
                raise OpParameterError(
                    f"{op}: squeezed index {position} on axis {axis} is out of range for "
                    f"size {size}"
                )
            index.append(position % size)
            continue
        if strides[axis] == 0:
            raise OpParameterError(f"{op}: stride={list(strides)} has a 0 on axis {axis}")
        start = None if begin_flags[axis] else begins[axis]
        stop = None if end_flags[axis] else ends[axis]
        index.append(slice(start, stop, strides[axis]))
    return np.asarray(x[tuple(index)])


def slice_by_size(x: np.ndarray, begin: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Take ``size[i]`` elements from ``begin[i]`` on every axis; ``size[i] = -1`` takes the rest.

    Shapes:
        x: ``tensor<T, [*D]>``.
        begin, size: ``tensor<int32, [rank(x)]>``.
        output: ``tensor<T, [*size]>`` after the -1 entries are resolved.

    Raises:
        OpParameterError: a begin outside [-D, D), or a size below -1 or past the end.
    """
    op = "slice_by_size"
    x = np.asarray(x)
    begins = as_int_tuple(begin, op=op, param="begin", length=x.ndim)
    sizes = as_int_tuple(size, op=op, param="size", length=x.ndim, minimum=-1)
    index = []
    for axis, (start, count, dim) in enumerate(zip(begins, sizes, x.shape)):
        if not -dim <= start < dim and not (dim == 0 and start == 0):
            raise OpParameterError(
                f"{op}: begin {start} on axis {axis} is out of range for size {dim}"
            )
        start = start % dim if dim else 0
        stop = dim if count == -1 else start + count
        if stop > dim:
            raise OpParameterError(
                f"{op}: begin {start} + size {count} on axis {axis} passes the end of size {dim}"
            )
        index.append(slice(start, stop))
    return x[tuple(index)]


def _checked_indices(op: str, indices: np.ndarray, size: int) -> np.ndarray:
    """Map indices in ``[-size, size)`` to ``[0, size)``; raise OpParameterError on others."""
    if indices.dtype == np.bool_ or not np.issubdtype(indices.dtype, np.integer):
        raise OpParameterError(f"{op}: indices must be integers; got dtype {indices.dtype}")
    indices = indices.astype(np.int64, copy=False)
    bad = (indices < -size) | (indices >= size)
    if bad.any():
        raise OpParameterError(
            f"{op}: index {int(indices[bad].flat[0])} is out of range for an axis of size {size}; "
            f"expected values in [{-size}, {size})"
        )
    return np.where(indices < 0, indices + size, indices)


def gather(
    x: np.ndarray,
    indices: np.ndarray,
    axis: int = 0,
    batch_dims: int = 0,
    validate_indices: bool = False,
) -> np.ndarray:
    """Pick slices of x along ``axis`` at ``indices``, per batch when ``batch_dims > 0``.

    ``out[b..., p..., i..., q...] = x[b..., p..., indices[b..., i...], q...]`` where ``b`` spans
    the first ``batch_dims`` dims (shared by x and indices), ``p`` the other dims before
    ``axis``, ``q`` the dims after it.

    Indices in ``[-D[axis], 0)`` count from the end, as in iOS15/16 programs. iOS17 calls
    negative and too-large indices out of range with undefined results, so converters insert a
    ``select`` that makes them non-negative first. Indices outside ``[-D[axis], D[axis])``
    always raise OpParameterError, whatever the value of ``validate_indices``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        indices: ``tensor<int32, [*I]>`` (int8/uint8/int16/uint16 too).
        output: ``tensor<T, [D[:axis] + I[batch_dims:] + D[axis+1:]]>``.

    Args:
        x: the data.
        indices: the positions.
        axis: ``int32``; default 0.
        batch_dims: ``int32``; default 0; at most ``axis``.
        validate_indices: default False; out-of-range indices raise either way.

    Raises:
        ShapeError: batch dims of x and indices differ, or batch_dims too large.
        OpParameterError: axis or an index out of range.

    Example:
        x = [[1, 2], [3, 4], [5, 6]], indices = [2, -3], axis 0 gives [[5, 6], [1, 2]].
    """
    op = "gather"
    x, indices = np.asarray(x), np.asarray(indices)
    check_rank(x, op=op, minimum=1)
    axis = normalize_axis(axis, x.ndim, op=op)
    batch = as_int(batch_dims, op=op, param="batch_dims")
    as_bool(validate_indices, op=op, param="validate_indices")
    if batch < 0 or batch > axis or batch > indices.ndim:
        raise ShapeError(
            f"{op}: batch_dims={batch} must be in [0, min(axis={axis}, rank(indices)="
            f"{indices.ndim})]"
        )
    if x.shape[:batch] != indices.shape[:batch]:
        raise ShapeError(
            f"{op}: the first {batch} dims of x {list(x.shape)} and indices "
            f"{list(indices.shape)} differ"
        )
    positions = _checked_indices(op, indices, x.shape[axis])
    if batch == 0:
        return np.take(x, positions, axis=axis)

    # Flatten the batch dims into one, bring `axis` next to it, and index both together.
    lead = x.shape[:batch]
    count = math.prod(lead)
    flat = x.reshape((count,) + x.shape[batch:])
    flat_axis = axis - batch + 1
    moved = np.moveaxis(flat, flat_axis, 1)  # [B, D[axis], *D[batch:axis], *D[axis+1:]]
    flat_positions = positions.reshape((count,) + indices.shape[batch:])
    rows = np.arange(count).reshape((count,) + (1,) * (flat_positions.ndim - 1))
    picked = moved[rows, flat_positions]  # [B, *I[batch:], *D[batch:axis], *D[axis+1:]]

    index_rank = indices.ndim - batch
    middle = axis - batch
    order = (
        (0,)
        + tuple(range(1 + index_rank, 1 + index_rank + middle))
        + tuple(range(1, 1 + index_rank))
        + tuple(range(1 + index_rank + middle, picked.ndim))
    )
    result = picked.transpose(order)  # [B, *D[batch:axis], *I[batch:], *D[axis+1:]]
    return result.reshape(lead + result.shape[1:])


def gather_along_axis(
    x: np.ndarray, indices: np.ndarray, axis: int = 0, validate_indices: bool = False
) -> np.ndarray:
    """Pick ``out[..., i, ...] = x[..., indices[..., i, ...], ...]`` along ``axis``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        indices: ``tensor<int32, [*K]>``, same rank as x, ``K[j] == D[j]`` off ``axis``.
        output: ``tensor<T, [*K]>``.

    Negative indices count from the end; indices outside ``[-D[axis], D[axis])`` raise.
    """
    op = "gather_along_axis"
    x, indices = np.asarray(x), np.asarray(indices)
    check_rank(x, op=op, minimum=1)
    axis = normalize_axis(axis, x.ndim, op=op)
    as_bool(validate_indices, op=op, param="validate_indices")
    if indices.ndim != x.ndim or any(
        i != d for j, (i, d) in enumerate(zip(indices.shape, x.shape)) if j != axis
    ):
        raise ShapeError(
            f"{op}: indices shape {list(indices.shape)} must equal x shape {list(x.shape)} "
            f"except on axis {axis}"
        )
    positions = _checked_indices(op, indices, x.shape[axis])
    return np.take_along_axis(x, positions, axis=axis)


PAD_MODES = ("constant", "reflect", "replicate")


def pad(
    x: np.ndarray, pad: np.ndarray, mode: str = "constant", constant_val: float = 0.0
) -> np.ndarray:
    """Pad the last ``len(pad) / 2`` dims of x.

    ``pad = [before_0, after_0, before_1, after_1, ...]`` applies to the trailing dims in
    order. ``reflect`` mirrors without repeating the edge (each pad at most D-1),
    ``replicate`` repeats the edge element (each pad at most D), ``constant`` fills with
    ``constant_val``.

    Shapes:
        x: ``tensor<T, [*D]>``.
        pad: ``tensor<int32, [2N]>``, N <= rank(x).
        output: ``tensor<T, [*D with D[i] + before_i + after_i on the last N dims]>``.

    Args:
        x: the input.
        pad: the amounts (required, non-negative).
        mode: one of :data:`PAD_MODES`; default ``constant``.
        constant_val: fill value for ``constant``; default 0.

    Raises:
        ParameterShapeError: an odd number of entries, or more than 2 * rank(x).
        OpParameterError: a negative entry, or too much padding for reflect/replicate.
        UnsupportedOpError: unknown mode.

    Example:
        x = [1, 2, 3], pad = [2, 1]: reflect gives [3, 2, 1, 2, 3, 2], replicate
        [1, 1, 1, 2, 3, 3].
    """
    op = "pad"
    x = np.asarray(x)
    amounts = as_int_tuple(pad, op=op, param="pad")
    mode = as_str(mode, op=op, param="mode", choices=PAD_MODES)
    if len(amounts) % 2 or len(amounts) > 2 * x.ndim:
        raise ParameterShapeError(
            f"{op}: pad={list(amounts)} must have an even number of entries, at most "
            f"2 * rank(x) = {2 * x.ndim}"
        )
    if amounts and min(amounts) < 0:
        raise OpParameterError(f"{op}: pad={list(amounts)} has a negative entry")

    count = len(amounts) // 2
    pairs = tuple((amounts[2 * i], amounts[2 * i + 1]) for i in range(count))
    widths = ((0, 0),) * (x.ndim - count) + pairs
    element_count(
        [d + b + a for d, (b, a) in zip(x.shape, widths)],
        name=f"{op}: output of x {list(x.shape)}",
    )

    if mode == "constant":
        fill = np.asarray(constant_val).astype(x.dtype)
        return np.pad(x, widths, mode="constant", constant_values=fill)

    limit_offset = 1 if mode == "reflect" else 0
    for axis, (before, after) in zip(range(x.ndim - count, x.ndim), pairs):
        limit = x.shape[axis] - limit_offset
        if (before or after) and max(before, after) > limit:
            raise OpParameterError(
                f"{op}: {mode} padding {[before, after]} on axis {axis} exceeds {limit}, the "
                f"maximum for size {x.shape[axis]}"
            )
    return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")


def tile(x: np.ndarray, reps: np.ndarray) -> np.ndarray:
    """Repeat x ``reps[i]`` times along each axis i.

    Shapes:
        x: ``tensor<T, [*D]>``.
        reps: ``tensor<int32, [rank(x)]>``.
        output: ``tensor<T, [D[i] * reps[i] ...]>``.
    """
    op = "tile"
    x = np.asarray(x)
    counts = as_int_tuple(reps, op=op, param="reps", length=x.ndim, minimum=0)
    element_count([d * r for d, r in zip(x.shape, counts)], name=f"{op}: output")
    return np.tile(x, counts)


def crop(x: np.ndarray, crop_height: np.ndarray, crop_width: np.ndarray) -> np.ndarray:
    """Remove ``crop_height = [top, bottom]`` rows and ``crop_width = [left, right]`` columns.

    Shapes:
        x: ``tensor<T, [*D, H, W]>``, rank at least 3.
        crop_height, crop_width: ``tensor<int32, [2]>`` (required).
        output: ``tensor<T, [*D, H - top - bottom, W - left - right]>``.

    Raises:
        OpParameterError: a negative amount, or crops that remove a whole dim.
    """
    op = "crop"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=3)
    top, bottom = as_int_tuple(crop_height, op=op, param="crop_height", length=2, minimum=0)
    left, right = as_int_tuple(crop_width, op=op, param="crop_width", length=2, minimum=0)
    height, width = x.shape[-2:]
    if top + bottom >= height or left + right >= width:
        raise OpParameterError(
            f"{op}: crop_height {[top, bottom]} and crop_width {[left, right]} leave nothing of "
            f"the last two dims {[height, width]}"
        )
    return x[..., top : height - bottom, left : width - right]


def shape_(x: np.ndarray) -> np.ndarray:
    """Return x's shape as ``tensor<int32, [rank(x)]>`` (MIL ``shape``)."""
    return np.asarray(np.shape(x), dtype=np.int32)
