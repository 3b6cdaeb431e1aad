"""Decoders of the palettization ops: look each index up in a lookup table (LUT).

A palettized weight stores, per element, the position of its value in a small table, the
LUT (``lut`` in MIL). With a 2-bit LUT ``[a, b, c, d]`` the weight ``[[c, a], [d, c]]`` is
stored as indices ``[[2, 0], [3, 2]]``.

- iOS16 ``constexpr_lut_to_dense``: one LUT ``T[NUM]`` per tensor, the indices packed
  LSB-first into bytes, and the dense shape as a parameter.
- iOS18 ``constexpr_lut_to_dense``: ``lut`` has shape ``[G_0, ..., G_K-1, NUM, VS]`` for
  indices of shape ``[d_0, ..., d_K-1]``. Along axis k the LUTs cover contiguous blocks of
  ``d_k / G_k`` indices. With a vector size VS > 1 each index selects VS values, written
  consecutively along ``vector_axis``, whose size is multiplied by VS in the output:
  ``out[.., a*VS + v, ..] = lut[group, indices[.., a, ..], v]``, the group being taken in
  indices coordinates.
- iOS18 ``constexpr_lut_to_sparse``: the same lookup for the indices of a sparse tensor. It
  returns the mask of the looked-up tensor (each mask element repeated VS times along
  ``vector_axis``) and its values at the set mask positions, in C order of that tensor.

The two dense decoders write into a caller's ``out`` array when given one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from .. import bitpack
from ..errors import ParameterShapeError, ShapeError, UnknownDtypeError
from ..limits import DEFAULT_MAX_ELEMENTS, element_count
from ._blocks import BlockLayout, block_layout, next_row, row_bases, row_count
from ._checks import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    bits_view,
    byte_mask,
    describe,
    integer_scalar,
    normalize_axis,
    output_array,
    require_dtype,
    require_finite,
    require_rank,
)
from ._simd import VECTOR_BYTES, lookup_vector, vector_lanes
from .sparse import check_byte_mask, dense_shape, scatter_byte_mask

__all__ = [
    "LUT_TO_DENSE",
    "LUT_TO_SPARSE",
    "LUT_DTYPES",
    "INDEX_BITS",
    "IOS16_LUT_SIZES",
    "lut_to_dense_ios16",
    "lut_to_dense_ios18",
    "lut_to_sparse",
]

LUT_TO_DENSE = "constexpr_lut_to_dense"
LUT_TO_SPARSE = "constexpr_lut_to_sparse"

# T of the LUT ops.
LUT_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES
# Widths of IndicesT (uint1, uint2, uint3, uint4, uint6, uint8) of the iOS18 ops.
INDEX_BITS = (1, 2, 3, 4, 6, 8)
# Allowed LUT sizes of the iOS16 op, whose indices cannot be 3 bits wide.
IOS16_LUT_SIZES = (2, 4, 16, 64, 256)

_INDEX_DTYPE = np.dtype(np.uint8)


@numba.njit(nogil=True)
def _lookup_segment(tables, table_start, codes, code_start, out, out_start, count, vectorized):
    done = 0
    if vectorized:
        lanes = vector_lanes(out)
        while done + lanes <= count:
            lookup_vector(tables, table_start, codes, code_start + done, out, out_start + done)
            done += lanes
    for k in range(done, count):
        # uint64 indices: numba skips its negative-index wraparound on them.
        out[np.uint64(out_start + k)] = tables[np.uint64(table_start + codes[np.uint64(code_start + k)])]


@numba.njit(nogil=True)
def _lookup_rows(codes, tables, out, dims, blocks, table_strides, strides, vectorized):
    last = dims.size - 1
    length, block = dims[last], blocks[last]
    table_step, step = table_strides[last], strides[last]
    counter = np.zeros(last, np.int64)
    for row in range(row_count(dims)):
        table, base = row_bases(counter, blocks, table_strides, strides)
        out_base = row * length
        for start in range(0, length, block):
            count = min(block, length - start)
            if step == 1:
                _lookup_segment(tables, table, codes, base + start, out, out_base + start, count, vectorized)
            else:
                # The innermost axis is the vector axis: one index, a new LUT column per block.
                code = codes[base]
                for k in range(count):
                    out[np.uint64(out_base + start + k)] = tables[np.uint64(table + code)]
            table += table_step
        next_row(counter, dims)


@numba.njit(nogil=True)
def _lookup_masked_rows(mask, codes, sequential, tables, values, dims, blocks, table_strides, strides):
    # With ``sequential`` the codes are the non-zero data, one per set mask element in C
    # order. Otherwise ``codes`` is dense and has the layout of ``mask``.
    last = dims.size - 1
    length, block = dims[last], blocks[last]
    table_step, step = table_strides[last], strides[last]
    counter = np.zeros(last, np.int64)
    written = 0
    for _ in range(row_count(dims)):
        table, base = row_bases(counter, blocks, table_strides, strides)
        for start in range(0, length, block):
            for column in range(start, min(start + block, length)):
                position = np.uint64(base + column * step)
                if mask[position] != 0:
                    code = codes[written] if sequential else codes[position]
                    values[written] = tables[np.uint64(table + code)]
                    written += 1
            table += table_step
        next_row(counter, dims)


@numba.njit(nogil=True)
def _copy_byte_entries(packed, table, words, out):
    # Packed byte b selects ``words`` consecutive words of the table, written to words
    # [b * words, (b + 1) * words) of the output.
    if words == 1:
        # A plain gather, kept separate because LLVM optimizes it much better.
        for b in range(out.size):
            out[np.uint64(b)] = table[packed[np.uint64(b)]]
        return
    for b in range(out.size // words):
        source = packed[np.uint64(b)] * words
        target = b * words
        for k in range(words):
            out[np.uint64(target + k)] = table[np.uint64(source + k)]


@dataclass(frozen=True)
class _Tables:
    """LUTs laid out for the kernels: one padded row of raw bits per (group, vector element)."""

    entries: np.ndarray
    layout: BlockLayout
    vectorized: bool


def _build_tables(lut: np.ndarray, shape: Sequence[int], vector_axis: int | None) -> _Tables:
    """Lay out a validated ``lut`` for indices of ``shape``.

    Every LUT column (one group, one vector element) becomes a row of ``row`` raw-bit
    entries. A row is padded to the vector lane count when the palette fits in one vector,
    so that :func:`lookup_vector` can read a whole vector from it. With VS > 1 the source
    shape gains an axis of size VS after ``vector_axis``, along which the indices repeat
    (stride 0) and the LUT column changes; the output is C-ordered over that shape.
    """
    palette, vector_size = lut.shape[-2], lut.shape[-1]
    bits = np.dtype(f"u{lut.dtype.itemsize}")
    lanes = VECTOR_BYTES // lut.dtype.itemsize
    vectorized = palette <= lanes
    row = lanes if vectorized else palette

    groups = list(lut.shape[:-2])
    source_shape = list(shape)
    strides = [int(math.prod(shape[axis + 1 :])) for axis in range(len(shape))]
    if vector_size > 1:
        insert = vector_axis + 1
        columns = np.moveaxis(lut, -1, insert)
        groups.insert(insert, vector_size)
        source_shape.insert(insert, vector_size)
        strides.insert(insert, 0)
    else:
        columns = lut[..., 0]

    count = math.prod(groups)
    entries = np.zeros((count, row), dtype=bits)
    entries[:, :palette] = np.ascontiguousarray(columns).view(bits).reshape(count, palette)
    layout = block_layout(source_shape, groups, entries=row, strides=strides)
    return _Tables(entries=entries.reshape(-1), layout=layout, vectorized=vectorized)


def _lookup_dense(codes: np.ndarray, lut: np.ndarray, vector_axis: int | None, out: np.ndarray) -> None:
    if out.size == 0:
        return
    tables = _build_tables(lut, codes.shape, vector_axis)
    layout = tables.layout
    _lookup_rows(
        np.ascontiguousarray(codes).reshape(-1),
        tables.entries,
        out.reshape(-1).view(tables.entries.dtype),
        layout.dims,
        layout.blocks,
        layout.param_strides,
        layout.strides,
        tables.vectorized,
    )


def _lookup_packed(indices: np.ndarray, lut: np.ndarray, nbits: int, out: np.ndarray) -> None:
    """Look up indices packed ``nbits`` (1, 2, 4 or 8) to a byte, one packed byte at a time.

    A 256-row table contains the 8 / nbits LUT values that each possible byte decodes to, so
    every packed byte turns into one row copy, with no unpacked index array.
    """
    per_byte = 8 // nbits
    bits = np.dtype(f"u{lut.dtype.itemsize}")
    shifts = np.arange(per_byte, dtype=np.uint16) * nbits
    codes = (np.arange(256, dtype=np.uint16)[:, None] >> shifts) & ((1 << nbits) - 1)
    table = np.ascontiguousarray(lut.view(bits)[codes])

    entry_bytes = per_byte * lut.dtype.itemsize
    word = np.dtype(f"u{min(8, entry_bytes)}")
    flat = out.reshape(-1).view(bits)
    full = flat.size // per_byte
    if full:
        target = flat[: full * per_byte].view(word)
        _copy_byte_entries(indices, table.view(word).reshape(-1), entry_bytes // word.itemsize, target)
    rest = flat.size - full * per_byte
    if rest:
        flat[full * per_byte :] = table[indices[full], :rest]


def _validate_lut(
    lut: np.ndarray,
    shape: Sequence[int],
    vector_axis: object,
    nbits: int | None,
    *,
    where: str,
) -> int | None:
    """Check an iOS18 ``lut`` against indices of ``shape``.

    Returns:
        ``vector_axis`` in ``[0, K)`` when the vector size is above 1, else None.
    """
    require_dtype(lut, LUT_DTYPES, param="lut", where=where)
    if nbits is not None and nbits not in INDEX_BITS:
        raise UnknownDtypeError(
            f"{where}: the indices are uint{nbits}; expected one of "
            f"{', '.join(f'uint{bits}' for bits in INDEX_BITS)}"
        )
    rank = len(shape)
    if lut.ndim != rank + 2:
        raise ParameterShapeError(
            f"{where}: lut has rank {lut.ndim} (shape {list(lut.shape)}); expected rank {rank + 2}, "
            f"[groups per axis of the rank-{rank} indices..., 2**nbits, vector size]"
        )
    for axis in range(rank):
        groups = lut.shape[axis]
        if groups < 1 or shape[axis] % groups:
            raise ParameterShapeError(
                f"{where}: lut has {groups} groups along axis {axis} (shape {list(lut.shape)}), "
                f"which do not divide the indices dimension {shape[axis]}; expected a divisor"
            )

    palette = lut.shape[-2]
    width = palette.bit_length() - 1
    if palette != 1 << width or width not in INDEX_BITS:
        raise ParameterShapeError(
            f"{where}: lut.shape[-2] is {palette}; expected 2**nbits entries with nbits one of "
            f"{INDEX_BITS}"
        )
    if nbits is not None:
        if palette != 1 << nbits:
            raise ParameterShapeError(
                f"{where}: lut.shape[-2] is {palette}, but the indices are uint{nbits}; "
                f"expected {1 << nbits} LUT entries"
            )

    vector_size = lut.shape[-1]
    if vector_size < 1:
        raise ParameterShapeError(
            f"{where}: lut.shape[-1] (vector size) is {vector_size}; expected at least 1"
        )
    axis = None
    if vector_axis is not None:
        axis = integer_scalar(vector_axis, param="vector_axis", where=where)
        axis = normalize_axis(axis, rank, param="vector_axis", where=where)
    elif vector_size > 1:
        raise ParameterShapeError(
            f"{where}: vector_axis is missing, but lut has vector size {vector_size}; "
            f"expected vector_axis in [{-rank}, {rank})"
        )

    require_finite(lut, param="lut", where=where)
    return axis if vector_size > 1 else None


def _check_codes(codes: np.ndarray, palette: int, *, param: str, where: str) -> None:
    """Raise ParameterShapeError if an index is not below the number of LUT entries."""
    if codes.size == 0 or int(codes.max()) < palette:
        return
    position = tuple(int(i) for i in np.argwhere(codes >= palette)[0])
    raise ParameterShapeError(
        f"{where}: {param} contains {int(codes[position])} at index {list(position)}; "
        f"expected values below {palette}, the number of LUT entries"
    )


def lut_to_dense_ios16(
    indices: np.ndarray,
    lut: np.ndarray,
    shape: Sequence[int] | np.ndarray,
    *,
    name: str = LUT_TO_DENSE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS16 ``constexpr_lut_to_dense`` op.

    Shapes:
        indices: ``tensor<uint8, [ceil(nbits*N/8)]>``, nbits-bit indices packed LSB-first,
            N = prod(shape), nbits = log2(NUM).
        lut: ``tensor<T, [NUM]>``, NUM one of 2, 4, 16, 64, 256; T one of uint8, int8,
            fp16, fp32.
        shape: ``tensor<uint32, [K]>``.
        returns: ``tensor<T, shape>``, ``out[i] = lut[index_i]``.

    The padding bits after the last index are not checked, as Core ML does not check them.

    Args:
        indices: the packed LUT positions.
        lut: the LUT.
        shape: the dense shape.
        name: op name, used in error messages.
        max_elements: largest allowed N.
        out: optional C-contiguous, writeable array of dtype T and shape ``shape`` that
            receives the output and is returned. Every check runs before the first write,
            so a rejected call leaves ``out`` unchanged. An error while decoding, such as
            MemoryError for a temporary array, can leave it partly written.

    Raises:
        ShapeError: ``shape`` is missing or malformed, ``indices`` has the wrong length, or
            ``out`` is not a C-contiguous writeable array of the output shape that shares
            no memory with the inputs.
        ParameterShapeError: ``lut`` is not rank 1 or NUM is not an allowed size.
        NonFiniteError: a floating-point LUT entry is NaN or infinite.
        ElementLimitError: N exceeds ``max_elements``.
        UnknownDtypeError: T or the indices dtype is not allowed, or ``out`` is not of
            dtype T.
    """
    where = describe(LUT_TO_DENSE, name)
    indices = np.asarray(indices)
    lut = np.asarray(lut)
    require_dtype(indices, (_INDEX_DTYPE,), param="indices", where=where)
    require_rank(indices, (1,), param="indices", where=where)
    require_dtype(lut, LUT_DTYPES, param="lut", where=where)
    require_rank(lut, (1,), param="lut", where=where, error=ParameterShapeError)
    if lut.size not in IOS16_LUT_SIZES:
        raise ParameterShapeError(
            f"{where}: lut has {lut.size} entries; expected one of {IOS16_LUT_SIZES}"
        )
    require_finite(lut, param="lut", where=where)

    output_shape = dense_shape(shape, where=where)
    count = element_count(output_shape, name=f"{where}: output", max_elements=max_elements)
    nbits = lut.size.bit_length() - 1
    expected_bytes = bitpack.packed_size(count, nbits)
    if indices.size != expected_bytes:
        raise ShapeError(
            f"{where}: indices has {indices.size} bytes, but shape {list(output_shape)} has "
            f"{count} elements of {nbits} bits; expected {expected_bytes} bytes"
        )

    out = output_array(out, lut.dtype, output_shape, inputs={"indices": indices, "lut": lut}, where=where)
    if nbits in (1, 2, 4, 8):
        _lookup_packed(np.ascontiguousarray(indices), lut, nbits, out)
    else:
        # 6-bit indices straddle bytes: unpack them first.
        codes = bitpack.unpack_bits(indices, nbits, count, name=f"{where}: indices")
        _lookup_dense(codes, lut.reshape(1, lut.size, 1), None, out)
    return out


def lut_to_dense_ios18(
    indices: np.ndarray,
    lut: np.ndarray,
    vector_axis: object = None,
    *,
    nbits: int | None = None,
    name: str = LUT_TO_DENSE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS18 ``constexpr_lut_to_dense`` op.

    Shapes:
        indices: ``tensor<IndicesT, [d_0, ..., d_K-1]>`` as uint8, K >= 1.
        lut: ``tensor<T, [G_0, ..., G_K-1, NUM, VS]>``, ``G_k`` dividing ``d_k``;
            T one of uint8, int8, fp16, fp32.
        vector_axis: int32 scalar in ``[-K, K)``, required when VS > 1.
        returns: ``tensor<T, [d_0, ..., d_a * VS, ..., d_K-1]>`` (a = vector_axis).

    Args:
        indices: LUT positions, one per element.
        lut: the LUTs.
        vector_axis: axis along which the VS values of one index are written.
        nbits: width of IndicesT when the caller knows it (uint4 gives 4); then NUM must
            be ``2**nbits``. Without it NUM only has to exceed every index.
        name: op name, used in error messages.
        max_elements: largest allowed output element count.
        out: optional C-contiguous, writeable array of dtype T and the output shape that
            receives the output and is returned. A rejected call leaves it unchanged, as
            for :func:`lut_to_dense_ios16`.

    Raises:
        ParameterShapeError: the LUT shape does not fit the indices, an index is not below
            NUM, or ``vector_axis`` is missing or out of range.
        NonFiniteError: a floating-point LUT entry is NaN or infinite.
        ShapeError: ``indices`` is rank 0, or ``out`` is not a C-contiguous writeable array
            of the output shape that shares no memory with the inputs.
        ElementLimitError: the output has more than ``max_elements`` elements.
        UnknownDtypeError: T, the indices dtype or ``nbits`` is not allowed, or ``out`` is
            not of dtype T.
    """
    where = describe(LUT_TO_DENSE, name)
    indices = np.asarray(indices)
    lut = np.asarray(lut)
    require_dtype(indices, (_INDEX_DTYPE,), param="indices", where=where)
    if indices.ndim < 1:
        raise ShapeError(f"{where}: indices has rank 0; expected rank 1 or more")
    axis = _validate_lut(lut, indices.shape, vector_axis, nbits, where=where)

    output_shape = list(indices.shape)
    if axis is not None:
        output_shape[axis] *= lut.shape[-1]
    element_count(output_shape, name=f"{where}: output", max_elements=max_elements)
    _check_codes(indices, lut.shape[-2], param="indices", where=where)

    out = output_array(out, lut.dtype, output_shape, inputs={"indices": indices, "lut": lut}, where=where)
    _lookup_dense(indices, lut, axis, out)
    return out


def lut_to_sparse(
    indices_mask: np.ndarray,
    indices_nonzero_data: np.ndarray,
    lut: np.ndarray,
    vector_axis: object = None,
    *,
    nbits: int | None = None,
    name: str = LUT_TO_SPARSE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the iOS18 ``constexpr_lut_to_sparse`` op.

    Shapes:
        indices_mask: ``tensor<uint1, [d_0, ..., d_K-1]>`` as uint8 (or bool), K >= 1.
        indices_nonzero_data: ``tensor<IndicesT, [D]>`` as uint8, D = number of ones.
        lut: ``tensor<T, [G_0, ..., G_K-1, NUM, VS]>`` as for :func:`lut_to_dense_ios18`.
        returns: ``(mask, values)``: ``tensor<uint1, [d_0, ..., d_a * VS, ..., d_K-1]>``
            as uint8 and ``tensor<T, [D * VS]>``.

    With VS = 1 the returned mask is ``indices_mask`` itself (a uint8 view of a bool mask),
    not a copy. With VS > 1 every mask element is repeated VS times along ``vector_axis``,
    and the values are the looked-up tensor read at the set positions of that mask in C
    order, so the VS values of one index are not adjacent unless ``vector_axis`` is last.

    Args:
        indices_mask: one element per dense index, 1 where an index is stored.
        indices_nonzero_data: the stored indices, in C order.
        lut: the LUTs.
        vector_axis: axis along which the VS values of one index are written.
        nbits: width of IndicesT when the caller knows it; see :func:`lut_to_dense_ios18`.
        name: op name, used in error messages.
        max_elements: largest allowed element count of the returned mask.

    Raises:
        MaskError: a mask element is not 0 or 1, or the mask has not D ones.
        ParameterShapeError: as for :func:`lut_to_dense_ios18`.
        NonFiniteError: a floating-point LUT entry is NaN or infinite.
        ShapeError: the mask is rank 0 or ``indices_nonzero_data`` is not rank 1.
        ElementLimitError: the returned mask has more than ``max_elements`` elements.
        UnknownDtypeError: a dtype is not allowed.
    """
    where = describe(LUT_TO_SPARSE, name)
    mask = byte_mask(np.asarray(indices_mask), param="indices_mask", where=where)
    nonzero = np.asarray(indices_nonzero_data)
    lut = np.asarray(lut)
    if mask.ndim < 1:
        raise ShapeError(f"{where}: indices_mask has rank 0; expected rank 1 or more")
    require_dtype(nonzero, (_INDEX_DTYPE,), param="indices_nonzero_data", where=where)
    require_rank(nonzero, (1,), param="indices_nonzero_data", where=where)
    axis = _validate_lut(lut, mask.shape, vector_axis, nbits, where=where)

    vector_size = lut.shape[-1]
    mask_shape = list(mask.shape)
    if axis is not None:
        mask_shape[axis] *= vector_size
    element_count(mask_shape, name=f"{where}: output mask", max_elements=max_elements)
    check_byte_mask(
        mask, nonzero.size, param="indices_mask", values_param="indices_nonzero_data", where=where
    )
    _check_codes(nonzero, lut.shape[-2], param="indices_nonzero_data", where=where)

    values = np.empty(nonzero.size * vector_size, dtype=lut.dtype)
    mask_out = mask if axis is None else np.repeat(mask, vector_size, axis=axis)
    if values.size == 0:
        return mask_out, values

    tables = _build_tables(lut, mask.shape, axis)
    layout = tables.layout
    target = values.view(tables.entries.dtype)
    if axis is None and math.prod(lut.shape[:-2]) == 1:
        # One LUT for the whole tensor: the values do not depend on their positions.
        codes = np.ascontiguousarray(nonzero)
        _lookup_segment(tables.entries, 0, codes, 0, target, 0, codes.size, tables.vectorized)
        return mask_out, values

    if axis is None:
        codes, sequential = np.ascontiguousarray(nonzero), True
    else:
        codes, sequential = np.zeros(mask.shape, dtype=_INDEX_DTYPE), False
        scatter_byte_mask(mask, nonzero, codes)
    _lookup_masked_rows(
        np.ascontiguousarray(mask).reshape(-1),
        codes.reshape(-1),
        sequential,
        tables.entries,
        target,
        layout.dims,
        layout.blocks,
        layout.param_strides,
        layout.strides,
    )
    return mask_out, values
