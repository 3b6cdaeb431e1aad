"""Elementwise MIL ops: unary math, binary arithmetic with broadcasting, comparisons, logic,
``select`` and ``cast``.

Every op keeps x's shape (unary) or returns the numpy broadcast of its inputs' shapes (binary).
Float results follow IEEE rules without warnings: ``real_div`` by zero gives inf, ``sqrt`` of a
negative gives NaN. Integer division by zero has no IEEE result and raises OpParameterError.

Shapes (all ops): ``x: tensor<T, [*D]>`` gives ``tensor<T, [*D]>``; binary ops take
``x: tensor<T, [*Dx]>, y: tensor<T, [*Dy]>`` and give ``tensor<T, broadcast(Dx, Dy)>``;
comparisons give ``tensor<bool, ...>``. T is fp16/fp32, plus int32 where noted.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import by_name
from ..errors import OpParameterError
from ._numeric import convert
from ._numeric import erf as _erf
from ._params import as_float, as_str, check_broadcast

__all__ = [
    # Unary math.
    "abs_", "acos", "asin", "atan", "atanh", "ceil", "cos", "cosh", "erf", "exp", "exp2",
    "floor", "inverse", "log", "rsqrt", "sign", "sin", "sinh", "sqrt", "square", "tan",
    "tanh", "threshold", "identity",
    # Binary arithmetic.
    "add", "sub", "mul", "real_div", "floor_div", "mod", "pow_", "maximum", "minimum",
    # Comparisons and logic.
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    "logical_and", "logical_or", "logical_xor", "logical_not",
    # Selection and type conversion.
    "select", "cast", "CAST_DTYPES",
]  # fmt: skip


def _unary(function, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    with np.errstate(all="ignore"):
        return np.asarray(function(x))


# Unary math. Each takes x: tensor<T, [*D]> (fp16/fp32; abs, sign, square, exp2 also int32)
# and returns tensor<T, [*D]>.


def abs_(x: np.ndarray) -> np.ndarray:
    """Return ``|x|`` (MIL ``abs``); T is fp16, fp32 or int32."""
    return _unary(np.abs, x)


def acos(x: np.ndarray) -> np.ndarray:
    """Return ``arccos(x)``; NaN outside [-1, 1]."""
    return _unary(np.arccos, x)


def asin(x: np.ndarray) -> np.ndarray:
    """Return ``arcsin(x)``; NaN outside [-1, 1]."""
    return _unary(np.arcsin, x)


def atan(x: np.ndarray) -> np.ndarray:
    """Return ``arctan(x)``."""
    return _unary(np.arctan, x)


def atanh(x: np.ndarray) -> np.ndarray:
    """Return ``arctanh(x)``; +-inf at +-1 and NaN outside [-1, 1]."""
    return _unary(np.arctanh, x)


def ceil(x: np.ndarray) -> np.ndarray:
    """Round up to an integral value, in x's float dtype."""
    return _unary(np.ceil, x)


def cos(x: np.ndarray) -> np.ndarray:
    """Return ``cos(x)`` (radians)."""
    return _unary(np.cos, x)


def cosh(x: np.ndarray) -> np.ndarray:
    """Return ``cosh(x)``."""
    return _unary(np.cosh, x)


def erf(x: np.ndarray) -> np.ndarray:
    """Return the Gauss error function ``erf(x)``."""
    return _erf(x)


def exp(x: np.ndarray) -> np.ndarray:
    """Return ``e**x``."""
    return _unary(np.exp, x)


def exp2(x: np.ndarray) -> np.ndarray:
    """Return ``2**x``; T is fp16, fp32 or int32 (int32 needs x >= 0)."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        if (x < 0).any():
            raise OpParameterError("exp2: int32 x has a negative entry; 2**x is not an integer")
        return np.left_shift(np.ones_like(x), x)
    return _unary(np.exp2, x)


def floor(x: np.ndarray) -> np.ndarray:
    """Round down to an integral value, in x's float dtype."""
    return _unary(np.floor, x)


def inverse(x: np.ndarray, epsilon: float = 1e-4) -> np.ndarray:
    """Return ``1 / (x + epsilon)``; epsilon defaults to 1e-4."""
    x = np.asarray(x)
    eps = as_float(epsilon, op="inverse", param="epsilon")
    return _unary(lambda v: np.reciprocal(v + eps), x)


def log(x: np.ndarray, epsilon: float = 1e-45) -> np.ndarray:
    """Return ``ln(x + epsilon)``; epsilon defaults to 1e-45 (0 once rounded to fp16)."""
    x = np.asarray(x)
    eps = as_float(epsilon, op="log", param="epsilon")
    return _unary(lambda v: np.log(v + eps), x)


def rsqrt(x: np.ndarray, epsilon: float = 1e-12) -> np.ndarray:
    """Return ``1 / sqrt(x + epsilon)``; epsilon defaults to 1e-12 and may be fp32 on fp16 x."""
    x = np.asarray(x)
    eps = as_float(epsilon, op="rsqrt", param="epsilon")
    return _unary(lambda v: np.reciprocal(np.sqrt(v + eps)), x)


def sign(x: np.ndarray) -> np.ndarray:
    """Return -1, 0 or 1 by the sign of x; T is fp16, fp32 or int32."""
    return _unary(np.sign, x)


def sin(x: np.ndarray) -> np.ndarray:
    """Return ``sin(x)`` (radians)."""
    return _unary(np.sin, x)


def sinh(x: np.ndarray) -> np.ndarray:
    """Return ``sinh(x)``."""
    return _unary(np.sinh, x)


def sqrt(x: np.ndarray) -> np.ndarray:
    """Return ``sqrt(x)``; NaN for negative x."""
    return _unary(np.sqrt, x)


def square(x: np.ndarray) -> np.ndarray:
    """Return ``x * x``; T is fp16, fp32 or int32."""
    return _unary(np.square, x)


def tan(x: np.ndarray) -> np.ndarray:
    """Return ``tan(x)`` (radians)."""
    return _unary(np.tan, x)


def tanh(x: np.ndarray) -> np.ndarray:
    """Return ``tanh(x)``."""
    return _unary(np.tanh, x)


def threshold(x: np.ndarray, alpha: float) -> np.ndarray:
    """Return ``max(x, alpha)`` (MIL ``threshold``: a lower bound); alpha is required."""
    x = np.asarray(x)
    bound = as_float(alpha, op="threshold", param="alpha")
    return np.maximum(x, np.asarray(bound, dtype=x.dtype))


def identity(x: np.ndarray) -> np.ndarray:
    """Return x unchanged; any dtype."""
    return np.asarray(x)


# Binary arithmetic: x and y broadcast as in numpy, and share T (fp16, fp32 or int32).


def _binary(op: str, function, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.asarray(x), np.asarray(y)
    check_broadcast(op, x=x, y=y)
    with np.errstate(all="ignore"):
        return np.asarray(function(x, y))


def _is_int(*arrays: np.ndarray) -> bool:
    return all(np.issubdtype(np.asarray(a).dtype, np.integer) for a in arrays)


def _check_int_divisor(op: str, x: np.ndarray, y: np.ndarray) -> None:
    if _is_int(x, y) and (np.asarray(y) == 0).any():
        raise OpParameterError(f"{op}: int32 y contains 0; integer division by zero")


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x + y``."""
    return _binary("add", np.add, x, y)


def sub(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x - y``."""
    return _binary("sub", np.subtract, x, y)


def mul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x * y``."""
    return _binary("mul", np.multiply, x, y)


def real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x / y``.

    For int32 inputs the quotient is truncated toward zero and returned as int32.
    NOTE: Core ML's rounding of an int32 real_div is unverified.
    """
    _check_int_divisor("real_div", x, y)
    result = _binary("real_div", np.true_divide, x, y)
    if _is_int(x, y):
        return convert(result, np.asarray(x).dtype)
    return result


def floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``floor(x / y)``, in x's dtype."""
    _check_int_divisor("floor_div", x, y)
    return _binary("floor_div", np.floor_divide, x, y)


def mod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x - floor(x / y) * y``: the remainder with y's sign, like Python's ``%``."""
    _check_int_divisor("mod", x, y)
    return _binary("mod", np.mod, x, y)


def pow_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x ** y`` (MIL ``pow``); int32 inputs need y >= 0."""
    if _is_int(x, y) and (np.asarray(y) < 0).any():
        raise OpParameterError("pow: int32 y has a negative entry; x**y is not an integer")
    return _binary("pow", np.power, x, y)


def maximum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the elementwise maximum; NaN wins."""
    return _binary("maximum", np.maximum, x, y)


def minimum(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the elementwise minimum; NaN wins."""
    return _binary("minimum", np.minimum, x, y)


# Comparisons: tensor<bool, broadcast(Dx, Dy)>.


def equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x == y`` as bool."""
    return _binary("equal", np.equal, x, y)


def not_equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x != y`` as bool."""
    return _binary("not_equal", np.not_equal, x, y)


def greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x > y`` as bool."""
    return _binary("greater", np.greater, x, y)


def greater_equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x >= y`` as bool."""
    return _binary("greater_equal", np.greater_equal, x, y)


def less(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x < y`` as bool."""
    return _binary("less", np.less, x, y)


def less_equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x <= y`` as bool."""
    return _binary("less_equal", np.less_equal, x, y)


# Logic on bool tensors (nonzero counts as True).


def logical_and(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x and y`` elementwise, as bool."""
    return _binary("logical_and", np.logical_and, x, y)


def logical_or(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x or y`` elementwise, as bool."""
    return _binary("logical_or", np.logical_or, x, y)


def logical_xor(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return ``x xor y`` elementwise, as bool."""
    return _binary("logical_xor", np.logical_xor, x, y)


def logical_not(x: np.ndarray) -> np.ndarray:
    """Return ``not x`` elementwise, as bool."""
    return _unary(np.logical_not, x)


def select(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pick ``a`` where ``cond`` is true and ``b`` elsewhere, with broadcasting.

    Shapes:
        cond: ``tensor<bool, [*Dc]>`` (nonzero counts as true for other dtypes).
        a: ``tensor<T, [*Da]>``, b: ``tensor<T, [*Db]>``.
        output: ``tensor<T, broadcast(Dc, Da, Db)>``.

    Example:
        select([True, False], [1, 2], [10, 20]) is [1, 20].
    """
    cond, a, b = np.asarray(cond), np.asarray(a), np.asarray(b)
    check_broadcast("select", cond=cond, a=a, b=b)
    return np.where(cond.astype(bool, copy=False), a, b)


# MIL dtype strings accepted by cast: iOS15 allows fp16/fp32/fp64/int32/int64/bool, iOS17 adds
# int8/uint8/int16/uint16.
CAST_DTYPES = ("fp16", "fp32", "fp64", "int8", "uint8", "int16", "uint16", "int32", "int64", "bool")


def cast(x: np.ndarray, dtype: str) -> np.ndarray:
    """Convert x to the MIL element type named by ``dtype``.

    Float to float rounds to nearest even. Float to integer truncates toward zero, saturates at
    the type's range and maps NaN to 0 (NOTE: unverified against Core ML). Conversion to bool is
    ``x != 0``.

    Shapes:
        x: ``tensor<T, [*D]>``, any numeric or bool dtype.
        output: ``tensor<dtype, [*D]>``.

    Args:
        x: the input.
        dtype: one of :data:`CAST_DTYPES` (required).

    Raises:
        UnsupportedOpError: dtype is not one of :data:`CAST_DTYPES`.

    Example:
        cast([1.7, -1.7, nan], "int32") is [1, -1, 0].
    """
    name = as_str(dtype, op="cast", param="dtype", choices=CAST_DTYPES)
    return convert(np.asarray(x), by_name(name).numpy_dtype)
