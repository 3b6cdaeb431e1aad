"""fp16 conversions of the decode kernels: hardware and integer-only paths agree bit for bit.

On x86 CPUs without F16C the kernels convert fp16 with the integer-only functions
``software_half_bits`` and ``software_float32_from_half_bits``. They are tested here on every
machine, against numpy's casts (round to nearest even, exact widening) and against the
hardware conversion where the CPU has one.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from sparseblob.runtime.decode import _simd

EVERY_HALF = np.arange(2**16, dtype=np.uint32).astype(np.uint16)


@numba.njit
def software_narrow(values, out):
    for k in range(values.size):
        out[k] = _simd.software_half_bits(values[k])


@numba.njit
def software_widen(bits, out):
    for k in range(bits.size):
        out[k] = _simd.software_float32_from_half_bits(bits[k])


@numba.njit
def intrinsic_narrow(values, out):
    for k in range(values.size):
        out[k] = _simd.half_bits(values[k])


@numba.njit
def intrinsic_widen(bits, out):
    for k in range(bits.size):
        out[k] = _simd.float32_from_half_bits(bits[k])


def narrow(function, values: np.ndarray) -> np.ndarray:
    out = np.empty(values.size, dtype=np.uint16)
    function(values, out)
    return out


def widen(function, bits: np.ndarray) -> np.ndarray:
    out = np.empty(bits.size, dtype=np.float32)
    function(bits, out)
    return out.view(np.uint32)


def quiet_nan_of(float_bits: np.ndarray) -> np.ndarray:
    """fp16 NaN that the hardware makes of fp32 NaN bits: sign, quiet bit, top payload bits."""
    sign = (float_bits >> 16) & 0x8000
    return (sign | 0x7E00 | ((float_bits & 0x7FFFFF) >> 13)).astype(np.uint16)


def narrowing_cases() -> np.ndarray:
    """float32 bit patterns around every fp16 value and rounding boundary, plus random ones."""
    halves = EVERY_HALF.view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float32)
    ordered = np.unique(finite.astype(np.float64))
    midpoints = ((ordered[:-1] + ordered[1:]) / 2).astype(np.float32)
    around = np.concatenate([finite, midpoints]).view(np.uint32)
    neighbours = np.concatenate([around, around + 1, around - 1])
    edges = np.array([0x477FEFFF, 0x477FF000, 0x477FF001, 0x33000000, 0x33000001, 0x387FFFFF, 0x00000001, 0x7F7FFFFF], np.uint32)
    random = np.random.default_rng(16).integers(0, 2**32, 2**20, dtype=np.uint64).astype(np.uint32)
    cases = np.concatenate([neighbours, edges, edges | 0x80000000, random])
    return cases.astype(np.uint32)


def test_software_widening_is_exact():
    widened = widen(software_widen, EVERY_HALF)

    halves = EVERY_HALF.view(np.float16)
    numeric = ~np.isnan(halves)
    assert np.array_equal(widened[numeric], halves[numeric].astype(np.float32).view(np.uint32))


def test_software_widening_quiets_nan_and_keeps_payload():
    widened = widen(software_widen, EVERY_HALF)

    nan = np.isnan(EVERY_HALF.view(np.float16))
    bits = EVERY_HALF[nan].astype(np.uint32)
    expected = ((bits & 0x8000) << 16) | 0x7FC00000 | ((bits & 0x3FF) << 13)
    assert np.array_equal(widened[nan], expected)


def test_software_narrowing_rounds_like_numpy():
    cases = narrowing_cases()
    values = cases.view(np.float32)
    numeric = ~np.isnan(values)

    narrowed = narrow(software_narrow, values)

    with np.errstate(over="ignore"):
        expected = values[numeric].astype(np.float16).view(np.uint16)
    assert np.array_equal(narrowed[numeric], expected)


def test_software_narrowing_quiets_nan():
    cases = narrowing_cases()
    nan = np.isnan(cases.view(np.float32))

    narrowed = narrow(software_narrow, cases.view(np.float32))

    assert nan.sum() > 1000
    assert np.array_equal(narrowed[nan], quiet_nan_of(cases[nan]))


@pytest.mark.skipif(not _simd.native_half_conversion(), reason="the CPU has no fp16 conversion instruction")
def test_software_and_hardware_agree():
    cases = narrowing_cases()

    assert np.array_equal(narrow(software_narrow, cases.view(np.float32)), narrow(intrinsic_narrow, cases.view(np.float32)))
    assert np.array_equal(widen(software_widen, EVERY_HALF), widen(intrinsic_widen, EVERY_HALF))


def test_kernel_conversion_matches_the_rules():
    # Whichever path this machine compiles, the intrinsics follow the same rules.
    cases = narrowing_cases()
    values = cases.view(np.float32)
    numeric = ~np.isnan(values)

    narrowed = narrow(intrinsic_narrow, values)

    with np.errstate(over="ignore"):
        assert np.array_equal(narrowed[numeric], values[numeric].astype(np.float16).view(np.uint16))
    assert np.array_equal(narrowed[~numeric], quiet_nan_of(cases[~numeric]))
