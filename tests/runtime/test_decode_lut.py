"""LUT decoders (iOS16 and iOS18 lut_to_dense, iOS18 lut_to_sparse) against coremltools.

The references are the static ``decompress`` methods of coremltools 9.0's op definitions;
iOS16 indices are packed with coremltools' own ``pack_elements_into_bits``.
"""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
from coremltools.optimize import _utils as coreml_utils
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import bitpack
from sparseblob.runtime.decode import lut_to_dense_ios16, lut_to_dense_ios18, lut_to_sparse
from sparseblob.runtime.errors import (
    ElementLimitError,
    MaskError,
    NonFiniteError,
    ParameterShapeError,
    ShapeError,
    UnknownDtypeError,
)
from sparseblob.verify.compare import assert_bits_equal

from .test_decode_sparse import WRONG_BUFFERS, stale_buffer

LUT_TYPES = {"int8": np.int8, "uint8": np.uint8, "fp16": np.float16, "fp32": np.float32}
INDEX_BITS = (1, 2, 3, 4, 6, 8)
IOS16_BITS = (1, 2, 4, 6, 8)

SHAPES = st.one_of(
    st.lists(st.integers(1, 8), min_size=1, max_size=3).map(tuple),
    st.tuples(st.integers(1, 3), st.integers(40, 140)),
)


def finite_values(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    """Return random values of every finite bit pattern (-0.0 and subnormals included)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if dtype.kind in "iu":
        return rng.integers(0, 256, count, dtype=np.uint8).view(dtype).reshape(shape)
    bits = rng.integers(0, 2 ** (8 * dtype.itemsize), count, dtype=np.uint64).astype(f"u{dtype.itemsize}")
    exponent = np.array(0x7C00 if dtype.itemsize == 2 else 0x7F800000, dtype=bits.dtype)
    bits[(bits & exponent) == exponent] ^= exponent  # clear the exponent of NaN and inf patterns
    return bits.view(dtype).reshape(shape)


def divisors(size: int) -> list[int]:
    return [groups for groups in range(1, size + 1) if size % groups == 0]


@st.composite
def lut_inputs(draw):
    """Draw (indices, lut, vector_axis, nbits) of the iOS18 op: per group and vector LUTs."""
    shape = draw(SHAPES)
    rank = len(shape)
    nbits = draw(st.sampled_from(INDEX_BITS))
    groups = [draw(st.sampled_from(divisors(size))) for size in shape]
    vector_size = draw(st.sampled_from([1, 1, 2, 3, 4]))
    if vector_size > 1:
        vector_axis = draw(st.integers(-rank, rank - 1))
    else:
        vector_axis = draw(st.none() | st.integers(-rank, rank - 1))
    dtype = LUT_TYPES[draw(st.sampled_from(sorted(LUT_TYPES)))]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lut = finite_values(rng, dtype, groups + [2**nbits, vector_size])
    indices = rng.integers(0, 2**nbits, shape).astype(np.uint8)
    return indices, lut, vector_axis, nbits


# --- against coremltools ---------------------------------------------------------------------


@given(lut_inputs())
def test_ios18_dense_matches_coremltools(inputs):
    indices, lut, vector_axis, nbits = inputs

    expected = ios18.constexpr_lut_to_dense.decompress(indices, lut, vector_axis)

    decoded = lut_to_dense_ios18(indices, lut, vector_axis, nbits=nbits)
    assert_bits_equal(decoded, expected, "lut_to_dense")


@given(lut_inputs(), st.sampled_from([0.0, 0.3, 0.8, 1.0]), st.integers(0, 2**32 - 1))
def test_ios18_sparse_matches_coremltools(inputs, density, seed):
    indices, lut, vector_axis, nbits = inputs
    mask = (np.random.default_rng(seed).random(indices.shape) < density).astype(np.uint8)
    nonzero = indices[mask != 0]

    expected_mask, expected_values = ios18.constexpr_lut_to_sparse.decompress(mask, nonzero, lut, vector_axis)

    decoded_mask, decoded_values = lut_to_sparse(mask, nonzero, lut, vector_axis, nbits=nbits)
    assert_bits_equal(decoded_mask, expected_mask.astype(np.uint8), "mask")
    assert_bits_equal(decoded_values, expected_values, "values")


@given(
    SHAPES,
    st.sampled_from(IOS16_BITS),
    st.sampled_from(sorted(LUT_TYPES)),
    st.integers(0, 2**32 - 1),
)
def test_ios16_dense_matches_coremltools(shape, nbits, type_name, seed):
    rng = np.random.default_rng(seed)
    lut = finite_values(rng, LUT_TYPES[type_name], (2**nbits,))
    codes = rng.integers(0, 2**nbits, shape).astype(np.uint8)
    packed = coreml_utils.pack_elements_into_bits(codes, nbits)
    shape_param = np.array(shape, dtype=np.uint32)

    expected = ios16.constexpr_lut_to_dense.decompress(lut, packed, shape_param)

    assert_bits_equal(lut_to_dense_ios16(packed, lut, shape_param), expected, "lut_to_dense")


@pytest.mark.parametrize("type_name", sorted(LUT_TYPES))
def test_per_group_lut_on_long_rows_matches_coremltools(type_name):
    rng = np.random.default_rng(11)
    indices = rng.integers(0, 16, (4, 512)).astype(np.uint8)
    lut = finite_values(rng, LUT_TYPES[type_name], (2, 4, 16, 1))

    expected = ios18.constexpr_lut_to_dense.decompress(indices, lut, None)

    assert_bits_equal(lut_to_dense_ios18(indices, lut, nbits=4), expected)


# --- every code of every width ---------------------------------------------------------------


@pytest.mark.parametrize("nbits", INDEX_BITS)
@pytest.mark.parametrize("type_name", sorted(LUT_TYPES))
def test_ios18_every_code_reads_its_entry(nbits, type_name):
    lut = finite_values(np.random.default_rng(nbits), LUT_TYPES[type_name], (1, 2**nbits, 1))
    codes = np.tile(np.arange(2**nbits, dtype=np.uint8), 3)

    decoded = lut_to_dense_ios18(codes, lut, nbits=nbits)

    assert_bits_equal(decoded, np.tile(lut[0, :, 0], 3))


@pytest.mark.parametrize("nbits", IOS16_BITS)
@pytest.mark.parametrize("type_name", sorted(LUT_TYPES))
def test_ios16_every_code_reads_its_entry(nbits, type_name):
    lut = finite_values(np.random.default_rng(nbits), LUT_TYPES[type_name], (2**nbits,))
    codes = np.concatenate([np.arange(2**nbits), np.arange(2**nbits)[::-1], [1]]).astype(np.uint8)
    packed = bitpack.pack_bits(codes, nbits)

    decoded = lut_to_dense_ios16(packed, lut, np.array([codes.size], np.uint32))

    assert_bits_equal(decoded, lut[codes])


# --- C4: indices are positions in the LUT ----------------------------------------------------


LUT_ABCD = np.array([-1.5, 0.25, 3.0, 7.0], dtype=np.float16)  # a, b, c, d
WEIGHT_C_A_D_C = np.array([[3.0, -1.5], [7.0, 3.0]], dtype=np.float16)  # [[c, a], [d, c]]


def test_indices_are_lut_positions_ios18():
    indices = np.array([[2, 0], [3, 2]], dtype=np.uint8)

    decoded = lut_to_dense_ios18(indices, LUT_ABCD.reshape(1, 1, 4, 1), nbits=2)

    assert_bits_equal(decoded, WEIGHT_C_A_D_C)


def test_indices_are_lut_positions_ios16():
    # Codes 2, 0, 3, 2 packed LSB-first: 0b10_11_00_10.
    packed = np.array([0xB2], dtype=np.uint8)
    shape = np.array([2, 2], dtype=np.uint32)

    assert coreml_utils.pack_elements_into_bits(np.array([2, 0, 3, 2], np.uint8), 2).tolist() == [0xB2]
    assert_bits_equal(lut_to_dense_ios16(packed, LUT_ABCD, shape), WEIGHT_C_A_D_C)
    assert_bits_equal(ios16.constexpr_lut_to_dense.decompress(LUT_ABCD, packed, shape), WEIGHT_C_A_D_C)


# --- golden examples from the coremltools docstrings, checked against its code ---------------


def test_docstring_per_group_example():
    indices = np.array([2, 3, 3, 0, 1, 0, 3, 0, 2, 1, 0, 3], dtype=np.uint8).reshape(6, 2)
    lut = np.array([1.0, 5.0, 9.0, 13.0, 2.0, 10.0, 18.0, 26.0], dtype=np.float16).reshape(2, 1, 4, 1)
    golden = np.array([[9, 13], [13, 1], [5, 1], [26, 2], [18, 10], [2, 26]], dtype=np.float16)

    assert_bits_equal(ios18.constexpr_lut_to_dense.decompress(indices, lut, None), golden, "coremltools")
    assert_bits_equal(lut_to_dense_ios18(indices, lut, nbits=2), golden)


VECTOR_INDICES = np.array([[[0, 0], [1, 0]], [[1, 1], [0, 0]]], dtype=np.uint8)
VECTOR_LUT = np.array([1, 2, 3, 11, 12, 13], dtype=np.int8).reshape(1, 1, 1, 2, 3)  # a = 1,2,3; b = 11,12,13


def test_docstring_vector_axis_1_example():
    a0, a1, a2, b0, b1, b2 = 1, 2, 3, 11, 12, 13
    golden = np.array(
        [
            [[a0, a0], [a1, a1], [a2, a2], [b0, a0], [b1, a1], [b2, a2]],
            [[b0, b0], [b1, b1], [b2, b2], [a0, a0], [a1, a1], [a2, a2]],
        ],
        dtype=np.int8,
    )

    assert golden.shape == (2, 6, 2)
    assert_bits_equal(ios18.constexpr_lut_to_dense.decompress(VECTOR_INDICES, VECTOR_LUT, 1), golden, "coremltools")
    assert_bits_equal(lut_to_dense_ios18(VECTOR_INDICES, VECTOR_LUT, 1, nbits=1), golden)


def test_docstring_vector_axis_2_example():
    a, b = [1, 2, 3], [11, 12, 13]
    golden = np.array([[a + a, b + a], [b + b, a + a]], dtype=np.int8)

    assert_bits_equal(ios18.constexpr_lut_to_dense.decompress(VECTOR_INDICES, VECTOR_LUT, 2), golden, "coremltools")
    assert_bits_equal(lut_to_dense_ios18(VECTOR_INDICES, VECTOR_LUT, np.int32(2), nbits=1), golden)


SPARSE_MASK = np.array(
    [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 1], [0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=np.uint8
)
SPARSE_INDICES = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1], dtype=np.uint8)


def test_docstring_lut_to_sparse_scalar_example():
    lut = np.array([2.0, 3.0], dtype=np.float16).reshape(1, 1, 2, 1)
    golden = np.array([2, 3, 3, 2, 3, 3, 2, 2, 3], dtype=np.float16)

    _, reference = ios18.constexpr_lut_to_sparse.decompress(SPARSE_MASK, SPARSE_INDICES, lut, None)
    mask, values = lut_to_sparse(SPARSE_MASK, SPARSE_INDICES, lut, nbits=1)

    assert_bits_equal(reference, golden, "coremltools")
    assert_bits_equal(values, golden)
    assert mask is SPARSE_MASK


def test_docstring_lut_to_sparse_vector_example():
    lut = np.array([[2.0, 2.0], [3.0, 3.0]], dtype=np.float16).reshape(1, 1, 2, 2)
    golden_mask = np.repeat(SPARSE_MASK, 2, axis=0)
    # Values in C order of the [8, 6] tensor: each mask row appears twice, so a vector's two
    # values are a row apart, not adjacent.
    golden = np.array([2, 3, 2, 3, 3, 2, 3, 3, 2, 3, 3, 2, 2, 3, 2, 2, 3, 3], dtype=np.float16)

    reference_mask, reference = ios18.constexpr_lut_to_sparse.decompress(SPARSE_MASK, SPARSE_INDICES, lut, 0)
    mask, values = lut_to_sparse(SPARSE_MASK, SPARSE_INDICES, lut, 0, nbits=1)

    assert_bits_equal(reference_mask, golden_mask, "coremltools mask")
    assert_bits_equal(reference, golden, "coremltools values")
    assert_bits_equal(mask, golden_mask, "mask")
    assert_bits_equal(values, golden, "values")


# --- rejections ------------------------------------------------------------------------------


def test_palette_size_must_match_index_width():
    with pytest.raises(ParameterShapeError, match="'w': lut.shape\\[-2\\] is 16, but the indices are uint2; expected 4"):
        lut_to_dense_ios18(np.zeros(4, np.uint8), np.zeros((1, 16, 1), np.float16), nbits=2, name="w")


@pytest.mark.parametrize("palette", [5, 32, 1])
def test_palette_size_must_be_an_index_width(palette):
    with pytest.raises(ParameterShapeError, match=f"lut.shape\\[-2\\] is {palette}; expected 2\\*\\*nbits"):
        lut_to_dense_ios18(np.zeros(4, np.uint8), np.zeros((1, palette, 1), np.float16))


def test_unknown_index_width_is_rejected():
    with pytest.raises(UnknownDtypeError, match="the indices are uint5"):
        lut_to_dense_ios18(np.zeros(4, np.uint8), np.zeros((1, 32, 1), np.float16), nbits=5)


def test_lut_rank_must_be_indices_rank_plus_two():
    with pytest.raises(ParameterShapeError, match=r"lut has rank 3 \(shape \[1, 4, 1\]\); expected rank 4"):
        lut_to_dense_ios18(np.zeros((4, 4), np.uint8), np.zeros((1, 4, 1), np.float16))


def test_lut_groups_must_divide_indices():
    with pytest.raises(ParameterShapeError, match="lut has 4 groups along axis 0 .* indices dimension 6"):
        lut_to_dense_ios18(np.zeros((6, 4), np.uint8), np.zeros((4, 1, 4, 1), np.float16))


def test_index_beyond_palette_is_rejected():
    indices = np.zeros((3, 70), np.uint8)
    indices[2, 65] = 7

    with pytest.raises(ParameterShapeError, match=r"'w': indices contains 7 at index \[2, 65\]; expected values below 4"):
        lut_to_dense_ios18(indices, np.zeros((1, 1, 4, 1), np.float32), name="w")


def test_vector_lut_needs_vector_axis():
    with pytest.raises(ParameterShapeError, match="vector_axis is missing, but lut has vector size 2"):
        lut_to_dense_ios18(np.zeros((4, 4), np.uint8), np.zeros((1, 1, 4, 2), np.float16))


@pytest.mark.parametrize("vector_axis", [2, -3])
def test_vector_axis_out_of_range_is_rejected(vector_axis):
    with pytest.raises(ParameterShapeError, match=f"vector_axis is {vector_axis}; expected a value in \\[-2, 2\\)"):
        lut_to_dense_ios18(np.zeros((4, 4), np.uint8), np.zeros((1, 1, 4, 2), np.float16), vector_axis)


def test_scalar_lut_rejects_bad_vector_axis():
    with pytest.raises(ParameterShapeError, match="vector_axis is 5"):
        lut_to_dense_ios18(np.zeros((4, 4), np.uint8), np.zeros((1, 1, 4, 1), np.float16), 5)


def test_vector_axis_must_be_a_scalar():
    with pytest.raises(ParameterShapeError, match=r"vector_axis has shape \[1\]; expected an integer scalar"):
        lut_to_dense_ios18(np.zeros((4, 4), np.uint8), np.zeros((1, 1, 4, 2), np.float16), np.array([0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_non_finite_lut_entry_is_rejected(bad, dtype):
    lut = np.zeros((1, 1, 4, 1), dtype)
    lut[0, 0, 3, 0] = bad

    with pytest.raises(NonFiniteError, match=r"'w': lut contains .* at index \[0, 0, 3, 0\]; expected only finite"):
        lut_to_dense_ios18(np.zeros((2, 2), np.uint8), lut, name="w")


def test_ios16_non_finite_lut_entry_is_rejected():
    with pytest.raises(NonFiniteError, match="lut contains"):
        lut_to_dense_ios16(np.zeros(1, np.uint8), np.array([0.0, np.nan], np.float32), np.array([3], np.uint32))


def test_ios16_three_bit_lut_is_rejected():
    with pytest.raises(ParameterShapeError, match=r"lut has 8 entries; expected one of \(2, 4, 16, 64, 256\)"):
        lut_to_dense_ios16(np.zeros(3, np.uint8), np.zeros(8, np.float16), np.array([8], np.uint32))


def test_ios16_index_byte_count_is_checked():
    with pytest.raises(ShapeError, match="indices has 3 bytes, but shape \\[7\\] has 7 elements of 4 bits; expected 4"):
        lut_to_dense_ios16(np.zeros(3, np.uint8), np.zeros(16, np.float16), np.array([7], np.uint32))


def test_ios16_lut_must_be_a_vector():
    with pytest.raises(ParameterShapeError, match="lut has rank 2"):
        lut_to_dense_ios16(np.zeros(1, np.uint8), np.zeros((2, 2), np.float16), np.array([2], np.uint32))


def test_vector_expansion_counts_against_the_limit():
    with pytest.raises(ElementLimitError, match="400 elements, which exceeds the limit of 399"):
        lut_to_dense_ios18(np.zeros((10, 10), np.uint8), np.zeros((1, 1, 2, 4), np.float16), 0, max_elements=399)


def test_indices_of_signed_dtype_are_rejected():
    with pytest.raises(UnknownDtypeError, match="indices has dtype int8"):
        lut_to_dense_ios18(np.zeros(4, np.int8), np.zeros((1, 4, 1), np.float16))


def test_lut_to_sparse_popcount_mismatch_is_rejected():
    with pytest.raises(MaskError, match="indices_mask has 9 set bits, but indices_nonzero_data has 8 values"):
        lut_to_sparse(SPARSE_MASK, SPARSE_INDICES[:8], np.zeros((1, 1, 2, 1), np.float16))


def test_lut_to_sparse_index_beyond_palette_is_rejected():
    indices = SPARSE_INDICES.copy()
    indices[4] = 2

    with pytest.raises(ParameterShapeError, match=r"indices_nonzero_data contains 2 at index \[4\]; expected values below 2"):
        lut_to_sparse(SPARSE_MASK, indices, np.zeros((1, 1, 2, 1), np.float16))


def test_lut_to_sparse_mask_value_two_is_rejected():
    mask = SPARSE_MASK.copy()
    mask[0, 0] = 2

    with pytest.raises(MaskError, match=r"indices_mask contains 2 at index \[0, 0\]"):
        lut_to_sparse(mask, SPARSE_INDICES, np.zeros((1, 1, 2, 1), np.float16))


# --- decoding into a caller's out array ------------------------------------------------------


@given(lut_inputs())
def test_ios18_out_matches_allocating_path(inputs):
    indices, lut, vector_axis, nbits = inputs
    expected = lut_to_dense_ios18(indices, lut, vector_axis, nbits=nbits)
    out = stale_buffer(lut.dtype, expected.shape)

    returned = lut_to_dense_ios18(indices, lut, vector_axis, nbits=nbits, out=out)

    assert returned is out
    assert_bits_equal(out, expected, "lut_to_dense")


@given(
    SHAPES,
    st.sampled_from(IOS16_BITS),
    st.sampled_from(sorted(LUT_TYPES)),
    st.integers(0, 2**32 - 1),
)
def test_ios16_out_matches_allocating_path(shape, nbits, type_name, seed):
    rng = np.random.default_rng(seed)
    lut = finite_values(rng, LUT_TYPES[type_name], (2**nbits,))
    packed = bitpack.pack_bits(rng.integers(0, 2**nbits, shape).astype(np.uint8), nbits)
    shape_param = np.array(shape, dtype=np.uint32)
    out = stale_buffer(lut.dtype, shape)

    returned = lut_to_dense_ios16(packed, lut, shape_param, out=out)

    assert returned is out
    assert_bits_equal(out, lut_to_dense_ios16(packed, lut, shape_param), "lut_to_dense")


def test_ios18_vector_out_has_the_expanded_shape():
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    lut = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    out = np.full((2, 4), np.nan, np.float32)

    lut_to_dense_ios18(indices, lut, vector_axis=1, out=out)

    assert out.tolist() == [[0, 1, 2, 3], [2, 3, 0, 1]]


@pytest.mark.parametrize("version", ["ios16", "ios18"])
@pytest.mark.parametrize("wrong", sorted(WRONG_BUFFERS))
def test_wrong_out_is_rejected(version, wrong):
    make, error, pattern = WRONG_BUFFERS[wrong]
    lut = np.linspace(-1, 1, 16).astype(np.float16)
    codes = np.arange(12, dtype=np.uint8).reshape(3, 4)

    with pytest.raises(error, match=f"constexpr_lut_to_dense 'w': {pattern}"):
        if version == "ios16":
            packed = bitpack.pack_bits(codes, 4)
            lut_to_dense_ios16(packed, lut, np.array([3, 4], np.uint32), name="w", out=make(lut.dtype, (3, 4)))
        else:
            lut_to_dense_ios18(codes, lut.reshape(1, 1, 16, 1), name="w", out=make(lut.dtype, (3, 4)))


def test_out_sharing_memory_with_lut_is_rejected():
    lut = np.zeros((1, 16, 1), np.uint8)

    with pytest.raises(ShapeError, match="out may share memory with lut"):
        lut_to_dense_ios18(np.zeros(16, np.uint8), lut, out=lut.reshape(16))


def test_index_beyond_palette_leaves_out_unchanged():
    lut = np.zeros((1, 1, 4, 1), np.float32)
    indices = np.array([[0, 4]], np.uint8)
    out = stale_buffer(np.float32, (1, 2))

    with pytest.raises(ParameterShapeError):
        lut_to_dense_ios18(indices, lut, out=out)

    assert_bits_equal(out, stale_buffer(np.float32, (1, 2)), "out")
