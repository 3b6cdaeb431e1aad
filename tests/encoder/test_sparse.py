"""Bit-mask sparse encoding decodes to the pruned weight bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.encoder import apply_mask, check_n_m, encode_sparse, magnitude_mask, n_m_mask
from sparseblob.runtime.bitpack import pack_bits
from sparseblob.runtime.errors import EncodingError, NonFiniteError
from sparseblob.verify.compare import assert_bits_equal, assert_close

from ._decode import decode
from .strategies import weights


@given(weights(), st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_sparse_round_trip_is_bit_exact(weight, sparsity):
    pruned = apply_mask(weight, magnitude_mask(weight, sparsity))
    params = encode_sparse(pruned)
    assert_bits_equal(decode(params), pruned, "decoded")


@given(weights())
def test_mask_set_exactly_at_nonzero_values(weight):
    params = encode_sparse(weight)
    assert params.mask.dtype == np.uint8
    assert params.mask.shape == weight.shape
    assert np.array_equal(params.mask, (weight != 0).astype(np.uint8))
    assert_bits_equal(params.nonzero_data, weight[weight != 0], "nonzero_data")


def test_negative_zero_decodes_as_positive_zero():
    weight = np.array([[-0.0, 1.5], [0.0, -2.0]], dtype=np.float16)
    params = encode_sparse(weight)
    assert params.mask.tolist() == [[0, 1], [0, 1]]
    expected = np.array([[0.0, 1.5], [0.0, -2.0]], dtype=np.float16)
    assert_bits_equal(decode(params), expected, "decoded")


@given(weights(), st.sampled_from([0.0, 0.5, 1.0]))
def test_ios16_form_decodes_identically(weight, sparsity):
    pruned = apply_mask(weight, magnitude_mask(weight, sparsity))
    params = encode_sparse(pruned).to_ios16()
    assert params.mask.dtype == np.uint8
    assert params.mask.shape == ((weight.size + 7) // 8,)
    assert params.shape.tolist() == list(weight.shape)
    assert_bits_equal(decode(params), pruned, "decoded")


def test_ios16_mask_packs_lsb_first():
    weight = np.zeros((2, 5), dtype=np.float32)
    weight[0, 0] = weight[0, 3] = weight[1, 4] = 1.0
    params = encode_sparse(weight).to_ios16()
    # Elements 0, 3 and 9 are set: bits 0 and 3 of byte 0, bit 1 of byte 1.
    assert params.mask.tobytes().hex() == "0902"


@pytest.mark.parametrize(
    "dtype, values",
    [
        ("int8", [-128, -3, 5, 127]),
        ("uint8", [1, 7, 200, 255]),
        ("int4", [-8, -1, 3, 7]),
        ("uint4", [1, 2, 9, 15]),
        ("fp16", [0.5, -1.25, 3.0, 2048.0]),
    ],
)
def test_integer_and_narrow_nonzero_dtypes(dtype, values):
    weight = np.zeros((4, 4), dtype=np.float32)
    weight[np.arange(4), np.arange(4)] = values
    params = encode_sparse(weight, nonzero_dtype=dtype)
    assert params.nonzero_dtype == dtype
    assert params.nonzero_data.tolist() == values
    decoded = decode(params)
    assert np.array_equal(decoded.astype(np.float64), weight.astype(np.float64))


@pytest.mark.parametrize(
    "dtype, value, message",
    [
        ("int8", 128.0, "not an integer in the int8 range"),
        ("int4", 8.0, "not an integer in the int4 range"),
        ("uint4", -1.0, "not an integer in the uint4 range"),
        ("int8", 1.5, "not an integer"),
        ("fp16", 1e-9, "changes to"),
        ("fp16", 1e6, r"changes to np.float16\(inf\)"),
        ("bf16", 1.0, "nonzero_dtype='bf16'"),
    ],
)
def test_inexact_nonzero_dtype_rejected(dtype, value, message):
    weight = np.zeros((2, 2), dtype=np.float32)
    weight[1, 1] = value
    with pytest.raises(EncodingError, match=message):
        encode_sparse(weight, nonzero_dtype=dtype)


def test_4bit_values_have_no_ios16_form():
    weight = np.eye(4, dtype=np.float32)
    with pytest.raises(EncodingError, match="iOS16 constexpr_sparse_to_dense has no int4"):
        encode_sparse(weight, nonzero_dtype="int4").to_ios16()


def test_non_finite_weight_rejected():
    weight = np.ones((3, 3), dtype=np.float32)
    weight[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"fc: element \(1, 2\) is"):
        encode_sparse(weight, name="fc")


def test_empty_and_full_masks():
    zeros = np.zeros((4, 4), dtype=np.float16)
    params = encode_sparse(zeros)
    assert params.nonzero_data.shape == (0,)
    assert_bits_equal(decode(params), zeros, "decoded")

    ones = np.ones((4, 4), dtype=np.float16)
    assert int(encode_sparse(ones).mask.sum()) == 16


def test_same_input_gives_same_bytes():
    weight = np.random.default_rng(5).standard_normal((32, 48)).astype(np.float16)
    pruned = apply_mask(weight, n_m_mask(weight, 2, 4))
    first, second = encode_sparse(pruned), encode_sparse(pruned.copy())
    assert first.mask.tobytes() == second.mask.tobytes()
    assert first.nonzero_data.tobytes() == second.nonzero_data.tobytes()
    assert first.to_ios16().mask.tobytes() == pack_bits(first.mask, 1).tobytes()


def _two_of_four_weight() -> np.ndarray:
    """fp16 [64, 64] with two kept values in every 4, using all six kept-position patterns."""
    patterns = list(itertools.combinations(range(4), 2))
    weight = np.zeros((64, 64), dtype=np.float16)
    value = 0
    for row in range(64):
        for group in range(16):
            first, second = patterns[(row + group) % 6]
            # Distinct values 0.5, 1, 1.5, ... (alternating sign) expose any misplacement.
            for column in (first, second):
                value += 1
                weight[row, 4 * group + column] = np.float16((value % 997 + 1) * 0.5 * (-1) ** value)
    return weight


def test_two_of_four_all_patterns_round_trip():
    weight = _two_of_four_weight()
    kept = (weight != 0).reshape(64, 16, 4)
    seen = {tuple(np.flatnonzero(group)) for group in kept.reshape(-1, 4)}
    assert len(seen) == 6

    check_n_m(weight, 2, 4)
    params = encode_sparse(weight)
    decoded = decode(params)
    assert_bits_equal(decoded, weight, "decoded")

    # Pruning to 2:4 keeps the same tensor: the two zeros of each group have the smallest magnitude.
    assert_bits_equal(apply_mask(weight, n_m_mask(weight, 2, 4)), weight, "pruned")

    activations = np.random.default_rng(11).standard_normal((8, 64)).astype(np.float16)
    dense = activations.astype(np.float32) @ weight.astype(np.float32).T
    sparse = activations.astype(np.float32) @ decoded.astype(np.float32).T
    assert_bits_equal(sparse, dense, "matmul")
    assert_close(sparse.astype(np.float16), dense.astype(np.float16), name="fp16 matmul")
