"""Argument checks shared by the decoders, each raising one class from ``runtime.errors``.

Every check takes ``where``, the op type and op name (see :func:`describe`), and ``param``,
the MIL parameter name, so that each message names the op, the tensor, the value found and
the value expected.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from ..errors import (
    NonFiniteError,
    ParameterShapeError,
    ShapeError,
    SparseblobError,
    UnknownDtypeError,
)

__all__ = [
    "INTEGER_DTYPES",
    "FLOAT_DTYPES",
    "describe",
    "mil_dtype_name",
    "require_dtype",
    "require_rank",
    "require_finite",
    "integer_scalar",
    "normalize_axis",
    "byte_mask",
    "bits_view",
    "output_array",
]

INTEGER_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))

# Names of the numpy containers in MIL terms. int4 and uint4 data arrive in int8 and uint8
# containers, so the container name is what a decoder can report.
_MIL_NAMES = {
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.float16): "fp16",
    np.dtype(np.float32): "fp32",
    np.dtype(np.bool_): "bool",
}


def describe(op_type: str, name: str) -> str:
    """Return the prefix of an error message: the op type, and the op name unless it is the same."""
    return op_type if name == op_type else f"{op_type} {name!r}"


def mil_dtype_name(dtype: np.dtype) -> str:
    """Return the MIL name of a numpy dtype (``fp16`` for float16), or the numpy name."""
    return _MIL_NAMES.get(np.dtype(dtype), str(np.dtype(dtype)))


def require_dtype(
    array: np.ndarray, allowed: Collection[np.dtype], *, param: str, where: str
) -> None:
    """Raise UnknownDtypeError unless ``array.dtype`` is one of ``allowed``."""
    if array.dtype not in allowed:
        expected = ", ".join(mil_dtype_name(dtype) for dtype in allowed)
        raise UnknownDtypeError(
            f"{where}: {param} has dtype {mil_dtype_name(array.dtype)}; expected one of {expected}"
        )


def require_rank(
    array: np.ndarray,
    ranks: Collection[int],
    *,
    param: str,
    where: str,
    error: type[SparseblobError] = ShapeError,
) -> None:
    """Raise ``error`` unless the rank of ``array`` is one of ``ranks``."""
    if array.ndim not in ranks:
        expected = " or ".join(str(rank) for rank in sorted(ranks))
        raise error(
            f"{where}: {param} has rank {array.ndim} (shape {list(array.shape)}); expected rank {expected}"
        )


def require_finite(array: np.ndarray, *, param: str, where: str) -> None:
    """Raise NonFiniteError if a floating-point ``array`` contains NaN or an infinity."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    if array.dtype == np.float16:
        # An fp16 value is NaN or infinite when its 5 exponent bits are all set, and testing
        # the bits is much faster than numpy's fp16 isfinite.
        non_finite = (array.view(np.uint16) & 0x7C00) == 0x7C00
    else:
        non_finite = ~np.isfinite(array)
    if not non_finite.any():
        return
    position = tuple(int(i) for i in np.argwhere(non_finite)[0])
    raise NonFiniteError(
        f"{where}: {param} contains {array[position]!r} at index {list(position)}; "
        f"expected only finite values"
    )


def integer_scalar(value: object, *, param: str, where: str) -> int:
    """Return an integer given as a Python int, a numpy integer or a 0-d integer array."""
    array = np.asarray(value)
    if array.ndim != 0:
        raise ParameterShapeError(
            f"{where}: {param} has shape {list(array.shape)}; expected an integer scalar"
        )
    if array.dtype.kind not in "iu":
        raise ParameterShapeError(
            f"{where}: {param} is {value!r} of dtype {array.dtype}; expected an integer scalar"
        )
    return int(array)


def normalize_axis(axis: int, rank: int, *, param: str, where: str) -> int:
    """Return ``axis`` in ``[0, rank)`` for an axis given in ``[-rank, rank)``."""
    if not -rank <= axis < rank:
        raise ParameterShapeError(
            f"{where}: {param} is {axis}; expected a value in [{-rank}, {rank}) for rank {rank}"
        )
    return axis % rank


def byte_mask(mask: np.ndarray, *, param: str, where: str) -> np.ndarray:
    """Return a uint1 mask held one element per byte as uint8 (a bool mask is viewed, not copied)."""
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    require_dtype(mask, (np.dtype(np.uint8),), param=param, where=where)
    return mask


def bits_view(array: np.ndarray) -> np.ndarray:
    """Return a flat C-contiguous view of ``array`` as unsigned integers of the same width.

    Copies only when ``array`` is not C-contiguous.
    """
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(np.dtype(f"u{flat.dtype.itemsize}"))


def output_array(
    out: np.ndarray | None,
    dtype: np.dtype,
    shape: Sequence[int],
    *,
    inputs: Mapping[str, np.ndarray],
    where: str,
) -> np.ndarray:
    """Return ``out`` after checking it can receive the op's output, or a new array when None.

    A decoder writes every element of the returned array, so a new array is left
    uninitialized.

    Args:
        out: the caller's buffer, or None.
        dtype: the output dtype.
        shape: the output shape.
        inputs: the op's input arrays by MIL name; ``out`` must not share memory with any.
        where: op type and name, for messages.

    Raises:
        UnknownDtypeError: ``out`` does not have exactly ``dtype``.
        ShapeError: ``out`` is not a numpy array, does not have exactly ``shape``, is not
            C-contiguous, is read-only, or may share memory with an input.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(size) for size in shape)
    if out is None:
        return np.empty(shape, dtype=dtype)

    expected = f"tensor<{mil_dtype_name(dtype)}, {list(shape)}>"
    if not isinstance(out, np.ndarray):
        raise ShapeError(f"{where}: out is a {type(out).__name__}; expected a numpy array {expected}")
    if out.dtype != dtype:
        raise UnknownDtypeError(
            f"{where}: out has dtype {mil_dtype_name(out.dtype)} ({out.dtype.str}); expected "
            f"{mil_dtype_name(dtype)} ({dtype.str}), the output dtype"
        )
    if out.shape != shape:
        raise ShapeError(f"{where}: out has shape {list(out.shape)}; expected {list(shape)}, the output shape")
    if not out.flags.c_contiguous:
        raise ShapeError(f"{where}: out is not C-contiguous (strides {list(out.strides)}); expected a C-contiguous {expected}")
    if not out.flags.writeable:
        raise ShapeError(f"{where}: out is read-only; expected a writeable {expected}")
    for param, array in inputs.items():
        # A bounds check: the decoders read inputs while writing out, so any overlap could
        # change the values still to be read.
        if np.may_share_memory(out, array):
            raise ShapeError(f"{where}: out may share memory with {param}; expected a separate buffer")
    return out
