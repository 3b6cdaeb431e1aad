"""Decode encoder results with coremltools' reference decompressors (the static ``decompress``
methods of the iOS16 and iOS18 constexpr op definitions), op by op as a model would run them."""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18

from sparseblob.encoder import (
    LutParams,
    LutParamsIos16,
    LutToSparseParams,
    QuantizedLutParams,
    QuantParams,
    QuantParamsIos16,
    ScaledLutParams,
    SparseParams,
    SparseParamsIos16,
    SparseShiftScaleParams,
)


def _lut_to_sparse_then_dense(params: LutToSparseParams) -> np.ndarray:
    mask, nonzero_data = ios18.constexpr_lut_to_sparse.decompress(
        params.indices_mask, params.indices_nonzero_data, params.lut, params.vector_axis
    )
    return ios18.constexpr_sparse_to_dense.decompress(nonzero_data, mask)


def decode(params) -> np.ndarray:
    """Return the dense tensor that the op (or op chain) of ``params`` produces."""
    if isinstance(params, SparseParams):
        return ios18.constexpr_sparse_to_dense.decompress(params.nonzero_data, params.mask)
    if isinstance(params, SparseParamsIos16):
        return ios16.constexpr_sparse_to_dense.decompress(
            params.nonzero_data, params.mask, params.shape
        )
    if isinstance(params, LutParams):
        return ios18.constexpr_lut_to_dense.decompress(params.indices, params.lut, params.vector_axis)
    if isinstance(params, LutParamsIos16):
        return ios16.constexpr_lut_to_dense.decompress(params.lut, params.indices, params.shape)
    if isinstance(params, LutToSparseParams):
        return _lut_to_sparse_then_dense(params)
    if isinstance(params, QuantParams):
        return ios18.constexpr_blockwise_shift_scale.decompress(params.data, params.scale, params.offset)
    if isinstance(params, QuantParamsIos16):
        return ios16.constexpr_affine_dequantize.decompress(
            params.quantized_data, params.zero_point, params.scale, params.axis
        )
    if isinstance(params, SparseShiftScaleParams):
        mask, nonzero_data = ios18.constexpr_sparse_blockwise_shift_scale.decompress(
            params.data_mask, params.nonzero_data, params.scale, params.offset
        )
        return ios18.constexpr_sparse_to_dense.decompress(nonzero_data, mask)
    if isinstance(params, QuantizedLutParams):
        lut = decode(params.lut_quant)
        inner = params.palettized
        if isinstance(inner, LutParams):
            return ios18.constexpr_lut_to_dense.decompress(inner.indices, lut, inner.vector_axis)
        return _lut_to_sparse_then_dense(
            LutToSparseParams(inner.indices_mask, inner.indices_nonzero_data, lut, inner.vector_axis)
        )
    if isinstance(params, ScaledLutParams):
        palettized = decode(params.palettized)
        return ios18.constexpr_blockwise_shift_scale.decompress(palettized, params.scale, None)
    raise TypeError(f"no decoder for {type(params).__name__}")
