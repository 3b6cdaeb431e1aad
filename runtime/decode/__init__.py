"""Decoders of Core ML's constexpr compression ops, as pure functions of numpy arrays.

Each decoder checks its inputs, raising a class from ``sparseblob.runtime.errors`` that
names the op, the value found and the value expected, and then decodes bit for bit as
coremltools 9.0's reference decompressors do. :func:`decode_op` dispatches by op type and
opset.

The dense decoders (``sparse_to_dense_ios16``, ``sparse_to_dense_ios18``,
``lut_to_dense_ios16``, ``lut_to_dense_ios18``, ``blockwise_shift_scale`` and
``affine_dequantize``) take an optional ``out`` array and write the whole output into it,
so that a caller decoding many weights can reuse one buffer instead of allocating and first
touching new memory for each. ``out`` must be C-contiguous, writeable, of exactly the output
dtype and shape, and must not share memory with an input. It is checked after the inputs and
before the first write.
"""

from .cast import cast
from .lut import lut_to_dense_ios16, lut_to_dense_ios18, lut_to_sparse
from .registry import SUPPORTED_OPS, decode_op, opset_family
from .shift_scale import affine_dequantize, blockwise_shift_scale, sparse_blockwise_shift_scale
from .sparse import sparse_to_dense_ios16, sparse_to_dense_ios18

__all__ = [
    "SUPPORTED_OPS",
    "decode_op",
    "opset_family",
    "sparse_to_dense_ios16",
    "sparse_to_dense_ios18",
    "lut_to_dense_ios16",
    "lut_to_dense_ios18",
    "lut_to_sparse",
    "affine_dequantize",
    "blockwise_shift_scale",
    "sparse_blockwise_shift_scale",
    "cast",
]
