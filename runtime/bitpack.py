"""LSB-first bit packing of sub-byte integers, as Core ML stores them.

The payload is one bit stream: stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``, bit 0
being the least significant. Element ``i`` of a ``b``-bit type occupies stream bits
``[i*b, (i+1)*b)``, its own least significant bit first. For b = 1, 2, 4 no element crosses
a byte; for b = 3 and 6 an element can straddle two bytes, low bits in the first byte::

    uint4 [1, 2, 3]      ->  bytes 0x21 0x03     (first element in the low nibble)
    uint3 [1, 2, 3, 4]   ->  bits  100 010 110 001 (stream order) -> bytes 0xd1 0x08

Signed 4-bit values are two's-complement nibbles, sign-extended one element at a time when
unpacked. The bits past the last element of the last byte are padding; the packer writes
them as zero.
"""

from __future__ import annotations

import numpy as np

from .errors import EncodingError, PaddingError, ShapeError, UnknownDtypeError

__all__ = ["packed_size", "pack_bits", "unpack_bits", "padding_bits_set"]

_SUPPORTED_BITS = (1, 2, 3, 4, 6, 8)


def _as_bytes(packed) -> np.ndarray:
    if isinstance(packed, (bytes, bytearray, memoryview)):
        return np.frombuffer(packed, dtype=np.uint8)
    return np.asarray(packed, dtype=np.uint8).reshape(-1)


def _check_bits(nbits: int) -> None:
    if nbits not in _SUPPORTED_BITS:
        raise UnknownDtypeError(
            f"unsupported packed width nbits={nbits!r}; expected one of {_SUPPORTED_BITS}"
        )


def packed_size(count: int, nbits: int) -> int:
    """Return the number of bytes that ``count`` elements of ``nbits`` bits occupy."""
    _check_bits(nbits)
    return (count * nbits + 7) // 8


def pack_bits(values: np.ndarray, nbits: int, *, signed: bool = False, name: str = "values") -> np.ndarray:
    """Pack integers into an LSB-first bit stream.

    Args:
        values: integer array of any shape, flattened in C order.
        nbits: element width, one of 1, 2, 3, 4, 6, 8.
        signed: the values are two's complement (int4); otherwise unsigned.
        name: tensor name used in error messages.

    Returns:
        ``tensor<uint8, [ceil(n*nbits/8)]>``, padding bits zero.

    Raises:
        EncodingError: a value lies outside the range of the type.
    """
    _check_bits(nbits)
    flat = np.asarray(values).reshape(-1)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise EncodingError(f"{name}: expected an integer array to pack, got dtype {flat.dtype}")

    low = -(1 << (nbits - 1)) if signed else 0
    high = (1 << (nbits - 1)) - 1 if signed else (1 << nbits) - 1
    if flat.size:
        found_min, found_max = int(flat.min()), int(flat.max())
        if found_min < low or found_max > high:
            bad = found_min if found_min < low else found_max
            kind = f"int{nbits}" if signed else f"uint{nbits}"
            raise EncodingError(
                f"{name}: value {bad} is outside the {kind} range [{low}, {high}]"
            )

    codes = (flat.astype(np.int64) & ((1 << nbits) - 1)).astype(np.uint8)
    if nbits == 8:
        return codes.copy()

    # One row of nbits bits per element, LSB first, then the rows concatenated.
    bits = np.unpackbits(codes[:, None], axis=1, count=nbits, bitorder="little")
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_bits(
    packed: np.ndarray,
    nbits: int,
    count: int,
    *,
    signed: bool = False,
    name: str = "values",
) -> np.ndarray:
    """Unpack ``count`` elements of ``nbits`` bits from an LSB-first bit stream.

    Args:
        packed: bytes or ``tensor<uint8, [M]>`` with ``M == ceil(count*nbits/8)``.
        nbits: element width, one of 1, 2, 3, 4, 6, 8.
        count: number of elements to read.
        signed: sign-extend each element (int4).
        name: tensor name used in error messages.

    Returns:
        ``tensor<uint8, [count]>``, or ``tensor<int8, [count]>`` when ``signed``.

    Raises:
        ShapeError: the byte count does not match ``count`` elements.
    """
    _check_bits(nbits)
    data = _as_bytes(packed)
    expected = packed_size(count, nbits)
    if data.size != expected:
        raise ShapeError(
            f"{name}: packed data has {data.size} bytes, but {count} elements of "
            f"{nbits} bits need {expected} bytes"
        )

    if nbits == 8:
        codes = data.copy()
    elif nbits in (1, 2, 4):
        # Elements never straddle a byte: shift and mask each byte per position.
        per_byte = 8 // nbits
        shifts = np.arange(per_byte, dtype=np.uint8) * nbits
        mask = np.uint8((1 << nbits) - 1)
        codes = ((data[:, None] >> shifts) & mask).reshape(-1)[:count]
    else:
        bits = np.unpackbits(data, bitorder="little")[: count * nbits].reshape(count, nbits)
        codes = np.packbits(bits, axis=1, bitorder="little").reshape(-1)

    if not signed:
        return np.ascontiguousarray(codes, dtype=np.uint8)

    # Two's complement per element: codes at or above 2**(nbits-1) are negative.
    wide = codes.astype(np.int16)
    wide[wide >= (1 << (nbits - 1))] -= 1 << nbits
    return wide.astype(np.int8)


def padding_bits_set(packed: np.ndarray, nbits: int, count: int) -> int:
    """Return the number of set bits past the last element of a packed stream."""
    data = _as_bytes(packed)
    used = count * nbits
    if used > data.size * 8:
        raise PaddingError(
            f"{count} elements of {nbits} bits need {used} bits, but only {data.size * 8} are present"
        )
    if used == data.size * 8:
        return 0
    bits = np.unpackbits(data[used // 8 :], bitorder="little")[used % 8 :]
    return int(bits.sum())
