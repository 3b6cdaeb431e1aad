"""How sparseblob compares arrays: bit for bit for decoded weights, by tolerance for outputs.

Decoded weights must equal the reference exactly, compared as raw bits so that -0.0 versus
0.0 and NaN payloads count as differences. Model outputs are compared with the tolerance of
their dtype, from the single table :data:`TOLERANCES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Tolerance",
    "TOLERANCES",
    "tolerance_for",
    "raw_bits",
    "bits_equal",
    "assert_bits_equal",
    "assert_close",
]


@dataclass(frozen=True)
class Tolerance:
    """Allowed error ``|a - b| <= atol + rtol * |b|``, with the reason for the numbers."""

    rtol: float
    atol: float
    reason: str


TOLERANCES: dict[str, Tolerance] = {
    # fp16 has an 11-bit significand (unit roundoff 2**-11 ~ 4.9e-4). A network computed in fp16
    # rounds at every op, so a few ulps per layer accumulate over a small model's depth.
    "fp16": Tolerance(rtol=1e-2, atol=1e-2, reason="fp16 storage rounds each op to 11 bits"),
    # fp32 computed in a different order (BLAS blocking, sparse versus dense summation) differs
    # by a few ulps per accumulation of up to ~10^4 terms.
    "fp32": Tolerance(rtol=1e-4, atol=1e-5, reason="fp32 summation order differs between kernels"),
    "fp64": Tolerance(rtol=1e-10, atol=1e-12, reason="fp64 summation order only"),
}


def tolerance_for(dtype: np.dtype | str) -> Tolerance:
    """Return the tolerance for outputs of ``dtype``; integer and bool outputs must be exact."""
    name = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp64"}.get(
        np.dtype(dtype) if not isinstance(dtype, str) else None, dtype
    )
    if name in TOLERANCES:
        return TOLERANCES[name]
    return Tolerance(rtol=0.0, atol=0.0, reason=f"{dtype} values are exact")


def raw_bits(array: np.ndarray) -> np.ndarray:
    """View an array's elements as unsigned integers of the same width."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    return array.view(f"u{array.dtype.itemsize}")


def bits_equal(actual: np.ndarray, expected: np.ndarray) -> bool:
    """True when dtype, shape and every element's bits are equal."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    return (
        actual.dtype == expected.dtype
        and actual.shape == expected.shape
        and bool(np.array_equal(raw_bits(actual), raw_bits(expected)))
    )


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray, name: str = "array") -> None:
    """Raise ``AssertionError`` naming the first differing element unless the bits are equal."""
    __tracebackhide__ = True
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{name}: dtype is {actual.dtype}, expected {expected.dtype}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape is {actual.shape}, expected {expected.shape}")
    diff = raw_bits(actual) != raw_bits(expected)
    if diff.any():
        first = tuple(int(i) for i in np.argwhere(diff)[0])
        raise AssertionError(
            f"{name}: {int(diff.sum())} of {diff.size} elements differ in their bits; first at "
            f"{first}: {actual[first]!r} versus expected {expected[first]!r}"
        )


def assert_close(actual: np.ndarray, expected: np.ndarray, dtype=None, name: str = "output") -> None:
    """Raise ``AssertionError`` unless the arrays agree within the tolerance of ``dtype``.

    ``dtype`` defaults to the dtype of ``expected``. NaN must match NaN, and shapes must match.
    """
    __tracebackhide__ = True
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape is {actual.shape}, expected {expected.shape}")
    tol = tolerance_for(dtype if dtype is not None else expected.dtype)
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    bad = ~np.isclose(a64, e64, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        err = np.abs(a64 - e64)[bad].max()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements exceed rtol={tol.rtol}, "
            f"atol={tol.atol} ({tol.reason}); max abs error {err:.3g}; first at {first}: "
            f"{actual[first]!r} versus expected {expected[first]!r}"
        )
