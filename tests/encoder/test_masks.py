"""Pruning masks: exact counts, whole blocks, n:m groups, tie rules and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.encoder import (
    apply_mask,
    block_mask,
    check_blocks,
    check_n_m,
    magnitude_mask,
    n_m_from_kept,
    n_m_mask,
    pruned_count,
    threshold_mask,
)
from sparseblob.runtime.errors import EncodingError, NonFiniteError, ShapeError
from sparseblob.verify.compare import assert_bits_equal

from .strategies import weights

SPARSITIES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


def _groups_along(array: np.ndarray, m: int, axis: int, fill) -> np.ndarray:
    """Split ``array`` into groups of ``m`` along ``axis``, padding the last group with ``fill``."""
    moved = np.moveaxis(array, axis, -1)
    padding = (-moved.shape[-1]) % m
    padded = np.concatenate([moved, np.full((*moved.shape[:-1], padding), fill, moved.dtype)], -1)
    return padded.reshape(*padded.shape[:-1], -1, m)


@given(weights(), SPARSITIES)
def test_magnitude_mask_prunes_exact_count(weight, sparsity):
    keep = magnitude_mask(weight, sparsity)
    assert keep.shape == weight.shape
    assert int((~keep).sum()) == pruned_count(weight.size, sparsity)


@given(weights(), SPARSITIES)
def test_magnitude_mask_prunes_smallest(weight, sparsity):
    keep = magnitude_mask(weight, sparsity)
    magnitude = np.abs(weight.astype(np.float64))
    if keep.any() and (~keep).any():
        assert magnitude[~keep].max() <= magnitude[keep].min()


@given(weights(zeros=False), SPARSITIES)
def test_pruned_weight_has_target_zero_count(weight, sparsity):
    pruned = apply_mask(weight, magnitude_mask(weight, sparsity))
    assert int((pruned == 0).sum()) == pruned_count(weight.size, sparsity)


def test_magnitude_ties_prune_lower_index_first():
    weight = np.array([[1.0, 2.0, 1.0, 1.0], [2.0, 1.0, 3.0, 1.0]], dtype=np.float16)
    keep = magnitude_mask(weight, 0.25)
    expected = np.ones(weight.shape, dtype=bool)
    expected[0, 0] = expected[0, 2] = False
    assert np.array_equal(keep, expected)


def test_pruned_count_absorbs_float_error():
    assert pruned_count(100, 0.29) == 29
    assert pruned_count(3, 1 / 3) == 1
    assert pruned_count(10, 0.15) == 1
    assert pruned_count(7, 1.0) == 7


@given(weights(), SPARSITIES, st.integers(2, 5), st.integers(0, 1))
def test_block_mask_keeps_whole_blocks(weight, sparsity, block_size, axis):
    keep = block_mask(weight, sparsity, block_size, axis=axis)
    check_blocks(keep, block_size, axis=axis)
    blocks = math.ceil(weight.shape[axis] / block_size) * (weight.size // weight.shape[axis])
    pruned_blocks = _groups_along(~keep, block_size, axis, False).any(axis=-1).sum()
    assert int(pruned_blocks) == pruned_count(blocks, sparsity)


def test_block_mask_prunes_lowest_norm_blocks():
    weight = np.array([[3.0, 0.1], [4.0, 0.1], [0.5, 6.0], [0.5, 8.0]], dtype=np.float32)
    keep = block_mask(weight, 0.5, 2)
    expected = np.array([[True, False], [True, False], [False, True], [False, True]])
    assert np.array_equal(keep, expected)


def test_block_mask_scores_partial_block_by_real_elements():
    # Axis 0 of length 5 in blocks of 2: the last block holds one element, scored by |10|.
    weight = np.array([[1.0], [1.0], [2.0], [2.0], [10.0]], dtype=np.float32)
    keep = block_mask(weight, 1 / 3, 2)
    assert keep[:, 0].tolist() == [False, False, True, True, True]


@given(weights(), st.integers(1, 6), st.data(), st.integers(0, 1))
def test_n_m_mask_leaves_n_zeros_per_group(weight, m, data, axis):
    n = data.draw(st.integers(0, m))
    keep = n_m_mask(weight, n, m, axis=axis)
    pruned = apply_mask(weight, keep)
    check_n_m(pruned, n, m, axis=axis)
    groups = _groups_along(keep, m, axis, False)
    real = _groups_along(np.ones(weight.shape, bool), m, axis, False).sum(axis=-1)
    padding = m - real
    assert np.array_equal(real - groups.sum(axis=-1), np.maximum(0, n - padding))


def test_n_m_mask_partial_group_counts_padding():
    # 2:4 along 10 columns: the last group [9, 10, pad, pad] keeps both values.
    weight = np.arange(1, 11, dtype=np.float32).reshape(1, 10)
    keep = n_m_mask(weight, 2, 4)
    assert keep[0].tolist() == [False, False, True, True, False, False, True, True, True, True]

    # 3:4 along 11 columns: the last group [9, 10, 11, pad] loses two values.
    weight = np.arange(1, 12, dtype=np.float32).reshape(1, 11)
    assert n_m_mask(weight, 3, 4)[0, 8:].tolist() == [False, False, True]


def test_n_m_mask_ties_prune_lower_position():
    weight = np.ones((2, 4), dtype=np.float16)
    assert n_m_mask(weight, 2, 4).tolist() == [[False, False, True, True]] * 2


@pytest.mark.parametrize("m", [4, 9, 16])
def test_n_m_ranks_for_any_m(m):
    rng = np.random.default_rng(m)
    weight = rng.choice(np.array([-2, -1, 0.5, 1, 3], np.float16), size=(6, 3 * m))
    keep = n_m_mask(weight, m // 2, m)
    groups = np.abs(weight.astype(np.float64)).reshape(6, 3, m)
    order = np.argsort(groups, axis=-1, kind="stable")
    expected = np.ones(groups.shape, bool)
    np.put_along_axis(expected, order[..., : m // 2], False, axis=-1)
    assert np.array_equal(keep, expected.reshape(weight.shape))


def test_n_m_from_kept_converts_convention():
    assert n_m_from_kept(2, 4) == (2, 4)
    assert n_m_from_kept(1, 4) == (3, 4)
    assert n_m_from_kept(8, 8) == (0, 8)


@given(weights(), st.floats(0, 50))
def test_threshold_mask_is_inclusive(weight, threshold):
    keep = threshold_mask(weight, threshold)
    cut = float(weight.dtype.type(threshold))
    assert np.array_equal(keep, np.abs(weight.astype(np.float64)) > cut)


def test_threshold_mask_prunes_equal_magnitude():
    weight = np.array([[0.03, -0.03, 0.04]], dtype=np.float32)
    assert threshold_mask(weight, 0.03).tolist() == [[False, False, True]]


def test_threshold_above_dtype_range_prunes_all():
    weight = np.array([[65504.0, -1.0]], dtype=np.float16)
    assert threshold_mask(weight, 1e6).tolist() == [[False, False]]


def test_apply_mask_writes_positive_zero():
    weight = np.array([[-0.0, 1.0], [-2.0, 3.0]], dtype=np.float16)
    keep = np.array([[True, True], [False, True]])
    expected = np.array([[0.0, 1.0], [0.0, 3.0]], dtype=np.float16)
    assert_bits_equal(apply_mask(weight, keep), expected, "pruned")


def test_masks_depend_only_on_current_weights():
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((8, 8)).astype(np.float32)
    for step in range(5):
        keep = block_mask(weight, 0.5, 4)
        assert int((~keep).sum()) == 32, f"step {step}"
        check_blocks(keep, 4)
        assert np.array_equal(keep, block_mask(weight.copy(), 0.5, 4)), f"step {step}"

        # Shrink the kept blocks so that other blocks become the smallest next time.
        weight = np.where(keep, weight * 0.01, weight + rng.standard_normal((8, 8)) * 0.1)
        weight = weight.astype(np.float32)
        assert not np.array_equal(block_mask(weight, 0.5, 4), keep), f"step {step}"


def test_masks_do_not_modify_weight():
    weight = np.random.default_rng(1).standard_normal((8, 12)).astype(np.float16)
    before = weight.copy()
    magnitude_mask(weight, 0.5)
    block_mask(weight, 0.5, 4)
    n_m_mask(weight, 2, 4)
    threshold_mask(weight, 0.5)
    apply_mask(weight, weight > 0)
    assert_bits_equal(weight, before, "weight")


INVALID = [
    pytest.param(lambda w: magnitude_mask(w, 1.5), "target_sparsity=1.5", id="sparsity above 1"),
    pytest.param(lambda w: magnitude_mask(w, -0.1), "target_sparsity=-0.1", id="negative sparsity"),
    pytest.param(lambda w: magnitude_mask(w, "half"), "target_sparsity='half'", id="sparsity text"),
    pytest.param(lambda w: block_mask(w, 0.5, 1), "block_size=1", id="block size 1"),
    pytest.param(lambda w: block_mask(w, 0.5, 2.0), "block_size=2.0", id="float block size"),
    pytest.param(lambda w: block_mask(w, 0.5, 2, axis=2), "axis=2", id="block axis out of range"),
    pytest.param(lambda w: n_m_mask(w, 3, 2), "n=3 must not exceed m=2", id="n above m"),
    pytest.param(lambda w: n_m_mask(w, -1, 4), "n=-1", id="negative n"),
    pytest.param(lambda w: n_m_mask(w, 0, 0), "m=0", id="m zero"),
    pytest.param(lambda w: n_m_mask(w, 2, 4, axis=-3), "axis=-3", id="n:m axis out of range"),
    pytest.param(lambda w: threshold_mask(w, -1.0), "threshold=-1.0", id="negative threshold"),
    pytest.param(lambda w: threshold_mask(w, float("nan")), "threshold=nan", id="nan threshold"),
    pytest.param(lambda w: n_m_from_kept(5, 4), "kept=5", id="kept above m"),
    pytest.param(lambda w: check_n_m(w, 5, 4), "n=5", id="check n above m"),
    pytest.param(lambda w: check_blocks(w, 0), "block_size=0", id="check block size 0"),
]


@pytest.mark.parametrize("call, message", INVALID)
def test_invalid_argument_rejected(call, message):
    weight = np.ones((4, 8), dtype=np.float32)
    with pytest.raises(EncodingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(weight)


@pytest.mark.parametrize(
    "make_mask",
    [
        lambda w, name: magnitude_mask(w, 0.5, name=name),
        lambda w, name: block_mask(w, 0.5, 2, name=name),
        lambda w, name: n_m_mask(w, 2, 4, name=name),
        lambda w, name: threshold_mask(w, 0.1, name=name),
    ],
    ids=["magnitude", "block", "n:m", "threshold"],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_rejected(make_mask, bad):
    weight = np.ones((4, 8), dtype=np.float16)
    weight[2, 5] = bad
    weight[3, 1] = bad
    with pytest.raises(NonFiniteError, match=r"conv1: element \(2, 5\)"):
        make_mask(weight, "conv1")


def test_scalar_weight_rejected():
    with pytest.raises(ShapeError, match="scalar"):
        magnitude_mask(np.float32(1.0), 0.5)


def test_integer_weight_rejected():
    with pytest.raises(EncodingError, match="int32"):
        magnitude_mask(np.ones((4, 4), dtype=np.int32), 0.5)
