"""Argument checks shared by the encoder modules. Each takes the value and the argument's name."""

from __future__ import annotations

import numbers

import numpy as np

from sparseblob.runtime.errors import EncodingError, NonFiniteError, ShapeError

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def as_weight(weight, name: str, *, floating: bool = True) -> np.ndarray:
    """Return ``weight`` as an array after checking its rank, dtype and finiteness.

    Raises:
        ShapeError: the array is a scalar.
        EncodingError: ``floating`` is set and the dtype is not fp16 or fp32.
        NonFiniteError: an element is NaN or infinite. The message gives the first one.
    """
    array = np.asarray(weight)
    if array.ndim == 0:
        raise ShapeError(f"{name}: expected an array of rank 1 or more, got a scalar")
    if floating and array.dtype not in FLOAT_DTYPES:
        raise EncodingError(f"{name}: expected an fp16 or fp32 array, got dtype {array.dtype}")
    check_finite(array, name)
    return array


def magnitude_bits(array: np.ndarray) -> np.ndarray:
    """Return the bits of an fp16 or fp32 array with the sign cleared, as unsigned integers.

    For finite values they order like ``abs(array)``, and +0.0 and -0.0 both give 0. Integer
    comparisons on them are much faster than numpy's fp16 comparisons.
    """
    if array.dtype == np.float16:
        return np.ascontiguousarray(array).view(np.uint16) & np.uint16(0x7FFF)
    return np.ascontiguousarray(array).view(np.uint32) & np.uint32(0x7FFFFFFF)


def nonzero(array: np.ndarray) -> np.ndarray:
    """Return ``array != 0`` as a bool array, so -0.0 counts as zero."""
    if array.dtype in FLOAT_DTYPES:
        return magnitude_bits(array) != 0
    return array != 0


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise :class:`NonFiniteError` naming the first NaN or infinite element of ``array``."""
    if array.dtype in FLOAT_DTYPES:
        # NaN and inf are the values whose exponent bits are all set.
        exponent = np.uint16(0x7C00) if array.dtype == np.float16 else np.uint32(0x7F800000)
        if array.size == 0 or magnitude_bits(array).max() < exponent:
            return
    elif not np.issubdtype(array.dtype, np.floating) or np.isfinite(array).all():
        return
    first = first_index(~np.isfinite(array))
    raise NonFiniteError(
        f"{name}: element {first} is {array[first]!r}; the encoder accepts finite weights only"
    )


def check_axis(axis, rank: int, name: str = "axis") -> int:
    """Return ``axis`` normalized to ``[0, rank)``."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise EncodingError(f"{name}={axis!r} is not an integer")
    if not -rank <= axis < rank:
        raise EncodingError(f"{name}={axis} is out of range for a tensor of rank {rank}")
    return int(axis) % rank


def check_int(value, name: str, *, minimum: int) -> int:
    """Return ``value`` as an int after checking that it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EncodingError(f"{name}={value!r} is not an integer")
    if value < minimum:
        raise EncodingError(f"{name}={value} must be at least {minimum}")
    return int(value)


def check_fraction(value, name: str) -> float:
    """Return ``value`` as a float after checking that it is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EncodingError(f"{name}={value!r} is not a number")
    if not 0.0 <= float(value) <= 1.0:
        raise EncodingError(f"{name}={value} must be between 0 and 1")
    return float(value)


def check_choice(value, name: str, choices) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise EncodingError(f"{name}={value!r} is not one of {list(choices)}")


def first_index(flags: np.ndarray) -> tuple[int, ...]:
    """Return the C-order index of the first true element of ``flags``."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(flags)), flags.shape))
