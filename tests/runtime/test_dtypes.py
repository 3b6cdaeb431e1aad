"""Element type table: both Core ML numbering schemes, containers and ranges."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest

from sparseblob.runtime.dtypes import (
    ELEMENT_TYPES,
    SUB_BYTE_BITS,
    by_blob_code,
    by_name,
    by_proto_code,
)
from sparseblob.runtime.errors import UnknownDtypeError

# (name, blob code, protobuf DataType name, bits, numpy container)
TABLE = [
    ("fp16", 1, "FLOAT16", 16, np.float16),
    ("fp32", 2, "FLOAT32", 32, np.float32),
    ("uint8", 3, "UINT8", 8, np.uint8),
    ("int8", 4, "INT8", 8, np.int8),
    ("bf16", 5, "BFLOAT16", 16, ml_dtypes.bfloat16),
    ("int16", 6, "INT16", 16, np.int16),
    ("uint16", 7, "UINT16", 16, np.uint16),
    ("int4", 8, "INT4", 4, np.int8),
    ("uint1", 9, "UINT1", 1, np.uint8),
    ("uint2", 10, "UINT2", 2, np.uint8),
    ("uint4", 11, "UINT4", 4, np.uint8),
    ("uint3", 12, "UINT3", 3, np.uint8),
    ("uint6", 13, "UINT6", 6, np.uint8),
    ("int32", 14, "INT32", 32, np.int32),
    ("uint32", 15, "UINT32", 32, np.uint32),
    ("fp8_e4m3fn", 16, "FLOAT8E4M3FN", 8, ml_dtypes.float8_e4m3fn),
    ("fp8_e5m2", 17, "FLOAT8E5M2", 8, ml_dtypes.float8_e5m2),
    ("fp64", None, "FLOAT64", 64, np.float64),
    ("int64", None, "INT64", 64, np.int64),
    ("uint64", None, "UINT64", 64, np.uint64),
    ("bool", None, "BOOL", 8, np.bool_),
]

# Types that coremltools' Python blob writer can store, and the name of its write method.
COREMLTOOLS_WRITERS = {
    "fp16": "write_fp16_data",
    "fp32": "write_float_data",
    "uint8": "write_uint8_data",
    "int8": "write_int8_data",
    "int16": "write_int16_data",
    "uint16": "write_uint16_data",
    "int32": "write_int32_data",
    "uint32": "write_uint32_data",
    "int4": "write_int4_data",
    "uint1": "write_uint1_data",
    "uint2": "write_uint2_data",
    "uint3": "write_uint3_data",
    "uint4": "write_uint4_data",
    "uint6": "write_uint6_data",
}


@pytest.mark.parametrize("name, blob_code, proto_name, bits, container", TABLE)
def test_table_row(name, blob_code, proto_name, bits, container):
    element = by_name(name)

    assert element.name == name
    assert element.blob_code == blob_code
    assert element.bits == bits
    assert element.numpy_dtype == np.dtype(container)
    assert element.is_sub_byte == (bits in SUB_BYTE_BITS)


def test_table_covers_every_type():
    assert sorted(t.name for t in ELEMENT_TYPES) == sorted(row[0] for row in TABLE)


@pytest.mark.parametrize("name, blob_code, proto_name, bits, container", TABLE)
def test_proto_codes_match_coremltools(name, blob_code, proto_name, bits, container):
    mil_pb2 = pytest.importorskip("coremltools.proto.MIL_pb2")
    proto_code = mil_pb2.DataType.Value(proto_name)

    assert by_name(name).proto_code == proto_code
    assert by_proto_code(proto_code) is by_name(name)


@pytest.mark.parametrize("name", sorted(COREMLTOOLS_WRITERS))
def test_blob_codes_match_coremltools_writer(tmp_path, name):
    storage = pytest.importorskip("coremltools.libmilstoragepython")
    element = by_name(name)
    container = np.uint16 if name == "fp16" else element.numpy_dtype
    path = tmp_path / "code.bin"

    writer = storage._BlobStorageWriter(str(path))
    metadata_offset = getattr(writer, COREMLTOOLS_WRITERS[name])(np.ones(3, dtype=container))
    del writer

    (code,) = struct.unpack_from("<I", path.read_bytes(), metadata_offset + 4)
    assert code == element.blob_code
    assert by_blob_code(code) is element


def test_blob_codes_are_unique():
    codes = [t.blob_code for t in ELEMENT_TYPES if t.blob_code is not None]

    assert sorted(codes) == list(range(1, 18))


def test_proto_codes_are_unique():
    codes = [t.proto_code for t in ELEMENT_TYPES]

    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("int4", -8, 7),
        ("uint1", 0, 1),
        ("uint2", 0, 3),
        ("uint3", 0, 7),
        ("uint4", 0, 15),
        ("uint6", 0, 63),
        ("int8", -128, 127),
        ("uint8", 0, 255),
        ("int16", -(2**15), 2**15 - 1),
        ("uint32", 0, 2**32 - 1),
    ],
)
def test_integer_range(name, low, high):
    element = by_name(name)

    assert element.min_value == low
    assert element.max_value == high


@pytest.mark.parametrize("name", ["int4", "int8", "int16", "int32", "int64"])
def test_signed_types(name):
    assert by_name(name).signed


@pytest.mark.parametrize("name", ["fp16", "fp32", "fp64", "bf16", "fp8_e4m3fn", "fp8_e5m2"])
def test_float_types(name):
    element = by_name(name)

    assert element.is_float
    assert not element.signed


def test_str_is_name():
    assert str(by_name("uint4")) == "uint4"


def test_unknown_name_raises():
    with pytest.raises(UnknownDtypeError, match="unknown element type 'uint5'; expected one of"):
        by_name("uint5")


@pytest.mark.parametrize("code", [0, 18, 255, 2**32 - 1])
def test_unknown_blob_code_raises(code):
    where = "weight.bin record at offset 64"

    with pytest.raises(UnknownDtypeError, match=f"{where}: unknown blob dtype code {code}; expected"):
        by_blob_code(code, where=where)


@pytest.mark.parametrize("code", [0, 2, 3, 26, 42])
def test_unknown_proto_code_raises(code):
    with pytest.raises(UnknownDtypeError, match=f"conv_0_weight: unsupported protobuf DataType {code}"):
        by_proto_code(code, where="conv_0_weight")


def test_uint4_codes_differ_between_schemes():
    element = by_name("uint4")

    assert element.blob_code == 11
    assert element.proto_code == 35
    assert by_proto_code(11).name == "fp32"
    with pytest.raises(UnknownDtypeError):
        by_blob_code(35)


def test_string_type_is_not_sub_byte():
    from sparseblob.runtime.values import STRING

    assert not STRING.is_sub_byte
