"""Decode encoder results op by op, as a model runs them, with two independent decoders.

coremltools' reference decompressors (the static ``decompress`` methods of the iOS16 and iOS18
constexpr op definitions) give the result; when the runtime's ``decode_op`` is importable, it
decodes the same parameters and must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18

from sparseblob.verify.compare import assert_bits_equal

try:
    from sparseblob.runtime.decode.registry import decode_op
except ImportError:  # The runtime decoders are optional for these tests.
    decode_op = None

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
    """Return the dense tensor that the op (or op chain) of ``params`` produces.

    The result comes from coremltools; the runtime's decoders, when present, must match it.
    """
    expected = _reference(params)
    if decode_op is not None:
        assert_bits_equal(_runtime(params), expected, f"runtime decode of {type(params).__name__}")
    return expected


def _run(params, opset: str = "CoreML8", **bound) -> tuple[np.ndarray, ...]:
    inputs = {**params.inputs(), **bound}
    dtypes = {key: value for key, value in params.dtypes().items() if key not in bound}
    return decode_op(params.op_type, opset, inputs, name="w", dtypes=dtypes)


def _runtime(params) -> np.ndarray:
    """Decode with the runtime's ``decode_op``, following op chains through their outputs."""
    if isinstance(params, (SparseParamsIos16, LutParamsIos16, QuantParamsIos16)):
        return _run(params, "CoreML7")[0]
    if isinstance(params, (SparseParams, LutParams, QuantParams)):
        return _run(params)[0]
    if isinstance(params, (LutToSparseParams, SparseShiftScaleParams)):
        mask, nonzero_data = _run(params)
        return decode_op(
            "constexpr_sparse_to_dense", "CoreML8", {"nonzero_data": nonzero_data, "mask": mask}, name="w"
        )[0]
    if isinstance(params, QuantizedLutParams):
        lut = _run(params.lut_quant)[0]
        inner = params.palettized
        if isinstance(inner, LutParams):
            return _run(inner, lut=lut)[0]
        mask, nonzero_data = _run(inner, lut=lut)
        return decode_op(
            "constexpr_sparse_to_dense", "CoreML8", {"nonzero_data": nonzero_data, "mask": mask}, name="w"
        )[0]
    if isinstance(params, ScaledLutParams):
        palettized = _run(params.palettized)[0]
        return decode_op(
            "constexpr_blockwise_shift_scale", "CoreML8", {"data": palettized, **params.shift_scale_inputs()}, name="w"
        )[0]
    raise TypeError(f"no runtime decoder for {type(params).__name__}")


def _reference(params) -> np.ndarray:
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
        lut = _reference(params.lut_quant)
        inner = params.palettized
        if isinstance(inner, LutParams):
            return ios18.constexpr_lut_to_dense.decompress(inner.indices, lut, inner.vector_axis)
        return _lut_to_sparse_then_dense(
            LutToSparseParams(inner.indices_mask, inner.indices_nonzero_data, lut, inner.vector_axis)
        )
    if isinstance(params, ScaledLutParams):
        palettized = _reference(params.palettized)
        return ios18.constexpr_blockwise_shift_scale.decompress(palettized, params.scale, None)
    raise TypeError(f"no decoder for {type(params).__name__}")
