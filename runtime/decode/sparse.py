"""Decoders of ``constexpr_sparse_to_dense``: scatter the non-zero values into a zero tensor.

A sparse weight is stored as its non-zero values, in C order, and a bit mask with one bit
per dense element. The output is zero where the bit is clear and the next value where it is
set. The iOS16 op packs the mask LSB-first into bytes and takes the dense shape as a
parameter. The iOS18 op takes a uint1 mask of the dense shape, one byte per element here.

Example (iOS18)::

    mask         = [[1, 0, 0], [1, 1, 0]]      tensor<uint1, [2, 3]>
    nonzero_data = [5, 6, 7]                   tensor<fp16, [3]>
    output       = [[5, 0, 0], [6, 7, 0]]      tensor<fp16, [2, 3]>

The iOS16 form of the same weight has ``mask = [0b011001]`` (bit 0 is element 0), one byte
``0x19``, and ``shape = [2, 3]``.

Both decoders write into a caller's ``out`` array when given one, zeros included, so stale
contents of a reused buffer never show through.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from .. import bitpack
from ..errors import MaskError, ShapeError
from ..limits import DEFAULT_MAX_ELEMENTS, element_count
from ._checks import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    bits_view,
    byte_mask,
    describe,
    output_array,
    require_dtype,
    require_rank,
)
from ._simd import expand_bit_mask, expand_byte_mask, popcount64, vector_lanes

__all__ = [
    "SPARSE_TO_DENSE",
    "VALUE_DTYPES",
    "sparse_to_dense_ios16",
    "sparse_to_dense_ios18",
    "dense_shape",
    "check_byte_mask",
    "scatter_byte_mask",
]

SPARSE_TO_DENSE = "constexpr_sparse_to_dense"

# T of both ops. int4 and uint4 values (iOS18 only) arrive in int8 and uint8 containers.
VALUE_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES


@numba.njit(nogil=True)
def _scatter_byte_mask(mask, values, out):
    size = mask.size
    lanes = vector_lanes(out)
    vector_end = size - size % lanes
    read = 0
    for position in range(0, vector_end, lanes):
        read += expand_byte_mask(values, read, mask, position, out)
    for position in range(vector_end, size):
        if mask[position] != 0:
            out[position] = values[read]
            read += 1
        else:
            out[position] = 0


@numba.njit(nogil=True)
def _scatter_bit_mask(mask_bits, values, out):
    size = out.size
    lanes = vector_lanes(out)
    vector_end = size - size % lanes
    read = 0
    for position in range(0, vector_end, lanes):
        read += expand_bit_mask(values, read, mask_bits, position, out)
    for position in range(vector_end, size):
        if (mask_bits[position >> 3] >> (position & 7)) & 1:
            out[position] = values[read]
            read += 1
        else:
            out[position] = 0


@numba.njit(nogil=True)
def _mask_word_bits(words):
    # Returns the set bits of all words and the OR of every bit that a 0/1 byte cannot have.
    ones = np.uint64(0)
    invalid = np.uint64(0)
    for k in range(words.size):
        word = words[np.uint64(k)]
        invalid |= word & np.uint64(0xFEFEFEFEFEFEFEFE)
        ones += popcount64(word)
    return ones, invalid


def check_byte_mask(
    mask: np.ndarray, value_count: int, *, param: str, values_param: str, where: str
) -> None:
    """Check that a uint1 mask contains only 0 and 1, and as many ones as there are values.

    Args:
        mask: the mask, one uint8 element per dense element.
        value_count: the number of values that the mask must select.
        param: MIL name of the mask, for messages.
        values_param: MIL name of the values, for messages.
        where: op type and name, for messages.

    Raises:
        MaskError: a mask element is neither 0 nor 1, or the number of ones differs from
            ``value_count``.
    """
    flat = np.ascontiguousarray(mask).reshape(-1)
    word_end = flat.size - flat.size % 8
    # Eight mask bytes per uint64: one pass checks the values and counts the ones.
    ones, invalid = _mask_word_bits(flat[:word_end].view(np.uint64))
    tail = flat[word_end:]
    if invalid or (tail.size and int(tail.max()) > 1):
        position = tuple(int(i) for i in np.argwhere(mask > 1)[0])
        raise MaskError(
            f"{where}: {param} contains {int(mask[position])} at index {list(position)}; "
            f"expected a uint1 mask of 0 and 1"
        )
    ones = int(ones) + int(np.count_nonzero(tail))
    if ones != value_count:
        raise MaskError(
            f"{where}: {param} has {ones} set bits, but {values_param} has {value_count} "
            f"values; expected one value per set bit"
        )


def scatter_byte_mask(mask: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    """Write ``values`` into ``out`` at the non-zero bytes of ``mask``, and 0 elsewhere.

    The caller has checked that ``mask`` has exactly ``values.size`` non-zero bytes and the
    size of ``out``. ``out`` must be C-contiguous and of the dtype of ``values``.
    """
    source = bits_view(values)
    target = out.reshape(-1).view(source.dtype)
    _scatter_byte_mask(np.ascontiguousarray(mask).reshape(-1), source, target)


def dense_shape(shape: object, *, where: str) -> tuple[int, ...]:
    """Return the iOS16 ``shape`` parameter, ``tensor<uint32, [K]>``, as a tuple of ints.

    Raises:
        ShapeError: the shape is missing, not rank 1 or not made of integers.
    """
    if shape is None:
        raise ShapeError(f"{where}: parameter shape is missing; expected tensor<uint32, [K]>")
    array = np.asarray(shape)
    if array.ndim != 1:
        raise ShapeError(
            f"{where}: shape has rank {array.ndim} (value {array.tolist()}); expected a rank-1 "
            f"tensor<uint32, [K]>"
        )
    if array.size and array.dtype.kind not in "iu":
        raise ShapeError(
            f"{where}: shape has dtype {array.dtype} (value {array.tolist()}); expected "
            f"tensor<uint32, [K]>"
        )
    return tuple(int(dim) for dim in array)


def sparse_to_dense_ios16(
    nonzero_data: np.ndarray,
    mask: np.ndarray,
    shape: Sequence[int] | np.ndarray,
    *,
    name: str = SPARSE_TO_DENSE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS16 ``constexpr_sparse_to_dense`` op.

    Shapes:
        nonzero_data: ``tensor<T, [D]>``, T one of uint8, int8, fp16, fp32.
        mask: ``tensor<uint8, [ceil(N/8)]>``, LSB-first bits, N = prod(shape).
        shape: ``tensor<uint32, [K]>``.
        returns: ``tensor<T, shape>``.

    Args:
        nonzero_data: the values at the set bits, in C order.
        mask: one bit per dense element; the bits after element N must be 0.
        shape: the dense shape.
        name: op name, used in error messages.
        max_elements: largest allowed N.
        out: optional C-contiguous, writeable array of dtype T and shape ``shape`` that
            receives the output, zeros included, and is returned. Every check runs before
            the first write, so a rejected call leaves ``out`` unchanged. An error while
            decoding, such as MemoryError for a temporary array, can leave it partly written.

    Raises:
        ShapeError: ``shape`` is missing or malformed, ``mask`` has not ceil(N/8) bytes, or
            ``out`` is not a C-contiguous writeable array of the output shape that shares
            no memory with the inputs.
        ElementLimitError: N exceeds ``max_elements``.
        MaskError: a padding bit is set, or the number of set bits is not D.
        UnknownDtypeError: T or the mask dtype is not allowed, or ``out`` is not of dtype T.
    """
    where = describe(SPARSE_TO_DENSE, name)
    nonzero_data = np.asarray(nonzero_data)
    mask = np.asarray(mask)
    require_dtype(nonzero_data, VALUE_DTYPES, param="nonzero_data", where=where)
    require_rank(nonzero_data, (1,), param="nonzero_data", where=where)
    require_dtype(mask, (np.dtype(np.uint8),), param="mask", where=where)
    require_rank(mask, (1,), param="mask", where=where)

    output_shape = dense_shape(shape, where=where)
    count = element_count(output_shape, name=f"{where}: output", max_elements=max_elements)
    expected_bytes = (count + 7) // 8
    if mask.size != expected_bytes:
        raise ShapeError(
            f"{where}: mask has {mask.size} bytes, but shape {list(output_shape)} has {count} "
            f"elements; expected ceil({count}/8) = {expected_bytes} mask bytes"
        )

    padding = bitpack.padding_bits_set(mask, 1, count)
    if padding:
        raise MaskError(
            f"{where}: {padding} padding bits after element {count} of mask are set; "
            f"expected the {8 * expected_bytes - count} padding bits to be 0"
        )
    ones = int(np.bitwise_count(mask).sum(dtype=np.int64))
    if ones != nonzero_data.size:
        raise MaskError(
            f"{where}: mask has {ones} set bits, but nonzero_data has {nonzero_data.size} "
            f"values; expected one value per set bit"
        )

    inputs = {"nonzero_data": nonzero_data, "mask": mask}
    out = output_array(out, nonzero_data.dtype, output_shape, inputs=inputs, where=where)
    values = bits_view(nonzero_data)
    _scatter_bit_mask(np.ascontiguousarray(mask), values, out.reshape(-1).view(values.dtype))
    return out


def sparse_to_dense_ios18(
    nonzero_data: np.ndarray,
    mask: np.ndarray,
    *,
    name: str = SPARSE_TO_DENSE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS18 ``constexpr_sparse_to_dense`` op.

    Shapes:
        nonzero_data: ``tensor<T, [D]>``, T one of int4, uint4, int8, uint8, fp16, fp32
            (int4 and uint4 in int8 and uint8 containers).
        mask: ``tensor<uint1, [d_0, ..., d_K-1]>`` as uint8 (or bool), each element 0 or 1.
        returns: ``tensor<T, mask.shape>``.

    A rank-0 mask gives a rank-0 output, as coremltools accepts.

    Args:
        nonzero_data: the values at the set mask elements, in C order.
        mask: one element per dense element.
        name: op name, used in error messages.
        max_elements: largest allowed element count of the mask.
        out: optional C-contiguous, writeable array of dtype T and the shape of ``mask``
            that receives the output, zeros included, and is returned. A rejected call
            leaves it unchanged, as for :func:`sparse_to_dense_ios16`.

    Raises:
        MaskError: a mask element is not 0 or 1, or the mask has not D ones.
        ShapeError: ``nonzero_data`` is not rank 1, or ``out`` is not a C-contiguous
            writeable array of the mask shape that shares no memory with the inputs.
        ElementLimitError: the mask has more than ``max_elements`` elements.
        UnknownDtypeError: T or the mask dtype is not allowed, or ``out`` is not of dtype T.
    """
    where = describe(SPARSE_TO_DENSE, name)
    nonzero_data = np.asarray(nonzero_data)
    require_dtype(nonzero_data, VALUE_DTYPES, param="nonzero_data", where=where)
    require_rank(nonzero_data, (1,), param="nonzero_data", where=where)
    mask = byte_mask(np.asarray(mask), param="mask", where=where)
    element_count(mask.shape, name=f"{where}: mask", max_elements=max_elements)
    check_byte_mask(mask, nonzero_data.size, param="mask", values_param="nonzero_data", where=where)

    inputs = {"nonzero_data": nonzero_data, "mask": mask}
    out = output_array(out, nonzero_data.dtype, mask.shape, inputs=inputs, where=where)
    scatter_byte_mask(mask, nonzero_data, out)
    return out
