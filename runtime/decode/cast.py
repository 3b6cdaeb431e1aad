"""Decoder of ``constexpr_cast``: widen an fp16 tensor to fp32.

Core ML defines one cast, fp16 to fp32, identical in the iOS16 and iOS18 opsets (iOS18
passes the parameters as op inputs instead of attributes). No coremltools 9.0 pass emits the
op, but a program built by hand may contain it, for example as the ``nonzero_data`` of an
iOS18 ``constexpr_sparse_to_dense``.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..limits import DEFAULT_MAX_ELEMENTS, element_count
from ._checks import describe, require_dtype

__all__ = ["CAST", "OUTPUT_DTYPES", "cast"]

CAST = "constexpr_cast"
OUTPUT_DTYPES = ("fp32",)


def _dtype_name(output_dtype: object) -> object:
    """Return ``output_dtype`` as a Python string when it is one in any container."""
    if isinstance(output_dtype, np.ndarray) and output_dtype.ndim == 0:
        output_dtype = output_dtype.item()
    if isinstance(output_dtype, bytes):
        return output_dtype.decode("ascii", errors="replace")
    if isinstance(output_dtype, str):
        return str(output_dtype)
    return output_dtype


def cast(
    source_val: np.ndarray,
    output_dtype: object,
    *,
    name: str = CAST,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> np.ndarray:
    """Decode ``constexpr_cast`` (iOS16 and iOS18).

    Shapes:
        source_val: ``tensor<fp16, [...]>``, any rank.
        output_dtype: the string ``"fp32"`` (a str, bytes, numpy string or 0-d array).
        returns: ``tensor<fp32, source_val.shape>``, each value widened exactly with numpy's
            fp16 conversion, the one coremltools uses; NaN payloads are kept.

    Raises:
        UnsupportedOpError: ``output_dtype`` is not ``"fp32"``.
        ElementLimitError: the output has more than ``max_elements`` elements.
        UnknownDtypeError: ``source_val`` is not fp16.
    """
    where = describe(CAST, name)
    source = np.asarray(source_val)
    require_dtype(source, (np.dtype(np.float16),), param="source_val", where=where)
    dtype_name = _dtype_name(output_dtype)
    if dtype_name not in OUTPUT_DTYPES:
        raise UnsupportedOpError(
            f"{where}: output_dtype is {dtype_name!r}; expected 'fp32', the only cast that "
            f"Core ML defines (from fp16)"
        )
    element_count(source.shape, name=f"{where}: output", max_elements=max_elements)
    return source.astype(np.float32)
