"""LSB-first bit packing of sub-byte integers, as Core ML stores them.

The payload is one bit stream: stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``, bit 0
being the least significant. Element ``i`` of a ``b``-bit type occupies stream bits
``[i*b, (i+1)*b)``, its own least significant bit first. For b = 1, 2, 4 no element crosses
a byte. For b = 3 and 6 an element can straddle two bytes, its low bits in the first byte::

    uint4 [1, 2, 3]      ->  bytes 0x21 0x03     (first element in the low nibble)
    uint3 [1, 2, 3, 4]   ->  bits  100 010 110 001 (stream order) -> bytes 0xd1 0x08

Signed values (int4) are two's-complement codes, sign-extended one element at a time when
unpacked, so no element borrows from its neighbour. The bits past the last element of the
last byte are padding. The packer writes them as zero, and the unpacker ignores them.
"""

from __future__ import annotations

import operator

import numpy as np

from .errors import EncodingError, PaddingError, ShapeError, UnknownDtypeError

__all__ = ["SUPPORTED_BITS", "packed_size", "pack_bits", "unpack_bits", "padding_bits_set"]

SUPPORTED_BITS: tuple[int, ...] = (1, 2, 3, 4, 6, 8)


def _check_bits(nbits: int) -> None:
    is_integer = isinstance(nbits, (int, np.integer)) and not isinstance(nbits, bool)
    if not is_integer or nbits not in SUPPORTED_BITS:
        raise UnknownDtypeError(
            f"unsupported packed width nbits={nbits!r}; expected one of {SUPPORTED_BITS}"
        )


def _check_count(count: int, name: str) -> int:
    try:
        count = operator.index(count)
    except TypeError:
        raise ShapeError(f"{name}: element count is {count!r}; expected a non-negative integer") from None
    if count < 0:
        raise ShapeError(f"{name}: element count is {count}; expected a non-negative integer")
    return count


def _as_bytes(packed, name: str) -> np.ndarray:
    """View ``packed`` as ``tensor<uint8, [M]>`` without copying bytes-like input."""
    if isinstance(packed, (bytes, bytearray, memoryview)):
        return np.frombuffer(packed, dtype=np.uint8)

    array = np.asarray(packed)
    if array.dtype == np.uint8:
        return array.reshape(-1)
    if array.size == 0 or np.issubdtype(array.dtype, np.integer):
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise UnknownDtypeError(
                f"{name}: packed bytes span [{array.min()}, {array.max()}]; expected uint8 values "
                "in [0, 255]"
            )
        return array.astype(np.uint8).reshape(-1)
    raise UnknownDtypeError(f"{name}: packed bytes have dtype {array.dtype}; expected uint8")


def packed_size(count: int, nbits: int) -> int:
    """Return the number of bytes that ``count`` elements of ``nbits`` bits occupy."""
    _check_bits(nbits)
    count = _check_count(count, "packed_size")
    return (count * nbits + 7) // 8


def pack_bits(values: np.ndarray, nbits: int, *, signed: bool = False, name: str = "values") -> np.ndarray:
    """Pack integers into an LSB-first bit stream.

    Shapes:
        ``tensor<int, [*]>`` (flattened in C order) -> ``tensor<uint8, [ceil(n*nbits/8)]>``.

    Example: ``pack_bits([1, 2, 3], 4)`` returns bytes ``21 03``.

    Args:
        values: integer or bool array of any shape.
        nbits: element width, one of 1, 2, 3, 4, 6, 8.
        signed: the values are two's complement (``[-2**(nbits-1), 2**(nbits-1) - 1]``);
            otherwise unsigned (``[0, 2**nbits - 1]``).
        name: tensor name used in error messages.

    Returns:
        The packed bytes, padding bits zero.

    Raises:
        UnknownDtypeError: ``nbits`` is not a supported width.
        EncodingError: the array is not integer, or a value lies outside the range of the type.
    """
    _check_bits(nbits)
    flat = np.asarray(values).reshape(-1)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    if flat.size and not np.issubdtype(flat.dtype, np.integer):
        raise EncodingError(f"{name}: expected an integer array to pack, got dtype {flat.dtype}")

    kind = f"int{nbits}" if signed else f"uint{nbits}"
    low = -(1 << (nbits - 1)) if signed else 0
    high = (1 << (nbits - 1)) - 1 if signed else (1 << nbits) - 1
    if flat.size and (flat.min() < low or flat.max() > high):
        outside = np.flatnonzero((flat < low) | (flat > high))
        index = int(outside[0])
        raise EncodingError(
            f"{name}: value {flat[index]} at index {index} is outside the {kind} range "
            f"[{low}, {high}] ({outside.size} of {flat.size} values are outside it)"
        )

    # Casting to uint8 keeps the low 8 bits of two's complement, so masking them to nbits
    # bits gives each value's code.
    codes = flat.astype(np.uint8)
    codes &= np.uint8((1 << nbits) - 1)
    if nbits == 8:
        return codes
    return _pack_codes(codes, nbits)


def unpack_bits(
    packed: np.ndarray,
    nbits: int,
    count: int,
    *,
    signed: bool = False,
    name: str = "values",
) -> np.ndarray:
    """Unpack ``count`` elements of ``nbits`` bits from an LSB-first bit stream.

    Shapes:
        ``tensor<uint8, [ceil(count*nbits/8)]>`` -> ``tensor<uint8, [count]>``, or
        ``tensor<int8, [count]>`` when ``signed``.

    Example: bytes ``21 03`` unpack to ``[1, 2, 3]`` as 3 uint4 elements, and byte ``8f``
    unpacks to ``[-1, -8]`` as 2 int4 elements.

    Args:
        packed: the packed bytes, as bytes-like or a uint8 array.
        nbits: element width, one of 1, 2, 3, 4, 6, 8.
        count: number of elements to read.
        signed: sign-extend each element from ``nbits`` bits.
        name: tensor name used in error messages.

    Returns:
        A new array that owns its data. Padding bits are ignored.

    Raises:
        UnknownDtypeError: ``nbits`` is not a supported width, or ``packed`` is not bytes.
        ShapeError: ``count`` is negative, or the byte count is not ``ceil(count*nbits/8)``.
    """
    _check_bits(nbits)
    count = _check_count(count, name)
    data = _as_bytes(packed, name)
    expected = packed_size(count, nbits)
    if data.size != expected:
        raise ShapeError(
            f"{name}: packed data has {data.size} bytes, but {count} elements of "
            f"{nbits} bits need {expected} bytes"
        )

    if nbits == 8:
        codes = data.copy()
    else:
        codes = _unpack_codes(data, nbits, count)
    if not signed:
        return codes

    # Two's complement per element: move the code's top bit to bit 7, then shift back with
    # an arithmetic shift, which copies the sign bit into the high bits.
    unused = 8 - nbits
    return (codes << np.uint8(unused)).view(np.int8) >> np.int8(unused)


def _group_layout(nbits: int) -> tuple[int, int]:
    """Return (elements, bytes) of the smallest run of whole elements that fills whole bytes."""
    group_bits = 8 if 8 % nbits == 0 else 24
    return group_bits // nbits, group_bits // 8


def _pack_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack ``tensor<uint8, [n]>`` codes below ``2**nbits`` into ``ceil(n*nbits/8)`` bytes."""
    per_group, group_bytes = _group_layout(nbits)
    word_type = np.uint8 if group_bytes == 1 else np.uint32
    groups = -(-codes.size // per_group)
    padded = np.zeros((groups, per_group), dtype=np.uint8)
    padded.reshape(-1)[: codes.size] = codes

    # Each group of elements fills one byte, or 24 bits of a uint32 word, first element lowest.
    words = np.zeros(groups, dtype=word_type)
    scratch = np.empty(groups, dtype=word_type)
    for position in range(per_group):
        np.left_shift(padded[:, position], word_type(position * nbits), out=scratch, dtype=word_type)
        np.bitwise_or(words, scratch, out=words)
    if group_bytes == 1:
        return words[: (codes.size * nbits + 7) // 8]

    packed = np.empty((groups, group_bytes), dtype=np.uint8)
    for byte in range(group_bytes):
        packed[:, byte] = words >> np.uint32(8 * byte)
    return packed.reshape(-1)[: (codes.size * nbits + 7) // 8].copy()


def _unpack_codes(data: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unpack ``count`` codes of ``nbits`` bits from ``ceil(count*nbits/8)`` bytes."""
    per_group, group_bytes = _group_layout(nbits)
    word_type = np.uint8 if group_bytes == 1 else np.uint32
    groups = -(-count // per_group)
    if data.size == groups * group_bytes:
        padded = data.reshape(groups, group_bytes)
    else:
        padded = np.zeros((groups, group_bytes), dtype=np.uint8)
        padded.reshape(-1)[: data.size] = data

    # Reassemble each group of bytes into one little-endian word, then cut out the elements.
    if group_bytes == 1:
        words = padded[:, 0]
    else:
        words = padded[:, 0].astype(np.uint32)
        for byte in range(1, group_bytes):
            words |= padded[:, byte].astype(np.uint32) << np.uint32(8 * byte)

    mask = word_type((1 << nbits) - 1)
    codes = np.empty((groups, per_group), dtype=np.uint8)
    scratch = np.empty(groups, dtype=word_type)
    for position in range(per_group):
        np.right_shift(words, word_type(position * nbits), out=scratch)
        np.bitwise_and(scratch, mask, out=scratch)
        codes[:, position] = scratch
    codes = codes.reshape(-1)
    return codes if codes.size == count else codes[:count].copy()


def padding_bits_set(packed: np.ndarray, nbits: int, count: int) -> int:
    """Count the set bits past the last of ``count`` elements in a packed stream.

    Raises:
        PaddingError: the stream is shorter than ``count`` elements.
    """
    _check_bits(nbits)
    count = _check_count(count, "padding_bits_set")
    data = _as_bytes(packed, "padding_bits_set")
    used = count * nbits
    if used > data.size * 8:
        raise PaddingError(
            f"{count} elements of {nbits} bits need {used} bits, but only {data.size * 8} are present"
        )
    if used == data.size * 8:
        return 0
    bits = np.unpackbits(data[used // 8 :], bitorder="little")[used % 8 :]
    return int(bits.sum())
