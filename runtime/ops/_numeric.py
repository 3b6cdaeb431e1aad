"""Numeric helpers: element-type conversion (``cast`` and output rounding) and erf."""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["convert", "erf"]


def convert(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Convert ``array`` to ``dtype`` with defined results for every input value.

    * float to float rounds to nearest even (numpy ``astype``), and overflows to inf;
    * float to integer truncates toward zero and saturates at the type's range, and NaN becomes 0.
      This is how ARM's FCVTZS instruction converts.
      NOTE: Core ML's own float-to-int rounding is unverified;
    * anything to bool is ``value != 0``;
    * integer to integer wraps (two's complement), like numpy ``astype``.

    Args:
        array: ``tensor<T, [*D]>``, any numeric or bool dtype.
        dtype: the target numpy dtype.

    Returns:
        ``tensor<dtype, [*D]>``; ``array`` itself when it already has ``dtype``.
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array

    if dtype == np.bool_:
        return array != 0

    if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(dtype)
        values = np.trunc(np.nan_to_num(array.astype(np.float64), nan=0.0))

        # float64 represents every bound up to 32 bits exactly. For 64-bit types the bound rounds up
        # to 2**63 or 2**64, so the largest float64 below it is used instead.
        upper = float(info.max)
        if int(upper) > info.max:
            upper = float(np.nextafter(upper, 0.0))
        return np.clip(values, float(info.min), upper).astype(dtype)

    # A float too large for a narrower float type becomes inf, as IEEE rounding defines.
    with np.errstate(over="ignore"):
        return array.astype(dtype)


@functools.cache
def _erf_ufunc() -> np.ufunc:
    """Compile the erf ufunc on first use; numba takes about 0.2 s for the two signatures."""
    import numba

    return numba.vectorize(["float32(float32)", "float64(float64)"])(_erf_scalar)


def _erf_scalar(value: float) -> float:
    return math.erf(value)


def erf(array: np.ndarray) -> np.ndarray:
    """Return the Gauss error function of each element, in the array's float dtype.

    numpy has no erf, so this compiles ``math.erf`` into a ufunc with numba. fp16 input is
    evaluated in fp32 and rounded back.
    """
    array = np.asarray(array)
    if array.dtype == np.float64:
        return _erf_ufunc()(array)
    return _erf_ufunc()(array.astype(np.float32, copy=False)).astype(array.dtype, copy=False)
