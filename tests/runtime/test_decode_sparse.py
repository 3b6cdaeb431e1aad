"""constexpr_sparse_to_dense (iOS16 and iOS18) against coremltools' reference decompressors.

The references are the static ``decompress`` methods of coremltools 9.0's op definitions
(``iOS16.constexpr_ops.constexpr_sparse_to_dense`` and ``iOS18.compression``).
"""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import bitpack
from sparseblob.runtime.decode import sparse_to_dense_ios16, sparse_to_dense_ios18
from sparseblob.runtime.errors import ElementLimitError, MaskError, ShapeError, UnknownDtypeError
from sparseblob.verify.compare import assert_bits_equal

# MIL value types of nonzero_data and their numpy containers.
CONTAINERS = {
    "int4": np.int8,
    "uint4": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "fp16": np.float16,
    "fp32": np.float32,
}
IOS16_TYPES = ("int8", "uint8", "fp16", "fp32")

# Small shapes, plus long rows that reach the 64-byte vector path of every element width.
SHAPES = st.one_of(
    st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple),
    st.tuples(st.integers(1, 3), st.integers(60, 260)),
)


def random_values(rng: np.random.Generator, mil_type: str, count: int) -> np.ndarray:
    """Return ``count`` values of a MIL type; float values are random bit patterns (NaN included)."""
    if mil_type == "int4":
        return rng.integers(-8, 8, count).astype(np.int8)
    if mil_type == "uint4":
        return rng.integers(0, 16, count).astype(np.uint8)
    container = np.dtype(CONTAINERS[mil_type])
    return rng.integers(0, 256, count * container.itemsize, dtype=np.uint8).view(container)


@st.composite
def sparse_inputs(draw, types=tuple(CONTAINERS), shapes=SHAPES):
    """Draw (nonzero_data, mask) with the mask of a drawn shape and density."""
    shape = draw(shapes)
    mil_type = draw(st.sampled_from(types))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = (rng.random(shape) < density).astype(np.uint8)
    return random_values(rng, mil_type, int(mask.sum())), mask


def pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.reshape(-1), bitorder="little")


# --- against coremltools ---------------------------------------------------------------------


@given(sparse_inputs())
def test_ios18_matches_coremltools(inputs):
    nonzero_data, mask = inputs

    expected = ios18.constexpr_sparse_to_dense.decompress(nonzero_data, mask)

    assert_bits_equal(sparse_to_dense_ios18(nonzero_data, mask), expected, "sparse_to_dense")


@given(sparse_inputs(types=IOS16_TYPES))
def test_ios16_matches_coremltools(inputs):
    nonzero_data, mask = inputs
    shape = np.array(mask.shape, dtype=np.uint32)

    expected = ios16.constexpr_sparse_to_dense.decompress(nonzero_data, pack(mask), shape)

    assert_bits_equal(sparse_to_dense_ios16(nonzero_data, pack(mask), shape), expected, "sparse_to_dense")


def test_ios18_bool_mask_equals_uint8_mask():
    mask = np.array([[True, False, True], [False, True, True]])
    nonzero_data = np.array([1, 2, 3, 4], dtype=np.float16)

    decoded = sparse_to_dense_ios18(nonzero_data, mask)

    assert_bits_equal(decoded, sparse_to_dense_ios18(nonzero_data, mask.astype(np.uint8)))


def test_ios18_rank0_mask_gives_scalar():
    decoded = sparse_to_dense_ios18(np.array([7], dtype=np.int8), np.array(1, dtype=np.uint8))

    assert decoded.shape == ()
    assert decoded == 7


def test_empty_mask_and_no_values():
    decoded = sparse_to_dense_ios16(np.zeros(0, np.float16), np.zeros(2, np.uint8), np.array([3, 5], np.uint32))

    assert_bits_equal(decoded, np.zeros((3, 5), np.float16))


# --- raw bits of values survive ---------------------------------------------------------------


def test_negative_zero_and_nan_payloads_survive():
    bits = np.array([0x8000, 0x7C01, 0xFE3F, 0x7E00, 0x0001, 0xFBFF], dtype=np.uint16)
    nonzero_data = bits.view(np.float16)
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0], dtype=np.uint8)

    dense = sparse_to_dense_ios18(nonzero_data, mask)
    dense16 = sparse_to_dense_ios16(nonzero_data, pack(mask), np.array([9], np.uint32))

    assert dense.view(np.uint16)[mask != 0].tolist() == bits.tolist()
    assert dense16.view(np.uint16)[mask != 0].tolist() == bits.tolist()


def test_fp32_nan_payloads_survive_vector_path():
    rng = np.random.default_rng(3)
    mask = (rng.random(300) < 0.5).astype(np.uint8)
    bits = (rng.integers(0, 2**23, int(mask.sum())) | 0x7F800001).astype(np.uint32)

    dense = sparse_to_dense_ios18(bits.view(np.float32), mask)

    assert np.array_equal(dense.view(np.uint32)[mask != 0], bits)
    assert not dense.view(np.uint32)[mask == 0].any()


# --- C9: int4 values are placed one element at a time -------------------------------------


def test_int4_values_of_every_byte_keep_their_sign():
    codes = np.arange(256, dtype=np.uint8)
    nonzero_data = bitpack.unpack_bits(codes, 4, 512, signed=True)
    mask = np.ones(512, dtype=np.uint8)

    dense = sparse_to_dense_ios18(nonzero_data, mask)

    low = (codes & 0xF).astype(np.int16)
    high = (codes >> 4).astype(np.int16)
    expected = np.stack([low, high], axis=1).reshape(-1)
    expected = np.where(expected >= 8, expected - 16, expected).astype(np.int8)
    assert_bits_equal(dense, expected, "int4 values")


def test_int4_golden_values_scatter_in_place():
    nonzero_data = np.array([-6, 2, 3, -2], dtype=np.int8)
    mask = np.array([1, 0, 1, 1, 0, 1], dtype=np.uint8)

    dense = sparse_to_dense_ios18(nonzero_data, mask)

    assert dense.tolist() == [-6, 0, 2, 3, 0, -2]


# --- C8: the dense shape is checked, not trusted ---------------------------------------------


@pytest.fixture
def weight_4x8():
    """A [4, 8] fp16 weight stored as 16 values and a packed mask of 32 bits."""
    rng = np.random.default_rng(8)
    mask = np.zeros(32, dtype=np.uint8)
    mask[rng.choice(32, 16, replace=False)] = 1
    values = rng.standard_normal(16).astype(np.float16)
    dense = np.zeros(32, dtype=np.float16)
    dense[mask != 0] = values
    return values, pack(mask), dense.reshape(4, 8)


def test_shape_4x8_decodes_the_weight(weight_4x8):
    values, mask, dense = weight_4x8

    assert_bits_equal(sparse_to_dense_ios16(values, mask, np.array([4, 8], np.uint32)), dense)


def test_shape_as_column_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(ShapeError, match=r"'w': shape has rank 2 \(value \[\[4\], \[8\]\]\)"):
        sparse_to_dense_ios16(values, mask, np.array([[4], [8]], np.uint32), name="w")


def test_shape_zero_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(ShapeError, match=r"mask has 4 bytes, but shape \[0\] has 0 elements"):
        sparse_to_dense_ios16(values, mask, np.array([0], np.uint32))


def test_missing_shape_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(ShapeError, match="parameter shape is missing"):
        sparse_to_dense_ios16(values, mask, None)


def test_shape_with_wrong_count_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(ShapeError, match=r"shape \[4, 9\] has 36 elements; expected ceil\(36/8\) = 5"):
        sparse_to_dense_ios16(values, mask, np.array([4, 9], np.uint32))


def test_shape_of_floats_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(ShapeError, match="shape has dtype float32"):
        sparse_to_dense_ios16(values, mask, np.array([4.0, 8.0], np.float32))


def test_shape_with_fewer_values_is_rejected(weight_4x8):
    values, mask, _ = weight_4x8

    with pytest.raises(MaskError, match="mask has 16 set bits, but nonzero_data has 15 values"):
        sparse_to_dense_ios16(values[:15], mask, np.array([4, 8], np.uint32))


# --- rejections ------------------------------------------------------------------------------


def test_ios16_set_padding_bits_are_rejected():
    mask = np.array([0b0000_0101, 0b1100_0001], dtype=np.uint8)

    with pytest.raises(MaskError) as caught:
        sparse_to_dense_ios16(np.ones(5, np.float16), mask, np.array([10], np.uint32), name="w_sparse")

    assert "constexpr_sparse_to_dense 'w_sparse'" in str(caught.value)
    assert "2 padding bits after element 10 of mask are set" in str(caught.value)


def test_ios16_popcount_mismatch_is_rejected():
    with pytest.raises(MaskError, match="'w': mask has 3 set bits, but nonzero_data has 4 values"):
        sparse_to_dense_ios16(np.ones(4, np.float32), np.array([0b111], np.uint8), np.array([3], np.uint32), name="w")


def test_ios18_popcount_mismatch_is_rejected():
    mask = np.ones((3, 40), dtype=np.uint8)

    with pytest.raises(MaskError, match="'w': mask has 120 set bits, but nonzero_data has 119 values"):
        sparse_to_dense_ios18(np.ones(119, np.float16), mask, name="w")


def test_ios18_mask_value_two_is_rejected():
    mask = np.zeros((2, 50), dtype=np.uint8)
    mask[1, 7] = 2

    with pytest.raises(MaskError, match=r"'w': mask contains 2 at index \[1, 7\]; expected a uint1 mask"):
        sparse_to_dense_ios18(np.ones(1, np.float16), mask, name="w")


def test_ios18_mask_value_in_tail_is_rejected():
    mask = np.zeros(11, dtype=np.uint8)
    mask[10] = 255

    with pytest.raises(MaskError, match=r"contains 255 at index \[10\]"):
        sparse_to_dense_ios18(np.ones(1, np.float16), mask)


def test_element_limit_is_checked_before_decoding():
    with pytest.raises(ElementLimitError, match="8388608 elements, which exceeds the limit of 100"):
        sparse_to_dense_ios16(np.zeros(0, np.float16), np.zeros(2**20, np.uint8), np.array([2**23], np.uint32), max_elements=100)


def test_ios18_element_limit_is_checked():
    with pytest.raises(ElementLimitError):
        sparse_to_dense_ios18(np.zeros(0, np.float16), np.zeros((20, 20), np.uint8), max_elements=399)


@pytest.mark.parametrize("dtype", [np.int16, np.float64, np.bool_])
def test_value_dtype_outside_the_op_is_rejected(dtype):
    with pytest.raises(UnknownDtypeError, match="nonzero_data has dtype"):
        sparse_to_dense_ios18(np.ones(1, dtype), np.ones(1, np.uint8))


def test_values_of_rank_two_are_rejected():
    with pytest.raises(ShapeError, match=r"nonzero_data has rank 2 \(shape \[1, 1\]\)"):
        sparse_to_dense_ios18(np.ones((1, 1), np.float16), np.ones(1, np.uint8))


def test_ios16_mask_of_wrong_dtype_is_rejected():
    with pytest.raises(UnknownDtypeError, match="mask has dtype int8"):
        sparse_to_dense_ios16(np.ones(1, np.float16), np.ones(1, np.int8), np.array([1], np.uint32))


# --- decoding into a caller's out array ------------------------------------------------------


def stale_buffer(dtype, shape) -> np.ndarray:
    """Return an array with every byte 0xFF: NaN for fp16 and fp32, -1 or 255 for integers."""
    buffer = np.empty(shape, dtype=dtype)
    buffer.reshape(-1).view(np.uint8)[:] = 0xFF
    return buffer


def read_only(dtype, shape) -> np.ndarray:
    buffer = np.zeros(shape, dtype=dtype)
    buffer.flags.writeable = False
    return buffer


def other_dtype(dtype) -> np.dtype:
    return np.dtype(np.float32) if np.dtype(dtype) != np.float32 else np.dtype(np.float16)


# Buffers that no decoder may write into: (make(dtype, shape), error class, message pattern).
# Every output shape here has rank 1 or more.
WRONG_BUFFERS = {
    "dtype": (lambda dtype, shape: np.zeros(shape, other_dtype(dtype)), UnknownDtypeError, "out has dtype"),
    "byte order": (
        lambda dtype, shape: np.zeros(shape, np.dtype(dtype).newbyteorder(">")),
        UnknownDtypeError,
        "out has dtype",
    ),
    "shape": (lambda dtype, shape: np.zeros(shape + (1,), dtype), ShapeError, "out has shape"),
    "size": (lambda dtype, shape: np.zeros(int(np.prod(shape)) + 1, dtype), ShapeError, "out has shape"),
    "strided": (
        lambda dtype, shape: np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2],
        ShapeError,
        "out is not C-contiguous",
    ),
    "read-only": (read_only, ShapeError, "out is read-only"),
    "list": (lambda dtype, shape: np.zeros(shape, dtype).tolist(), ShapeError, "out is a list"),
}


@given(sparse_inputs())
def test_ios18_out_matches_allocating_path(inputs):
    nonzero_data, mask = inputs
    out = stale_buffer(nonzero_data.dtype, mask.shape)

    returned = sparse_to_dense_ios18(nonzero_data, mask, out=out)

    assert returned is out
    assert_bits_equal(out, sparse_to_dense_ios18(nonzero_data, mask), "sparse_to_dense")


@given(sparse_inputs(types=IOS16_TYPES))
def test_ios16_out_matches_allocating_path(inputs):
    nonzero_data, mask = inputs
    shape = np.array(mask.shape, dtype=np.uint32)
    out = stale_buffer(nonzero_data.dtype, mask.shape)

    returned = sparse_to_dense_ios16(nonzero_data, pack(mask), shape, out=out)

    assert returned is out
    assert_bits_equal(out, sparse_to_dense_ios16(nonzero_data, pack(mask), shape), "sparse_to_dense")


def test_out_overwrites_nan_with_zeros():
    mask = np.zeros((2, 70), dtype=np.uint8)
    mask[1, 3] = 1
    out = np.full((2, 70), np.nan, dtype=np.float32)

    sparse_to_dense_ios18(np.array([2.5], np.float32), mask, out=out)

    assert np.count_nonzero(out) == 1
    assert out[1, 3] == 2.5


def test_ios18_rank0_out_is_filled():
    out = np.full((), np.nan, dtype=np.float16)

    returned = sparse_to_dense_ios18(np.zeros(0, np.float16), np.zeros((), np.uint8), out=out)

    assert returned is out
    assert out == 0


@pytest.mark.parametrize("version", ["ios16", "ios18"])
@pytest.mark.parametrize("wrong", sorted(WRONG_BUFFERS))
def test_wrong_out_is_rejected(version, wrong):
    make, error, pattern = WRONG_BUFFERS[wrong]
    mask = np.zeros((3, 5), dtype=np.uint8)
    mask[0, 1] = mask[2, 4] = 1
    values = np.array([1.5, -2.0], np.float16)

    with pytest.raises(error, match=f"constexpr_sparse_to_dense 'w': {pattern}"):
        if version == "ios16":
            sparse_to_dense_ios16(values, pack(mask), np.array([3, 5], np.uint32), name="w", out=make(values.dtype, (3, 5)))
        else:
            sparse_to_dense_ios18(values, mask, name="w", out=make(values.dtype, (3, 5)))


def test_wrong_out_dtype_message_names_both_dtypes():
    with pytest.raises(UnknownDtypeError, match=r"out has dtype fp32 \(<f4\); expected fp16 \(<f2\)"):
        sparse_to_dense_ios18(np.ones(1, np.float16), np.ones((1, 1), np.uint8), out=np.zeros((1, 1), np.float32))


def test_wrong_out_shape_message_names_both_shapes():
    with pytest.raises(ShapeError, match=r"out has shape \[3, 2\]; expected \[2, 3\], the output shape"):
        sparse_to_dense_ios18(np.zeros(0, np.int8), np.zeros((2, 3), np.uint8), out=np.zeros((3, 2), np.int8))


def test_out_sharing_memory_with_values_is_rejected():
    storage = np.zeros(16, dtype=np.float16)
    values, out = storage[:4], storage.reshape(4, 4)
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 0] = 1

    with pytest.raises(ShapeError, match="out may share memory with nonzero_data"):
        sparse_to_dense_ios18(values, mask, out=out)


def test_invalid_mask_leaves_out_unchanged():
    mask = np.zeros((2, 50), dtype=np.uint8)
    mask[1, 7] = 2
    out = stale_buffer(np.float16, mask.shape)

    with pytest.raises(MaskError):
        sparse_to_dense_ios18(np.ones(1, np.float16), mask, out=out)

    assert_bits_equal(out, stale_buffer(np.float16, mask.shape), "out")


def test_wrong_out_is_checked_after_the_inputs():
    with pytest.raises(MaskError, match="mask has 1 set bits, but nonzero_data has 2 values"):
        sparse_to_dense_ios18(np.ones(2, np.float16), np.ones((1, 1), np.uint8), out=np.zeros(5, np.int8))
