"""Exhaustive tables and rejections for LSB-first bit packing.

The reference packer below spells out the stream definition with numpy's bit helpers
(one row of ``nbits`` little-endian bits per element, rows concatenated), an algorithm
independent of the word arithmetic in ``sparseblob.runtime.bitpack``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import bitpack
from sparseblob.runtime.errors import (
    EncodingError,
    PaddingError,
    ShapeError,
    SparseblobError,
    UnknownDtypeError,
)

WIDTHS = (1, 2, 3, 4, 6, 8)
WIDTHS_AND_SIGNEDNESS = [(nbits, signed) for nbits in WIDTHS for signed in (False, True)]
WIDTH_IDS = [f"{'int' if signed else 'uint'}{nbits}" for nbits, signed in WIDTHS_AND_SIGNEDNESS]


def value_range(nbits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1
    return 0, (1 << nbits) - 1


def reference_pack(values: np.ndarray, nbits: int) -> bytes:
    codes = (np.asarray(values, dtype=np.int64) & ((1 << nbits) - 1)).astype(np.uint8)
    bits = np.unpackbits(codes[:, None], axis=1, count=nbits, bitorder="little")
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def every_ordered_pair(nbits: int, signed: bool) -> np.ndarray:
    """Return every code of the type next to every code, as one flat sequence of pairs."""
    low, high = value_range(nbits, signed)
    codes = np.arange(low, high + 1)
    first, second = np.meshgrid(codes, codes, indexing="ij")
    return np.stack([first.reshape(-1), second.reshape(-1)], axis=1).reshape(-1)


# Every code, every position in a byte group, every neighbour.


@pytest.mark.parametrize("nbits, signed", WIDTHS_AND_SIGNEDNESS, ids=WIDTH_IDS)
@pytest.mark.parametrize("lead", [0, 1], ids=["aligned", "shifted-by-one"])
def test_every_pair_packs_like_reference(nbits, signed, lead):
    # The pairs start at even element positions. One leading element moves them to odd
    # positions, so every code lands at every bit offset of a byte group.
    values = np.concatenate([np.zeros(lead, dtype=np.int64), every_ordered_pair(nbits, signed)])

    packed = bitpack.pack_bits(values, nbits, signed=signed)

    assert packed.dtype == np.uint8
    assert packed.tobytes() == reference_pack(values, nbits)


@pytest.mark.parametrize("nbits, signed", WIDTHS_AND_SIGNEDNESS, ids=WIDTH_IDS)
@pytest.mark.parametrize("lead", [0, 1], ids=["aligned", "shifted-by-one"])
def test_every_pair_round_trips(nbits, signed, lead):
    values = np.concatenate([np.zeros(lead, dtype=np.int64), every_ordered_pair(nbits, signed)])

    unpacked = bitpack.unpack_bits(
        bitpack.pack_bits(values, nbits, signed=signed), nbits, values.size, signed=signed
    )

    assert unpacked.dtype == (np.int8 if signed else np.uint8)
    assert np.array_equal(unpacked, values)


@pytest.mark.parametrize("nbits, signed", WIDTHS_AND_SIGNEDNESS, ids=WIDTH_IDS)
def test_every_code_unpacks_from_reference(nbits, signed):
    low, high = value_range(nbits, signed)
    values = np.arange(low, high + 1)

    unpacked = bitpack.unpack_bits(reference_pack(values, nbits), nbits, values.size, signed=signed)

    assert unpacked.tolist() == values.tolist()


@pytest.mark.parametrize("nbits, signed", WIDTHS_AND_SIGNEDNESS, ids=WIDTH_IDS)
@pytest.mark.parametrize("count", range(0, 18))
def test_round_trip_every_short_length(nbits, signed, count):
    low, high = value_range(nbits, signed)
    values = np.random.default_rng(count * 100 + nbits).integers(low, high + 1, count)

    packed = bitpack.pack_bits(values, nbits, signed=signed)
    unpacked = bitpack.unpack_bits(packed, nbits, count, signed=signed)

    assert packed.size == (count * nbits + 7) // 8
    assert packed.size == bitpack.packed_size(count, nbits)
    assert unpacked.tolist() == values.tolist()
    assert bitpack.padding_bits_set(packed, nbits, count) == 0


@given(
    st.sampled_from(WIDTHS_AND_SIGNEDNESS).flatmap(
        lambda width: st.tuples(
            st.just(width),
            st.lists(st.integers(*value_range(*width)), max_size=300),
        )
    )
)
def test_round_trip_any_values(case):
    (nbits, signed), values = case
    values = np.array(values, dtype=np.int64)

    packed = bitpack.pack_bits(values, nbits, signed=signed)

    assert packed.tobytes() == reference_pack(values, nbits)
    assert bitpack.unpack_bits(packed, nbits, values.size, signed=signed).tolist() == values.tolist()


# Two's complement nibbles: every byte as two int4 and as two uint4 elements.


def test_int4_every_byte_as_two_nibbles():
    data = bytes(range(256))

    unpacked = bitpack.unpack_bits(data, 4, 512, signed=True).reshape(256, 2)

    for byte in range(256):
        low, high = byte & 0xF, byte >> 4
        assert unpacked[byte, 0] == (low - 16 if low >= 8 else low), f"byte {byte:#04x} low nibble"
        assert unpacked[byte, 1] == (high - 16 if high >= 8 else high), f"byte {byte:#04x} high nibble"


def test_uint4_every_byte_as_two_nibbles():
    data = bytes(range(256))

    unpacked = bitpack.unpack_bits(data, 4, 512).reshape(256, 2)

    for byte in range(256):
        assert unpacked[byte, 0] == byte & 0xF, f"byte {byte:#04x} low nibble"
        assert unpacked[byte, 1] == byte >> 4, f"byte {byte:#04x} high nibble"


@pytest.mark.parametrize(
    "code, value",
    [(0x0, 0), (0x1, 1), (0x7, 7), (0x8, -8), (0x9, -7), (0xE, -2), (0xF, -1)],
)
def test_int4_code_sign_extension(code, value):
    # The same code in both nibbles, so a borrow from one nibble into the other would show.
    unpacked = bitpack.unpack_bits(bytes([code | code << 4]), 4, 2, signed=True)

    assert unpacked.tolist() == [value, value]


def test_int4_mixed_signs_do_not_borrow():
    values = np.array([-6, 2, 3, -2, -8, 7, -1, 0])

    packed = bitpack.pack_bits(values, 4, signed=True)

    assert packed.tobytes().hex() == "2ae3780f"
    assert bitpack.unpack_bits(packed, 4, 8, signed=True).tolist() == values.tolist()


@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_signed_unpack_is_unsigned_minus_offset(nbits):
    data = np.random.default_rng(nbits).integers(0, 256, 60, dtype=np.uint8)
    count = 60 * 8 // nbits

    codes = bitpack.unpack_bits(data, nbits, count).astype(np.int64)
    signed = bitpack.unpack_bits(data, nbits, count, signed=True).astype(np.int64)

    expected = np.where(codes >= 1 << (nbits - 1), codes - (1 << nbits), codes)
    assert np.array_equal(signed, expected)


# Values that straddle a byte boundary (3 and 6 bits).


@pytest.mark.parametrize(
    "nbits, position, first_byte",
    [(3, 2, 0), (3, 5, 1), (6, 1, 0), (6, 2, 1)],
)
def test_straddling_element_splits_low_bits_first(nbits, position, first_byte):
    start_bit = position * nbits
    bits_in_first = 8 - start_bit % 8
    values = np.zeros(position + 1, dtype=np.int64)

    for code in range(1 << nbits):
        values[position] = code
        packed = bitpack.pack_bits(values, nbits)

        low_part = code & ((1 << bits_in_first) - 1)
        assert packed[first_byte] >> (start_bit % 8) == low_part, f"code {code}"
        assert packed[first_byte + 1] == code >> bits_in_first, f"code {code}"
        assert bitpack.unpack_bits(packed, nbits, position + 1)[position] == code, f"code {code}"


# Padding bits.


@pytest.mark.parametrize("nbits, count", [(1, 9), (2, 7), (3, 11), (4, 5), (6, 5)])
def test_set_padding_bits_are_ignored_and_counted(nbits, count):
    values = np.arange(count) % (1 << nbits)
    packed = bitpack.pack_bits(values, nbits).copy()
    unused = 8 * packed.size - count * nbits
    packed[-1] |= np.uint8(0xFF << (8 - unused) & 0xFF)

    assert bitpack.unpack_bits(packed, nbits, count).tolist() == values.tolist()
    assert bitpack.padding_bits_set(packed, nbits, count) == unused


def test_padding_bits_set_on_short_stream_raises():
    with pytest.raises(PaddingError, match="need 12 bits, but only 8"):
        bitpack.padding_bits_set(b"\x00", 4, 3)


# Rejections.


@pytest.mark.parametrize("nbits", [0, 5, 7, 9, 16, -1, True, 4.0, "4"])
def test_unsupported_width_raises(nbits):
    with pytest.raises(UnknownDtypeError, match="unsupported packed width"):
        bitpack.pack_bits(np.zeros(3, dtype=np.uint8), nbits)
    with pytest.raises(UnknownDtypeError, match="unsupported packed width"):
        bitpack.unpack_bits(b"\x00", nbits, 1)
    with pytest.raises(UnknownDtypeError, match="unsupported packed width"):
        bitpack.packed_size(1, nbits)


@pytest.mark.parametrize("nbits, signed", WIDTHS_AND_SIGNEDNESS, ids=WIDTH_IDS)
def test_out_of_range_value_names_value_and_range(nbits, signed):
    low, high = value_range(nbits, signed)
    kind = f"{'int' if signed else 'uint'}{nbits}"

    for bad in (low - 1, high + 1):
        values = np.array([low, high, bad, low])
        with pytest.raises(EncodingError) as raised:
            bitpack.pack_bits(values, nbits, signed=signed, name="indices")
        message = str(raised.value)
        assert message.startswith("indices: "), message
        assert f"value {bad} at index 2" in message, message
        assert f"{kind} range [{low}, {high}]" in message, message


def test_float_values_raise():
    with pytest.raises(EncodingError, match="expected an integer array to pack, got dtype float32"):
        bitpack.pack_bits(np.array([1.0, 2.0], dtype=np.float32), 4)


def test_bool_values_pack_as_bits():
    packed = bitpack.pack_bits(np.array([True, False, True, True]), 1)

    assert packed.tobytes() == b"\x0d"


@pytest.mark.parametrize("size", [0, 1, 3])
def test_wrong_byte_count_raises(size):
    with pytest.raises(ShapeError, match=f"packed data has {size} bytes, but 5 elements of 3 bits need 2"):
        bitpack.unpack_bits(bytes(size), 3, 5)


@pytest.mark.parametrize("count", [-1, 2.0, None])
def test_invalid_count_raises(count):
    with pytest.raises(ShapeError, match="element count is"):
        bitpack.unpack_bits(b"", 4, count)


@pytest.mark.parametrize(
    "packed",
    [np.array([1.0]), np.array([256]), np.array([-1]), np.array(["a"])],
    ids=["float", "too-large", "negative", "string"],
)
def test_packed_bytes_of_wrong_dtype_raise(packed):
    with pytest.raises(UnknownDtypeError, match="packed bytes"):
        bitpack.unpack_bits(packed, 8, 1)


def test_packed_integers_in_byte_range_are_accepted():
    assert bitpack.unpack_bits(np.array([0x21, 0x03], dtype=np.int64), 4, 3).tolist() == [1, 2, 3]


@given(st.binary(max_size=40), st.sampled_from(WIDTHS), st.integers(-2, 400), st.booleans())
def test_unpack_arbitrary_input_raises_only_package_errors(data, nbits, count, signed):
    try:
        unpacked = bitpack.unpack_bits(data, nbits, count, signed=signed)
    except SparseblobError:
        return

    assert unpacked.size == count
