"""Compressed weight layouts: decoding against coremltools, round trips, patterns and errors."""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil.mil.ops.defs.iOS18.compression import (
    constexpr_blockwise_shift_scale,
    constexpr_lut_to_dense,
    constexpr_lut_to_sparse,
    constexpr_sparse_to_dense,
)
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import bitpack
from sparseblob.runtime.errors import MaskError, NonFiniteError, ParameterShapeError, PatternError, ShapeError
from sparseblob.runtime.kernels import formats
from sparseblob.runtime.kernels.patterns import NM, Blocks, check_pattern, detect_pattern
from sparseblob.verify.compare import assert_bits_equal

from .test_kernels_builders import LAYOUTS, VALUE_FORMATS, fit_shape, make_weight

DENSITIES = (0.0, 0.05, 0.3, 0.5, 0.9, 1.0)


@st.composite
def weight_cases(draw, max_rank: int = 4):
    rank = draw(st.integers(2, max_rank))
    shape = tuple(draw(st.integers(1, 12 if rank == 2 else 5)) for _ in range(rank))
    value_format = draw(st.sampled_from(VALUE_FORMATS))
    layout = draw(st.sampled_from(LAYOUTS))
    density = draw(st.sampled_from(DENSITIES))
    seed = draw(st.integers(0, 2**32 - 1))
    return fit_shape(shape, value_format, layout), value_format, layout, density, seed


@given(weight_cases())
def test_dense_matches_coremltools(case):
    shape, value_format, layout, density, seed = case
    built = make_weight(np.random.default_rng(seed), shape, density, value_format, layout)
    assert_bits_equal(built.weight.dense(), built.reference, "dense")


@given(weight_cases())
def test_mask_round_trips(case):
    shape, value_format, layout, density, seed = case
    built = make_weight(np.random.default_rng(seed), shape, density, value_format, layout)
    assert np.array_equal(built.weight.mask(), built.mask)


@given(weight_cases())
def test_rebuilt_unstructured_decodes_same(case):
    shape, value_format, layout, density, seed = case
    built = make_weight(np.random.default_rng(seed), shape, density, value_format, layout)
    rebuilt = formats.with_pattern(built.weight, None)
    assert isinstance(rebuilt, formats.BitmaskWeight)
    assert_bits_equal(rebuilt.dense(), built.reference, "rebuilt")


@given(weight_cases(max_rank=2))
def test_transposed_is_transpose(case):
    shape, value_format, layout, density, seed = case
    built = make_weight(np.random.default_rng(seed), shape, density, value_format, layout)
    assert_bits_equal(formats.transposed(built.weight).dense(), np.ascontiguousarray(built.reference.T), "transposed")


@given(weight_cases(), st.data())
def test_row_slice_keeps_rows(case, data):
    shape, value_format, layout, density, seed = case
    built = make_weight(np.random.default_rng(seed), shape, density, value_format, layout)
    start = data.draw(st.integers(0, shape[0] - 1))
    stop = data.draw(st.integers(start + 1, shape[0]))
    piece = formats.row_slice(built.weight, start, stop)
    assert_bits_equal(piece.dense(), np.ascontiguousarray(built.reference[start:stop]), "slice")
    assert piece.nnz == int(built.mask[start:stop].sum())


def test_empty_weight_decodes_zeros():
    weight = formats.from_sparse(np.zeros((3, 5), np.uint8), np.zeros(0, np.float16))
    assert_bits_equal(weight.dense(), np.zeros((3, 5), np.float32), "dense")
    assert weight.density == 0.0


def test_single_nonzero_decodes():
    mask = np.zeros((4, 33), np.uint8)
    mask[2, 31] = 1
    weight = formats.from_sparse(mask, np.array([1.5], np.float16))
    expected = np.zeros((4, 33), np.float32)
    expected[2, 31] = 1.5
    assert_bits_equal(weight.dense(), expected, "dense")


def test_bool_and_uint8_masks_agree():
    rng = np.random.default_rng(3)
    mask = rng.random((5, 7)) < 0.5
    values = rng.standard_normal(int(mask.sum())).astype(np.float16)
    from_bool = formats.from_sparse(mask, values).dense()
    from_uint8 = formats.from_sparse(mask.astype(np.uint8), values).dense()
    assert_bits_equal(from_bool, from_uint8, "dense")


def test_conv_weight_columns_are_channels_last():
    mask = np.ones((2, 3, 2, 2), np.uint8)
    values = np.arange(24, dtype=np.float32)
    weight = formats.from_sparse(mask, values)
    expected = values.reshape(2, 3, 2, 2).transpose(0, 2, 3, 1).reshape(2, 12)
    assert_bits_equal(weight.dense_matrix(), expected, "kernel view")


# ---------------------------------------------------------------------------------------------
# Dense palettized and quantized weights, vector LUTs, iOS16 masks


@pytest.mark.parametrize(
    "lut_shape",
    [(1, 1, 16, 1), (4, 1, 4, 1), (2, 3, 2, 1), (1, 1, 64, 1), (1, 1, 256, 1)],
    ids=["per-tensor", "grouped-rows", "grouped-both", "6-bit", "8-bit"],
)
def test_from_lut_matches_coremltools(lut_shape):
    rng = np.random.default_rng(4)
    shape = (8, 6)
    lut = rng.standard_normal(lut_shape).astype(np.float16)
    indices = rng.integers(0, lut_shape[-2], shape).astype(np.uint8)
    weight = formats.from_lut(indices, lut)
    reference = constexpr_lut_to_dense.decompress(indices, lut, None)
    assert_bits_equal(weight.dense(), reference.astype(np.float32), "dense")


@pytest.mark.parametrize("vector_axis", [0, 1])
def test_vector_lut_matches_coremltools(vector_axis):
    rng = np.random.default_rng(5)
    mask = (rng.random((4, 6)) < 0.5).astype(np.uint8)
    lut = rng.standard_normal((1, 1, 4, 3)).astype(np.float16)
    indices = rng.integers(0, 4, int(mask.sum())).astype(np.uint8)
    weight = formats.from_lut_to_sparse(mask, indices, lut, vector_axis=vector_axis)
    mask_out, values = constexpr_lut_to_sparse.decompress(mask, indices, lut, np.int32(vector_axis))
    reference = constexpr_sparse_to_dense.decompress(values, mask_out)
    assert_bits_equal(weight.dense(), reference.astype(np.float32), "dense")


def test_vector_lut_docstring_case():
    # constexpr_lut_to_dense docstring case 2.1: entries a=(1,2,3), b=(11,12,13), vector_axis 1.
    lut = np.array([[1, 2, 3], [11, 12, 13]], np.float32).reshape(1, 1, 1, 2, 3)
    indices = np.array([0, 1, 1, 0, 1, 1, 0, 0], np.uint8).reshape(2, 2, 2)
    weight = formats.from_lut(indices, lut, vector_axis=1)
    reference = constexpr_lut_to_dense.decompress(indices, lut, np.int32(1))
    assert weight.shape == (2, 6, 2)
    assert_bits_equal(weight.dense(), reference.astype(np.float32), "dense")


@pytest.mark.parametrize("offset_dtype", [None, np.int8, np.float16, np.float32])
@pytest.mark.parametrize("scale_dtype", [np.float16, np.float32])
def test_from_shift_scale_matches_coremltools(scale_dtype, offset_dtype):
    rng = np.random.default_rng(6)
    data = rng.integers(-128, 128, (6, 8)).astype(np.int8)
    scale = (rng.random((6, 2)) * 0.3 + 0.01).astype(scale_dtype)
    offset = None
    if offset_dtype is not None:
        offset = (rng.standard_normal((6, 2)) * 5).astype(offset_dtype)
    weight = formats.from_shift_scale(data, scale, offset)
    reference = constexpr_blockwise_shift_scale.decompress(data, scale, offset)
    assert_bits_equal(weight.dense(), reference.astype(np.float32), "dense")


def test_shift_scale_int8_does_not_wrap():
    weight = formats.from_shift_scale(np.array([[-128, 127]], np.int8), np.ones((1, 1), np.float32), np.full((1, 1), 127, np.int8))
    assert_bits_equal(weight.dense(), np.array([[-255.0, 0.0]], np.float32), "dense")


def test_ios16_mask_matches_ios18():
    rng = np.random.default_rng(7)
    mask = (rng.random((5, 7)) < 0.5).astype(np.uint8)
    values = rng.standard_normal(int(mask.sum())).astype(np.float16)
    packed = bitpack.pack_bits(mask.ravel(), 1)
    ios16 = formats.from_sparse_ios16(packed, values, [5, 7])
    assert_bits_equal(ios16.dense(), formats.from_sparse(mask, values).dense(), "dense")


def test_ios16_docstring_mask_byte():
    # Elements in order "100100" pack to the byte 0x09.
    weight = formats.from_sparse_ios16(np.array([0x09], np.uint8), np.array([2, 3], np.float16), [2, 3])
    assert_bits_equal(weight.dense(), np.array([[2, 0, 0], [3, 0, 0]], np.float32), "dense")


# ---------------------------------------------------------------------------------------------
# Patterns


def _six_pattern_weight() -> tuple[np.ndarray, np.ndarray]:
    """A [64, 64] fp16 2:4 weight whose groups use all six position pairs, distinct values."""
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    mask = np.zeros((64, 64), bool)
    for row in range(64):
        for group in range(16):
            first, second = pairs[(row + group) % 6]
            mask[row, 4 * group + first] = True
            mask[row, 4 * group + second] = True
    dense = np.zeros((64, 64), np.float16)
    dense[mask] = (np.arange(1, int(mask.sum()) + 1) * 0.25).astype(np.float16)
    return mask, dense


def test_six_pattern_weight_uses_every_pair():
    mask, dense = _six_pattern_weight()
    pairs = {tuple(np.flatnonzero(group)) for group in mask.reshape(-1, 4)}
    assert len(pairs) == 6
    assert np.unique(dense[mask]).size == int(mask.sum())


def test_n_m_weight_round_trips_bits():
    mask, dense = _six_pattern_weight()
    weight = formats.from_sparse(mask, dense[mask], pattern=NM(2, 4, 1))
    assert weight.pattern == NM(2, 4, 1)
    assert_bits_equal(weight.dense(), dense.astype(np.float32), "dense")


def test_n_m_rejects_all_nonzero_naming_group():
    mask = np.ones((16, 16), np.uint8)
    values = np.arange(1, 257, dtype=np.float16)
    with pytest.raises(PatternError, match=r"starting at index \(0, 0\) along axis 1 has 4 nonzero"):
        formats.from_sparse(mask, values, pattern=NM(2, 4, 1))


def test_n_m_rejects_one_bad_group_naming_it():
    mask, _ = _six_pattern_weight()
    mask = mask[:16, :16].copy()
    mask[9, 12:16] = [True, True, True, False]
    with pytest.raises(PatternError, match=r"starting at index \(9, 12\) along axis 1 has 3 nonzero"):
        formats.from_sparse(mask, np.ones(int(mask.sum()), np.float16), pattern=NM(2, 4, 1))


def test_block_rejects_partial_block_naming_it():
    mask = np.zeros((8, 8), bool)
    mask[0:4, 1] = True
    mask[4:7, 3] = True
    with pytest.raises(PatternError, match=r"block of 4 starting at index \(4, 3\) along axis 0 has 3 nonzero"):
        formats.from_sparse(mask, np.ones(int(mask.sum()), np.float32), pattern=Blocks(4, 0))


def test_n_m_trailing_group_counts_padding():
    # 10 columns with 2:4: the last group [x, y, pad, pad] may keep both real values.
    mask = np.zeros((1, 10), bool)
    mask[0, [0, 1, 4, 5, 8, 9]] = True
    check_pattern(mask, NM(2, 4, 1))


def test_pattern_error_leaves_nothing_repaired():
    mask = np.ones((4, 8), np.uint8)
    values = np.arange(32, dtype=np.float16)
    with pytest.raises(PatternError):
        formats.from_sparse(mask, values, pattern=NM(2, 4, 1))
    assert mask.sum() == 32


def test_auto_pattern_picks_row_blocks():
    mask = np.repeat(np.random.default_rng(8).random((4, 12)) < 0.5, 4, axis=0)
    weight = formats.from_sparse(mask, np.ones(int(mask.sum()), np.float16), pattern="auto")
    assert isinstance(weight, formats.RowBlockWeight)


def test_restructure_finds_n_m():
    mask, dense = _six_pattern_weight()
    weight = formats.restructure(formats.from_sparse(mask, dense[mask]))
    assert weight.pattern == NM(2, 4, 1)
    assert_bits_equal(weight.dense(), dense.astype(np.float32), "dense")


def test_detect_pattern_none_for_random_mask():
    mask = np.random.default_rng(9).random((16, 16)) < 0.5
    assert detect_pattern(mask) is None


# ---------------------------------------------------------------------------------------------
# Invalid parameters


def _mask(shape=(4, 8)):
    mask = np.zeros(shape, np.uint8)
    mask[:, ::2] = 1
    return mask


INVALID = [
    ("popcount", lambda: formats.from_sparse(_mask(), np.ones(15, np.float16)), MaskError, "16 set bits, but nonzero_data has 15"),
    ("mask value 2", lambda: formats.from_sparse(_mask() * 2, np.ones(16, np.float16)), MaskError, "contains 2 at index"),
    ("rank-1 mask", lambda: formats.from_sparse(np.ones(8, np.uint8), np.ones(8, np.float16)), ShapeError, "rank 1"),
    ("values rank 2", lambda: formats.from_sparse(_mask(), np.ones((4, 4), np.float16)), ShapeError, "rank-1"),
    ("values fp64", lambda: formats.from_sparse(_mask(), np.ones(16, np.float64)), ShapeError, "dtype float64"),
    (
        "lut index",
        lambda: formats.from_lut_to_sparse(_mask(), np.full(16, 4, np.uint8), np.ones((1, 1, 4, 1), np.float16)),
        ParameterShapeError,
        "contains 4 at index 0",
    ),
    (
        "lut groups",
        lambda: formats.from_lut_to_sparse(_mask(), np.zeros(16, np.uint8), np.ones((3, 1, 4, 1), np.float16)),
        ParameterShapeError,
        "3 groups on axis 0",
    ),
    (
        "lut entries",
        lambda: formats.from_lut_to_sparse(_mask(), np.zeros(16, np.uint8), np.ones((1, 1, 5, 1), np.float16)),
        ParameterShapeError,
        "5 entries",
    ),
    (
        "lut rank",
        lambda: formats.from_lut_to_sparse(_mask(), np.zeros(16, np.uint8), np.ones((4, 1), np.float16)),
        ParameterShapeError,
        "expected rank 4",
    ),
    (
        "lut nan",
        lambda: formats.from_lut_to_sparse(_mask(), np.zeros(16, np.uint8), np.full((1, 1, 2, 1), np.nan, np.float16)),
        NonFiniteError,
        "lut contains",
    ),
    (
        "vector axis missing",
        lambda: formats.from_lut_to_sparse(_mask(), np.zeros(16, np.uint8), np.ones((1, 1, 2, 2), np.float16)),
        ParameterShapeError,
        "vector_axis is required",
    ),
    (
        "scale rank",
        lambda: formats.from_sparse_shift_scale(_mask(), np.ones(16, np.int8), np.ones(4, np.float16)),
        ParameterShapeError,
        "scale has rank 1",
    ),
    (
        "scale blocks",
        lambda: formats.from_sparse_shift_scale(_mask(), np.ones(16, np.int8), np.ones((4, 3), np.float16)),
        ParameterShapeError,
        "3 groups on axis 1",
    ),
    (
        "offset shape",
        lambda: formats.from_sparse_shift_scale(_mask(), np.ones(16, np.int8), np.ones((4, 1), np.float16), np.ones((4, 2), np.int8)),
        ParameterShapeError,
        "offset has shape",
    ),
    (
        "offset dtype",
        lambda: formats.from_sparse_shift_scale(_mask(), np.ones(16, np.int8), np.ones((4, 1), np.float16), np.ones((4, 1), np.uint8)),
        ParameterShapeError,
        "must have the data dtype int8",
    ),
    (
        "scale inf",
        lambda: formats.from_sparse_shift_scale(_mask(), np.ones(16, np.int8), np.full((4, 1), np.inf, np.float32)),
        NonFiniteError,
        "scale contains",
    ),
    (
        "ios16 bytes",
        lambda: formats.from_sparse_ios16(np.zeros(3, np.uint8), np.zeros(0, np.float16), [4, 8]),
        ShapeError,
        "expected 4 bytes",
    ),
    (
        "ios16 padding",
        lambda: formats.from_sparse_ios16(np.array([0, 0x80], np.uint8), np.ones(1, np.float16), [3, 3]),
        MaskError,
        "padding bits",
    ),
    (
        "ios16 empty shape",
        lambda: formats.from_sparse_ios16(np.zeros(4, np.uint8), np.zeros(0, np.float16), [0]),
        ShapeError,
        "expected 0 bytes",
    ),
    (
        "ios16 column shape",
        lambda: formats.from_sparse_ios16(np.zeros(4, np.uint8), np.zeros(0, np.float16), [[4], [8]]),
        ShapeError,
        "expected a rank-1 list",
    ),
    ("pattern axis", lambda: formats.from_sparse(_mask(), np.ones(16, np.float16), pattern=NM(2, 4, 2)), ShapeError, "axis 2"),
]


@pytest.mark.parametrize("build, error, message", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_parameters_raise(build, error, message):
    with pytest.raises(error, match=message):
        build()

