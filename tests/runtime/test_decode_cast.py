"""constexpr_cast against coremltools, on every fp16 bit pattern.

coremltools 9.0 has no static ``decompress`` for ``constexpr_cast``; the reference is the
``materialized_val_inference`` of the op built in a MIL program with coremltools' Builder.
"""

from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
from coremltools.converters.mil.mil import Builder as mb

from sparseblob.runtime.decode import cast
from sparseblob.runtime.errors import ElementLimitError, UnknownDtypeError, UnsupportedOpError
from sparseblob.verify.compare import assert_bits_equal

EVERY_FP16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)


def coremltools_cast(source: np.ndarray, target) -> np.ndarray:
    """Return coremltools' value of ``constexpr_cast(source, "fp32")`` in a program of ``target``."""
    built = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=target)
    def program(x):
        built["op"] = mb.constexpr_cast(source_val=source, output_dtype="fp32").op
        return mb.add(x=x, y=np.float32(0))

    return built["op"].materialized_val_inference()


@pytest.mark.parametrize("target", [ct.target.iOS16, ct.target.iOS18])
def test_every_fp16_value_matches_coremltools(target):
    assert_bits_equal(cast(EVERY_FP16, "fp32"), coremltools_cast(EVERY_FP16, target), "cast")


def test_finite_values_widen_exactly():
    finite = EVERY_FP16[np.isfinite(EVERY_FP16)]

    widened = cast(finite, "fp32")

    assert np.array_equal(widened.astype(np.float64), finite.astype(np.float64))
    assert np.array_equal(np.signbit(widened), np.signbit(finite))


def test_infinities_and_max_survive():
    source = np.array([np.inf, -np.inf, 65504, -65504, -0.0], dtype=np.float16)

    assert cast(source, "fp32").view(np.uint32).tolist() == [0x7F800000, 0xFF800000, 0x477FE000, 0xC77FE000, 0x80000000]


def test_quiet_nan_payload_survives():
    # fp16 quiet NaN 0x7E01 widens to fp32 0x7FC02000: sign, quiet bit and payload shift by 13.
    source = np.array([0x7E01, 0xFFFF], dtype=np.uint16).view(np.float16)

    assert cast(source, "fp32").view(np.uint32).tolist() == [0x7FC02000, 0xFFFFE000]


def test_shape_is_kept():
    source = np.zeros((2, 3, 4), dtype=np.float16)

    assert cast(source, "fp32").shape == (2, 3, 4)


@pytest.mark.parametrize("output_dtype", ["fp32", np.str_("fp32"), np.array("fp32"), b"fp32"])
def test_output_dtype_forms_are_accepted(output_dtype):
    assert cast(np.ones(2, np.float16), output_dtype).dtype == np.float32


@pytest.mark.parametrize("output_dtype", ["fp16", "int32", "float32", 5, None])
def test_other_output_dtypes_are_rejected(output_dtype):
    with pytest.raises(UnsupportedOpError, match=f"'w': output_dtype is {output_dtype!r}; expected 'fp32'"):
        cast(np.ones(2, np.float16), output_dtype, name="w")


def test_source_must_be_fp16():
    with pytest.raises(UnknownDtypeError, match="source_val has dtype fp32; expected one of fp16"):
        cast(np.ones(2, np.float32), "fp32")


def test_element_limit_is_checked():
    with pytest.raises(ElementLimitError):
        cast(np.ones(10, np.float16), "fp32", max_elements=9)
