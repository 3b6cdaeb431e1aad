"""Decoding protobuf ``MILSpec.Value`` messages into numpy arrays.

Round trips use coremltools' own value writer (``backend.mil.helper.create_tensor_value`` and
``create_scalar_value``, which the converter uses to serialize every immediate value), so the
field choice and byte layout are coremltools', not ours. Golden byte strings pin the sub-byte
packing of immediates.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparseblob.runtime.dtypes import by_name
from sparseblob.runtime.errors import (
    ElementLimitError,
    PackageError,
    ShapeError,
    UnknownDtypeError,
)
from sparseblob.runtime.values import (
    STRING,
    DictionaryType,
    ImmediateValue,
    ListType,
    StateType,
    TensorType,
    TupleType,
    decode_tensor,
    parse_type,
    parse_value,
)
from sparseblob.verify.compare import assert_bits_equal

logging.getLogger("coremltools").setLevel(logging.ERROR)

from coremltools.converters.mil.backend.mil.helper import (  # noqa: E402
    create_list_scalarvalue,
    create_scalar_value,
    create_tensor_value,
)
from coremltools.converters.mil.mil import types as ct_types  # noqa: E402
from coremltools.proto import MIL_pb2  # noqa: E402

LIMIT = 1 << 20

# numpy dtype that coremltools' writer takes for each MIL element type.
WRITER_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
    "int4": ct_types.np_int4_dtype,
    "uint1": ct_types.np_uint1_dtype,
    "uint2": ct_types.np_uint2_dtype,
    "uint3": ct_types.np_uint3_dtype,
    "uint4": ct_types.np_uint4_dtype,
    "uint6": ct_types.np_uint6_dtype,
}


def decode(value: MIL_pb2.Value, *, max_elements: int = LIMIT):
    return parse_value(value, where="test value", max_elements=max_elements).read()


def tensor_value(dtype_name: str, shape, field: str, payload) -> MIL_pb2.Value:
    """Build a Value by hand: a tensor type and one TensorValue field."""
    value = MIL_pb2.Value()
    tensor_type = value.type.tensorType
    tensor_type.dataType = by_name(dtype_name).proto_code if dtype_name != "string" else 2
    tensor_type.rank = len(shape)
    for dim in shape:
        tensor_type.dimensions.add().constant.size = dim
    tensor = value.immediateValue.tensor
    if field == "bytes":
        tensor.bytes.values = payload
    else:
        getattr(tensor, field).SetInParent()
        getattr(tensor, field).values.extend(payload)
    return value


def element_arrays(dtype_name: str):
    """Hypothesis strategy: arrays of one MIL dtype, rank 0 to 3, sides 0 to 5."""
    element = by_name(dtype_name)
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
    if element.is_float:
        elements = st.floats(width=element.bits, allow_nan=True, allow_infinity=True)
    elif dtype_name == "bool":
        elements = st.booleans()
    else:
        elements = st.integers(element.min_value, element.max_value)
    container = np.dtype(element.numpy_dtype)
    return hnp.arrays(container, shapes, elements=elements)


@pytest.mark.parametrize("dtype_name", sorted(WRITER_DTYPES))
@given(data=st.data())
def test_immediate_round_trip_through_coremltools_writer(dtype_name, data):
    array = data.draw(element_arrays(dtype_name))
    written = create_tensor_value(array.astype(WRITER_DTYPES[dtype_name]))

    decoded = decode(written)

    assert_bits_equal(decoded, array, name=dtype_name)


@pytest.mark.parametrize(
    "scalar, dtype",
    [
        (np.float16(1.5), np.float16),
        (np.float32(-2.25), np.float32),
        (np.int32(-7), np.int32),
        (np.uint8(200), np.uint8),
        (np.int8(-100), np.int8),
        (True, np.bool_),
    ],
)
def test_scalar_is_rank_zero_array(scalar, dtype):
    decoded = decode(create_scalar_value(scalar))

    assert_bits_equal(decoded, np.array(scalar, dtype=dtype), name="scalar")


def test_string_scalar_decodes_to_str_array():
    decoded = decode(create_scalar_value("same_lower"))

    assert decoded.shape == ()
    assert decoded.item() == "same_lower"


def test_string_tensor_keeps_order():
    value = tensor_value("string", [3], "strings", ["a", "bb", "ccc"])

    assert decode(value).tolist() == ["a", "bb", "ccc"]


@pytest.mark.parametrize(
    "dtype_name, shape, payload, expected",
    [
        ("uint1", [3, 3], b"\x11\x01", [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        ("int4", [3], b"\x78\x03", [-8, 7, 3]),
        ("uint3", [9], b"\x88\xc6\xfa\x00", [0, 1, 2, 3, 4, 5, 6, 7, 0]),
        ("uint2", [5], b"\xe4\x03", [0, 1, 2, 3, 3]),
        ("uint4", [5], b"\x21\xf3\x07", [1, 2, 3, 15, 7]),
        ("uint6", [5], b"\xc1\x0f\x16\x11", [1, 63, 32, 5, 17]),
    ],
)
def test_sub_byte_immediate_matches_golden_bytes(dtype_name, shape, payload, expected):
    element = by_name(dtype_name)

    decoded = decode(tensor_value(dtype_name, shape, "bytes", payload))

    assert_bits_equal(decoded, np.array(expected, dtype=element.numpy_dtype), name=dtype_name)


def test_uint32_immediate_is_little_endian_bytes():
    value = tensor_value("uint32", [2], "bytes", bytes.fromhex("4000000080000000"))

    assert decode(value).tolist() == [64, 128]


@pytest.mark.parametrize("dtype_name, field", [("fp16", "bytes"), ("fp32", "floats"), ("int32", "ints"), ("bool", "bools")])
def test_empty_tensor_has_zero_dimension(dtype_name, field):
    value = tensor_value(dtype_name, [0], field, b"" if field == "bytes" else [])

    decoded = decode(value)

    assert decoded.shape == (0,)
    assert decoded.dtype == by_name(dtype_name).numpy_dtype


def test_decoded_immediate_is_read_only():
    decoded = decode(create_tensor_value(np.arange(4, dtype=np.float32)))

    assert not decoded.flags.writeable


def test_list_value_decodes_each_element():
    value = create_list_scalarvalue([3, 4], np.int32)

    decoded = decode(value)

    assert [int(item) for item in decoded] == [3, 4]


def test_tuple_value_decodes_to_tuple():
    value = MIL_pb2.Value()
    value.type.tupleType.types.add().CopyFrom(create_scalar_value(np.int32(1)).type)
    value.type.tupleType.types.add().CopyFrom(create_scalar_value(np.float32(2.0)).type)
    value.immediateValue.tuple.values.add().CopyFrom(create_scalar_value(np.int32(1)))
    value.immediateValue.tuple.values.add().CopyFrom(create_scalar_value(np.float32(2.0)))

    decoded = decode(value)

    assert isinstance(decoded, tuple)
    assert [float(item) for item in decoded] == [1.0, 2.0]


def test_dictionary_value_keys_are_python_scalars():
    value = MIL_pb2.Value()
    value.type.dictionaryType.keyType.CopyFrom(create_scalar_value("k").type)
    value.type.dictionaryType.valueType.CopyFrom(create_scalar_value(np.int32(1)).type)
    pair = value.immediateValue.dictionary.values.add()
    pair.key.CopyFrom(create_scalar_value("k"))
    pair.value.CopyFrom(create_scalar_value(np.int32(5)))

    decoded = decode(value)

    assert list(decoded) == ["k"]
    assert int(decoded["k"]) == 5


def test_parse_type_reads_unknown_dimension_as_none():
    proto = MIL_pb2.ValueType()
    proto.tensorType.dataType = by_name("fp16").proto_code
    proto.tensorType.rank = 2
    proto.tensorType.dimensions.add().unknown.variadic = False
    proto.tensorType.dimensions.add().constant.size = 4

    parsed = parse_type(proto, where="t")

    assert parsed == TensorType(by_name("fp16"), (None, 4))
    assert not parsed.is_static


def test_parse_type_reads_list_tuple_dictionary_state():
    scalar = create_scalar_value(np.int32(1)).type
    proto = MIL_pb2.ValueType()
    proto.listType.type.CopyFrom(scalar)
    proto.listType.length.constant.size = 2
    assert parse_type(proto, where="t") == ListType(TensorType(by_name("int32"), ()), 2)

    proto = MIL_pb2.ValueType()
    proto.tupleType.types.add().CopyFrom(scalar)
    assert parse_type(proto, where="t") == TupleType((TensorType(by_name("int32"), ()),))

    proto = MIL_pb2.ValueType()
    proto.dictionaryType.keyType.CopyFrom(scalar)
    proto.dictionaryType.valueType.CopyFrom(scalar)
    assert parse_type(proto, where="t") == DictionaryType(TensorType(by_name("int32"), ()), TensorType(by_name("int32"), ()))

    proto = MIL_pb2.ValueType()
    proto.stateType.wrappedType.CopyFrom(scalar)
    assert parse_type(proto, where="t") == StateType(TensorType(by_name("int32"), ()))


def test_tensor_type_prints_mil_notation():
    assert str(TensorType(by_name("uint4"), (64, None))) == "tensor<uint4, [64, ?]>"
    assert str(TensorType(STRING, ())) == "tensor<string, []>"


# --- invalid values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype_name, field, payload",
    [
        ("fp16", "floats", [1.0]),
        ("fp32", "bytes", b"\x00\x00\x80\x3f"),
        ("int8", "ints", [1]),
        ("int32", "bytes", b"\x01\x00\x00\x00"),
        ("int64", "ints", [1]),
        ("uint4", "ints", [1]),
        ("bool", "ints", [1]),
    ],
)
def test_wrong_field_for_dtype_is_rejected(dtype_name, field, payload):
    value = tensor_value(dtype_name, [1], field, payload)

    with pytest.raises(PackageError, match=rf"test value: immediate tensor<{dtype_name}, \[1\]> is stored in field '{field}'"):
        decode(value)


def test_missing_tensor_field_is_rejected():
    value = tensor_value("fp32", [1], "floats", [1.0])
    value.immediateValue.tensor.ClearField("floats")

    with pytest.raises(PackageError, match="stored in field None; expected 'floats'"):
        decode(value)


@pytest.mark.parametrize(
    "dtype_name, shape, payload, found, expected",
    [
        ("fp16", [3], b"\x00" * 4, 4, 6),
        ("uint8", [4], b"\x00" * 5, 5, 4),
        ("uint3", [9], b"\x00" * 3, 3, 4),
        ("int4", [3], b"\x00" * 1, 1, 2),
        ("uint1", [9], b"\x00" * 1, 1, 2),
    ],
)
def test_byte_count_must_match_shape(dtype_name, shape, payload, found, expected):
    value = tensor_value(dtype_name, shape, "bytes", payload)

    with pytest.raises(ShapeError, match=f"contains {found} bytes; expected {expected}"):
        decode(value)


@pytest.mark.parametrize("field, payload", [("floats", [1.0, 2.0]), ("ints", [1, 2, 3, 4])])
def test_value_count_must_match_shape(field, payload):
    dtype_name = "fp32" if field == "floats" else "int32"
    value = tensor_value(dtype_name, [3], field, payload)

    with pytest.raises(ShapeError, match=f"contains {len(payload)} values; expected 3"):
        decode(value)


@pytest.mark.parametrize("dtype_name, bad", [("int16", 40000), ("uint16", -1), ("uint64", -5)])
def test_integer_outside_dtype_range_is_rejected(dtype_name, bad):
    field = "longInts" if dtype_name == "uint64" else "ints"
    value = tensor_value(dtype_name, [2], field, [0, bad])

    with pytest.raises(PackageError, match=f"contains {bad}, outside the {dtype_name} range"):
        decode(value)


def test_unknown_proto_dtype_is_rejected():
    value = tensor_value("fp32", [1], "floats", [1.0])
    value.type.tensorType.dataType = 99

    with pytest.raises(UnknownDtypeError, match="test value: unsupported protobuf DataType 99"):
        decode(value)


def test_rank_must_match_dimension_count():
    value = tensor_value("fp32", [2], "floats", [1.0, 2.0])
    value.type.tensorType.rank = 3

    with pytest.raises(PackageError, match="tensor rank is 3, but 1 dimensions are given"):
        decode(value)


def test_immediate_with_unknown_dimension_is_rejected():
    value = tensor_value("fp32", [2], "floats", [1.0, 2.0])
    value.type.tensorType.dimensions[0].unknown.variadic = False

    with pytest.raises(PackageError, match="unknown dimensions"):
        decode(value)


def test_huge_shape_is_rejected_before_allocation():
    # 2**80 elements: the limit check must run before anything is sized from the shape.
    value = tensor_value("fp16", [1 << 40, 1 << 40], "bytes", b"")

    with pytest.raises(ElementLimitError, match="exceeds the limit of 1048576"):
        decode(value)


def test_shape_over_max_elements_is_rejected():
    value = create_tensor_value(np.zeros(100, np.float32))

    with pytest.raises(ElementLimitError, match="has 100 elements, which exceeds the limit of 99"):
        decode(value, max_elements=99)


def test_value_without_data_is_rejected():
    value = MIL_pb2.Value()
    value.type.CopyFrom(create_scalar_value(np.int32(1)).type)

    with pytest.raises(PackageError, match="neither an immediate value nor a blob file value"):
        decode(value)


def test_value_without_type_is_rejected():
    value = create_scalar_value(np.int32(1))
    value.ClearField("type")

    with pytest.raises(PackageError, match="the value type is missing"):
        decode(value)


def test_immediate_kind_must_match_type():
    value = create_scalar_value(np.int32(1))
    value.type.Clear()
    value.type.listType.type.CopyFrom(create_scalar_value(np.int32(1)).type)

    with pytest.raises(PackageError, match="immediate value is a tensor, but the declared type is ListType"):
        decode(value)


def test_list_length_must_match_type():
    value = create_list_scalarvalue([3, 4], np.int32)
    value.type.listType.length.constant.size = 3

    with pytest.raises(ShapeError, match="list contains 2 values, but its type declares 3"):
        decode(value)


def test_blob_value_without_resolver_is_rejected():
    value = MIL_pb2.Value()
    value.type.CopyFrom(create_tensor_value(np.zeros(16, np.float16)).type)
    value.blobFileValue.fileName = "@model_path/weights/weight.bin"
    value.blobFileValue.offset = 64

    with pytest.raises(PackageError, match="blob file values are not allowed here"):
        decode(value)


def test_decode_tensor_checks_dtype_field_directly():
    written = create_tensor_value(np.arange(3, dtype=np.int32))
    ttype = parse_type(written.type, where="t")

    decoded = decode_tensor(written.immediateValue.tensor, ttype, where="t", max_elements=LIMIT)

    assert_bits_equal(decoded, np.arange(3, dtype=np.int32), name="int32")


def test_immediate_value_reports_not_blob():
    value = parse_value(create_scalar_value(np.int32(1)), where="t", max_elements=LIMIT)

    assert isinstance(value, ImmediateValue)
    assert not value.is_blob
