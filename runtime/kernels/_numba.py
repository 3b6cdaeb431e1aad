"""Compiled loops of the sparse kernels.

Two families:

- ``*_gemv``/``*_gemm`` streaming kernels (AVX-512 only, see :mod:`._simd`) compute
  ``y = W x`` directly from the compressed layout, decoding 16 values per step. All tokens run
  in one parallel loop over rows, so a row's mask and values stay in cache between tokens.
- ``*_decode_*`` kernels write rows of the decoded fp32 weight into a buffer, so that callers
  can multiply cache-sized tiles with BLAS. The ``*_decode_simd`` variants need AVX-512; the
  ``*_decode_scalar`` variants compile everywhere and handle every group layout.

All kernels take the value payload as the same run of arguments, ``mode, data16, data32,
codes, table, width, scale, offset, rounding`` (see :class:`.formats.Payload`), and the
group map as ``row_group`` plus ``chunk_group`` or ``column_group``. The group of a value is
``row_group[r] + column_group[c]``.

Compiled with ``cache=False``: nothing is written to disk, and the first call of each kernel
compiles it (about a second per kernel).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._simd import (
    LANES,
    prefetch,
    vexpand_f16_pair,
    half_to_float,
    popcount,
    round_to_half,
    trailing_zeros,
    vexpand,
    vexpand_index,
    vfma,
    vgather,
    vhsum,
    vkeep,
    vload,
    vload_f16,
    vload_i8,
    vload_index,
    vload_indexed,
    vload_pieces,
    vload_u8,
    vmul,
    vpermute,
    vround_f16,
    vsplat,
    vsplat_pieces,
    vstore,
    vstore_folded,
    vstore_pieces,
    vsub,
    vzero,
    vadd,
)
from .formats import AFFINE_INT8, FLOAT16, FLOAT32, LUT, LUT16, ROUND_PRODUCT, ROUND_SHIFT

# Reassociation lets LLVM split the accumulations; NaN and infinity keep IEEE semantics.
_FASTMATH = {"contract", "reassoc"}


# ---------------------------------------------------------------------------------------------
# Value decoding


@njit(cache=False, inline="always")
def _value(mode, data16, data32, codes, table, width, scale, offset, rounding, p, g):
    """Decode stored value ``p`` of group ``g`` to fp32."""
    if mode == FLOAT16:
        return half_to_float(data16[p])
    if mode == FLOAT32:
        return data32[p]
    if mode == LUT16 or mode == LUT:
        return table[g * width + np.int64(codes[p])]
    if mode == AFFINE_INT8:
        code = np.float32(np.int8(codes[p]))
    else:
        code = np.float32(codes[p])
    shifted = code - offset[g]
    if rounding & ROUND_SHIFT:
        shifted = round_to_half(shifted)
    value = shifted * scale[g]
    if rounding & ROUND_PRODUCT:
        value = round_to_half(value)
    return value


@njit(cache=False, inline="always")
def _vector(mode, data16, data32, codes, p, table_vector, table, gather_base, offset_vector, scale_vector, rounding):
    """Decode stored values ``p .. p+15`` with per-lane group operands."""
    if mode == FLOAT16:
        return vload_f16(data16, p)
    if mode == FLOAT32:
        return vload(data32, p)
    if mode == LUT16:
        return vpermute(table_vector, vload_index(codes, p))
    if mode == LUT:
        return vgather(table, gather_base, vload_index(codes, p))
    if mode == AFFINE_INT8:
        code = vload_i8(codes, p)
    else:
        code = vload_u8(codes, p)
    shifted = vsub(code, offset_vector)
    if rounding & ROUND_SHIFT:
        shifted = vround_f16(shifted)
    value = vmul(shifted, scale_vector)
    if rounding & ROUND_PRODUCT:
        value = vround_f16(value)
    return value


@njit(cache=False, inline="always")
def _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, p, g):
    """Decode stored values ``p .. p+15``, all of group ``g``."""
    table_vector = vzero()
    offset_vector = vzero()
    scale_vector = vzero()
    if mode == LUT16:
        table_vector = vload(table, g * LANES)
    elif mode > LUT:
        offset_vector = vsplat(offset[g])
        scale_vector = vsplat(scale[g])
    return _vector(mode, data16, data32, codes, p, table_vector, table, g * width, offset_vector, scale_vector, rounding)


# Software prefetch distance in bytes of fp16 values. On the benchmark machine (Zen 4) it cut
# the single-thread time of a 4096x11008 fp16 layer streamed from memory by a quarter. In the
# one-step loop of the other formats the extra instructions cost more than they saved.
_PREFETCH_BYTES = 2048


# Prefetch distance in bytes of 4-bit LUT codes (one byte each), issued every 8 steps. Measured
# with the dense product run in between, so that the weight comes from memory: 4096x11008 at
# 50% density took 15-20% less time with it, and 512 to 2048 bytes all helped.
_PREFETCH_CODES = 1024


@njit(cache=False, inline="always")
def _low_lanes(count):
    """Mask with the low ``count`` of 16 bits set."""
    return np.uint32((1 << count) - 1)


# ---------------------------------------------------------------------------------------------
# Bitmask layout


@njit(parallel=True, fastmath=_FASTMATH, cache=False)
def bitmask_gemv(
    chunk_masks, row_start, n_chunks, row_group, chunk_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    x, y,
):  # fmt: skip
    """``y[r] = sum_c W[r, c] * x[c]`` for x of ``n_chunks * 16`` columns (AVX-512)."""
    rows = row_start.size - 1
    for r in prange(rows):
        p = row_start[r]
        # A row view keeps the index non-negative, so numba emits no wraparound arithmetic.
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        row_base = row_group[r]
        # Four accumulators, rotated every chunk, hide the latency of the fused multiply-add.
        acc0 = vzero()
        acc1 = vzero()
        acc2 = vzero()
        acc3 = vzero()
        for k in range(n_chunks):
            mask = row_masks[k]
            value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_base + chunk_group[k])
            p += popcount(mask)
            updated = vfma(vexpand(value, mask), vload(x, k * LANES), acc3)
            acc3 = acc2
            acc2 = acc1
            acc1 = acc0
            acc0 = updated
        y[r] = vhsum(vadd(vadd(acc0, acc1), vadd(acc2, acc3)))


@njit(parallel=True, fastmath=_FASTMATH, cache=False)
def bitmask_gemv_lut16(chunk_masks, row_start, n_chunks, row_group, codes, table, x, y):
    """``y[r] = sum_c W[r, c] * x[c]`` for 4-bit LUT values whose table depends on the row only
    (AVX-512 VBMI2).

    The row's 16-entry table stays in a register. Each 16-column step expands the byte codes
    and then looks them up, zeroing the lanes of pruned weights. On a Zen 4 core this ran 5 to
    9% faster than looking up 16 codes and expanding the 16 floats.
    """
    rows = row_start.size - 1
    for r in prange(rows):
        p = row_start[r]
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        lut = vload(table, row_group[r] * LANES)
        acc0 = vzero()
        acc1 = vzero()
        acc2 = vzero()
        acc3 = vzero()
        for k in range(n_chunks):
            mask = row_masks[k]
            if k % 8 == 0:
                prefetch(codes, p + _PREFETCH_CODES)
            value = vkeep(vpermute(lut, vexpand_index(codes, p, mask)), mask)
            p += popcount(mask)
            updated = vfma(value, vload(x, k * LANES), acc3)
            acc3 = acc2
            acc2 = acc1
            acc1 = acc0
            acc0 = updated
        y[r] = vhsum(vadd(vadd(acc0, acc1), vadd(acc2, acc3)))


@njit(parallel=True, fastmath=_FASTMATH, cache=False)
def bitmask_gemv_fp16(chunk_masks, row_start, n_chunks, data16, x, y):
    """``y[r] = sum_c W[r, c] * x[c]`` for fp16 values (AVX-512 VBMI2).

    One vpexpandw expands the values of two 16-column steps, and the values are prefetched
    :data:`_PREFETCH_BYTES` ahead. ``data16`` needs 32 spare entries.
    """
    rows = row_start.size - 1
    for r in prange(rows):
        p = row_start[r]
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        acc0 = vzero()
        acc1 = vzero()
        acc2 = vzero()
        acc3 = vzero()
        for pair in range(n_chunks // 2):
            k = 2 * pair
            if pair % 2 == 0:
                prefetch(data16, p + _PREFETCH_BYTES // 2)
            mask = np.uint32(row_masks[k]) | (np.uint32(row_masks[k + 1]) << np.uint32(16))
            low, high = vexpand_f16_pair(data16, p, mask)
            p += popcount(mask)
            updated0 = vfma(low, vload(x, k * LANES), acc2)
            updated1 = vfma(high, vload(x, k * LANES + LANES), acc3)
            acc2 = acc0
            acc3 = acc1
            acc0 = updated0
            acc1 = updated1
        if n_chunks % 2 == 1:
            k = n_chunks - 1
            mask = row_masks[k]
            acc0 = vfma(vexpand(vload_f16(data16, p), mask), vload(x, k * LANES), acc0)
        y[r] = vhsum(vadd(vadd(acc0, acc1), vadd(acc2, acc3)))


@njit(parallel=True, fastmath=_FASTMATH, cache=False)
def indexed_gemm(
    panel_start, n_panels, value_columns, row_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    x, x_stride, y, y_stride,
):  # fmt: skip
    """``y[t, r] += sum_c W[r, c] * x[t, c]`` from each stored value's column (AVX-512).

    Work is proportional to the number of stored values, not to the dense size, which pays off
    at low density. The values come in column panels (:class:`.formats.ColumnPanels`): all rows
    of one panel run before the next, so the panel's inputs stay in cache. Groups must depend
    on the row only. ``x`` and ``y`` are the flat views of ``[tokens, x_stride]`` and
    ``[tokens, y_stride]``. Each panel adds to ``y``, so ``y`` must start at zero.
    """
    tokens = x.size // x_stride
    rows = (panel_start.size - 1) // n_panels
    for panel in range(n_panels):
        for r in prange(rows):
            first = panel_start[panel * rows + r]
            count = panel_start[panel * rows + r + 1] - first
            full = count - count % LANES
            group = row_group[r]
            tail = _low_lanes(count - full)
            for token in range(tokens):
                base = token * x_stride
                acc0 = vzero()
                acc1 = vzero()
                for step in range(0, full, LANES):
                    value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, first + step, group)
                    updated = vfma(value, vload_indexed(x, base, value_columns, first + step), acc1)
                    acc1 = acc0
                    acc0 = updated
                if full < count:
                    # Lanes past the row's values read other rows' inputs. Both operands are
                    # zeroed there, so an infinite input cannot make this row NaN.
                    value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, first + full, group)
                    inputs = vload_indexed(x, base, value_columns, first + full)
                    acc0 = vfma(vkeep(value, tail), vkeep(inputs, tail), acc0)
                y[token * y_stride + r] += vhsum(vadd(acc0, acc1))


@njit(parallel=True, fastmath=_FASTMATH, cache=False)
def bitmask_gemm4(
    chunk_masks, row_start, n_chunks, row_group, chunk_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    x, y,
):  # fmt: skip
    """``y[t, r] = sum_c W[r, c] * x[t, c]`` for tokens in groups of 4 (AVX-512).

    ``x`` is the flat view of ``[tokens, n_chunks * 16 + 16]`` with ``tokens`` a multiple of 4,
    and ``y`` the flat view of ``[tokens, rows]``. Each chunk is decoded once per 4 tokens.
    """
    rows = row_start.size - 1
    stride = n_chunks * LANES + LANES
    tokens = x.size // stride
    for r in prange(rows):
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        row_base = row_group[r]
        for first in range(0, tokens, 4):
            p = row_start[r]
            acc0 = vzero()
            acc1 = vzero()
            acc2 = vzero()
            acc3 = vzero()
            for k in range(n_chunks):
                mask = row_masks[k]
                value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_base + chunk_group[k])
                p += popcount(mask)
                weights = vexpand(value, mask)
                column = first * stride + k * LANES
                acc0 = vfma(weights, vload(x, column), acc0)
                acc1 = vfma(weights, vload(x, column + stride), acc1)
                acc2 = vfma(weights, vload(x, column + 2 * stride), acc2)
                acc3 = vfma(weights, vload(x, column + 3 * stride), acc3)
            y[first * rows + r] = vhsum(acc0)
            y[(first + 1) * rows + r] = vhsum(acc1)
            y[(first + 2) * rows + r] = vhsum(acc2)
            y[(first + 3) * rows + r] = vhsum(acc3)


@njit(parallel=True, cache=False)
def bitmask_decode_simd(
    chunk_masks, row_start, n_chunks, row_group, chunk_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    first_row, stride, out,
):  # fmt: skip
    """Write rows ``first_row ..`` of the decoded weight to ``out`` (AVX-512).

    ``out`` is the flat view of a ``[n, stride]`` fp32 buffer with ``stride >= n_chunks * 16``;
    the first ``n_chunks * 16`` columns of every row are written.
    """
    n = out.size // stride
    for i in prange(n):
        r = first_row + i
        p = row_start[r]
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        row_base = row_group[r]
        for k in range(n_chunks):
            mask = row_masks[k]
            value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_base + chunk_group[k])
            p += popcount(mask)
            vstore(out, i * stride + k * LANES, vexpand(value, mask))


@njit(parallel=True, cache=False)
def bitmask_decode_scalar(
    chunk_masks, row_start, n_chunks, row_group, column_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    first_row, out,
):  # fmt: skip
    """Write rows ``first_row ..`` of the decoded weight to ``out`` ``[n, n_chunks * 16]``."""
    for i in prange(out.shape[0]):
        r = first_row + i
        out[i, :] = 0.0
        p = row_start[r]
        row_masks = chunk_masks[r * n_chunks : (r + 1) * n_chunks]
        row_base = row_group[r]
        for k in range(n_chunks):
            mask = np.uint32(row_masks[k])
            while mask != 0:
                c = k * LANES + trailing_zeros(mask)
                out[i, c] = _value(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_base + column_group[c])
                p += 1
                mask &= mask - np.uint32(1)


# ---------------------------------------------------------------------------------------------
# Row-block layout


def _make_row_blocks_gemm(block: int):
    per_step = LANES // block

    @njit(parallel=True, fastmath=_FASTMATH, cache=False)
    def row_blocks_gemm(
        kept_columns, block_start, block_group, lane_scale, lane_offset,
        mode, data16, data32, codes, table, width, scale, offset, rounding,
        x, x_stride, y, y_stride,
    ):  # fmt: skip
        """``y[t, r] = sum_c W[r, c] * x[t, c]`` for blocks of ``block`` rows (AVX-512).

        ``x`` and ``y`` are the flat views of ``[tokens, x_stride]`` and ``[tokens, y_stride]``
        with ``y_stride >= n_row_blocks * block``. ``block_group`` is the single LUT group of
        each row block; ``lane_scale``/``lane_offset`` hold 16 lanes per row block, lane
        ``j * block + i`` for row i of the block.
        """
        n_blocks = block_start.size - 1
        tokens = x.size // x_stride
        for rb in prange(n_blocks):
            first = block_start[rb]
            count = block_start[rb + 1] - first
            group = block_group[rb]
            table_vector = vzero()
            offset_vector = vzero()
            scale_vector = vzero()
            if mode == LUT16:
                table_vector = vload(table, group * LANES)
            elif mode > LUT:
                offset_vector = vload(lane_offset, rb * LANES)
                scale_vector = vload(lane_scale, rb * LANES)
            for token in range(tokens):
                base = token * x_stride
                acc0 = vzero()
                acc1 = vzero()
                for step in range(0, count, per_step):
                    entry = first + step
                    value = _vector(mode, data16, data32, codes, entry * block, table_vector, table, group * width, offset_vector, scale_vector, rounding)
                    lanes = min(count - step, per_step) * block
                    updated = vfma(vexpand(value, _low_lanes(lanes)), vsplat_pieces(x, base, kept_columns, entry, block), acc1)
                    acc1 = acc0
                    acc0 = updated
                vstore_folded(y, token * y_stride + rb * block, vadd(acc0, acc1), block)

    return row_blocks_gemm


def _make_row_blocks_decode(block: int):
    per_step = LANES // block

    @njit(parallel=True, cache=False)
    def row_blocks_decode(
        kept_columns, block_start, block_group, lane_scale, lane_offset,
        mode, data16, data32, codes, table, width, scale, offset, rounding,
        first_block, stride, out,
    ):  # fmt: skip
        """Write the rows of blocks ``first_block ..`` to ``out``, the flat view of
        ``[n_blocks * block, stride]`` (AVX-512, same group rules as the gemv)."""
        n_blocks = out.size // (block * stride)
        for i in prange(n_blocks):
            rb = first_block + i
            base = i * block * stride
            out[base : base + block * stride] = 0.0
            first = block_start[rb]
            count = block_start[rb + 1] - first
            group = block_group[rb]
            table_vector = vzero()
            offset_vector = vzero()
            scale_vector = vzero()
            if mode == LUT16:
                table_vector = vload(table, group * LANES)
            elif mode > LUT:
                offset_vector = vload(lane_offset, rb * LANES)
                scale_vector = vload(lane_scale, rb * LANES)
            for step in range(0, count, per_step):
                entry = first + step
                value = _vector(mode, data16, data32, codes, entry * block, table_vector, table, group * width, offset_vector, scale_vector, rounding)
                vstore_pieces(out, base, stride, kept_columns, entry, min(count - step, per_step), block, value)

    return row_blocks_decode


@njit(parallel=True, cache=False)
def row_blocks_decode_scalar(
    block, kept_columns, block_start, rows, row_group, column_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    first_block, out,
):  # fmt: skip
    """Write the rows of blocks ``first_block ..`` to ``out`` ``[n_blocks * block, columns]``."""
    n_blocks = out.shape[0] // block
    for i in prange(n_blocks):
        rb = first_block + i
        for lane in range(block):
            out[i * block + lane, :] = 0.0
        for entry in range(block_start[rb], block_start[rb + 1]):
            c = kept_columns[entry]
            for lane in range(block):
                r = rb * block + lane
                if r < rows:
                    p = entry * block + lane
                    out[i * block + lane, c] = _value(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_group[r] + column_group[c])


# ---------------------------------------------------------------------------------------------
# Column-block layout


def _make_column_blocks_gemm(block: int):
    per_step = LANES // block

    @njit(parallel=True, fastmath=_FASTMATH, cache=False)
    def column_blocks_gemm(
        block_columns, row_start, row_group,
        mode, data16, data32, codes, table, width, scale, offset, rounding,
        x, x_stride, y, y_stride,
    ):  # fmt: skip
        """``y[t, r] = sum_c W[r, c] * x[t, c]`` for rows of blocks of ``block`` columns
        (AVX-512). Groups must depend on the row only. ``x`` and ``y`` are the flat views of
        ``[tokens, x_stride]`` and ``[tokens, y_stride]``.
        """
        rows = row_start.size - 1
        tokens = x.size // x_stride
        for r in prange(rows):
            first = row_start[r]
            count = row_start[r + 1] - first
            group = row_group[r]
            for token in range(tokens):
                base = token * x_stride
                acc0 = vzero()
                acc1 = vzero()
                for step in range(0, count, per_step):
                    entry = first + step
                    value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, entry * block, group)
                    lanes = min(count - step, per_step) * block
                    updated = vfma(vexpand(value, _low_lanes(lanes)), vload_pieces(x, base, block_columns, entry, block), acc1)
                    acc1 = acc0
                    acc0 = updated
                y[token * y_stride + r] = vhsum(vadd(acc0, acc1))

    return column_blocks_gemm


def _make_column_blocks_decode(block: int):
    per_step = LANES // block

    @njit(parallel=True, cache=False)
    def column_blocks_decode(
        block_columns, row_start, row_group,
        mode, data16, data32, codes, table, width, scale, offset, rounding,
        first_row, stride, out,
    ):  # fmt: skip
        """Write rows ``first_row ..`` to ``out``, the flat view of ``[n, stride]`` with
        ``stride >= columns_padded + 16`` (AVX-512; groups must depend on the row only). Blocks
        that run past the last column write filler values into the spare columns."""
        n = out.size // stride
        for i in prange(n):
            r = first_row + i
            base = i * stride
            out[base : base + stride] = 0.0
            first = row_start[r]
            count = row_start[r + 1] - first
            group = row_group[r]
            for step in range(0, count, per_step):
                entry = first + step
                value = _group_vector(mode, data16, data32, codes, table, width, scale, offset, rounding, entry * block, group)
                vstore_pieces(out, base, 1, block_columns, entry, min(count - step, per_step), block, value)

    return column_blocks_decode


@njit(parallel=True, cache=False)
def column_blocks_decode_scalar(
    block, block_columns, row_start, columns, row_group, column_group,
    mode, data16, data32, codes, table, width, scale, offset, rounding,
    first_row, out,
):  # fmt: skip
    """Write rows ``first_row ..`` of the decoded weight to ``out`` ``[n, columns_padded]``."""
    for i in prange(out.shape[0]):
        r = first_row + i
        out[i, :] = 0.0
        row_base = row_group[r]
        for entry in range(row_start[r], row_start[r + 1]):
            start = block_columns[entry]
            for lane in range(block):
                c = start + lane
                if c < columns:
                    p = entry * block + lane
                    out[i, c] = _value(mode, data16, data32, codes, table, width, scale, offset, rounding, p, row_base + column_group[c])


BLOCK_WIDTHS = (2, 4, 8, 16)
_ROW_BLOCK_GEMM = {}
_COLUMN_BLOCK_GEMM = {}
_ROW_BLOCK_DECODE = {}
_COLUMN_BLOCK_DECODE = {}


def row_blocks_gemm(block: int):
    """Return the compiled row-block streaming kernel for ``block`` in :data:`BLOCK_WIDTHS`."""
    if block not in _ROW_BLOCK_GEMM:
        _ROW_BLOCK_GEMM[block] = _make_row_blocks_gemm(block)
    return _ROW_BLOCK_GEMM[block]


def column_blocks_gemm(block: int):
    """Return the compiled column-block streaming kernel for ``block`` in :data:`BLOCK_WIDTHS`."""
    if block not in _COLUMN_BLOCK_GEMM:
        _COLUMN_BLOCK_GEMM[block] = _make_column_blocks_gemm(block)
    return _COLUMN_BLOCK_GEMM[block]


def row_blocks_decode(block: int):
    """Return the compiled row-block decode kernel for ``block`` in :data:`BLOCK_WIDTHS`."""
    if block not in _ROW_BLOCK_DECODE:
        _ROW_BLOCK_DECODE[block] = _make_row_blocks_decode(block)
    return _ROW_BLOCK_DECODE[block]


def column_blocks_decode(block: int):
    """Return the compiled column-block decode kernel for ``block`` in :data:`BLOCK_WIDTHS`."""
    if block not in _COLUMN_BLOCK_DECODE:
        _COLUMN_BLOCK_DECODE[block] = _make_column_blocks_decode(block)
    return _COLUMN_BLOCK_DECODE[block]
