"""Linear quantization of weights, or of only their nonzero values, to int8, uint8, int4 or uint4.

The result decodes with ``constexpr_blockwise_shift_scale`` (or its sparse variant) as
``(data - offset) * scale``, one scale and offset per block. Blocks tile the weight: axis ``i``
of length ``d_i`` is cut into ``d_i / b_i`` runs of ``b_i`` elements, and ``scale`` has shape
``[d_0/b_0, ..., d_(K-1)/b_(K-1)]``, the same rank as the weight.

Modes, with ``[qmin, qmax]`` the integer range used:

- ``symmetric`` (Core ML's ``linear_symmetric``): one code is dropped so that the range is
  symmetric (int8 [-127, 127], int4 [-7, 7], uint8 [0, 254] with offset 127, uint4 [0, 14]
  with offset 7), and ``scale = 2 * max|w| / (qmax - qmin)``. Signed data has no offset.
- ``affine`` (Core ML's ``linear``): the full range. The block's range ``[lo, hi]`` is widened to
  include 0, ``scale = (hi - lo) / (qmax - qmin)`` and ``offset = round(qmin - lo / scale)``,
  which always lies in ``[qmin, qmax]``.

Then ``data = clip(round(w / scale) + offset, qmin, qmax)``, rounding half to even.

Where this differs from Core ML's quantizer, and why:

- The scale is computed in fp64 and rounded *up* to its dtype, and ``data`` is computed from
  the stored scale. So clipping never moves a code by more than half a step, and every decoded
  value lies within half a step of the input (plus the rounding of the decoded value to the
  scale dtype).
- A block whose values are all zero (or, for :func:`quantize_nonzero`, that has no kept value)
  gets scale 1 and decodes to exactly 0, where Core ML divides 0 by 0.
- A scale below the smallest normal number of its dtype (2**-14 for fp16) is raised to it, with a
  log message: accelerators flush subnormal numbers to zero, which would zero the block. The
  block's values then still lie within half of the (larger) step.
- NaN and infinite weights are rejected. Core ML skips a weight with inf and turns a block
  with NaN into NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from sparseblob.runtime.dtypes import by_name
from sparseblob.runtime.errors import EncodingError, ShapeError

from ._validate import as_weight, check_axis, check_choice, check_int, nonzero
from .params import QuantParams, SparseShiftScaleParams

__all__ = [
    "QUANT_DTYPES",
    "MODES",
    "GRANULARITIES",
    "quant_range",
    "block_sizes_for",
    "quantize_weight",
    "quantize_nonzero",
    "dequantize",
]

logger = logging.getLogger(__name__)

QUANT_DTYPES = ("int8", "uint8", "int4", "uint4")
MODES = ("symmetric", "affine")
GRANULARITIES = ("per_tensor", "per_channel", "per_block")
SCALE_DTYPES = {"fp16": np.dtype(np.float16), "fp32": np.dtype(np.float32)}


def quant_range(dtype: str, mode: str) -> tuple[int, int]:
    """Return the integer range ``(qmin, qmax)`` that ``mode`` uses for ``dtype``.

    >>> quant_range("int8", "symmetric"), quant_range("uint4", "affine")
    ((-127, 127), (0, 15))
    """
    check_choice(dtype, "dtype", QUANT_DTYPES)
    check_choice(mode, "mode", MODES)
    element = by_name(dtype)
    low, high = element.min_value, element.max_value
    if mode == "symmetric":
        if element.signed:
            low += 1
        else:
            high -= 1
    return low, high


def block_sizes_for(
    shape: Sequence[int],
    granularity: str,
    *,
    channel_axis: int = 0,
    block_size: int | None = None,
    block_axis: int = 1,
) -> tuple[int, ...]:
    """Return the block size on every axis for a named granularity.

    Args:
        shape: the weight shape.
        granularity: ``per_tensor`` (one block), ``per_channel`` (one block per index of
            ``channel_axis``), or ``per_block`` (per channel, and runs of ``block_size`` along
            ``block_axis``).
        channel_axis: the output-channel axis.
        block_size: run length along ``block_axis``, required for ``per_block``.
        block_axis: the axis cut into runs for ``per_block``.

    Raises:
        EncodingError: an argument is invalid, or ``block_size`` does not divide the axis.
    """
    check_choice(granularity, "granularity", GRANULARITIES)
    rank = len(shape)
    sizes = list(shape)
    if granularity == "per_tensor":
        return tuple(sizes)

    channel_axis = check_axis(channel_axis, rank, "channel_axis")
    sizes[channel_axis] = 1
    if granularity == "per_channel":
        return tuple(sizes)

    if block_size is None:
        raise EncodingError("block_size is required for granularity='per_block'")
    block_size = check_int(block_size, "block_size", minimum=1)
    block_axis = check_axis(block_axis, rank, "block_axis")
    if block_axis == channel_axis:
        raise EncodingError(f"block_axis={block_axis} must differ from channel_axis={channel_axis}")
    if shape[block_axis] % block_size:
        raise EncodingError(
            f"block_size={block_size} does not divide axis {block_axis} of length {shape[block_axis]}"
        )
    sizes[block_axis] = block_size
    return tuple(sizes)


def _check_block_sizes(shape: tuple[int, ...], block_sizes: Sequence[int]) -> tuple[int, ...]:
    if len(block_sizes) != len(shape):
        raise EncodingError(
            f"block_sizes={list(block_sizes)} has {len(block_sizes)} entries for a tensor of rank {len(shape)}"
        )
    for axis, (dim, size) in enumerate(zip(shape, block_sizes)):
        size = check_int(size, f"block_sizes[{axis}]", minimum=1)
        if dim % size:
            raise EncodingError(
                f"block_sizes[{axis}]={size} does not divide axis {axis} of length {dim}"
            )
    return tuple(int(size) for size in block_sizes)


def _blocked(array: np.ndarray, block_sizes: tuple[int, ...]) -> np.ndarray:
    """View ``array`` as ``[d0/b0, b0, d1/b1, b1, ...]``: block axes even, in-block axes odd."""
    split = []
    for dim, size in zip(array.shape, block_sizes):
        split.extend((dim // size, size))
    return array.reshape(split)


def _store_scale(exact: np.ndarray, scale_dtype: np.dtype, name: str) -> np.ndarray:
    """Round fp64 scales up to ``scale_dtype``, raising subnormal results to the smallest normal."""
    if float(exact.max()) >= float(np.finfo(scale_dtype).max):
        raise EncodingError(
            f"{name}: a scale of {float(exact.max()):.6g} overflows {scale_dtype}; use an fp32 scale"
        )
    stored = exact.astype(scale_dtype)
    too_small = stored.astype(np.float64) < exact
    if too_small.any():
        stored[too_small] = np.nextafter(stored[too_small], scale_dtype.type(np.inf))

    smallest_normal = np.finfo(scale_dtype).tiny
    subnormal = stored < smallest_normal
    if subnormal.any():
        logger.warning(
            "%s: %d of %d scales are below the smallest normal %s number %s (smallest %.3g); "
            "raised to it so that accelerators do not flush them to zero",
            name, int(subnormal.sum()), stored.size, scale_dtype, smallest_normal,
            float(exact[subnormal].min()),
        )
        stored[subnormal] = smallest_normal
    return stored


def _fit(
    weight: np.ndarray,
    dtype: str,
    mode: str,
    block_sizes: tuple[int, ...],
    scale_dtype: np.dtype,
    name: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize ``weight`` blockwise.

    Both modes see only ``max|w|`` or the range widened to include 0, so zeros in a block never
    change its scale or offset: fitting a pruned weight here is the same as fitting only its
    nonzero values.

    Returns:
        ``data`` (``tensor<container, shape>``), ``scale`` and ``offset`` (``tensor<..., S>``,
        ``offset`` None for signed symmetric).
    """
    qmin, qmax = quant_range(dtype, mode)
    element = by_name(dtype)

    # With an fp16 scale, w / scale in fp32 rounds to the same integer as the exact quotient:
    # the quotient of two values with short significands is either exactly a half-integer or
    # further from one than fp32's rounding error. An fp32 scale needs fp64.
    compute = np.float32 if scale_dtype == np.float16 else np.float64
    blocked = _blocked(weight.astype(compute, copy=False), block_sizes)
    in_block = tuple(range(1, blocked.ndim, 2))
    low = blocked.min(axis=in_block, keepdims=True).astype(np.float64)
    high = blocked.max(axis=in_block, keepdims=True).astype(np.float64)

    if mode == "symmetric":
        exact = 2.0 * np.maximum(-low, high) / (qmax - qmin)
    else:
        low = np.minimum(low, 0.0)
        high = np.maximum(high, 0.0)
        exact = (high - low) / (qmax - qmin)
    # An all-zero block: any positive scale decodes its zeros exactly.
    exact[exact == 0] = 1.0
    scale = _store_scale(exact, scale_dtype, f"{name} scale")
    step = scale.astype(np.float64)

    if mode == "symmetric":
        offset = None if element.signed else np.full(step.shape, (qmax + qmin) // 2, dtype=np.float64)
    else:
        offset = np.clip(np.rint(qmin - low / step), qmin, qmax)

    # rint rounds half to even, as Core ML's quantizer does.
    codes = blocked / step.astype(compute)
    np.rint(codes, out=codes)
    if offset is not None:
        codes += offset.astype(compute)
    np.clip(codes, qmin, qmax, out=codes)

    shape_s = tuple(dim // size for dim, size in zip(weight.shape, block_sizes))
    data = codes.reshape(weight.shape).astype(element.numpy_dtype)
    scale = scale.reshape(shape_s)
    if offset is not None:
        offset = offset.reshape(shape_s).astype(element.numpy_dtype)
    return data, scale, offset


def _prepare(weight, dtype, mode, granularity, channel_axis, block_size, block_axis, block_sizes, scale_dtype, name):
    weight = as_weight(weight, name)
    check_choice(dtype, "dtype", QUANT_DTYPES)
    check_choice(mode, "mode", MODES)
    if scale_dtype is None:
        scale_dtype = "fp16" if weight.dtype == np.float16 else "fp32"
    check_choice(scale_dtype, "scale_dtype", tuple(SCALE_DTYPES))
    if block_sizes is None:
        sizes = block_sizes_for(
            weight.shape, granularity, channel_axis=channel_axis, block_size=block_size,
            block_axis=block_axis,
        )
    else:
        sizes = _check_block_sizes(weight.shape, block_sizes)
    return weight, sizes, SCALE_DTYPES[scale_dtype]


def quantize_weight(
    weight: np.ndarray,
    dtype: str = "int8",
    *,
    mode: str = "symmetric",
    granularity: str = "per_channel",
    channel_axis: int = 0,
    block_size: int | None = None,
    block_axis: int = 1,
    block_sizes: Sequence[int] | None = None,
    scale_dtype: str | None = None,
    name: str = "weight",
) -> QuantParams:
    """Quantize every element of a weight.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        dtype: int8, uint8, int4 or uint4 (the 4-bit types need iOS18).
        mode: ``symmetric`` or ``affine``.
        granularity: ``per_tensor``, ``per_channel`` or ``per_block``, as in :func:`block_sizes_for`.
        channel_axis, block_size, block_axis: see :func:`block_sizes_for`.
        block_sizes: the block size on every axis, overriding ``granularity``, for blocks along
            any combination of axes.
        scale_dtype: fp16 or fp32, the weight's dtype by default.
        name: tensor name for error messages.

    Returns:
        :class:`QuantParams` with ``data`` ``tensor<dtype, shape>`` and ``scale`` and ``offset``
        ``tensor<..., S>`` as ``constexpr_blockwise_shift_scale`` expects (per channel on a
        linear weight: ``[Cout, 1]``).
    """
    weight, sizes, scale_np = _prepare(
        weight, dtype, mode, granularity, channel_axis, block_size, block_axis, block_sizes,
        scale_dtype, name,
    )
    data, scale, offset = _fit(weight, dtype, mode, sizes, scale_np, name)
    return QuantParams(data=data, scale=scale, offset=offset, data_dtype=dtype)


def quantize_nonzero(
    weight: np.ndarray,
    dtype: str = "int8",
    *,
    mode: str = "symmetric",
    granularity: str = "per_channel",
    channel_axis: int = 0,
    block_size: int | None = None,
    block_axis: int = 1,
    block_sizes: Sequence[int] | None = None,
    scale_dtype: str | None = None,
    name: str = "weight",
) -> SparseShiftScaleParams:
    """Quantize only the nonzero values of a pruned weight, fitting each block on them alone.

    The zeros stay in the mask and take no part in the scales. The result feeds
    ``constexpr_sparse_blockwise_shift_scale`` and then ``constexpr_sparse_to_dense``. The
    mask is ``weight != 0`` (-0.0 counts as zero). A kept value may quantize to a code that
    decodes to 0, and its mask bit stays set.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite, already pruned.
        dtype, mode, granularity, channel_axis, block_size, block_axis, block_sizes,
        scale_dtype, name: as in :func:`quantize_weight`.

    Returns:
        :class:`SparseShiftScaleParams` with ``data_mask`` ``tensor<uint1, shape>`` and
        ``nonzero_data`` ``tensor<dtype, [count(mask)]>``.
    """
    weight, sizes, scale_np = _prepare(
        weight, dtype, mode, granularity, channel_axis, block_size, block_axis, block_sizes,
        scale_dtype, name,
    )
    keep = nonzero(weight)
    data, scale, offset = _fit(weight, dtype, mode, sizes, scale_np, name)
    return SparseShiftScaleParams(
        data_mask=keep.view(np.uint8),
        nonzero_data=data[keep],
        scale=scale,
        offset=offset,
        data_dtype=dtype,
    )


def dequantize(data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """Return ``(data - offset) * scale`` per block, computed in fp32 and rounded once to the scale dtype.

    This is the arithmetic of ``constexpr_blockwise_shift_scale``. The encoder uses it to know the
    values a quantized LUT decodes to.

    Args:
        data: ``tensor<integer, shape>``.
        scale: ``tensor<fp16 or fp32, S>``, ``shape[i] % S[i] == 0``.
        offset: ``tensor<integer, S>`` or None.

    Returns:
        ``tensor<scale dtype, shape>``.
    """
    data = np.asarray(data)
    scale = np.asarray(scale)
    if scale.ndim != data.ndim or any(d % s for d, s in zip(data.shape, scale.shape)):
        raise ShapeError(
            f"scale shape {list(scale.shape)} does not tile data shape {list(data.shape)}"
        )
    sizes = tuple(d // s for d, s in zip(data.shape, scale.shape))
    blocked = _blocked(data, sizes).astype(np.float32)
    expand = tuple(np.newaxis if i % 2 else slice(None) for i in range(blocked.ndim))
    if offset is not None:
        blocked = blocked - np.asarray(offset).astype(np.float32)[expand]
    values = blocked * scale.astype(np.float32)[expand]
    return values.reshape(data.shape).astype(scale.dtype)
