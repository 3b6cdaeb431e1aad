"""MIL values from the model protobuf: value types, immediate tensors and blob references.

A ``MILSpec.Value`` carries a ``ValueType`` and either an immediate value (a tensor, list, tuple
or dictionary written into the protobuf) or a ``BlobFileValue`` that points at a metadata record
in a blob storage file (``weight.bin``). This module turns both into numpy arrays of the
declared logical dtype and shape:

* sub-byte types (int4, uint1/2/3/4/6) are unpacked into int8/uint8 containers, one element
  per byte, the element count taken from the declared shape;
* bf16 and fp8 use the ``ml_dtypes`` types; strings become ``numpy.str_`` arrays;
* a rank-0 tensor is a 0-d array; an empty tensor is an array with a zero dimension.

Which ``TensorValue`` field stores each dtype follows coremltools 9.0: ``bytes`` for fp16, bf16,
fp8, int8, uint8, uint32 and the sub-byte types (raw little-endian, or bit-packed LSB-first),
``floats`` for fp32, ``doubles`` for fp64, ``ints`` for int16, uint16 and int32, ``longInts``
for int64 and uint64, ``bools`` and ``strings``. Any other field is rejected.

Every check runs when a value is parsed, before anything is allocated from its shape: the
declared element count against ``max_elements``, the byte or value count against the shape,
and for a blob the stored dtype, element count and ``padding_size_in_bits`` against the declared
type. Blob payloads are read lazily by :meth:`BlobValue.read`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from . import bitpack
from .blobfile import BlobFile, BlobRecord
from .dtypes import ElementType, by_proto_code
from .errors import (
    BlobFileError,
    PackageError,
    PaddingError,
    ShapeError,
    SparseblobError,
    UnknownDtypeError,
)
from .limits import element_count

if TYPE_CHECKING:
    from coremltools.proto import MIL_pb2

__all__ = [
    "STRING",
    "TensorType",
    "ListType",
    "TupleType",
    "DictionaryType",
    "StateType",
    "ValueType",
    "ImmediateValue",
    "BlobValue",
    "Value",
    "BlobResolver",
    "parse_type",
    "parse_value",
    "decode_tensor",
]

# MILSpec.DataType STRING (2). The shared dtype table lists only numeric types, because strings
# are never weights. This entry gives string tensors a declared type like any other.
# Its ``bits`` is 0: a string has no fixed width, and ``is_sub_byte`` is False for it.
STRING = ElementType("string", 0, np.dtype(np.str_), 2, None)

_PROTO_STRING = 2


@dataclass(frozen=True)
class TensorType:
    """A tensor type: element type and shape, ``None`` for a dimension of unknown size.

    Attributes:
        dtype: the declared element type.
        shape: one entry per dimension; ``()`` for a scalar.
    """

    dtype: ElementType
    shape: tuple[int | None, ...]

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension has a known size."""
        return all(dim is not None for dim in self.shape)

    def __str__(self) -> str:
        dims = ", ".join("?" if dim is None else str(dim) for dim in self.shape)
        return f"tensor<{self.dtype}, [{dims}]>"

    def __repr__(self) -> str:
        return f"TensorType({self})"


@dataclass(frozen=True)
class ListType:
    """A list of values of one type; ``length`` is ``None`` when unknown."""

    element: ValueType
    length: int | None


@dataclass(frozen=True)
class TupleType:
    """A tuple of values, one type per position."""

    elements: tuple[ValueType, ...]


@dataclass(frozen=True)
class DictionaryType:
    """A dictionary from keys of one type to values of one type."""

    key: ValueType
    value: ValueType


@dataclass(frozen=True)
class StateType:
    """A state (iOS18 stateful models) wrapping a tensor type."""

    wrapped: ValueType


ValueType = Union[TensorType, ListType, TupleType, DictionaryType, StateType]


@dataclass(frozen=True, eq=False)
class ImmediateValue:
    """A value written into the protobuf.

    Attributes:
        type: the declared type.
        data: a read-only numpy array for a tensor; a list, tuple or dict of decoded elements
            for the other types.
    """

    type: ValueType
    data: object

    @property
    def is_blob(self) -> bool:
        """False: the value is stored in the protobuf."""
        return False

    def read(self) -> object:
        """Return the decoded value."""
        return self.data


@dataclass(frozen=True, eq=False)
class BlobValue:
    """A tensor stored in a blob storage file, checked against its declared type.

    Attributes:
        type: the declared type; its dtype is the stored dtype and its shape has the stored
            element count.
        file_name: ``BlobFileValue.fileName`` as written, e.g. ``@model_path/weights/weight.bin``.
        blob_file: the opened blob file.
        record: the validated metadata record at ``BlobFileValue.offset``.
        where: the op and parameter this value belongs to, for error messages.
    """

    type: TensorType
    file_name: str
    blob_file: BlobFile
    record: BlobRecord
    where: str

    @property
    def is_blob(self) -> bool:
        """True: the value is stored in a blob file."""
        return True

    def __repr__(self) -> str:
        return f"BlobValue({self.type}, {self.file_name!r}, offset={self.offset})"

    @property
    def offset(self) -> int:
        """The metadata record offset, ``BlobFileValue.offset``."""
        return self.record.metadata_offset

    @property
    def path(self) -> Path:
        """The blob file on disk."""
        return self.blob_file.path

    def read(self) -> np.ndarray:
        """Read the payload as an array of the declared dtype and shape.

        Whole-byte types are a read-only view of the memory-mapped file; sub-byte types are
        unpacked into a new array on every call.
        """
        return self.blob_file.read(
            self.record.metadata_offset, dtype=self.type.dtype, shape=self.type.shape, name=self.where
        )


Value = Union[ImmediateValue, BlobValue]

# Opens the blob file named by a ``BlobFileValue.fileName``; the second argument names the op
# and parameter for error messages.
BlobResolver = Callable[[str, str], BlobFile]


def parse_type(proto: MIL_pb2.ValueType, *, where: str) -> ValueType:
    """Convert a ``MILSpec.ValueType`` into a :data:`ValueType`.

    Raises:
        UnknownDtypeError: the tensor's ``DataType`` is not a Core ML element type.
        PackageError: the type is missing, its rank is negative or disagrees with its
            dimensions, or a dimension is neither constant nor unknown.
    """
    kind = proto.WhichOneof("type")
    if kind == "tensorType":
        return _parse_tensor_type(proto.tensorType, where=where)
    if kind == "listType":
        length = _parse_dimension(proto.listType.length, where=f"{where} list length", allow_unset=True)
        return ListType(parse_type(proto.listType.type, where=f"{where} list element"), length)
    if kind == "tupleType":
        return TupleType(
            tuple(
                parse_type(item, where=f"{where} tuple element {index}")
                for index, item in enumerate(proto.tupleType.types)
            )
        )
    if kind == "dictionaryType":
        return DictionaryType(
            parse_type(proto.dictionaryType.keyType, where=f"{where} dictionary key"),
            parse_type(proto.dictionaryType.valueType, where=f"{where} dictionary value"),
        )
    if kind == "stateType":
        return StateType(parse_type(proto.stateType.wrappedType, where=f"{where} state"))
    raise PackageError(f"{where}: the value type is missing; expected a tensor, list, tuple, dictionary or state type")


def _parse_tensor_type(proto: MIL_pb2.TensorType, *, where: str) -> TensorType:
    if proto.dataType == _PROTO_STRING:
        dtype = STRING
    else:
        dtype = by_proto_code(proto.dataType, where=where)

    if proto.rank < 0:
        raise PackageError(f"{where}: tensor rank is {proto.rank}; expected a known rank of 0 or more")
    if proto.rank != len(proto.dimensions):
        raise PackageError(
            f"{where}: tensor rank is {proto.rank}, but {len(proto.dimensions)} dimensions are given"
        )
    if len(proto.attributes):
        raise PackageError(f"{where}: tensor type has attributes {sorted(proto.attributes)}; expected none")

    shape = tuple(
        _parse_dimension(dim, where=f"{where} dimension {axis}") for axis, dim in enumerate(proto.dimensions)
    )
    return TensorType(dtype, shape)


def _parse_dimension(proto: MIL_pb2.Dimension, *, where: str, allow_unset: bool = False) -> int | None:
    kind = proto.WhichOneof("dimension")
    if kind == "constant":
        return int(proto.constant.size)
    if kind == "unknown" or (kind is None and allow_unset):
        return None
    raise PackageError(f"{where}: the dimension is neither constant nor unknown")


def parse_value(
    proto: MIL_pb2.Value,
    *,
    where: str,
    max_elements: int,
    resolve_blob: BlobResolver | None = None,
) -> Value:
    """Parse and check one ``MILSpec.Value``.

    Args:
        proto: the protobuf value.
        where: the op and parameter it belongs to, used in every error message.
        max_elements: largest element count accepted for one tensor.
        resolve_blob: opens the blob file named by a ``BlobFileValue``; without it a blob
            value is an error.

    Returns:
        An :class:`ImmediateValue` with the decoded data, or a :class:`BlobValue` whose record
        has been checked against the declared type.

    Raises:
        PackageError: the value is missing, uses the wrong field for its dtype, or is not
            allowed here.
        UnknownDtypeError: an unknown dtype, or a blob whose stored dtype is not the declared one.
        ShapeError: the stored element or byte count differs from the declared shape.
        PaddingError: ``padding_size_in_bits`` disagrees with the declared shape.
        ElementLimitError: the declared shape has more than ``max_elements`` elements.
        BlobFileError: the blob record is malformed (sentinel, bounds, dtype code, version).
    """
    vtype = parse_type(proto.type, where=where)
    kind = proto.WhichOneof("value")

    if kind == "blobFileValue":
        if resolve_blob is None:
            raise PackageError(f"{where}: blob file values are not allowed here")
        return _parse_blob(proto.blobFileValue, vtype, where=where, max_elements=max_elements, resolve_blob=resolve_blob)

    if kind == "immediateValue":
        data = _decode_immediate(
            proto.immediateValue, vtype, where=where, max_elements=max_elements, resolve_blob=resolve_blob
        )
        return ImmediateValue(vtype, data)

    raise PackageError(f"{where}: the value has neither an immediate value nor a blob file value")


def _decode_immediate(
    proto: MIL_pb2.Value.ImmediateValue,
    vtype: ValueType,
    *,
    where: str,
    max_elements: int,
    resolve_blob: BlobResolver | None,
) -> object:
    kind = proto.WhichOneof("value")
    expected = {TensorType: "tensor", ListType: "list", TupleType: "tuple", DictionaryType: "dictionary"}.get(
        type(vtype)
    )
    if kind != expected:
        raise PackageError(f"{where}: immediate value is a {kind}, but the declared type is {_describe(vtype)}")

    if kind == "tensor":
        return decode_tensor(proto.tensor, vtype, where=where, max_elements=max_elements)

    if kind in ("list", "tuple"):
        items = proto.list.values if kind == "list" else proto.tuple.values
        decoded = [
            parse_value(item, where=f"{where}[{index}]", max_elements=max_elements, resolve_blob=resolve_blob).read()
            for index, item in enumerate(items)
        ]
        if kind == "tuple":
            if len(decoded) != len(vtype.elements):
                raise ShapeError(
                    f"{where}: tuple contains {len(decoded)} values, but its type has {len(vtype.elements)}"
                )
            return tuple(decoded)
        if vtype.length is not None and len(decoded) != vtype.length:
            raise ShapeError(f"{where}: list contains {len(decoded)} values, but its type declares {vtype.length}")
        return decoded

    result = {}
    for index, pair in enumerate(proto.dictionary.values):
        key = parse_value(pair.key, where=f"{where} key {index}", max_elements=max_elements).read()
        if isinstance(key, np.ndarray) and key.ndim == 0:
            key = key.item()
        if not isinstance(key, (str, int, float, bool)):
            raise PackageError(f"{where}: dictionary key {index} is not a scalar")
        result[key] = parse_value(
            pair.value, where=f"{where}[{key!r}]", max_elements=max_elements, resolve_blob=resolve_blob
        ).read()
    return result


def _describe(vtype: ValueType) -> str:
    if isinstance(vtype, TensorType):
        return str(vtype)
    return type(vtype).__name__


# The TensorValue field that coremltools 9.0 writes for each element type.
_FIELD_BY_DTYPE = {
    "bool": "bools",
    "string": "strings",
    "fp32": "floats",
    "fp64": "doubles",
    "int16": "ints",
    "uint16": "ints",
    "int32": "ints",
    "int64": "longInts",
    "uint64": "longInts",
}
_BYTES_FIELD = "bytes"


def decode_tensor(
    proto: MIL_pb2.TensorValue, ttype: TensorType, *, where: str, max_elements: int
) -> np.ndarray:
    """Decode an immediate ``TensorValue`` of type ``ttype``.

    Returns:
        A read-only array of ``ttype.dtype.numpy_dtype`` with shape ``ttype.shape``.

    Raises:
        PackageError: the field does not match the dtype, the shape has an unknown
            dimension, or an integer lies outside its dtype's range.
        ShapeError: the number of values or bytes does not match the shape.
        ElementLimitError: the shape has more than ``max_elements`` elements.
    """
    if not ttype.is_static:
        raise PackageError(f"{where}: immediate tensor has unknown dimensions in {ttype}")
    count = element_count(ttype.shape, name=where, max_elements=max_elements)

    field = proto.WhichOneof("value")
    expected_field = _FIELD_BY_DTYPE.get(ttype.dtype.name, _BYTES_FIELD)
    if field != expected_field:
        raise PackageError(
            f"{where}: immediate {ttype} is stored in field {field!r}; expected {expected_field!r}"
        )

    if field == _BYTES_FIELD:
        flat = _decode_bytes(proto.bytes.values, ttype, count, where=where)
    else:
        flat = _decode_numbers(getattr(proto, field).values, ttype, count, where=where)

    array = flat.reshape(ttype.shape)
    array.flags.writeable = False
    return array


def _decode_bytes(raw: bytes, ttype: TensorType, count: int, *, where: str) -> np.ndarray:
    dtype = ttype.dtype
    if dtype.is_sub_byte:
        expected = bitpack.packed_size(count, dtype.bits)
    else:
        expected = count * dtype.numpy_dtype.itemsize
    if len(raw) != expected:
        raise ShapeError(f"{where}: immediate {ttype} contains {len(raw)} bytes; expected {expected}")

    if dtype.is_sub_byte:
        return bitpack.unpack_bits(raw, dtype.bits, count, signed=dtype.signed, name=where)

    values = np.frombuffer(raw, dtype=dtype.numpy_dtype)
    if sys.byteorder != "little":
        values = values.byteswap()
    return values


def _decode_numbers(values, ttype: TensorType, count: int, *, where: str) -> np.ndarray:
    if len(values) != count:
        raise ShapeError(f"{where}: immediate {ttype} contains {len(values)} values; expected {count}")

    dtype = ttype.dtype
    if dtype is STRING:
        return np.array(list(values), dtype=np.str_).reshape(-1)
    if dtype.is_float or dtype.name == "bool":
        return np.array(values, dtype=dtype.numpy_dtype).reshape(-1)

    wide = np.array(values, dtype=np.int64).reshape(-1)
    if wide.size and (int(wide.min()) < dtype.min_value or int(wide.max()) > dtype.max_value):
        bad = int(wide.min()) if int(wide.min()) < dtype.min_value else int(wide.max())
        raise PackageError(
            f"{where}: immediate {ttype} contains {bad}, outside the {dtype} range "
            f"[{dtype.min_value}, {dtype.max_value}]"
        )
    return wide.astype(dtype.numpy_dtype)


def _parse_blob(
    proto: MIL_pb2.Value.BlobFileValue,
    vtype: ValueType,
    *,
    where: str,
    max_elements: int,
    resolve_blob: BlobResolver,
) -> BlobValue:
    if not isinstance(vtype, TensorType):
        raise PackageError(f"{where}: blob file value has type {_describe(vtype)}; expected a tensor type")
    if not vtype.is_static:
        raise PackageError(f"{where}: blob file value has unknown dimensions in {vtype}")
    if vtype.dtype.blob_code is None:
        raise UnknownDtypeError(f"{where}: {vtype.dtype} tensors cannot be stored in a blob file")
    count = element_count(vtype.shape, name=where, max_elements=max_elements)

    blob_file = resolve_blob(proto.fileName, where)
    try:
        record = blob_file.record(proto.offset)
    except BlobFileError as err:
        raise _in_context(err, f"{where}: {proto.fileName} at offset {proto.offset}") from err

    location = f"{where}: blob at offset {record.metadata_offset} of {blob_file.path.name}"
    check_record(record, vtype, count, where=location)
    return BlobValue(vtype, proto.fileName, blob_file, record, where)


def check_record(record: BlobRecord, ttype: TensorType, count: int, *, where: str) -> None:
    """Check that a blob record stores ``count`` elements of the declared type.

    iOS16 packed tensors (masks, LUT indices) are declared ``UINT8[M]`` and stored as uint8,
    so they compare as whole bytes like any other uint8 tensor.

    Raises:
        UnknownDtypeError: the stored dtype is not the declared dtype.
        ShapeError: the stored element count or byte count differs from the declared one.
        PaddingError: the byte count fits but ``padding_size_in_bits`` does not.
    """
    dtype = ttype.dtype
    if record.dtype.blob_code != dtype.blob_code:
        raise UnknownDtypeError(f"{where}: blob stores {record.dtype}, but the tensor is declared {ttype}")

    if not dtype.is_sub_byte:
        if record.element_count != count:
            raise ShapeError(
                f"{where}: blob contains {record.element_count} {dtype} elements, but the declared "
                f"{ttype} has {count}"
            )
        return

    expected_size = bitpack.packed_size(count, dtype.bits)
    expected_padding = 8 * expected_size - count * dtype.bits
    if record.size_in_bytes != expected_size:
        raise ShapeError(
            f"{where}: blob contains {record.size_in_bytes} bytes ({record.element_count} {dtype} "
            f"elements), but the declared {ttype} has {count} elements in {expected_size} bytes"
        )
    if record.padding_bits != expected_padding:
        raise PaddingError(
            f"{where}: padding_size_in_bits is {record.padding_bits}, which reads "
            f"{record.element_count} elements, but the declared {ttype} has {count} elements "
            f"and needs {expected_padding} padding bits"
        )


def _in_context(err: SparseblobError, context: str) -> SparseblobError:
    """Return an error of the same class whose message starts with ``context``."""
    return type(err)(f"{context}: {err}")
