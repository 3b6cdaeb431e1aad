"""Element types of Core ML weights: blob dtype codes, protobuf ``DataType`` codes, containers.

Core ML numbers element types twice. The blob storage file (``weight.bin``) stores a *blob
code* in each metadata record; the model protobuf stores a ``MILSpec.DataType`` value in each
tensor type. The two schemes are unrelated (uint4 is blob code 11 but ``DataType`` 35), so this
module keeps one table of :class:`ElementType` and looks it up by either code or by name.

Sub-byte types (int4, uint1/2/3/4/6) are held unpacked, one element per byte, in an int8 or
uint8 numpy array. bf16 and fp8 use the ``ml_dtypes`` numpy types.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .errors import UnknownDtypeError

__all__ = [
    "ElementType",
    "ELEMENT_TYPES",
    "by_name",
    "by_blob_code",
    "by_proto_code",
    "SUB_BYTE_BITS",
]


@dataclass(frozen=True)
class ElementType:
    """One Core ML element type.

    Attributes:
        name: the MIL name, e.g. ``"fp16"``, ``"uint4"``.
        bits: storage width of one element in bits.
        numpy_dtype: the numpy dtype that holds one element (unpacked for sub-byte types).
        proto_code: the ``MILSpec.DataType`` enum value.
        blob_code: the code in a ``weight.bin`` metadata record, or ``None`` when the type
            cannot be stored in a blob file.
        signed: True for two's-complement integer types.
        is_float: True for floating-point types.
    """

    name: str
    bits: int
    numpy_dtype: np.dtype
    proto_code: int
    blob_code: int | None
    signed: bool = False
    is_float: bool = False

    @property
    def is_sub_byte(self) -> bool:
        """True for types narrower than 8 bits, which are bit-packed on disk."""
        return 0 < self.bits < 8

    @property
    def min_value(self) -> int:
        """Smallest integer value (integer types only)."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_value(self) -> int:
        """Largest integer value (integer types only)."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __str__(self) -> str:
        return self.name


def _t(name, bits, dtype, proto, blob, signed=False, is_float=False) -> ElementType:
    return ElementType(name, bits, np.dtype(dtype), proto, blob, signed, is_float)


# Codes from MILBlob/Blob/BlobDataType.hpp (blob) and format/MIL.proto (DataType), coremltools 9.0.
ELEMENT_TYPES: tuple[ElementType, ...] = (
    _t("fp16", 16, np.float16, 10, 1, is_float=True),
    _t("fp32", 32, np.float32, 11, 2, is_float=True),
    _t("fp64", 64, np.float64, 12, None, is_float=True),
    _t("bf16", 16, ml_dtypes.bfloat16, 13, 5, is_float=True),
    _t("fp8_e4m3fn", 8, ml_dtypes.float8_e4m3fn, 40, 16, is_float=True),
    _t("fp8_e5m2", 8, ml_dtypes.float8_e5m2, 41, 17, is_float=True),
    _t("uint8", 8, np.uint8, 31, 3),
    _t("int8", 8, np.int8, 21, 4, signed=True),
    _t("int16", 16, np.int16, 22, 6, signed=True),
    _t("uint16", 16, np.uint16, 32, 7),
    _t("int32", 32, np.int32, 23, 14, signed=True),
    _t("uint32", 32, np.uint32, 33, 15),
    _t("int64", 64, np.int64, 24, None, signed=True),
    _t("uint64", 64, np.uint64, 34, None),
    _t("int4", 4, np.int8, 25, 8, signed=True),
    _t("uint1", 1, np.uint8, 37, 9),
    _t("uint2", 2, np.uint8, 36, 10),
    _t("uint3", 3, np.uint8, 39, 12),
    _t("uint4", 4, np.uint8, 35, 11),
    _t("uint6", 6, np.uint8, 38, 13),
    _t("bool", 8, np.bool_, 1, None),
)

_BY_NAME = {t.name: t for t in ELEMENT_TYPES}
_BY_BLOB = {t.blob_code: t for t in ELEMENT_TYPES if t.blob_code is not None}
_BY_PROTO = {t.proto_code: t for t in ELEMENT_TYPES}

# Widths of the bit-packed types; every other type is stored whole bytes per element.
SUB_BYTE_BITS: tuple[int, ...] = (1, 2, 3, 4, 6)


def by_name(name: str) -> ElementType:
    """Look up an element type by its MIL name (``"fp16"``, ``"uint4"``, ...)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownDtypeError(
            f"unknown element type {name!r}; expected one of {sorted(_BY_NAME)}"
        ) from None


def by_blob_code(code: int, *, where: str = "blob") -> ElementType:
    """Look up an element type by its ``weight.bin`` metadata code; ``where`` names the record."""
    try:
        return _BY_BLOB[code]
    except KeyError:
        raise UnknownDtypeError(
            f"{where}: unknown blob dtype code {code}; expected one of {sorted(_BY_BLOB)}"
        ) from None


def by_proto_code(code: int, *, where: str = "tensor") -> ElementType:
    """Look up an element type by its protobuf ``DataType`` value; ``where`` names the tensor."""
    try:
        return _BY_PROTO[code]
    except KeyError:
        raise UnknownDtypeError(
            f"{where}: unsupported protobuf DataType {code}; expected one of {sorted(_BY_PROTO)}"
        ) from None
