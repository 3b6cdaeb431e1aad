"""Element-type conversion shared by the ``cast`` op and by the registry's output rounding."""

from __future__ import annotations

import numpy as np

__all__ = ["convert"]


def convert(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Convert ``array`` to ``dtype`` with defined results for every input value.

    * float to float rounds to nearest even (numpy ``astype``);
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

        # float64 holds every bound up to 32 bits exactly. For 64-bit types the bound rounds up
        # to 2**63 or 2**64, so the largest float64 below it is used instead.
        upper = float(info.max)
        if int(upper) > info.max:
            upper = float(np.nextafter(upper, 0.0))
        return np.clip(values, float(info.min), upper).astype(dtype)

    return array.astype(dtype)
