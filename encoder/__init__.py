"""sparseblob.encoder: pruning masks, bitmask encoding, palettization and quantization.

Every function takes numpy arrays and returns the parameters of Core ML's constexpr ops as small
frozen dataclasses named after the MIL parameters. A typical chain prunes, then encodes::

    from sparseblob import encoder

    keep = encoder.n_m_mask(weight, 2, 4)              # 2 zeros in every 4 along axis 1
    pruned = encoder.apply_mask(weight, keep)
    sparse = encoder.encode_sparse(pruned)               # constexpr_sparse_to_dense
    lut = encoder.palettize_nonzero(pruned, 4)           # constexpr_lut_to_sparse -> sparse_to_dense
    quant = encoder.quantize_nonzero(pruned, "int8")     # sparse_blockwise_shift_scale -> sparse_to_dense

The same input always gives the same arrays, bit for bit.
"""

from .masks import (
    apply_mask,
    block_mask,
    check_blocks,
    check_n_m,
    magnitude_mask,
    n_m_from_kept,
    n_m_mask,
    pruned_count,
    threshold_mask,
)
from .palettize import (
    NBITS,
    PALETTIZE_MODES,
    palettize_weight,
    palettize_nonzero,
    palettize_quantized_lut,
    palettize_scaled,
)
from .params import (
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
from .quantize import (
    GRANULARITIES,
    MODES,
    QUANT_DTYPES,
    block_sizes_for,
    dequantize,
    quant_range,
    quantize_weight,
    quantize_nonzero,
)
from .sparse import NONZERO_DTYPES, convert_exactly, encode_sparse
from .config import CompressionConfig, WeightConfig
from .mlpackage import CompressionReport, compress_package

__all__ = [
    "compress_package",
    "CompressionConfig",
    "CompressionReport",
    "WeightConfig",
    "threshold_mask",
    "magnitude_mask",
    "block_mask",
    "n_m_mask",
    "n_m_from_kept",
    "apply_mask",
    "pruned_count",
    "check_n_m",
    "check_blocks",
    "NONZERO_DTYPES",
    "encode_sparse",
    "convert_exactly",
    "NBITS",
    "PALETTIZE_MODES",
    "palettize_weight",
    "palettize_nonzero",
    "palettize_quantized_lut",
    "palettize_scaled",
    "QUANT_DTYPES",
    "MODES",
    "GRANULARITIES",
    "quant_range",
    "block_sizes_for",
    "quantize_weight",
    "quantize_nonzero",
    "dequantize",
    "SparseParams",
    "SparseParamsIos16",
    "LutParams",
    "LutParamsIos16",
    "QuantParams",
    "QuantParamsIos16",
    "LutToSparseParams",
    "SparseShiftScaleParams",
    "QuantizedLutParams",
    "ScaledLutParams",
]
