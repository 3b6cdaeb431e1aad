"""Conversion and checks of MIL op parameters: scalars, integer vectors, axes and mode strings.

MIL stores scalar parameters as rank-0 tensors and vector parameters (``strides``, ``perm``,
``axes``) as rank-1 tensors. The helpers below accept those numpy arrays as well as plain Python
values, so that op functions can be called directly in tests, and raise errors that name the op,
the parameter and the value found.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import OpParameterError, ParameterShapeError, ShapeError, UnsupportedOpError

__all__ = [
    "as_int",
    "as_float",
    "as_bool",
    "as_str",
    "as_int_tuple",
    "as_bool_tuple",
    "spatial_ints",
    "normalize_axis",
    "normalize_axes",
    "check_rank",
    "check_broadcast",
    "check_broadcast_shapes",
    "is_float",
]


def is_float(value: object) -> bool:
    """True when ``value`` is a numpy array or scalar with a floating-point dtype."""
    return isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(value.dtype, np.floating)


def _scalar(value: object, *, op: str, param: str) -> np.generic:
    array = np.asarray(value)
    if array.size != 1:
        raise ParameterShapeError(
            f"{op}: {param} must be a scalar; got shape {list(array.shape)}"
        )
    return array.reshape(()).item()


def as_int(value: object, *, op: str, param: str) -> int:
    """Return an integer scalar parameter (Python int, numpy integer or one-element array)."""
    array = np.asarray(value)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise OpParameterError(f"{op}: {param} must be an integer; got {value!r}")
    return int(_scalar(array, op=op, param=param))


def as_float(value: object, *, op: str, param: str) -> float:
    """Return a real scalar parameter (int or float, Python or numpy, or a one-element array)."""
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise OpParameterError(f"{op}: {param} must be a real number; got {value!r}")
    return float(_scalar(array, op=op, param=param))


def as_bool(value: object, *, op: str, param: str) -> bool:
    """Return a boolean scalar parameter (Python bool, numpy bool or one-element bool array)."""
    array = np.asarray(value)
    if array.dtype != np.bool_:
        raise OpParameterError(f"{op}: {param} must be a bool; got {value!r}")
    return bool(_scalar(array, op=op, param=param))


def as_str(
    value: object, *, op: str, param: str, choices: Sequence[str] | None = None
) -> str:
    """Return a string parameter, checked against ``choices`` when given.

    Raises:
        UnsupportedOpError: the string is not one of ``choices``.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.size == 1:
        value = str(value.reshape(()).item())
    if not isinstance(value, str):
        raise OpParameterError(f"{op}: {param} must be a string; got {value!r}")
    if choices is not None and value not in choices:
        raise UnsupportedOpError(
            f"{op}: {param}={value!r} is not supported; expected one of {list(choices)}"
        )
    return value


def as_int_tuple(
    value: object,
    *,
    op: str,
    param: str,
    length: int | None = None,
    minimum: int | None = None,
) -> tuple[int, ...]:
    """Return an integer vector parameter as a tuple, checking its length and lower bound.

    A rank-0 value counts as a vector of one element.

    Raises:
        ParameterShapeError: the vector does not have ``length`` entries.
        OpParameterError: an entry is not an integer or is below ``minimum``.
    """
    array = np.asarray(value)
    if array.size and (array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer)):
        raise OpParameterError(f"{op}: {param} must contain integers; got {value!r}")
    if array.ndim > 1:
        raise ParameterShapeError(
            f"{op}: {param} must be a vector; got shape {list(array.shape)}"
        )
    values = tuple(int(v) for v in array.reshape(-1))
    if length is not None and len(values) != length:
        raise ParameterShapeError(
            f"{op}: {param} has {len(values)} entries {list(values)}; expected {length}"
        )
    if minimum is not None and any(v < minimum for v in values):
        raise OpParameterError(
            f"{op}: {param}={list(values)} has an entry below {minimum}"
        )
    return values


def as_bool_tuple(value: object, *, op: str, param: str, length: int) -> tuple[bool, ...]:
    """Return a boolean vector parameter with exactly ``length`` entries."""
    array = np.asarray(value)
    if array.size and array.dtype != np.bool_:
        raise OpParameterError(f"{op}: {param} must contain bools; got {value!r}")
    values = tuple(bool(v) for v in array.reshape(-1))
    if len(values) != length:
        raise ParameterShapeError(
            f"{op}: {param} has {len(values)} entries; expected {length}"
        )
    return values


def spatial_ints(
    value: object, count: int, *, op: str, param: str, default: int, minimum: int
) -> tuple[int, ...]:
    """Return a per-spatial-dimension vector (``strides``, ``dilations``), ``default`` when None."""
    if value is None:
        return (default,) * count
    return as_int_tuple(value, op=op, param=param, length=count, minimum=minimum)


def normalize_axis(axis: object, rank: int, *, op: str, param: str = "axis") -> int:
    """Map an axis in ``[-rank, rank)`` to ``[0, rank)``.

    Raises:
        OpParameterError: the axis is out of range.
    """
    value = as_int(axis, op=op, param=param)
    if not -rank <= value < rank:
        raise OpParameterError(
            f"{op}: {param}={value} is out of range for rank {rank}; "
            f"expected a value in [{-rank}, {rank})"
        )
    return value % rank


def normalize_axes(axes: object, rank: int, *, op: str, param: str = "axes") -> tuple[int, ...]:
    """Map each axis of a vector to ``[0, rank)``, rejecting repeats."""
    values = as_int_tuple(axes, op=op, param=param)
    normalized = tuple(normalize_axis(a, rank, op=op, param=param) for a in values)
    if len(set(normalized)) != len(normalized):
        raise OpParameterError(
            f"{op}: {param}={list(values)} names an axis twice for rank {rank}"
        )
    return normalized


def check_rank(
    x: np.ndarray, *, op: str, param: str = "x", minimum: int = 0, maximum: int | None = None
) -> None:
    """Raise ShapeError unless ``minimum <= x.ndim <= maximum``."""
    if x.ndim < minimum or (maximum is not None and x.ndim > maximum):
        expected = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
        if maximum == minimum:
            expected = str(minimum)
        raise ShapeError(
            f"{op}: {param} has rank {x.ndim} (shape {list(x.shape)}); expected rank {expected}"
        )


def check_broadcast_shapes(op: str, **shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Return the broadcast of the named shapes, or raise ShapeError listing them."""
    try:
        return np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise ShapeError(f"{op}: shapes do not broadcast: {listed}") from None


def check_broadcast(op: str, **arrays: np.ndarray) -> tuple[int, ...]:
    """Return the broadcast shape of the named arrays, or raise ShapeError naming their shapes."""
    return check_broadcast_shapes(op, **{name: np.shape(a) for name, a in arrays.items()})
