"""Block layouts: which parameter block (scale, offset or LUT) each dense element uses.

A parameter tensor of shape ``groups`` applies to a dense tensor of shape ``shape`` when
every ``groups[k]`` divides ``shape[k]``. Along axis ``k`` the blocks are contiguous runs of
``shape[k] // groups[k]`` positions (numpy ``repeat`` semantics), so element ``(i_0, ...)``
uses parameter ``(i_0 // B_0, ...)``.

The decode kernels walk the dense tensor row by row. To keep the rows long, the layout drops
axes of size 1 and merges adjacent axes whenever the merged axis still maps onto the
parameters by one block size and one stride. A per-channel scale ``[4096, 1]`` on a weight
``[4096, 11008]`` becomes one axis of 45M elements in blocks of 11008; a per-block scale
``[4096, 344]`` becomes one axis in blocks of 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["BlockLayout", "block_layout", "row_count", "row_bases", "next_row"]


@dataclass(frozen=True)
class BlockLayout:
    """Merged axes of a dense tensor and their parameter blocks, as int64 arrays of equal length.

    Attributes:
        dims: size of each merged axis; the last one is the row the kernels loop over.
        blocks: block size along each axis.
        param_strides: step in the flat parameter array from one block to the next.
        strides: step in the flat source array from one element to the next.
    """

    dims: np.ndarray
    blocks: np.ndarray
    param_strides: np.ndarray
    strides: np.ndarray


def _contiguous_strides(shape: Sequence[int]) -> list[int]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return strides[::-1]


def block_layout(
    shape: Sequence[int],
    groups: Sequence[int],
    *,
    entries: int = 1,
    strides: Sequence[int] | None = None,
) -> BlockLayout:
    """Describe how a dense tensor of ``shape`` maps onto a C-ordered parameter tensor.

    Args:
        shape: dense shape, every dimension at least 1.
        groups: parameter shape of the same rank; ``groups[k]`` divides ``shape[k]``.
        entries: flat parameter entries per parameter element (the padded palette length
            of a LUT, 1 for a scale).
        strides: element strides of the source array over ``shape``; C-contiguous when
            omitted. A stride of 0 repeats a source element along that axis.

    Returns:
        The merged layout. A shape of only ones gives one axis of size 1.
    """
    if strides is None:
        strides = _contiguous_strides(shape)

    param_strides, step = [0] * len(shape), entries
    for axis in reversed(range(len(shape))):
        param_strides[axis] = step if groups[axis] > 1 else 0
        step *= groups[axis]

    merged: list[list[int]] = []
    for axis, size in enumerate(shape):
        if size == 1:
            continue
        block = size // groups[axis]
        axis_entry = [size, block, param_strides[axis], strides[axis]]
        if merged:
            outer_size, outer_block, outer_param_stride, outer_stride = merged[-1]
            if outer_stride == strides[axis] * size:
                if block == size:
                    # One block along this axis: the outer blocks grow by the whole axis.
                    merged[-1] = [outer_size * size, outer_block * size, outer_param_stride, strides[axis]]
                    continue
                if outer_block == 1:
                    # One element per outer block: outer index and inner block index
                    # combine into one C-ordered block index.
                    merged[-1] = [outer_size * size, block, param_strides[axis], strides[axis]]
                    continue
        merged.append(axis_entry)

    if not merged:
        merged = [[1, 1, 0, 0]]
    columns = np.array(merged, dtype=np.int64).T
    return BlockLayout(
        dims=np.ascontiguousarray(columns[0]),
        blocks=np.ascontiguousarray(columns[1]),
        param_strides=np.ascontiguousarray(columns[2]),
        strides=np.ascontiguousarray(columns[3]),
    )


@numba.njit(inline="always")
def row_count(dims: np.ndarray) -> int:
    """Return the number of rows of a layout: the product of all axes but the last."""
    rows = 1
    for axis in range(dims.size - 1):
        rows *= dims[axis]
    return rows


@numba.njit(inline="always")
def row_bases(counter: np.ndarray, blocks: np.ndarray, param_strides: np.ndarray, strides: np.ndarray):
    """Return the parameter offset and the source offset of the row at ``counter``.

    ``counter`` contains the index along every axis but the last.
    """
    param_base = 0
    base = 0
    for axis in range(counter.size):
        param_base += (counter[axis] // blocks[axis]) * param_strides[axis]
        base += counter[axis] * strides[axis]
    return param_base, base


@numba.njit(inline="always")
def next_row(counter: np.ndarray, dims: np.ndarray) -> None:
    """Advance ``counter`` to the next row in C order."""
    axis = counter.size - 1
    while axis >= 0:
        counter[axis] += 1
        if counter[axis] < dims[axis]:
            return
        counter[axis] = 0
        axis -= 1
