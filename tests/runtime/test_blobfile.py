"""Blob storage files: layout, agreement with coremltools, rejections, mapping, atomic writes."""

from __future__ import annotations

import gc
import os
import re
import resource
import struct
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseblob.runtime.blobfile import (
    HEADER_SIZE,
    RECORD_SIZE,
    BlobFile,
    BlobRecord,
    BlobWriter,
    check_disjoint,
)
from sparseblob.runtime.dtypes import ELEMENT_TYPES, by_name
from sparseblob.runtime.errors import (
    BlobBoundsError,
    BlobFileError,
    BlobHeaderError,
    BlobOverlapError,
    BlobSentinelError,
    ElementLimitError,
    EncodingError,
    PaddingError,
    ShapeError,
    SparseblobError,
    UnknownDtypeError,
)
from sparseblob.runtime.limits import element_count
from sparseblob.verify.compare import assert_bits_equal

BLOB_TYPES = sorted(t.name for t in ELEMENT_TYPES if t.blob_code is not None)
SUB_BYTE_TYPES = [name for name in BLOB_TYPES if by_name(name).is_sub_byte]

# coremltools' Python binding: write method, read method, and the array dtype both use.
COREMLTOOLS_METHODS = {
    "fp16": ("write_fp16_data", "read_fp16_data", np.uint16),
    "fp32": ("write_float_data", "read_float_data", np.float32),
    "uint8": ("write_uint8_data", "read_uint8_data", np.uint8),
    "int8": ("write_int8_data", "read_int8_data", np.int8),
    "int16": ("write_int16_data", "read_int16_data", np.int16),
    "uint16": ("write_uint16_data", "read_uint16_data", np.uint16),
    "int32": ("write_int32_data", "read_int32_data", np.int32),
    "uint32": ("write_uint32_data", "read_uint32_data", np.uint32),
    "int4": ("write_int4_data", "read_int4_data", np.int8),
    "uint1": ("write_uint1_data", "read_uint1_data", np.uint8),
    "uint2": ("write_uint2_data", "read_uint2_data", np.uint8),
    "uint3": ("write_uint3_data", "read_uint3_data", np.uint8),
    "uint4": ("write_uint4_data", "read_uint4_data", np.uint8),
    "uint6": ("write_uint6_data", "read_uint6_data", np.uint8),
}
COREMLTOOLS_TYPES = sorted(COREMLTOOLS_METHODS)

# Hypothesis tests reuse one file in pytest's tmp_path, overwritten by every example.
REUSE_TMP_PATH = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

_RECORD_FORMAT = "<IIQQQ"


def storage_module():
    return pytest.importorskip("coremltools.libmilstoragepython")


def random_values(name: str, count: int, seed: int) -> np.ndarray:
    """Return ``count`` values of type ``name``: any bit pattern for whole-byte types."""
    element = by_name(name)
    rng = np.random.default_rng(seed)
    if element.is_sub_byte:
        return rng.integers(element.min_value, element.max_value + 1, count).astype(element.numpy_dtype)
    raw = rng.integers(0, 256, count * element.numpy_dtype.itemsize, dtype=np.uint8)
    return raw.view(element.numpy_dtype)


def write_ours(path: Path, blobs: list[tuple[str, np.ndarray]]) -> list[int]:
    with BlobWriter(path) as writer:
        return [writer.write(values, name) for name, values in blobs]


def write_coremltools(path: Path, blobs: list[tuple[str, np.ndarray]]) -> list[int]:
    writer = storage_module()._BlobStorageWriter(str(path))
    offsets = []
    for name, values in blobs:
        method, _, container = COREMLTOOLS_METHODS[name]
        offsets.append(getattr(writer, method)(values.view(container) if name == "fp16" else values))
    # The binding flushes its buffered data only when the writer is destroyed.
    del writer
    return offsets


def read_coremltools(path: Path, name: str, metadata_offset: int) -> np.ndarray:
    reader = storage_module()._BlobStorageReader(str(path))
    _, method, _ = COREMLTOOLS_METHODS[name]
    values = getattr(reader, method)(metadata_offset)
    return values.view(np.float16) if name == "fp16" else values


def record_fields(path: Path, metadata_offset: int) -> tuple[int, int, int, int, int]:
    return struct.unpack_from(_RECORD_FORMAT, path.read_bytes(), metadata_offset)


def patch(path: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@st.composite
def blob_arrays(draw, names=BLOB_TYPES, max_count=40):
    """Draw ``(type name, values)``; whole-byte values are arbitrary bit patterns."""
    name = draw(st.sampled_from(names))
    element = by_name(name)
    count = draw(st.integers(1, max_count))
    if element.is_sub_byte:
        values = draw(
            st.lists(
                st.integers(element.min_value, element.max_value), min_size=count, max_size=count
            )
        )
        return name, np.array(values, dtype=element.numpy_dtype)
    size = count * element.numpy_dtype.itemsize
    raw = draw(st.binary(min_size=size, max_size=size))
    return name, np.frombuffer(raw, dtype=element.numpy_dtype).copy()


# Layout.


def test_one_fp16_blob_golden_file(tmp_path):
    # Written by coremltools 9.0's _BlobStorageWriter for fp16 [0, 1, 2].
    golden = (
        "01000000" "02000000" + "00" * 56
        + "efbeadde" "01000000" "0600000000000000" "8000000000000000" + "00" * 40
        + "0000" "003c" "0040"
    )
    path = tmp_path / "weight.bin"

    offsets = write_ours(path, [("fp16", np.array([0, 1, 2], dtype=np.float16))])

    assert offsets == [64]
    assert path.read_bytes().hex() == golden
    assert path.stat().st_size == 134


def test_records_are_aligned_with_zero_gaps(tmp_path):
    path = tmp_path / "weight.bin"
    blobs = [(name, random_values(name, 13, seed)) for seed, name in enumerate(BLOB_TYPES)]

    offsets = write_ours(path, blobs)

    data = path.read_bytes()
    assert struct.unpack_from("<II", data, 0) == (len(blobs), 2)
    assert data[8:64] == bytes(56)
    for index, metadata_offset in enumerate(offsets):
        _, _, size, data_offset, _ = struct.unpack_from(_RECORD_FORMAT, data, metadata_offset)
        assert metadata_offset % 64 == 0
        assert data_offset == metadata_offset + RECORD_SIZE
        assert data[metadata_offset + 32 : metadata_offset + 64] == bytes(32)
        gap_end = offsets[index + 1] if index + 1 < len(offsets) else len(data)
        assert data[data_offset + size : gap_end] == bytes(gap_end - data_offset - size)
    assert len(data) == data_offset + size


# Agreement with coremltools.


@pytest.mark.parametrize("name", COREMLTOOLS_TYPES)
def test_writer_matches_coremltools(tmp_path, name):
    blobs = [(name, random_values(name, count, count)) for count in (1, 9, 33, 10)]

    ours = write_ours(tmp_path / "ours.bin", blobs)
    theirs = write_coremltools(tmp_path / "theirs.bin", blobs)

    assert ours == theirs
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()


@REUSE_TMP_PATH
@given(st.lists(blob_arrays(COREMLTOOLS_TYPES), min_size=1, max_size=5))
def test_writer_matches_coremltools_any_sequence(tmp_path, blobs):
    ours = write_ours(tmp_path / "ours.bin", blobs)
    theirs = write_coremltools(tmp_path / "theirs.bin", blobs)

    assert ours == theirs
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()


@pytest.mark.parametrize("name", COREMLTOOLS_TYPES)
def test_coremltools_reads_our_file(tmp_path, name):
    path = tmp_path / "weight.bin"
    blobs = [(name, random_values(name, count, count)) for count in (11, 1, 64, 7)]

    offsets = write_ours(path, blobs)

    for metadata_offset, (_, values) in zip(offsets, blobs):
        assert_bits_equal(read_coremltools(path, name, metadata_offset), values, name)


@pytest.mark.parametrize("name", COREMLTOOLS_TYPES)
def test_reader_reads_coremltools_file(tmp_path, name):
    path = tmp_path / "weight.bin"
    blobs = [(name, random_values(name, count, count)) for count in (11, 1, 64, 7)]

    offsets = write_coremltools(path, blobs)

    with BlobFile(path) as blob_file:
        assert [record.metadata_offset for record in blob_file.validate()] == offsets
        for metadata_offset, (_, values) in zip(offsets, blobs):
            read = blob_file.read(metadata_offset, dtype=name, shape=[values.size])
            assert_bits_equal(read, values, name)


def test_reader_reads_mixed_coremltools_file(tmp_path):
    path = tmp_path / "weight.bin"
    blobs = [(name, random_values(name, 17, seed)) for seed, name in enumerate(COREMLTOOLS_TYPES)]

    offsets = write_coremltools(path, blobs)

    with BlobFile(path) as blob_file:
        records = blob_file.validate()
        for record, metadata_offset, (name, values) in zip(records, offsets, blobs):
            assert record.metadata_offset == metadata_offset
            assert record.dtype.name == name
            assert record.element_count == values.size
            assert_bits_equal(blob_file.read(metadata_offset, dtype=name), values, name)


def test_coremltools_ignores_padding_of_whole_byte_types(tmp_path):
    # The padding field was reserved before iOS18, so old files may have garbage in it.
    path = tmp_path / "weight.bin"
    values = np.arange(5, dtype=np.float16)
    (metadata_offset,) = write_ours(path, [("fp16", values)])
    patch(path, metadata_offset + 24, "<Q", 0x1234567)

    with BlobFile(path) as blob_file:
        ours = blob_file.read(metadata_offset, dtype="fp16", shape=[5])
        assert blob_file.record(metadata_offset).padding_bits == 0
        assert_bits_equal(ours, values, "fp16")
    assert_bits_equal(read_coremltools(path, "fp16", metadata_offset), values, "fp16")


def test_empty_blob_from_coremltools_is_rejected(tmp_path):
    path = tmp_path / "weight.bin"
    writer = storage_module()._BlobStorageWriter(str(path))
    metadata_offset = writer.write_uint8_data(np.zeros(0, dtype=np.uint8))
    del writer

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobBoundsError, match="record at offset 64: sizeInBytes is 0; expected at least 1"):
            blob_file.read(metadata_offset)


# Round trips through our writer and reader.


@REUSE_TMP_PATH
@given(st.lists(blob_arrays(), min_size=1, max_size=4))
def test_round_trip_every_blob_type(tmp_path, blobs):
    path = tmp_path / "weight.bin"

    offsets = write_ours(path, blobs)

    with BlobFile(path) as blob_file:
        assert len(blob_file.validate()) == len(blobs)
        for metadata_offset, (name, values) in zip(offsets, blobs):
            read = blob_file.read(metadata_offset, dtype=name, shape=values.shape)
            assert_bits_equal(read, values, name)


SPECIAL_FLOAT_BITS = {
    # -0.0, +inf, -inf, quiet NaN, signalling NaN with payload, negative NaN with full payload,
    # smallest subnormal, largest finite
    "fp16": [0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF, 0x0001, 0x7BFF],
    "bf16": [0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFFF, 0x0001, 0x7F7F],
    "fp32": [0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x1, 0x7F7FFFFF],
    # e4m3fn has no inf; 0x7F and 0xFF are its NaNs.
    "fp8_e4m3fn": [0x80, 0x7F, 0xFF, 0x01, 0x7E, 0x08, 0x00, 0xFE],
    "fp8_e5m2": [0x80, 0x7C, 0xFC, 0x7E, 0x7D, 0xFF, 0x01, 0x7B],
}


@pytest.mark.parametrize("name", sorted(SPECIAL_FLOAT_BITS))
def test_special_float_bits_round_trip(tmp_path, name):
    element = by_name(name)
    unsigned = f"u{element.numpy_dtype.itemsize}"
    values = np.array(SPECIAL_FLOAT_BITS[name] * 3, dtype=unsigned).view(element.numpy_dtype)
    path = tmp_path / "weight.bin"

    (metadata_offset,) = write_ours(path, [(name, values)])

    with BlobFile(path) as blob_file:
        assert_bits_equal(blob_file.read(metadata_offset, dtype=name), values, name)


@pytest.mark.parametrize("name", SUB_BYTE_TYPES)
def test_sub_byte_read_returns_container_dtype(tmp_path, name):
    element = by_name(name)
    values = random_values(name, 24, 3).reshape(2, 3, 4)
    path = tmp_path / "weight.bin"

    (metadata_offset,) = write_ours(path, [(name, values)])

    with BlobFile(path) as blob_file:
        read = blob_file.read(metadata_offset, dtype=name, shape=(2, 3, 4))
    assert read.dtype == element.numpy_dtype
    assert read.shape == (2, 3, 4)
    assert np.array_equal(read, values)


# Header rejections.


@pytest.mark.parametrize("version", [0, 1, 3, 2**32 - 1])
def test_wrong_version_raises(tmp_path, version):
    path = tmp_path / "weight.bin"
    write_ours(path, [("fp16", np.ones(4, dtype=np.float16))])
    patch(path, 4, "<I", version)

    with pytest.raises(BlobHeaderError, match=f"offset 0 has version {version}; expected 2"):
        BlobFile(path)


@pytest.mark.parametrize("size", [0, 1, 8, 63])
def test_file_shorter_than_header_raises(tmp_path, size):
    path = tmp_path / "weight.bin"
    path.write_bytes(struct.pack("<II", 0, 2).ljust(64, b"\0")[:size])

    with pytest.raises(BlobHeaderError, match=f"file is {size} bytes, shorter than the 64-byte"):
        BlobFile(path)


def test_header_only_file_has_no_records(tmp_path):
    path = tmp_path / "weight.bin"
    path.write_bytes(struct.pack("<II", 0, 2).ljust(64, b"\0"))

    with BlobFile(path) as blob_file:
        assert blob_file.validate() == []


# Truncation at every byte.


def test_truncation_at_every_byte_raises_package_errors(tmp_path):
    source = tmp_path / "full.bin"
    blobs = [
        ("fp16", random_values("fp16", 11, 1)),
        ("uint3", random_values("uint3", 11, 2)),
        ("int8", random_values("int8", 5, 3)),
    ]
    offsets = write_ours(source, blobs)
    data = source.read_bytes()
    payload_ends = [record_fields(source, offset)[3] + record_fields(source, offset)[2] for offset in offsets]
    path = tmp_path / "cut.bin"

    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        if cut < HEADER_SIZE:
            with pytest.raises(BlobHeaderError):
                BlobFile(path)
            continue

        with BlobFile(path) as blob_file:
            with pytest.raises(SparseblobError):
                blob_file.validate()
            for metadata_offset, end, (name, values) in zip(offsets, payload_ends, blobs):
                if end <= cut:
                    assert_bits_equal(blob_file.read(metadata_offset, dtype=name), values, f"cut {cut}")
                else:
                    with pytest.raises(BlobBoundsError):
                        blob_file.read(metadata_offset, dtype=name)


@REUSE_TMP_PATH
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_package_errors(tmp_path, data):
    path = tmp_path / "weight.bin"
    path.write_bytes(data)

    try:
        with BlobFile(path) as blob_file:
            for record in blob_file.validate():
                blob_file.read(record.metadata_offset)
    except SparseblobError:
        pass


@REUSE_TMP_PATH
@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from([64, 128, 192, 256, 320, 384]),
)
def test_mutated_file_raises_only_package_errors(tmp_path, mutations, metadata_offset):
    path = tmp_path / "weight.bin"
    write_ours(path, [(name, random_values(name, 9, 0)) for name in ("fp16", "uint3", "int4", "fp32")])
    data = bytearray(path.read_bytes())
    for position, byte in mutations:
        data[position % len(data)] = byte
    path.write_bytes(bytes(data))

    try:
        with BlobFile(path) as blob_file:
            blob_file.read(metadata_offset)
            blob_file.validate()
    except SparseblobError:
        pass


# A flipped bit in every byte of the header and of a record.


def _outcome(call):
    """Run ``call``; return the exception class it raised, or None."""
    try:
        call()
    except Exception as error:
        return type(error)
    return None


HEADER_FIELDS = [("count", 0, 4), ("version", 4, 8), ("reserved", 8, 64)]


@pytest.mark.parametrize("field, start, stop", HEADER_FIELDS, ids=[f[0] for f in HEADER_FIELDS])
def test_flipped_header_bit(tmp_path, field, start, stop):
    source = tmp_path / "source.bin"
    values = random_values("fp16", 11, 5)
    write_ours(source, [("fp16", values)])
    data = source.read_bytes()
    path = tmp_path / "flipped.bin"

    for byte in range(start, stop):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[byte] ^= 1 << bit
            path.write_bytes(bytes(flipped))
            case = f"byte {byte} bit {bit}"

            if field == "version":
                assert _outcome(lambda: BlobFile(path)) is BlobHeaderError, case
                continue

            with BlobFile(path) as blob_file:
                assert_bits_equal(blob_file.read(64, dtype="fp16", shape=[11]), values, case)
                count = blob_file.count
                outcome = _outcome(blob_file.validate)
            if field == "reserved":
                assert outcome is None, case
            elif count == 0:
                # No record is declared, so the payload of the real one is unexplained data.
                assert outcome is BlobFileError, case
            else:
                # A second record would start at the end of the file.
                assert outcome is BlobBoundsError, case


RECORD_FIELDS = [
    ("sentinel", 0, 4),
    ("dtype", 4, 8),
    ("size", 8, 16),
    ("offset", 16, 24),
    ("padding", 24, 32),
    ("reserved", 32, 64),
]

# (type, element count, error for a changed padding_size_in_bits as a function of the new value)
FLIP_CASES = {
    # Whole-byte types ignore the padding field.
    "fp16": (11, lambda padding: None),
    # uint3 with 9 elements: 27 of 32 bits. Every other padding value leaves a bit count that
    # is not a multiple of 3, or is 8 or more.
    "uint3": (9, lambda padding: PaddingError),
    # uint4 with 5 elements: padding 0 is valid and reads 6 elements instead of the declared 5.
    "uint4": (5, lambda padding: ShapeError if padding == 0 else PaddingError),
}


@pytest.mark.parametrize("field, start, stop", RECORD_FIELDS, ids=[f[0] for f in RECORD_FIELDS])
@pytest.mark.parametrize("name", sorted(FLIP_CASES))
def test_flipped_record_bit(tmp_path, name, field, start, stop):
    count, padding_outcome = FLIP_CASES[name]
    values = random_values(name, count, 6)
    source = tmp_path / "source.bin"
    (metadata_offset,) = write_ours(source, [(name, values)])
    data = source.read_bytes()
    old_fields = struct.unpack_from(_RECORD_FORMAT, data, metadata_offset)
    path = tmp_path / "flipped.bin"

    for byte in range(start, stop):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[metadata_offset + byte] ^= 1 << bit
            path.write_bytes(bytes(flipped))
            new_fields = struct.unpack_from(_RECORD_FORMAT, flipped, metadata_offset)

            if field == "sentinel":
                expected = BlobSentinelError
            elif field == "dtype":
                expected = UnknownDtypeError
            elif field == "size":
                old, new = old_fields[2], new_fields[2]
                # A larger size runs past the end of the file, and a smaller one has fewer elements.
                expected = BlobBoundsError if new == 0 or new > old else ShapeError
            elif field == "offset":
                # The file ends at the payload, so any other start lies outside the blob area.
                expected = BlobBoundsError
            elif field == "padding":
                expected = padding_outcome(new_fields[4])
            else:
                expected = None

            with BlobFile(path) as blob_file:
                read = []
                outcome = _outcome(
                    lambda: read.append(blob_file.read(metadata_offset, dtype=name, shape=[count]))
                )
            case = f"{name} {field} byte {byte} bit {bit}"
            assert outcome is expected, case
            if expected is None:
                assert_bits_equal(read[0], values, case)


# Record rejections.


@pytest.mark.parametrize("code", [0, 18, 99, 2**32 - 1])
def test_unknown_dtype_code_raises(tmp_path, code):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    patch(path, metadata_offset + 4, "<I", code)

    with BlobFile(path) as blob_file:
        with pytest.raises(UnknownDtypeError, match=f"record at offset 64: unknown blob dtype code {code}"):
            blob_file.record(metadata_offset)
        with pytest.raises(UnknownDtypeError, match=f"blob stores an unknown type \\(code {code}\\)"):
            blob_file.read(metadata_offset, dtype="uint8")


def test_bad_sentinel_names_value(tmp_path):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    patch(path, metadata_offset, "<I", 0xDEADBEEE)

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobSentinelError, match="sentinel is 0xdeadbeee; expected 0xdeadbeef"):
            blob_file.record(metadata_offset)


@pytest.mark.parametrize("metadata_offset", [-64, 0, 32, 65, 100])
def test_misplaced_record_offset_raises(tmp_path, metadata_offset):
    path = tmp_path / "weight.bin"
    write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobBoundsError, match="expected a multiple of 64 that is at least 64"):
            blob_file.record(metadata_offset)


def test_record_past_end_raises(tmp_path):
    path = tmp_path / "weight.bin"
    write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobBoundsError, match="record ends at 256, past the end of the 144-byte file"):
            blob_file.record(192)


@pytest.mark.parametrize(
    "field_offset, value, message",
    [
        (8, 17, r"payload \[128, 145\) lies outside the blob area \[64, 144\)"),
        (8, 2**64 - 1, r"payload \[128, 18446744073709551743\) lies outside"),
        (16, 129, r"payload \[129, 145\) lies outside"),
        (16, 2**40, r"payload \[1099511627776, 1099511627792\) lies outside"),
        (16, 0, r"payload \[0, 16\) lies outside the blob area \[64, 144\)"),
    ],
    ids=["size", "huge-size", "offset", "huge-offset", "offset-in-header"],
)
def test_payload_outside_file_raises(tmp_path, field_offset, value, message):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    patch(path, metadata_offset + field_offset, "<Q", value)

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobBoundsError, match=message):
            blob_file.read(metadata_offset)


@pytest.mark.parametrize("data_offset", [64, 100, 127])
def test_payload_overlapping_its_record_raises(tmp_path, data_offset):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    patch(path, metadata_offset + 16, "<Q", data_offset)

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobOverlapError, match=r"overlaps its own record \[64, 128\)"):
            blob_file.read(metadata_offset)


def test_payload_overlapping_another_blob_raises(tmp_path):
    path = tmp_path / "weight.bin"
    offsets = write_ours(
        path,
        [(name, np.arange(16, dtype=np.uint8)) for name in ("uint8", "uint8")],
    )
    # The second payload moves 8 bytes into the first one.
    patch(path, offsets[1] + 16, "<Q", record_fields(path, offsets[0])[3] + 8)

    with BlobFile(path) as blob_file:
        assert blob_file.read(offsets[1]).tolist() == list(range(8, 16)) + [0] * 8
        with pytest.raises(BlobOverlapError, match=r"payload of blob at offset 64 \[128, 144\) overlaps payload of blob at offset 192 \[136, 152\)"):
            blob_file.validate()


def test_record_walk_that_does_not_advance_raises(tmp_path):
    path = tmp_path / "weight.bin"
    offsets = write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))] * 2)
    # The second payload points back into the first, so its successor would be itself.
    patch(path, offsets[1] + 16, "<Q", 128)
    patch(path, 0, "<I", 2**32 - 1)

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobOverlapError, match="the next record would be at 192; expected an offset after 192"):
            blob_file.validate()


def test_check_disjoint_finds_overlap_in_any_order():
    uint8 = by_name("uint8")
    records = [
        BlobRecord(320, uint8, 64, 384, 0),
        BlobRecord(64, uint8, 400, 128, 0),
    ]

    with pytest.raises(BlobOverlapError, match=r"payload of blob at offset 64 \[128, 528\) overlaps record of blob at offset 320"):
        check_disjoint(records, name="weight.bin")


def test_check_disjoint_accepts_adjacent_spans():
    uint8 = by_name("uint8")
    records = [BlobRecord(64, uint8, 64, 128, 0), BlobRecord(192, uint8, 1, 256, 0)]

    check_disjoint(records, name="weight.bin")


def test_trailing_bytes_fail_validation(tmp_path):
    path = tmp_path / "weight.bin"
    write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    with open(path, "ab") as handle:
        handle.write(bytes(100))

    with BlobFile(path) as blob_file:
        assert blob_file.read(64).tolist() == list(range(16))
        with pytest.raises(BlobFileError, match="1 blobs, which end at offset 144, but the file is 244 bytes"):
            blob_file.validate()


@pytest.mark.parametrize("padding", [8, 9, 64, 2**64 - 1])
@pytest.mark.parametrize("name", SUB_BYTE_TYPES)
def test_padding_of_eight_or_more_raises(tmp_path, name, padding):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [(name, random_values(name, 10, 0))])
    patch(path, metadata_offset + 24, "<Q", padding)

    with BlobFile(path) as blob_file:
        with pytest.raises(PaddingError, match=f"padding_size_in_bits is {padding}; expected 0 to 7"):
            blob_file.read(metadata_offset)


def _padding_cases():
    """Yield (type, element count, padding, valid) for every padding value 0-7."""
    for name in SUB_BYTE_TYPES:
        bits = by_name(name).bits
        count = 10
        size = (count * bits + 7) // 8
        for padding in range(8):
            yield name, count, padding, (8 * size - padding) % bits == 0


@pytest.mark.parametrize("name, count, padding, valid", list(_padding_cases()))
def test_padding_consistent_with_width(tmp_path, name, count, padding, valid):
    bits = by_name(name).bits
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [(name, random_values(name, count, 0))])
    patch(path, metadata_offset + 24, "<Q", padding)
    size = record_fields(path, metadata_offset)[2]

    with BlobFile(path) as blob_file:
        if not valid:
            with pytest.raises(PaddingError, match=f"padding_size_in_bits is {padding}, which leaves"):
                blob_file.read(metadata_offset)
            return
        stored = (8 * size - padding) // bits
        assert blob_file.record(metadata_offset).element_count == stored
        if stored != count:
            # A valid but different padding changes the element count; the shape catches it.
            with pytest.raises(ShapeError, match=f"blob contains {stored} {name} elements"):
                blob_file.read(metadata_offset, shape=[count])


@pytest.mark.parametrize("name", ["fp16", "fp32", "int16", "uint32", "bf16"])
def test_size_not_a_whole_number_of_elements_raises(tmp_path, name):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [(name, random_values(name, 8, 0))])
    size = record_fields(path, metadata_offset)[2]
    patch(path, metadata_offset + 8, "<Q", size - 1)
    itemsize = by_name(name).numpy_dtype.itemsize

    with BlobFile(path) as blob_file:
        with pytest.raises(ShapeError, match=f"sizeInBytes is {size - 1}; expected a multiple of {itemsize}"):
            blob_file.read(metadata_offset)


def test_zero_size_blob_raises(tmp_path):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("fp16", np.ones(4, dtype=np.float16))])
    patch(path, metadata_offset + 8, "<Q", 0)

    with BlobFile(path) as blob_file:
        with pytest.raises(BlobBoundsError, match="sizeInBytes is 0"):
            blob_file.read(metadata_offset)


@pytest.mark.parametrize("shape", [[10], [3, 5], [12, 1, 2], [0], []])
def test_declared_shape_count_mismatch_raises(tmp_path, shape):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint4", random_values("uint4", 12, 0))])
    declared = int(np.prod(shape))

    with BlobFile(path) as blob_file:
        with pytest.raises(ShapeError) as raised:
            blob_file.read(metadata_offset, shape=shape, name="conv_weight")
    message = str(raised.value)
    assert message.startswith("conv_weight (weight.bin record at offset 64): "), message
    assert f"blob contains 12 uint4 elements, but the declared shape {shape} has {declared}" in message


@pytest.mark.parametrize(
    "stored, declared",
    [("fp16", "fp32"), ("uint8", "int8"), ("uint4", "int4"), ("uint1", "uint8"), ("int4", "uint3")],
)
def test_declared_dtype_mismatch_raises(tmp_path, stored, declared):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [(stored, random_values(stored, 16, 0))])
    stored_code, declared_code = by_name(stored).blob_code, by_name(declared).blob_code

    with BlobFile(path) as blob_file:
        with pytest.raises(
            UnknownDtypeError,
            match=f"blob stores {stored} \\(code {stored_code}\\), but the tensor is declared {declared} \\(code {declared_code}\\)",
        ):
            blob_file.read(metadata_offset, dtype=declared)


# Element limits and allocation.


@pytest.mark.parametrize("shape", [[2**40, 2**40], [2**63, 2**63, 2], [2**33]])
def test_declared_shape_over_limit_raises(tmp_path, shape):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("fp16", np.ones(4, dtype=np.float16))])

    with BlobFile(path) as blob_file:
        with pytest.raises(ElementLimitError, match="which exceeds the limit of 4294967296"):
            blob_file.read(metadata_offset, shape=shape)


def test_blob_over_element_limit_raises(tmp_path):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint1", np.ones(11, dtype=np.uint8))])

    with BlobFile(path, max_elements=10) as blob_file:
        with pytest.raises(ElementLimitError, match="has 11 elements, which exceeds the limit of 10"):
            blob_file.read(metadata_offset)


def _peak_allocation(call) -> tuple[type | None, int]:
    """Run ``call``; return the class it raised and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        outcome = _outcome(call)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return outcome, peak


def test_header_claiming_huge_size_raises_without_allocating(tmp_path):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint1", np.ones(16, dtype=np.uint8))])
    patch(path, metadata_offset + 8, "<Q", 2**62)

    with BlobFile(path) as blob_file:
        outcome, peak = _peak_allocation(lambda: blob_file.read(metadata_offset))

    assert outcome is BlobBoundsError
    assert peak < 1 << 20


def test_sparse_file_over_element_limit_raises_without_allocating(tmp_path):
    # A 1 GiB file really contains a 1 GiB uint1 payload: 2**33 elements, over the default
    # limit of 2**32. The payload is a hole, so the test uses no disk space.
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint1", np.ones(16, dtype=np.uint8))])
    patch(path, metadata_offset + 8, "<Q", 2**30)
    os.truncate(path, 128 + 2**30)

    with BlobFile(path) as blob_file:
        outcome, peak = _peak_allocation(lambda: blob_file.read(metadata_offset, dtype="uint1"))

    assert outcome is ElementLimitError
    assert peak < 1 << 20


# Memory mapping.


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_reading_blobs_does_not_read_the_file(tmp_path):
    file_size = 2**30
    path = tmp_path / "weight.bin"
    first = np.arange(32, dtype=np.float16)
    write_ours(path, [("fp16", first)])
    # A second record at the end of a 1 GiB hole: count stays 1, so only read() reaches it.
    last_record = file_size - RECORD_SIZE - 64
    with open(path, "r+b") as handle:
        handle.truncate(file_size)
        handle.seek(last_record)
        record = struct.pack(_RECORD_FORMAT, 0xDEADBEEF, 3, 64, last_record + RECORD_SIZE, 0)
        handle.write(record.ljust(RECORD_SIZE, b"\0"))
        handle.write(bytes(range(64)))
    gc.collect()
    resident_before = _resident_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with BlobFile(path) as blob_file:
        head = blob_file.read(64, dtype="fp16", shape=[32])
        tail = blob_file.read(last_record, dtype="uint8", shape=[64])
        assert_bits_equal(head, first, "first blob")
        assert tail.tolist() == list(range(64))
        resident_growth = _resident_bytes() - resident_before

    peak_growth_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024
    assert blob_file.file_size == file_size
    assert resident_growth < 64 << 20
    assert peak_growth_bytes < 64 << 20


@pytest.mark.parametrize("name", ["fp16", "fp32", "bf16", "fp8_e5m2", "int8", "uint16", "int32"])
def test_whole_byte_read_is_read_only_view(tmp_path, name):
    path = tmp_path / "weight.bin"
    values = random_values(name, 40, 1)
    (metadata_offset,) = write_ours(path, [(name, values)])

    with BlobFile(path) as blob_file:
        first = blob_file.read(metadata_offset, dtype=name)
        second = blob_file.read(metadata_offset, dtype=name, shape=[4, 10])
        payload = np.frombuffer(blob_file.payload(metadata_offset), dtype=np.uint8)

        assert not first.flags.writeable
        assert not first.flags.owndata
        assert np.shares_memory(first, second)
        assert np.shares_memory(first, payload)
        with pytest.raises(ValueError, match="read-only"):
            first[0] = first[1]


def test_sub_byte_read_is_new_array(tmp_path):
    path = tmp_path / "weight.bin"
    (metadata_offset,) = write_ours(path, [("uint4", random_values("uint4", 40, 1))])

    with BlobFile(path) as blob_file:
        values = blob_file.read(metadata_offset)
        payload = np.frombuffer(blob_file.payload(metadata_offset), dtype=np.uint8)

    assert values.flags.writeable
    assert not np.shares_memory(values, payload)


def test_close_with_live_views_keeps_them_valid(tmp_path):
    path = tmp_path / "weight.bin"
    values = random_values("fp32", 40, 1)
    (metadata_offset,) = write_ours(path, [("fp32", values)])

    with BlobFile(path) as blob_file:
        view = blob_file.read(metadata_offset)
    blob_file.close()

    assert_bits_equal(view, values, "fp32")
    with pytest.raises(ValueError, match="closed"):
        blob_file.read(metadata_offset + 64)


# Writer rejections.


@pytest.mark.parametrize("name", BLOB_TYPES)
def test_writer_rejects_empty_array(tmp_path, name):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(EncodingError, match="weight: cannot write an empty blob"):
            writer.write(np.zeros(0, dtype=by_name(name).numpy_dtype), name, name="weight")


@pytest.mark.parametrize("name", SUB_BYTE_TYPES + ["int8", "uint8"])
def test_writer_rejects_out_of_range_sub_byte_value(tmp_path, name):
    element = by_name(name)

    with BlobWriter(tmp_path / "weight.bin") as writer:
        for bad in (element.min_value - 1, element.max_value + 1):
            values = np.array([element.min_value, bad, element.max_value], dtype=np.int64)
            with pytest.raises(EncodingError) as raised:
                writer.write(values, name, name="indices")
            message = str(raised.value)
            assert message.startswith("indices: "), message
            assert str(bad) in message, message
            assert f"[{element.min_value}, {element.max_value}]" in message, message
    assert (tmp_path / "weight.bin").stat().st_size == HEADER_SIZE


@pytest.mark.parametrize(
    "name, values",
    [
        ("fp16", np.ones(4, dtype=np.float32)),
        ("fp32", np.ones(4, dtype=np.float16)),
        ("fp32", np.ones(4, dtype=np.float64)),
        ("bf16", np.ones(4, dtype=np.float16)),
        ("fp16", np.ones(4, dtype=ml_dtypes.bfloat16)),
        ("fp8_e4m3fn", np.ones(4, dtype=ml_dtypes.float8_e5m2)),
        ("fp16", np.ones(4, dtype=np.int16)),
        ("fp16", np.ones(4, dtype=np.uint16)),
    ],
    ids=lambda value: getattr(value, "dtype", value),
)
def test_writer_rejects_wrong_float_type(tmp_path, name, values):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(EncodingError, match=f"expected a .* array for {name}, got {values.dtype}"):
            writer.write(values, name)


@pytest.mark.parametrize("name", ["int8", "uint16", "int32", "uint4", "int4"])
def test_writer_rejects_float_for_integer_type(tmp_path, name):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(EncodingError, match="float32"):
            writer.write(np.ones(4, dtype=np.float32), name)


@pytest.mark.parametrize(
    "name, values",
    [
        ("int8", [-129, 0]),
        ("uint8", [0, 256]),
        ("int16", [2**15]),
        ("uint32", [-1]),
        ("int32", [2**31]),
    ],
)
def test_writer_rejects_out_of_range_integer(tmp_path, name, values):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(EncodingError, match=f"outside the {name} range"):
            writer.write(np.array(values, dtype=np.int64), name)


def test_writer_accepts_big_endian_float(tmp_path):
    path = tmp_path / "weight.bin"
    values = np.array([1.5, -0.0, 65504], dtype=">f2")

    (metadata_offset,) = write_ours(path, [("fp16", values)])

    with BlobFile(path) as blob_file:
        assert_bits_equal(blob_file.read(metadata_offset), values.astype(np.float16), "fp16")


@pytest.mark.parametrize("name", ["fp64", "int64", "uint64", "bool"])
def test_writer_rejects_type_without_blob_code(tmp_path, name):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(UnknownDtypeError, match=f"{name} cannot be stored in a blob file; expected one of"):
            writer.write(np.ones(4, dtype=by_name(name).numpy_dtype), name)


def test_writer_rejects_unknown_type_name(tmp_path):
    with BlobWriter(tmp_path / "weight.bin") as writer:
        with pytest.raises(UnknownDtypeError, match="unknown element type 'float16'"):
            writer.write(np.ones(4, dtype=np.float16), "float16")


# Atomic writer.


def test_writer_leaves_only_final_file(tmp_path):
    path = tmp_path / "weight.bin"

    write_ours(path, [("fp16", np.ones(4, dtype=np.float16))])

    assert files_in(tmp_path) == ["weight.bin"]


def test_writer_exception_leaves_no_file(tmp_path):
    path = tmp_path / "weight.bin"

    with pytest.raises(RuntimeError, match="conversion failed"):
        with BlobWriter(path) as writer:
            writer.write(np.ones(4, dtype=np.float16), "fp16")
            raise RuntimeError("conversion failed")

    assert files_in(tmp_path) == []


def test_writer_encoding_error_leaves_no_file(tmp_path):
    path = tmp_path / "weight.bin"

    with pytest.raises(EncodingError):
        with BlobWriter(path) as writer:
            writer.write(np.ones(4, dtype=np.float16), "fp16")
            writer.write(np.array([16]), "uint4")

    assert files_in(tmp_path) == []


def test_writer_exception_keeps_existing_file(tmp_path):
    path = tmp_path / "weight.bin"
    write_ours(path, [("uint8", np.arange(16, dtype=np.uint8))])
    before = path.read_bytes()
    mtime_before = path.stat().st_mtime_ns

    with pytest.raises(RuntimeError):
        with BlobWriter(path) as writer:
            writer.write(np.ones(100, dtype=np.float16), "fp16")
            raise RuntimeError("conversion failed")

    assert files_in(tmp_path) == ["weight.bin"]
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == mtime_before


def test_unclosed_writer_discards_file(tmp_path):
    writer = BlobWriter(tmp_path / "weight.bin")
    writer.write(np.ones(4, dtype=np.float16), "fp16")

    del writer
    gc.collect()

    assert files_in(tmp_path) == []


def test_writer_file_mode_matches_coremltools(tmp_path):
    blobs = [("fp16", np.ones(4, dtype=np.float16))]

    write_ours(tmp_path / "ours.bin", blobs)
    write_coremltools(tmp_path / "theirs.bin", blobs)

    assert (tmp_path / "ours.bin").stat().st_mode == (tmp_path / "theirs.bin").stat().st_mode


# Element counts of declared shapes.


@pytest.mark.parametrize(
    "shape, count",
    [
        ([64, 128], 8192),
        ((), 1),
        ([0], 0),
        ([7, 0, 3], 0),
        ([2**70, 0], 0),
        (np.array([2, 3, 4]), 24),
        ([np.int64(5), np.uint32(2)], 10),
        ([2**32], 2**32),
    ],
)
def test_element_count_of_valid_shape(shape, count):
    assert element_count(shape, name="weight") == count


@pytest.mark.parametrize(
    "shape, message",
    [
        ([3, -1], "weight: dimension 1 is -1; expected a non-negative integer"),
        ([2.0, 3], "weight: dimension 0 is 2.0; expected a non-negative integer"),
        ([True, 3], "weight: dimension 0 is True; expected a non-negative integer"),
        ([np.bool_(True)], "weight: dimension 0 is"),
        ([None], "weight: dimension 0 is None"),
        (5, "weight: shape is 5; expected a sequence of integers"),
        ("64", "weight: shape is '64'; expected a sequence of integers"),
    ],
)
def test_element_count_of_invalid_shape_raises(shape, message):
    with pytest.raises(ShapeError, match=re.escape(message)) as raised:
        element_count(shape, name="weight")

    assert type(raised.value) is ShapeError


def test_element_count_over_limit_names_count():
    message = "weight: shape [1024, 1024, 1025] has 1074790400 elements, which exceeds the limit of 1073741824"

    with pytest.raises(ElementLimitError, match=re.escape(message)):
        element_count([1024, 1024, 1025], name="weight", max_elements=2**30)


def test_element_count_product_beyond_int64_raises():
    # The product 2**128 would wrap to 0 in int64 arithmetic.
    with pytest.raises(ElementLimitError, match=f"has {2**128} elements"):
        element_count([2**64, 2**64], name="weight")


def test_element_count_of_many_huge_dimensions_raises():
    with pytest.raises(ElementLimitError, match=r"has over 2\*\*256 elements"):
        element_count([2**63] * 10_000, name="weight")
