"""Bit-mask sparse encoding: a uint1 mask of the weight's shape plus the nonzero values.

This is what ``constexpr_sparse_to_dense`` decodes: zeros everywhere, and ``nonzero_data``
scattered in C order into the positions whose mask bit is 1. A mask bit is set exactly where the
value is not equal to zero, as in Core ML's own pruning, so a -0.0 weight counts as zero: it is
left out of ``nonzero_data`` and decodes as +0.0. Prune with :func:`~.masks.apply_mask`, which
writes +0.0 for every zero, and the decoded weight equals the pruned weight bit for bit.

``nonzero_data`` can be stored in another element type than the weight's, as long as every value
converts exactly: fp32 values that fp16 holds exactly, or integral values in the range of int8,
uint8, int4 or uint4 (the 4-bit types need the iOS18 op).
"""

from __future__ import annotations

import numpy as np

from sparseblob.runtime.dtypes import by_name
from sparseblob.runtime.errors import EncodingError

from ._validate import as_weight, check_choice, first_index, nonzero
from .params import SparseParams

__all__ = ["NONZERO_DTYPES", "encode_sparse", "convert_exactly"]

NONZERO_DTYPES = ("fp16", "fp32", "int8", "uint8", "int4", "uint4")

_DEFAULT_NONZERO_DTYPE = {
    np.dtype(np.float16): "fp16",
    np.dtype(np.float32): "fp32",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
}


def convert_exactly(values: np.ndarray, dtype_name: str, *, name: str) -> np.ndarray:
    """Return ``values`` in the container of MIL type ``dtype_name``, raising if any value changes.

    Args:
        values: a numeric array.
        dtype_name: fp16, fp32, int8, uint8, int4 or uint4.
        name: tensor name for error messages.

    Raises:
        EncodingError: a value is not integral, is out of the type's range, or does not survive
            the conversion unchanged. The message gives the first such value.
    """
    check_choice(dtype_name, "nonzero_dtype", NONZERO_DTYPES)
    element = by_name(dtype_name)
    if values.dtype == element.numpy_dtype and not element.is_sub_byte:
        return values

    if not element.is_float:
        wide = values.astype(np.float64)
        bad = (wide != np.round(wide)) | (wide < element.min_value) | (wide > element.max_value)
        if bad.any():
            first = first_index(bad)
            raise EncodingError(
                f"{name}: value {values[first]!r} at position {first[0]} is not an integer in the "
                f"{dtype_name} range [{element.min_value}, {element.max_value}]"
            )
        return values.astype(element.numpy_dtype)

    with np.errstate(over="ignore"):
        # A value beyond the target's range becomes inf here and fails the comparison below.
        converted = values.astype(element.numpy_dtype)
    changed = converted.astype(np.float64) != values.astype(np.float64)
    if changed.any():
        first = first_index(changed)
        raise EncodingError(
            f"{name}: value {values[first]!r} at position {first[0]} changes to "
            f"{converted[first]!r} in {dtype_name}; keep the values in their own dtype "
            f"({values.dtype}) or round them first"
        )
    return converted


def encode_sparse(
    weight: np.ndarray, *, nonzero_dtype: str | None = None, name: str = "weight"
) -> SparseParams:
    """Encode a pruned weight as a bit mask and its nonzero values in C order.

    Args:
        weight: ``tensor<fp16, fp32, int8 or uint8, shape>``, finite.
        nonzero_dtype: MIL element type of ``nonzero_data``, by default the weight's own
            (fp16, fp32, int8, uint8).
        name: tensor name for error messages.

    Returns:
        :class:`SparseParams` with ``mask`` ``tensor<uint1, shape>`` (held as uint8 0/1, set
        where ``weight != 0``) and ``nonzero_data`` ``tensor<nonzero_dtype, [count(mask)]>``.

    Raises:
        NonFiniteError: the weight has a NaN or infinite element.
        EncodingError: the dtype is unsupported, or a value does not convert exactly.
    """
    weight = as_weight(weight, name, floating=False)
    if weight.dtype not in _DEFAULT_NONZERO_DTYPE:
        raise EncodingError(
            f"{name}: expected an fp16, fp32, int8 or uint8 weight, got dtype {weight.dtype}"
        )
    if nonzero_dtype is None:
        nonzero_dtype = _DEFAULT_NONZERO_DTYPE[weight.dtype]
    check_choice(nonzero_dtype, "nonzero_dtype", NONZERO_DTYPES)

    keep = nonzero(weight)
    values = convert_exactly(weight[keep], nonzero_dtype, name=f"{name} nonzero_data")
    return SparseParams(nonzero_data=values, mask=keep.view(np.uint8), nonzero_dtype=nonzero_dtype)
