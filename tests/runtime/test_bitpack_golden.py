"""Golden byte strings for LSB-first packing, written by coremltools' _BlobStorageWriter."""

import numpy as np
import pytest

from sparseblob.runtime import bitpack

# Each payload was dumped from a file that coremltools 9.0's _BlobStorageWriter wrote.
GOLDEN = [
    (1, False, [1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1], "8d05"),
    (2, False, [0, 1, 2, 3, 3], "e403"),
    (3, False, [1, 2, 3, 4, 5, 6, 7, 0, 5], "d1581f05"),
    (4, False, [1, 2, 3, 15, 7], "21f307"),
    (4, True, [-1, 2, -8, 7, -3], "2f780d"),
    (6, False, [1, 63, 32, 5, 17], "c10f1611"),
]


@pytest.mark.parametrize("nbits, signed, values, hex_bytes", GOLDEN)
def test_pack_matches_golden_bytes(nbits, signed, values, hex_bytes):
    packed = bitpack.pack_bits(np.array(values), nbits, signed=signed)
    assert packed.tobytes().hex() == hex_bytes


@pytest.mark.parametrize("nbits, signed, values, hex_bytes", GOLDEN)
def test_unpack_golden_bytes(nbits, signed, values, hex_bytes):
    unpacked = bitpack.unpack_bits(bytes.fromhex(hex_bytes), nbits, len(values), signed=signed)
    assert unpacked.tolist() == values
