"""Dispatch a constexpr op, by op type and opset, to its decoder.

Opsets ``CoreML5`` to ``CoreML7`` (iOS15 to iOS17 programs) use the iOS16 op definitions;
``CoreML8`` (iOS18) and later use the iOS18 definitions, in which
``constexpr_affine_dequantize`` keeps its iOS16 definition, as coremltools 9.0 registers it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..errors import PackageError, UnknownDtypeError, UnsupportedOpError
from ..limits import DEFAULT_MAX_ELEMENTS
from ._checks import describe
from .cast import CAST, cast
from .lut import LUT_TO_DENSE, LUT_TO_SPARSE, lut_to_dense_ios16, lut_to_dense_ios18, lut_to_sparse
from .shift_scale import (
    AFFINE_DEQUANTIZE,
    BLOCKWISE_SHIFT_SCALE,
    SPARSE_BLOCKWISE_SHIFT_SCALE,
    affine_dequantize,
    blockwise_shift_scale,
    sparse_blockwise_shift_scale,
)
from .sparse import SPARSE_TO_DENSE, sparse_to_dense_ios16, sparse_to_dense_ios18

__all__ = ["SUPPORTED_OPS", "opset_family", "decode_op"]

logger = logging.getLogger(__name__)

IOS16 = "iOS16"
IOS18 = "iOS18"

# The op attribute that contains the op name. A loader may pass it along with the parameters.
_NAME_ATTRIBUTE = "name"


@dataclass(frozen=True)
class _Op:
    """How to call one decoder: its MIL parameter names and an adapter to the function.

    ``call(params, dtypes, options)`` returns the op's outputs; ``options`` contains the
    keyword arguments ``name`` and ``max_elements``.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...]
    call: Callable[[Mapping[str, object], Mapping[str, str], dict], tuple[np.ndarray, ...]]


def _index_bits(dtypes: Mapping[str, str], param: str) -> int | None:
    """Return N of a logical ``uintN`` dtype given for ``param``, or None when not given."""
    match = re.fullmatch(r"uint(\d+)", dtypes.get(param, ""))
    return int(match.group(1)) if match else None


def _check_offset_dtype(dtypes: Mapping[str, str], data_param: str, where: str) -> None:
    """Reject an integer offset whose logical dtype differs from the data's (int4 versus int8)."""
    data_dtype, offset_dtype = dtypes.get(data_param), dtypes.get("offset")
    if data_dtype is None or offset_dtype is None or offset_dtype.startswith("fp"):
        return
    if offset_dtype != data_dtype:
        raise UnknownDtypeError(
            f"{where}: offset has dtype {offset_dtype}, but {data_param} has dtype {data_dtype}; "
            f"expected an integer offset of the data dtype, or fp16 or fp32"
        )


def _sparse_to_dense_ios16(params, dtypes, options):
    return (sparse_to_dense_ios16(params["nonzero_data"], params["mask"], params["shape"], **options),)


def _lut_to_dense_ios16(params, dtypes, options):
    return (lut_to_dense_ios16(params["indices"], params["lut"], params["shape"], **options),)


def _affine_dequantize(params, dtypes, options):
    decoded = affine_dequantize(
        params["quantized_data"], params["zero_point"], params["scale"], params["axis"], **options
    )
    return (decoded,)


def _cast(params, dtypes, options):
    return (cast(params["source_val"], params["output_dtype"], **options),)


def _sparse_to_dense_ios18(params, dtypes, options):
    return (sparse_to_dense_ios18(params["nonzero_data"], params["mask"], **options),)


def _lut_to_dense_ios18(params, dtypes, options):
    nbits = _index_bits(dtypes, "indices")
    decoded = lut_to_dense_ios18(
        params["indices"], params["lut"], params.get("vector_axis"), nbits=nbits, **options
    )
    return (decoded,)


def _lut_to_sparse(params, dtypes, options):
    nbits = _index_bits(dtypes, "indices_nonzero_data")
    return lut_to_sparse(
        params["indices_mask"],
        params["indices_nonzero_data"],
        params["lut"],
        params.get("vector_axis"),
        nbits=nbits,
        **options,
    )


def _blockwise_shift_scale(params, dtypes, options):
    _check_offset_dtype(dtypes, "data", describe(BLOCKWISE_SHIFT_SCALE, options["name"]))
    return (blockwise_shift_scale(params["data"], params["scale"], params.get("offset"), **options),)


def _sparse_blockwise_shift_scale(params, dtypes, options):
    _check_offset_dtype(dtypes, "nonzero_data", describe(SPARSE_BLOCKWISE_SHIFT_SCALE, options["name"]))
    return sparse_blockwise_shift_scale(
        params["data_mask"], params["nonzero_data"], params["scale"], params.get("offset"), **options
    )


_IOS16_OPS: dict[str, _Op] = {
    SPARSE_TO_DENSE: _Op(("nonzero_data", "mask", "shape"), (), _sparse_to_dense_ios16),
    LUT_TO_DENSE: _Op(("indices", "lut", "shape"), (), _lut_to_dense_ios16),
    AFFINE_DEQUANTIZE: _Op(("quantized_data", "zero_point", "scale", "axis"), (), _affine_dequantize),
    CAST: _Op(("source_val", "output_dtype"), (), _cast),
}

_IOS18_OPS: dict[str, _Op] = {
    SPARSE_TO_DENSE: _Op(("nonzero_data", "mask"), (), _sparse_to_dense_ios18),
    LUT_TO_DENSE: _Op(("indices", "lut"), ("vector_axis",), _lut_to_dense_ios18),
    LUT_TO_SPARSE: _Op(("indices_mask", "indices_nonzero_data", "lut"), ("vector_axis",), _lut_to_sparse),
    BLOCKWISE_SHIFT_SCALE: _Op(("data", "scale"), ("offset",), _blockwise_shift_scale),
    SPARSE_BLOCKWISE_SHIFT_SCALE: _Op(
        ("data_mask", "nonzero_data", "scale"), ("offset",), _sparse_blockwise_shift_scale
    ),
    CAST: _IOS16_OPS[CAST],
    AFFINE_DEQUANTIZE: _IOS16_OPS[AFFINE_DEQUANTIZE],
}

_OPS_BY_FAMILY: dict[str, dict[str, _Op]] = {IOS16: _IOS16_OPS, IOS18: _IOS18_OPS}

SUPPORTED_OPS: Mapping[str, frozenset[str]] = MappingProxyType(
    {family: frozenset(ops) for family, ops in _OPS_BY_FAMILY.items()}
)
"""Op types each definition family decodes: ``"iOS16"`` (opsets CoreML5 to CoreML7) and
``"iOS18"`` (CoreML8 and later)."""


def opset_family(opset: str) -> str:
    """Return the op definitions an opset uses: ``"iOS16"`` or ``"iOS18"``.

    Raises:
        UnsupportedOpError: the opset is not ``CoreML<N>`` with N >= 5; earlier opsets have
            no constexpr ops.
    """
    match = re.fullmatch(r"CoreML(\d+)", str(opset))
    if match is None or int(match.group(1)) < 5:
        raise UnsupportedOpError(
            f"opset {opset!r} has no constexpr compression ops; expected CoreML5 or later"
        )
    return IOS16 if int(match.group(1)) <= 7 else IOS18


def decode_op(
    op_type: str,
    opset: str,
    params: dict[str, object],
    *,
    name: str,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    dtypes: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, ...]:
    """Decode one constexpr op and return all of its outputs, in order.

    Args:
        op_type: MIL op type, e.g. ``"constexpr_lut_to_dense"``.
        opset: the function's opset name, e.g. ``"CoreML8"``.
        params: MIL parameter name to value. Values are numpy arrays, with sub-byte types
            unpacked into uint8/int8 containers and iOS16 packed tensors as uint8 bytes.
            ``axis``, ``vector_axis`` and ``output_dtype`` may also be Python or numpy
            scalars. A ``name`` entry (the op's name attribute) is ignored.
        name: the op name, used in error messages.
        max_elements: largest element count a decoder may allocate for one output.
        dtypes: optional logical MIL dtype name per parameter (``{"indices": "uint4"}``).
            With it, LUT ops check ``lut.shape[-2] == 2**nbits`` of the indices and
            shift-scale ops check that an integer offset has the data's dtype (int4 versus
            int8), which the containers alone cannot show.

    Returns:
        One array, or two for ``constexpr_lut_to_sparse`` and
        ``constexpr_sparse_blockwise_shift_scale`` (mask, values).

    Raises:
        UnsupportedOpError: the op type is not a constexpr op of this opset, or the opset
            has none.
        PackageError: a required parameter is missing or an unknown one is present.
        SparseblobError: any error of the decoder (all subclass ValueError).
    """
    try:
        family = opset_family(opset)
    except UnsupportedOpError as error:
        raise UnsupportedOpError(f"{describe(op_type, name)}: {error}") from None
    ops = _OPS_BY_FAMILY[family]
    op = ops.get(op_type)
    if op is None:
        raise UnsupportedOpError(
            f"{describe(op_type, name)}: op type {op_type!r} is not supported in opset {opset} "
            f"({family} definitions); expected one of {sorted(ops)}"
        )

    given = set(params) - {_NAME_ATTRIBUTE}
    missing = [param for param in op.required if param not in given]
    if missing:
        raise PackageError(
            f"{describe(op_type, name)}: missing parameter(s) {missing}; expected {list(op.required)}"
            + (f" and optionally {list(op.optional)}" if op.optional else "")
        )
    unknown = sorted(given - set(op.required) - set(op.optional))
    if unknown:
        raise PackageError(
            f"{describe(op_type, name)}: unknown parameter(s) {unknown} for {family} {op_type}; "
            f"expected {list(op.required) + list(op.optional)}"
        )

    logger.debug("decoding %s %r (%s)", op_type, name, opset)
    options = {"name": name, "max_elements": max_elements}
    return op.call(params, dtypes or {}, options)
