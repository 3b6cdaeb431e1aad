"""Golden payload bytes of every packed width, pinned by coremltools' blob writer.

Each row was dumped from a file that coremltools 9.0's ``_BlobStorageWriter`` wrote, and
``test_golden_rows_match_coremltools`` writes every row again with it at test time, so a
row that disagrees with coremltools fails instead of pinning our own mistake.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sparseblob.runtime import bitpack
from sparseblob.runtime.dtypes import by_name

# (type, values, payload bytes as hex, padding_size_in_bits)
GOLDEN = [
    ("uint1", [1, 1, 0, 1, 0, 0, 0, 0, 1], "0b01", 7),
    ("uint1", [1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1], "8d05", 5),
    ("uint2", [3, 0, 1, 2, 2, 1, 3], "9336", 2),
    ("uint2", [0, 1, 2, 3, 3], "e403", 6),
    ("uint3", [1, 2, 3, 4, 5, 6, 7, 0, 5, 3, 6], "d1581f9d01", 7),
    ("uint3", [1, 2, 3, 4, 5, 6, 7, 0, 5], "d1581f05", 5),
    # Element 2 takes bits 6-8 and element 5 bits 15-17: both straddle a byte boundary.
    ("uint3", [0, 0, 7], "c001", 7),
    ("uint3", [0, 0, 0, 0, 0, 7], "008003", 6),
    ("uint4", [1, 2, 3, 15, 7], "21f307", 4),
    ("uint4", [0, 2, 11, 9, 15], "209b0f", 4),
    # The first element is the low nibble of the first byte.
    ("int4", [0, 1, 2, 3, 4, 5, 6, 7], "10325476", 0),
    ("int4", [-6, 2, 3, -2], "2ae3", 0),
    ("int4", [-1, 2, -8, 7, -3], "2f780d", 4),
    ("int4", [-8, 7, 3], "7803", 4),
    ("uint6", [1, 63, 32, 5, 17], "c10f1611", 2),
    # Element 1 takes bits 6-11 and element 2 bits 12-17: both straddle a byte boundary.
    ("uint6", [0, 63], "c00f", 4),
    ("uint6", [0, 0, 63], "00f003", 6),
    ("uint6", [5, 40, 17, 62, 33, 9, 1], "051af9611200", 6),
    ("uint8", [0, 1, 127, 128, 255], "00017f80ff", 0),
    ("int8", [0, 1, 127, -128, -1], "00017f80ff", 0),
]

IDS = [f"{name}-{len(values)}" for name, values, _, _ in GOLDEN]


def _coremltools_payload(tmp_path, type_name: str, values: list[int]) -> tuple[bytes, int]:
    """Write ``values`` with coremltools' writer; return the payload and its padding bits."""
    storage = pytest.importorskip("coremltools.libmilstoragepython")
    path = tmp_path / "golden.bin"
    container = np.int8 if by_name(type_name).signed else np.uint8

    writer = storage._BlobStorageWriter(str(path))
    metadata_offset = getattr(writer, f"write_{type_name}_data")(np.array(values, dtype=container))
    del writer

    data = path.read_bytes()
    _, _, size, data_offset, padding = struct.unpack_from("<IIQQQ", data, metadata_offset)
    return data[data_offset : data_offset + size], padding


@pytest.mark.parametrize("type_name, values, hex_bytes, padding", GOLDEN, ids=IDS)
def test_pack_matches_golden_bytes(type_name, values, hex_bytes, padding):
    element = by_name(type_name)

    packed = bitpack.pack_bits(np.array(values), element.bits, signed=element.signed)

    assert packed.tobytes().hex() == hex_bytes


@pytest.mark.parametrize("type_name, values, hex_bytes, padding", GOLDEN, ids=IDS)
def test_unpack_golden_bytes(type_name, values, hex_bytes, padding):
    element = by_name(type_name)

    unpacked = bitpack.unpack_bits(
        bytes.fromhex(hex_bytes), element.bits, len(values), signed=element.signed
    )

    assert unpacked.tolist() == values
    assert unpacked.dtype == element.numpy_dtype


@pytest.mark.parametrize("type_name, values, hex_bytes, padding", GOLDEN, ids=IDS)
def test_golden_padding_bits(type_name, values, hex_bytes, padding):
    element = by_name(type_name)

    assert 8 * len(bytes.fromhex(hex_bytes)) - len(values) * element.bits == padding
    assert bitpack.padding_bits_set(bytes.fromhex(hex_bytes), element.bits, len(values)) == 0


@pytest.mark.parametrize("type_name, values, hex_bytes, padding", GOLDEN, ids=IDS)
def test_golden_rows_match_coremltools(tmp_path, type_name, values, hex_bytes, padding):
    payload, stored_padding = _coremltools_payload(tmp_path, type_name, values)

    assert payload.hex() == hex_bytes
    assert stored_padding == padding
