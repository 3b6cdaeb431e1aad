"""Decoders of the linear quantization ops: ``(data - offset) * scale``, per block.

- iOS16 ``constexpr_affine_dequantize``: int8 or uint8 ``quantized_data``, a ``scale`` and
  ``zero_point`` that are scalars or vectors along ``axis``.
- iOS18 ``constexpr_blockwise_shift_scale``: ``scale`` (and the optional ``offset``) has
  the rank of ``data`` and divides it into blocks of ``data.shape[k] / scale.shape[k]``
  along each axis; ``out[i] = (data[i] - offset[i // B]) * scale[i // B]``.
- iOS18 ``constexpr_sparse_blockwise_shift_scale``: the same for the values of a sparse
  tensor, each value using the block of its dense position.

The two dense decoders write into a caller's ``out`` array when given one.

The output dtype is the dtype of ``scale``. Integer subtraction never wraps: int8 -128 with
offset 127 gives -255. The arithmetic rounds exactly where coremltools 9.0's reference
decompressors round, so results match them bit for bit:

- iOS16: ``q - zero_point`` and the product are float32 operations; the result is then
  rounded once to the scale dtype.
- iOS18: ``data`` is first cast to the scale dtype, and each operation then rounds to the
  numpy result dtype of its operands. With integer data and offset (the forms that
  coremltools' quantizers write) this is exact float32 arithmetic rounded once. With an
  fp16 scale, fp32 data is rounded to fp16 before the subtraction, and ``data - offset``
  is rounded to fp16 when the offset is fp16; an fp32 offset keeps the arithmetic in
  float32 until the final rounding.

Example (iOS18, per-channel)::

    data   = [[-128, 2], [7, 0]]   tensor<int8, [2, 2]>
    scale  = [[0.5], [2.0]]        tensor<fp16, [2, 1]>
    offset = [[127], [1]]          tensor<int8, [2, 1]>
    output = [[-127.5, -62.5], [12.0, -2.0]]   tensor<fp16, [2, 2]>
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numba import types
from numba.extending import overload

from ..errors import ParameterShapeError, ShapeError, UnknownDtypeError
from ..limits import DEFAULT_MAX_ELEMENTS, element_count
from ._blocks import block_layout, next_row, row_bases, row_count
from ._checks import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    bits_view,
    byte_mask,
    describe,
    integer_scalar,
    mil_dtype_name,
    normalize_axis,
    output_array,
    require_dtype,
    require_finite,
    require_rank,
)
from ._simd import float32_from_half_bits, half_bits, round_to_half, shift_scale_vector, vector_lanes
from .sparse import check_byte_mask

__all__ = [
    "AFFINE_DEQUANTIZE",
    "BLOCKWISE_SHIFT_SCALE",
    "SPARSE_BLOCKWISE_SHIFT_SCALE",
    "affine_dequantize",
    "blockwise_shift_scale",
    "sparse_blockwise_shift_scale",
]

AFFINE_DEQUANTIZE = "constexpr_affine_dequantize"
BLOCKWISE_SHIFT_SCALE = "constexpr_blockwise_shift_scale"
SPARSE_BLOCKWISE_SHIFT_SCALE = "constexpr_sparse_blockwise_shift_scale"

_FP16 = np.dtype(np.float16)
_FP32 = np.dtype(np.float32)
# SrcT and OffsetT of the iOS18 ops; int4 and uint4 arrive in int8 and uint8 containers.
_SOURCE_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES
# ZeroPointT of the iOS16 op.
_ZERO_POINT_DTYPES = INTEGER_DTYPES + (_FP32,)


def _as_float32(value):
    """Widen one source element to float32 (uint16 for fp16 bits)."""


@overload(_as_float32, inline="always")
def _as_float32_overload(value):
    if value == types.uint16:
        return lambda value: float32_from_half_bits(value)
    if value == types.float32:
        return lambda value: value
    if isinstance(value, types.Integer):
        return lambda value: np.float32(value)
    return None


def _encode(value, out):
    """Convert a float32 result to the element type of ``out`` (uint16 for fp16 bits)."""


@overload(_encode, inline="always")
def _encode_overload(value, out):
    if out.dtype == types.uint16:
        return lambda value, out: half_bits(value)
    if out.dtype == types.float32:
        return lambda value, out: value
    return None


@numba.njit(inline="always")
def _dequantize(element, scale, offset, round_data, round_difference):
    value = _as_float32(element)
    if round_data:
        value = round_to_half(value)
    value = value - offset
    if round_difference:
        value = round_to_half(value)
    return value * scale


@numba.njit(nogil=True)
def _shift_scale_whole_vectors(data, scale, offset, out, first, length, block, parameter, param_step):
    # Blocks of a multiple of the lane count: only whole vectors, one scale per block.
    lanes = vector_lanes(out)
    vectors_per_block = block // lanes
    position = first
    for _ in range(length // block):
        block_scale = scale[np.uint64(parameter)]
        block_offset = offset[np.uint64(parameter)]
        for _ in range(vectors_per_block):
            shift_scale_vector(data, position, block_offset, block_scale, out)
            position += lanes
        parameter += param_step


@numba.njit(nogil=True)
def _shift_scale_rows(data, scale, offset, out, dims, blocks, param_strides, strides, round_data, round_difference):
    # Element indices are uint64: numba then skips its negative-index wraparound, which
    # would keep LLVM from vectorizing the inner loops.
    last = dims.size - 1
    length, block, param_step = dims[last], blocks[last], param_strides[last]
    counter = np.zeros(last, np.int64)
    exact = not (round_data or round_difference)
    lanes = vector_lanes(out)
    for _ in range(row_count(dims)):
        parameter, base = row_bases(counter, blocks, param_strides, strides)
        if exact and block % lanes == 0:
            _shift_scale_whole_vectors(data, scale, offset, out, base, length, block, parameter, param_step)
            next_row(counter, dims)
            continue
        for start in range(0, length, block):
            block_scale, block_offset = scale[parameter], offset[parameter]
            first = base + start
            count = min(block, length - start)
            if exact:
                vector_end = count - count % lanes
                for k in range(0, vector_end, lanes):
                    shift_scale_vector(data, first + k, block_offset, block_scale, out)
                for k in range(vector_end, count):
                    index = np.uint64(first + k)
                    value = (_as_float32(data[index]) - block_offset) * block_scale
                    out[index] = _encode(value, out)
            else:
                for k in range(count):
                    index = np.uint64(first + k)
                    value = _dequantize(data[index], block_scale, block_offset, round_data, round_difference)
                    out[index] = _encode(value, out)
            parameter += param_step
        next_row(counter, dims)


@numba.njit(nogil=True)
def _shift_scale_masked_rows(
    mask, nonzero, scale, offset, values, dims, blocks, param_strides, strides, round_data, round_difference
):
    last = dims.size - 1
    length, block, param_step = dims[last], blocks[last], param_strides[last]
    counter = np.zeros(last, np.int64)
    written = 0
    for _ in range(row_count(dims)):
        parameter, base = row_bases(counter, blocks, param_strides, strides)
        for start in range(0, length, block):
            block_scale, block_offset = scale[parameter], offset[parameter]
            for column in range(start, min(start + block, length)):
                if mask[np.uint64(base + column)] != 0:
                    value = _dequantize(nonzero[written], block_scale, block_offset, round_data, round_difference)
                    values[written] = _encode(value, values)
                    written += 1
            parameter += param_step
        next_row(counter, dims)


def _kernel_view(array: np.ndarray) -> np.ndarray:
    """Return a flat view the kernels accept: fp16 as uint16 bits, other dtypes unchanged."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(np.uint16) if flat.dtype == _FP16 else flat


def _run_dense(data, scale, offset, out, groups, round_data, round_difference) -> None:
    if out.size == 0:
        return
    layout = block_layout(data.shape, groups)
    _shift_scale_rows(
        _kernel_view(data),
        scale,
        offset,
        _kernel_view(out),
        layout.dims,
        layout.blocks,
        layout.param_strides,
        layout.strides,
        round_data,
        round_difference,
    )


@numba.njit(nogil=True)
def _widen_half(bits, out):
    for k in range(bits.size):
        out[np.uint64(k)] = float32_from_half_bits(bits[np.uint64(k)])


def _as_float32_array(array: np.ndarray) -> np.ndarray:
    """Return a new flat float32 copy of ``array``; every allowed dtype converts exactly.

    fp16 is widened by a kernel, much faster than numpy's fp16 cast. The arrays converted
    here are checked to be finite first, so that NaN payloads do not matter. The result is
    always a new writable array, so that a read-only or broadcast input does not make numba
    compile another specialization of the kernels.
    """
    if array.dtype == _FP16:
        out = np.empty(array.size, dtype=np.float32)
        _widen_half(np.array(array, copy=True).reshape(-1).view(np.uint16), out)
        return out
    return np.array(array, dtype=np.float32, copy=True).reshape(-1)


def _widen_values(values: np.ndarray) -> np.ndarray:
    """Return source values as float32, each widened as the kernels widen one element.

    Integers convert exactly and fp32 is returned as it is. fp16 goes through the same
    conversion as in the kernels, which also makes a signaling NaN quiet.
    """
    if values.dtype == _FP32:
        return np.ascontiguousarray(values).reshape(-1)
    if values.dtype == _FP16:
        out = np.empty(values.size, dtype=np.float32)
        _widen_half(_kernel_view(values), out)
        return out
    return values.astype(np.float32).reshape(-1)


def _parameters(scale: np.ndarray, offset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Return scale and offset as flat float32 arrays, a zero offset when there is none."""
    flat_scale = _as_float32_array(scale)
    if offset is None:
        # x - 0.0 equals x for every float32 x, -0.0 included. A NaN keeps its payload; a
        # signaling one turns quiet, as the product by the scale would make it anyway.
        return flat_scale, np.zeros_like(flat_scale)
    return flat_scale, _as_float32_array(offset)


def affine_dequantize(
    quantized_data: np.ndarray,
    zero_point: np.ndarray,
    scale: np.ndarray,
    axis: object,
    *,
    name: str = AFFINE_DEQUANTIZE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS16 ``constexpr_affine_dequantize`` op.

    Shapes:
        quantized_data: ``tensor<SrcT, [d_0, ..., d_K-1]>``, SrcT uint8 or int8.
        zero_point: ``tensor<ZeroPointT, []>`` or ``tensor<ZeroPointT, [d_axis]>``,
            ZeroPointT uint8, int8 or fp32 (not checked against SrcT, as in Core ML).
        scale: ``tensor<DstT, []>`` or ``tensor<DstT, [d_axis]>``, DstT fp16 or fp32.
        axis: int32 scalar in ``[-K, K)``.
        returns: ``tensor<DstT, [d_0, ..., d_K-1]>``,
            ``DstT((float32(q) - float32(zero_point)) * float32(scale))``.

    Args:
        quantized_data: the quantized values.
        zero_point: the value of ``quantized_data`` that decodes to 0.
        scale: the step between consecutive quantized values.
        axis: the axis along which a vector ``scale`` or ``zero_point`` applies.
        name: op name, used in error messages.
        max_elements: largest allowed output element count.
        out: optional C-contiguous, writeable array of dtype DstT and the shape of
            ``quantized_data`` that receives the output and is returned. A rejected call
            leaves it unchanged, as for :func:`blockwise_shift_scale`.

    Raises:
        ParameterShapeError: ``axis`` is out of range or not an integer, or ``scale`` or
            ``zero_point`` is not a scalar or a vector of length ``d_axis``.
        NonFiniteError: ``scale`` or an fp32 ``zero_point`` is NaN or infinite.
        ShapeError: ``out`` is not a C-contiguous writeable array of the output shape that
            shares no memory with the inputs.
        ElementLimitError: the output has more than ``max_elements`` elements.
        UnknownDtypeError: a dtype is not allowed, or ``out`` is not of dtype DstT.
    """
    where = describe(AFFINE_DEQUANTIZE, name)
    data = np.asarray(quantized_data)
    zero_point = np.asarray(zero_point)
    scale = np.asarray(scale)
    require_dtype(data, INTEGER_DTYPES, param="quantized_data", where=where)
    require_dtype(zero_point, _ZERO_POINT_DTYPES, param="zero_point", where=where)
    require_dtype(scale, FLOAT_DTYPES, param="scale", where=where)
    axis = integer_scalar(axis, param="axis", where=where)
    axis = normalize_axis(axis, data.ndim, param="axis", where=where)

    channels = data.shape[axis]
    for param, array in (("scale", scale), ("zero_point", zero_point)):
        require_rank(array, (0, 1), param=param, where=where, error=ParameterShapeError)
        if array.ndim == 1 and array.size != channels:
            raise ParameterShapeError(
                f"{where}: {param} has {array.size} elements; expected a scalar or one element "
                f"per index of quantized_data axis {axis} (size {channels})"
            )
    require_finite(scale, param="scale", where=where)
    require_finite(zero_point, param="zero_point", where=where)
    element_count(data.shape, name=f"{where}: output", max_elements=max_elements)

    groups = [1] * data.ndim
    if scale.ndim == 1 or zero_point.ndim == 1:
        groups[axis] = channels
    flat_scale, flat_offset = _parameters(
        np.broadcast_to(scale, (groups[axis],)), np.broadcast_to(zero_point, (groups[axis],))
    )
    inputs = {"quantized_data": data, "zero_point": zero_point, "scale": scale}
    out = output_array(out, scale.dtype, data.shape, inputs=inputs, where=where)
    _run_dense(data, flat_scale, flat_offset, out, groups, False, False)
    return out


def _validate_blocks(
    shape: Sequence[int],
    source_dtype: np.dtype,
    scale: np.ndarray,
    offset: np.ndarray | None,
    *,
    data_param: str,
    where: str,
) -> None:
    require_dtype(scale, FLOAT_DTYPES, param="scale", where=where)
    if scale.ndim != len(shape):
        raise ParameterShapeError(
            f"{where}: scale has rank {scale.ndim} (shape {list(scale.shape)}); expected the "
            f"rank of {data_param}, {len(shape)}"
        )
    for axis, (size, blocks) in enumerate(zip(shape, scale.shape)):
        if blocks < 1 or size % blocks:
            raise ParameterShapeError(
                f"{where}: scale has {blocks} blocks along axis {axis} (shape "
                f"{list(scale.shape)}), which do not divide the {data_param} dimension {size}; "
                f"expected a divisor"
            )
    require_finite(scale, param="scale", where=where)
    if offset is None:
        return

    require_dtype(offset, _SOURCE_DTYPES, param="offset", where=where)
    if offset.shape != scale.shape:
        raise ParameterShapeError(
            f"{where}: offset has shape {list(offset.shape)}; expected the shape of scale, "
            f"{list(scale.shape)}"
        )
    if offset.dtype.kind != "f" and offset.dtype != source_dtype:
        raise UnknownDtypeError(
            f"{where}: offset has dtype {mil_dtype_name(offset.dtype)}, but {data_param} has "
            f"dtype {mil_dtype_name(source_dtype)}; expected an integer offset of the data "
            f"dtype, or fp16 or fp32"
        )
    require_finite(offset, param="offset", where=where)


def _rounding(source_dtype: np.dtype, scale: np.ndarray, offset: np.ndarray | None) -> tuple[bool, bool]:
    """Return whether the data and the difference round to fp16 before the product."""
    to_half = scale.dtype == _FP16
    round_data = to_half and source_dtype == _FP32
    round_difference = to_half and offset is not None and offset.dtype == _FP16
    return round_data, round_difference


def blockwise_shift_scale(
    data: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray | None = None,
    *,
    name: str = BLOCKWISE_SHIFT_SCALE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode the iOS18 ``constexpr_blockwise_shift_scale`` op.

    Shapes:
        data: ``tensor<SrcT, [d_0, ..., d_K-1]>``, K >= 1; SrcT int4, uint4, int8, uint8,
            fp16 or fp32 (int4 and uint4 in int8 and uint8 containers).
        scale: ``tensor<DstT, [s_0, ..., s_K-1]>``, ``s_k`` dividing ``d_k``; DstT fp16 or fp32.
        offset: optional ``tensor<OffsetT, [s_0, ..., s_K-1]>``; an integer offset has the
            dtype of ``data``, a floating-point offset may be fp16 or fp32.
        returns: ``tensor<DstT, [d_0, ..., d_K-1]>``.

    Args:
        data: the quantized values.
        scale: the scale of each block.
        offset: the value of ``data`` that decodes to 0 in each block; 0 when omitted.
        name: op name, used in error messages.
        max_elements: largest allowed output element count.
        out: optional C-contiguous, writeable array of dtype DstT and the shape of ``data``
            that receives the output and is returned. Every check runs before the first
            write, so a rejected call leaves ``out`` unchanged. An error while decoding,
            such as MemoryError for a temporary array, can leave it partly written.

    Raises:
        ParameterShapeError: ``scale`` or ``offset`` does not have the rank of ``data`` or
            does not divide it, or the two differ in shape.
        NonFiniteError: ``scale`` or a floating-point ``offset`` is NaN or infinite.
        ShapeError: ``data`` is rank 0, or ``out`` is not a C-contiguous writeable array of
            the shape of ``data`` that shares no memory with the inputs.
        ElementLimitError: the output has more than ``max_elements`` elements.
        UnknownDtypeError: a dtype is not allowed, or ``out`` is not of dtype DstT.
    """
    where = describe(BLOCKWISE_SHIFT_SCALE, name)
    data = np.asarray(data)
    scale = np.asarray(scale)
    offset = None if offset is None else np.asarray(offset)
    require_dtype(data, _SOURCE_DTYPES, param="data", where=where)
    if data.ndim < 1:
        raise ShapeError(f"{where}: data has rank 0; expected rank 1 or more")
    _validate_blocks(data.shape, data.dtype, scale, offset, data_param="data", where=where)
    element_count(data.shape, name=f"{where}: output", max_elements=max_elements)

    flat_scale, flat_offset = _parameters(scale, offset)
    round_data, round_difference = _rounding(data.dtype, scale, offset)
    inputs = {"data": data, "scale": scale}
    if offset is not None:
        inputs["offset"] = offset
    out = output_array(out, scale.dtype, data.shape, inputs=inputs, where=where)
    if data.dtype == _FP16:
        # fp16 data is rare (a LUT output scaled per channel). Widening it first saves a
        # specialization of the kernel at the cost of a float32 copy.
        data = _widen_values(data).reshape(data.shape)
    _run_dense(data, flat_scale, flat_offset, out, scale.shape, round_data, round_difference)
    return out


def sparse_blockwise_shift_scale(
    data_mask: np.ndarray,
    nonzero_data: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray | None = None,
    *,
    name: str = SPARSE_BLOCKWISE_SHIFT_SCALE,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the iOS18 ``constexpr_sparse_blockwise_shift_scale`` op.

    Shapes:
        data_mask: ``tensor<uint1, [d_0, ..., d_K-1]>`` as uint8 (or bool), K >= 1.
        nonzero_data: ``tensor<SrcT, [D]>``, D = number of ones in ``data_mask``.
        scale, offset: as for :func:`blockwise_shift_scale`, over the dense shape.
        returns: ``(data_mask, values)``: the mask itself (a uint8 view of a bool mask, not
            a copy) and ``tensor<DstT, [D]>``, value j using the block of the j-th set
            position in C order.

    Raises:
        MaskError: a mask element is not 0 or 1, or the mask has not D ones.
        ParameterShapeError: as for :func:`blockwise_shift_scale`, against the mask shape.
        NonFiniteError: ``scale`` or a floating-point ``offset`` is NaN or infinite.
        ShapeError: the mask is rank 0 or ``nonzero_data`` is not rank 1.
        ElementLimitError: the mask has more than ``max_elements`` elements.
        UnknownDtypeError: a dtype is not allowed.
    """
    where = describe(SPARSE_BLOCKWISE_SHIFT_SCALE, name)
    mask = byte_mask(np.asarray(data_mask), param="data_mask", where=where)
    nonzero = np.asarray(nonzero_data)
    scale = np.asarray(scale)
    offset = None if offset is None else np.asarray(offset)
    if mask.ndim < 1:
        raise ShapeError(f"{where}: data_mask has rank 0; expected rank 1 or more")
    require_dtype(nonzero, _SOURCE_DTYPES, param="nonzero_data", where=where)
    require_rank(nonzero, (1,), param="nonzero_data", where=where)
    _validate_blocks(mask.shape, nonzero.dtype, scale, offset, data_param="data_mask", where=where)
    element_count(mask.shape, name=f"{where}: data_mask", max_elements=max_elements)
    check_byte_mask(mask, nonzero.size, param="data_mask", values_param="nonzero_data", where=where)

    flat_scale, flat_offset = _parameters(scale, offset)
    round_data, round_difference = _rounding(nonzero.dtype, scale, offset)
    values = np.empty(nonzero.size, dtype=scale.dtype)
    if values.size == 0:
        return mask, values
    if flat_scale.size == 1:
        # One block: every value uses the same parameters, whatever its position.
        source = _widen_values(nonzero) if nonzero.dtype == _FP16 else nonzero
        _run_dense(source, flat_scale, flat_offset, values, (1,), round_data, round_difference)
        return mask, values

    # Widening every value to float32 first is exact and is what the kernel does to each
    # element, so the masked kernel needs no specialization per source dtype.
    layout = block_layout(mask.shape, scale.shape)
    _shift_scale_masked_rows(
        np.ascontiguousarray(mask).reshape(-1),
        _widen_values(nonzero),
        flat_scale,
        flat_offset,
        _kernel_view(values),
        layout.dims,
        layout.blocks,
        layout.param_strides,
        layout.strides,
        round_data,
        round_difference,
    )
    return mask, values
