"""Mask statistics: exact counts on small masks, and density models against sampled masks."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import MaskError, PatternError, ShapeError
from sparseblob.runtime.latency.masks import (
    aligned_zero_group_fraction,
    block_mask_stats,
    mask_stats,
    nm_mask_stats,
    random_mask_stats,
    zero_run_lengths,
)

# 1 = stored (non-zero), 0 = zero; input axis 1, output axis 0.
SMALL = np.array(
    [
        [0, 0, 1, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 1, 1, 0],
    ],
    dtype=bool,
)


@pytest.fixture(scope="module")
def small():
    return mask_stats(SMALL)


def test_small_mask_counts(small):
    assert small.elements == 16
    assert small.nonzeros == 5


def test_zero_groups_along_input_axis(small):
    # g=2: row 0 [00][11][00][00] has 3 zero groups, row 1 [10][00][01][10] has 1: 4 of 8.
    # g=4: row 0 [0011][0000] has 1, row 1 [1000][0110] none: 1 of 4.
    assert small.zero_groups_input == (0.5, 0.25, 0.0, 0.0)


def test_zero_groups_along_output_axis(small):
    # Each column is one group (padded with zeros); columns 1, 4 and 7 are zero: 3 of 8.
    assert small.zero_groups_output == (0.375, 0.375, 0.375, 0.375)


def test_zero_runs_along_input_axis(small):
    # Row 0 has runs of 2 and 4, row 1 runs of 4 and 1: 11 zeros in 4 runs.
    assert zero_run_lengths(SMALL, 1).tolist() == [0, 1, 1, 0, 2, 0, 0, 0, 0]
    assert small.mean_zero_run == 2.75
    assert small.zero_run_fraction == (10 / 16, 8 / 16, 0.0, 0.0)


def test_nm_minimum_zeros(small):
    # m=4: groups hold 2, 4, 3 and 2 zeros; m=16 pads 8 zeros onto each row (6 and 5 real zeros).
    assert small.nm_min_zeros == (0, 2, 5, 13)
    assert small.nm_eligible(2, 4)
    assert not small.nm_eligible(3, 4)


def test_docstring_examples():
    assert aligned_zero_group_fraction(np.array([[0, 0, 1, 0, 0]], bool), 2, 1) == pytest.approx(2 / 3)
    assert zero_run_lengths(np.array([[0, 0, 1, 0]], bool), 1).tolist() == [0, 1, 1, 0, 0]


def test_integer_mask_is_accepted():
    assert mask_stats(SMALL.astype(np.uint8)) == mask_stats(SMALL)


def test_conv_transpose_axes_swap_the_roles():
    stats = mask_stats(SMALL.T, input_axis=0, output_axis=1)
    assert stats.zero_groups_input == mask_stats(SMALL).zero_groups_input


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mask_stats(np.array([[0, 2]])), MaskError, "0 and 1"),
        (lambda: mask_stats(np.array([[0.5, 1.0]])), MaskError, "dtype"),
        (lambda: mask_stats(SMALL, input_axis=2), ShapeError, "input_axis"),
        (lambda: mask_stats(np.array(True)), ShapeError, "rank 0"),
        (lambda: random_mask_stats((8, 8), 1.5), PatternError, "sparsity"),
        (lambda: nm_mask_stats((8, 8), 5, 4), PatternError, "n=5"),
        (lambda: nm_mask_stats((8, 6), 2, 4), PatternError, "does not divide"),
        (lambda: block_mask_stats((8, 8), 0.5, 3), PatternError, "block_size=3"),
    ],
)
def test_invalid_input_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- Density models against masks sampled from the same model -------------------------------------


def _close(estimated, measured, tolerance):
    for name in ("zero_groups_input", "zero_groups_output", "zero_run_fraction"):
        np.testing.assert_allclose(getattr(estimated, name), getattr(measured, name), atol=tolerance, err_msg=name)
    assert estimated.mean_zero_run == pytest.approx(measured.mean_zero_run, rel=0.03)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_random_model_matches_sampled_masks(sparsity):
    rng = np.random.default_rng(1)
    shape = (256, 512)
    mask = np.ones(shape[0] * shape[1], dtype=bool)
    mask[rng.permutation(mask.size)[: round(sparsity * mask.size)]] = False
    measured = mask_stats(mask.reshape(shape))
    estimated = random_mask_stats(shape, sparsity)
    assert estimated.nonzeros == measured.nonzeros
    _close(estimated, measured, 0.01)


def test_two_four_model_matches_sampled_masks():
    rng = np.random.default_rng(2)
    rows, groups = 256, 128
    mask = np.ones((rows, groups, 4), dtype=bool)
    pruned = np.argsort(rng.random((rows, groups, 4)), axis=2)[:, :, :2]
    np.put_along_axis(mask, pruned, False, axis=2)
    measured = mask_stats(mask.reshape(rows, groups * 4))
    estimated = nm_mask_stats((rows, groups * 4), 2, 4)
    assert estimated.nm_min_zeros == measured.nm_min_zeros
    _close(estimated, measured, 0.01)


@pytest.mark.parametrize("block_axis", [0, 1])
def test_block_model_matches_sampled_masks(block_axis):
    rng = np.random.default_rng(3)
    shape = (256, 512)
    block_shape = list(shape)
    block_shape[block_axis] //= 4
    blocks = np.ones(block_shape[0] * block_shape[1], dtype=bool)
    blocks[rng.permutation(blocks.size)[: blocks.size // 2]] = False
    mask = np.repeat(blocks.reshape(block_shape), 4, axis=block_axis)
    measured = mask_stats(mask)
    estimated = block_mask_stats(shape, 0.5, 4, block_axis=block_axis)
    assert estimated.nonzeros == measured.nonzeros
    _close(estimated, measured, 0.01)


def test_stats_survive_dict_round_trip():
    stats = random_mask_stats((64, 128), 0.5)
    again = type(stats).from_dict(stats.to_dict())
    assert again.nonzeros == stats.nonzeros
    assert again.estimated
    assert again.zero_run_fraction == pytest.approx(stats.zero_run_fraction, rel=1e-5)
    assert again.to_dict() == stats.to_dict()
