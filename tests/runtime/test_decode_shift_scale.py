"""Linear dequantization decoders against coremltools' reference decompressors.

The references are the static ``decompress`` methods of coremltools 9.0:
``iOS16.constexpr_ops.constexpr_affine_dequantize`` and ``iOS18.compression``'s
``constexpr_blockwise_shift_scale`` and ``constexpr_sparse_blockwise_shift_scale``. With an
fp16 scale and an fp32 offset the iOS18 reference returns fp32 (numpy promotion), although
the op's output type is the scale dtype. The tests compare with that result cast to fp16.
"""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import bitpack
from sparseblob.runtime.decode import affine_dequantize, blockwise_shift_scale, sparse_blockwise_shift_scale
from sparseblob.runtime.errors import (
    ElementLimitError,
    MaskError,
    NonFiniteError,
    ParameterShapeError,
    ShapeError,
    UnknownDtypeError,
)
from sparseblob.verify.compare import assert_bits_equal, assert_close

from .test_decode_sparse import WRONG_BUFFERS, stale_buffer

CONTAINERS = {
    "int4": np.int8,
    "uint4": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "fp16": np.float16,
    "fp32": np.float32,
}
INTEGER_RANGES = {"int4": (-8, 8), "uint4": (0, 16), "int8": (-128, 128), "uint8": (0, 256)}

SHAPES = st.one_of(
    st.lists(st.integers(1, 8), min_size=1, max_size=3).map(tuple),
    st.tuples(st.integers(1, 4), st.integers(40, 140)),
)


def random_values(rng: np.random.Generator, mil_type: str, shape, *, finite: bool = False) -> np.ndarray:
    """Return values of a MIL type; floats are random bit patterns, NaN and inf unless ``finite``."""
    if mil_type in INTEGER_RANGES:
        low, high = INTEGER_RANGES[mil_type]
        return rng.integers(low, high, shape).astype(CONTAINERS[mil_type])
    dtype = np.dtype(CONTAINERS[mil_type])
    count = int(np.prod(shape))
    bits = rng.integers(0, 2 ** (8 * dtype.itemsize), count, dtype=np.uint64).astype(f"u{dtype.itemsize}")
    if finite:
        exponent = np.array(0x7C00 if dtype.itemsize == 2 else 0x7F800000, dtype=bits.dtype)
        bits[(bits & exponent) == exponent] ^= exponent
    return bits.view(dtype).reshape(shape)


def divisors(size: int) -> list[int]:
    return [blocks for blocks in range(1, size + 1) if size % blocks == 0]


@st.composite
def shift_scale_inputs(draw):
    """Draw (data, scale, offset) of every SrcT, DstT and OffsetT combination, with blocks."""
    shape = draw(SHAPES)
    source = draw(st.sampled_from(sorted(CONTAINERS)))
    target = draw(st.sampled_from(["fp16", "fp32"]))
    offset_type = draw(st.sampled_from([None, source, "fp16", "fp32"]))
    blocks = tuple(draw(st.sampled_from(divisors(size))) for size in shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = random_values(rng, source, shape)
    scale = random_values(rng, target, blocks, finite=True)
    offset = None if offset_type is None else random_values(rng, offset_type, blocks, finite=True)
    return data, scale, offset


def reference_dense(data, scale, offset) -> np.ndarray:
    with np.errstate(all="ignore"):
        return ios18.constexpr_blockwise_shift_scale.decompress(data, scale, offset).astype(scale.dtype)


# --- against coremltools ---------------------------------------------------------------------


@given(shift_scale_inputs())
def test_blockwise_matches_coremltools(inputs):
    data, scale, offset = inputs

    expected = reference_dense(data, scale, offset)

    assert_bits_equal(blockwise_shift_scale(data, scale, offset), expected, "blockwise_shift_scale")


@given(shift_scale_inputs(), st.sampled_from([0.0, 0.3, 0.8, 1.0]), st.integers(0, 2**32 - 1))
def test_sparse_blockwise_matches_coremltools(inputs, density, seed):
    data, scale, offset = inputs
    mask = (np.random.default_rng(seed).random(data.shape) < density).astype(np.uint8)
    nonzero_data = data[mask != 0]

    with np.errstate(all="ignore"):
        expected_mask, expected = ios18.constexpr_sparse_blockwise_shift_scale.decompress(
            mask, nonzero_data, scale, offset
        )
        expected = expected.astype(scale.dtype)

    decoded_mask, decoded = sparse_blockwise_shift_scale(mask, nonzero_data, scale, offset)
    assert_bits_equal(decoded_mask, expected_mask, "mask")
    assert_bits_equal(decoded, expected, "values")


@st.composite
def affine_inputs(draw):
    """Draw (quantized_data, zero_point, scale, axis) of the iOS16 op."""
    shape = draw(SHAPES)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = random_values(rng, draw(st.sampled_from(["int8", "uint8"])), shape)
    zero_point_shape = draw(st.sampled_from([(), (channels,)]))
    zero_point = random_values(rng, draw(st.sampled_from(["int8", "uint8", "fp32"])), zero_point_shape, finite=True)
    scale_shape = draw(st.sampled_from([(), (channels,)]))
    scale = random_values(rng, draw(st.sampled_from(["fp16", "fp32"])), scale_shape, finite=True)
    return data, zero_point, scale, axis


@given(affine_inputs())
def test_affine_matches_coremltools(inputs):
    data, zero_point, scale, axis = inputs

    with np.errstate(all="ignore"):
        expected = ios16.constexpr_affine_dequantize.decompress(data, zero_point, scale, axis)

    assert_bits_equal(affine_dequantize(data, zero_point, scale, axis), expected, "affine_dequantize")


@pytest.mark.parametrize("source", sorted(INTEGER_RANGES))
@pytest.mark.parametrize("target", [np.float16, np.float32])
@pytest.mark.parametrize("blocks", [(3, 1), (3, 4), (1, 1), (3, 512)])
def test_long_rows_match_coremltools(source, target, blocks):
    rng = np.random.default_rng(5)
    data = random_values(rng, source, (3, 2048))
    scale = (rng.random(blocks) * 0.1).astype(target)
    offset = random_values(rng, source, blocks)

    assert_bits_equal(blockwise_shift_scale(data, scale, offset), reference_dense(data, scale, offset))


# --- rounding: where coremltools rounds ------------------------------------------------------


def test_fp16_offset_rounds_the_difference_first():
    data = np.array([35], dtype=np.int8)
    offset = np.array([15410], dtype=np.uint16).view(np.float16)  # 1.049
    scale = np.array([14978], dtype=np.uint16).view(np.float16)  # 0.8135

    decoded = blockwise_shift_scale(data, scale, offset)

    # numpy fp16 arithmetic, as coremltools computes: (fp16(35) - offset) rounds to fp16.
    assert_bits_equal(decoded, (data.astype(np.float16) - offset) * scale)
    assert_bits_equal(decoded, reference_dense(data, scale, offset), "coremltools")
    single_rounding = ((np.float32(35) - offset.astype(np.float32)) * scale.astype(np.float32)).astype(np.float16)
    assert decoded.view(np.uint16)[0] != single_rounding.view(np.uint16)[0]


def test_fp32_data_rounds_to_fp16_scale_first():
    data = np.array([1115433507], dtype=np.uint32).view(np.float32)  # 63.04115
    scale = np.array([12123], dtype=np.uint16).view(np.float16)  # 0.1149

    decoded = blockwise_shift_scale(data, scale)

    assert_bits_equal(decoded, data.astype(np.float16) * scale)
    assert_bits_equal(decoded, reference_dense(data, scale, None), "coremltools")
    single_rounding = (data * scale.astype(np.float32)).astype(np.float16)
    assert decoded.view(np.uint16)[0] != single_rounding.view(np.uint16)[0]


def test_integer_subtraction_does_not_wrap():
    data = np.array([[-128, 2], [7, 0]], dtype=np.int8)
    scale = np.array([[0.5], [2.0]], dtype=np.float16)
    offset = np.array([[127], [1]], dtype=np.int8)

    decoded = blockwise_shift_scale(data, scale, offset)

    assert decoded.tolist() == [[-127.5, -62.5], [12.0, -2.0]]
    assert decoded.dtype == np.float16


def test_affine_subtraction_does_not_wrap():
    decoded = affine_dequantize(np.array([-128, 127], np.int8), np.int8(127), np.float32(1.0), 0)

    assert decoded.tolist() == [-255.0, 0.0]


def test_nan_payloads_of_fp16_data_survive():
    bits = np.array([0x7E01, 0xFE3F, 0x8000, 0x7C00], dtype=np.uint16)

    decoded = blockwise_shift_scale(bits.view(np.float16), np.ones(1, np.float16))

    assert decoded.view(np.uint16).tolist() == bits.tolist()


# --- C9: int4 data dequantize one element at a time ------------------------------------------


def test_int4_every_byte_dequantizes_per_element():
    codes = np.arange(256, dtype=np.uint8)
    data = bitpack.unpack_bits(codes, 4, 512, signed=True)

    decoded = blockwise_shift_scale(data, np.ones(1, np.float16))

    nibbles = np.stack([codes & 0xF, codes >> 4], axis=1).reshape(-1).astype(np.int16)
    expected = np.where(nibbles >= 8, nibbles - 16, nibbles).astype(np.float16)
    assert_bits_equal(decoded, expected, "int4 values")


def test_int4_golden_values_with_int4_offset():
    data = np.array([-6, 2, 3, -2], dtype=np.int8)
    offset = np.array([-8], dtype=np.int8)

    decoded = blockwise_shift_scale(data, np.array([0.5], np.float16), offset)

    assert decoded.tolist() == [1.0, 5.0, 5.5, 3.0]


# --- golden example from the coremltools docstring, checked against its code ------------------


def test_docstring_sparse_per_column_example():
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=np.uint8)
    nonzero_data = np.array([10, 11, 3, 4, 5, 6, 7, 8, 9], dtype=np.int8)
    scale = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    offset = np.array([[1, 2, 3, 4]], dtype=np.int8)
    golden = np.array([0.9, 1.8, 0.2, 0.4, 0.6, 0.9, 1.2, 0.7, 1.4], dtype=np.float32)

    _, reference = ios18.constexpr_sparse_blockwise_shift_scale.decompress(mask, nonzero_data, scale, offset)
    _, values = sparse_blockwise_shift_scale(mask, nonzero_data, scale, offset)

    assert_close(reference, golden, name="coremltools")
    assert_bits_equal(values, reference)


# --- rejections ------------------------------------------------------------------------------


def test_scale_rank_must_equal_data_rank():
    with pytest.raises(ParameterShapeError, match=r"'w': scale has rank 1 \(shape \[4\]\); expected the rank of data, 2"):
        blockwise_shift_scale(np.zeros((4, 4), np.int8), np.ones(4, np.float16), name="w")


def test_scale_blocks_must_divide_data():
    with pytest.raises(ParameterShapeError, match="scale has 4 blocks along axis 1 .* data dimension 6"):
        blockwise_shift_scale(np.zeros((4, 6), np.int8), np.ones((4, 4), np.float16))


def test_offset_shape_must_equal_scale_shape():
    with pytest.raises(ParameterShapeError, match=r"offset has shape \[4\]; expected the shape of scale, \[4, 1\]"):
        blockwise_shift_scale(np.zeros((4, 6), np.int8), np.ones((4, 1), np.float16), np.zeros(4, np.int8))


def test_integer_offset_must_have_data_dtype():
    with pytest.raises(UnknownDtypeError, match="offset has dtype uint8, but data has dtype int8"):
        blockwise_shift_scale(np.zeros((4, 6), np.int8), np.ones((4, 1), np.float16), np.zeros((4, 1), np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_non_finite_scale_is_rejected(bad, dtype):
    scale = np.ones((4, 1), dtype)
    scale[2, 0] = bad

    with pytest.raises(NonFiniteError, match=r"'w': scale contains .* at index \[2, 0\]; expected only finite"):
        blockwise_shift_scale(np.zeros((4, 6), np.int8), scale, name="w")


def test_non_finite_offset_is_rejected():
    offset = np.zeros((4, 1), np.float16)
    offset[1, 0] = -np.inf

    with pytest.raises(NonFiniteError, match=r"offset contains .*inf.* at index \[1, 0\]"):
        blockwise_shift_scale(np.zeros((4, 6), np.int8), np.ones((4, 1), np.float16), offset)


def test_rank0_data_is_rejected():
    with pytest.raises(ShapeError, match="data has rank 0"):
        blockwise_shift_scale(np.int8(3), np.float16(1.0))


@pytest.mark.parametrize(
    "data, scale, message",
    [
        (np.zeros(4, np.int16), np.ones(1, np.float16), "data has dtype int16"),
        (np.zeros(4, np.int8), np.ones(1, np.int8), "scale has dtype int8"),
        (np.zeros(4, np.int8), np.ones(1, np.float64), "scale has dtype float64"),
    ],
)
def test_dtypes_outside_the_op_are_rejected(data, scale, message):
    with pytest.raises(UnknownDtypeError, match=message):
        blockwise_shift_scale(data, scale)


def test_blockwise_element_limit_is_checked():
    with pytest.raises(ElementLimitError, match="64 elements, which exceeds the limit of 63"):
        blockwise_shift_scale(np.zeros((8, 8), np.int8), np.ones((1, 1), np.float16), max_elements=63)


@pytest.mark.parametrize("axis", [2, -3])
def test_affine_axis_out_of_range_is_rejected(axis):
    with pytest.raises(ParameterShapeError, match=f"'w': axis is {axis}; expected a value in \\[-2, 2\\)"):
        affine_dequantize(np.zeros((4, 6), np.int8), np.int8(0), np.float16(1), axis, name="w")


def test_affine_axis_must_be_an_integer():
    with pytest.raises(ParameterShapeError, match="axis is 1.0 of dtype float64; expected an integer scalar"):
        affine_dequantize(np.zeros((4, 6), np.int8), np.int8(0), np.float16(1), 1.0)


def test_affine_scale_vector_must_match_axis():
    with pytest.raises(ParameterShapeError, match="scale has 4 elements; expected a scalar or one element per index of quantized_data axis 1 \\(size 6\\)"):
        affine_dequantize(np.zeros((4, 6), np.int8), np.int8(0), np.ones(4, np.float16), 1)


def test_affine_zero_point_of_rank_two_is_rejected():
    with pytest.raises(ParameterShapeError, match="zero_point has rank 2"):
        affine_dequantize(np.zeros((4, 6), np.int8), np.zeros((4, 1), np.int8), np.ones(4, np.float16), 0)


def test_affine_non_finite_zero_point_is_rejected():
    with pytest.raises(NonFiniteError, match="zero_point contains"):
        affine_dequantize(np.zeros((4, 6), np.uint8), np.array(np.nan, np.float32), np.float16(1), 0)


def test_affine_float_data_is_rejected():
    with pytest.raises(UnknownDtypeError, match="quantized_data has dtype fp16"):
        affine_dequantize(np.zeros(4, np.float16), np.int8(0), np.float16(1), 0)


def test_sparse_blockwise_popcount_mismatch_is_rejected():
    with pytest.raises(MaskError, match="data_mask has 4 set bits, but nonzero_data has 3 values"):
        sparse_blockwise_shift_scale(np.ones((2, 2), np.uint8), np.zeros(3, np.int8), np.ones((1, 1), np.float16))


def test_sparse_blockwise_scale_must_divide_mask():
    with pytest.raises(ParameterShapeError, match="scale has 3 blocks along axis 0 .* data_mask dimension 2"):
        sparse_blockwise_shift_scale(np.ones((2, 2), np.uint8), np.zeros(4, np.int8), np.ones((3, 1), np.float16))


# --- decoding into a caller's out array ------------------------------------------------------


@given(shift_scale_inputs())
def test_blockwise_out_matches_allocating_path(inputs):
    data, scale, offset = inputs
    out = stale_buffer(scale.dtype, data.shape)

    with np.errstate(all="ignore"):
        returned = blockwise_shift_scale(data, scale, offset, out=out)
        expected = blockwise_shift_scale(data, scale, offset)

    assert returned is out
    assert_bits_equal(out, expected, "blockwise_shift_scale")


@given(affine_inputs())
def test_affine_out_matches_allocating_path(inputs):
    data, zero_point, scale, axis = inputs
    out = stale_buffer(scale.dtype, data.shape)

    returned = affine_dequantize(data, zero_point, scale, axis, out=out)

    assert returned is out
    assert_bits_equal(out, affine_dequantize(data, zero_point, scale, axis), "affine_dequantize")


@pytest.mark.parametrize("source", [np.int8, np.float16, np.float32])
def test_blockwise_long_row_out_overwrites_nan(source):
    data = np.arange(-100, 100, dtype=source).reshape(2, 100)
    scale = np.array([[0.5], [2.0]], np.float16)
    out = np.full((2, 100), np.nan, np.float16)

    blockwise_shift_scale(data, scale, out=out)

    assert_bits_equal(out, (data.astype(np.float32) * scale.astype(np.float32)).astype(np.float16), "out")


OPS = {
    "blockwise_shift_scale": (
        "constexpr_blockwise_shift_scale",
        lambda out: blockwise_shift_scale(
            np.arange(15, dtype=np.int8).reshape(3, 5), np.ones((3, 1), np.float16), name="w", out=out
        ),
    ),
    "affine_dequantize": (
        "constexpr_affine_dequantize",
        lambda out: affine_dequantize(
            np.arange(15, dtype=np.int8).reshape(3, 5), np.int8(1), np.ones(3, np.float16), 0, name="w", out=out
        ),
    ),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("wrong", sorted(WRONG_BUFFERS))
def test_wrong_out_is_rejected(op, wrong):
    make, error, pattern = WRONG_BUFFERS[wrong]
    op_type, decode = OPS[op]

    with pytest.raises(error, match=f"{op_type} 'w': {pattern}"):
        decode(make(np.float16, (3, 5)))


def test_out_sharing_memory_with_data_is_rejected():
    data = np.ones((2, 8), np.float32)

    with pytest.raises(ShapeError, match="out may share memory with data"):
        blockwise_shift_scale(data, np.ones((2, 1), np.float32), out=data)


def test_non_finite_scale_leaves_out_unchanged():
    scale = np.array([[1.0], [np.inf]], np.float32)
    out = stale_buffer(np.float32, (2, 4))

    with pytest.raises(NonFiniteError):
        blockwise_shift_scale(np.ones((2, 4), np.int8), scale, out=out)

    assert_bits_equal(out, stale_buffer(np.float32, (2, 4)), "out")
