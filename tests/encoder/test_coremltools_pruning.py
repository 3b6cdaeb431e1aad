"""Masks against coremltools' pruning functions on the same weights and configurations.

coremltools' prune_weights pass has static array functions (compress_by_threshold,
compress_by_magnitude, compress_by_nm_sparsity). Where the semantics agree the pruned weights must
be identical; where they differ, the documented difference must hold exactly.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from coremltools.optimize.coreml._quantization_passes import prune_weights

from sparseblob.encoder import apply_mask, block_mask, magnitude_mask, n_m_mask, threshold_mask
from sparseblob.verify.compare import assert_bits_equal


def _distinct_weight(shape, seed: int, dtype=np.float32) -> np.ndarray:
    """A weight whose magnitudes are all distinct: a shuffle of 1..N with random signs."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    magnitudes = rng.permutation(size).astype(np.float64) + 1
    signs = rng.choice([-1.0, 1.0], size)
    return (magnitudes * signs / size).reshape(shape).astype(dtype)


def _coremltools_pruned(params) -> np.ndarray:
    return prune_weights.decompress(params)


SHAPES = [(16, 24), (12, 10), (8, 6, 3, 3), (10, 4, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.37, 0.5])
def test_threshold_matches_coremltools(shape, threshold):
    weight = _distinct_weight(shape, 1)
    expected = _coremltools_pruned(
        prune_weights.compress_by_threshold(weight, threshold, minimum_sparsity_percentile=0.0)
    )
    assert_bits_equal(apply_mask(weight, threshold_mask(weight, threshold)), expected, "pruned")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_magnitude_count_against_percentile(shape, sparsity):
    weight = _distinct_weight(shape, 2)
    expected = _coremltools_pruned(prune_weights.compress_by_magnitude(weight, sparsity))
    ours = apply_mask(weight, magnitude_mask(weight, sparsity))

    # coremltools zeroes |w| <= percentile(|w|, 100 s), which with distinct magnitudes prunes
    # floor((N - 1) s) + 1 elements for 0 < s < 1, against floor(N s) here.
    size = weight.size
    theirs_count = 0 if sparsity == 0 else size if sparsity == 1 else int(np.floor((size - 1) * sparsity)) + 1
    assert int((expected == 0).sum()) == theirs_count
    assert int((ours == 0).sum()) == int(np.floor(size * sparsity))
    if theirs_count == int(np.floor(size * sparsity)):
        assert_bits_equal(ours, expected, "pruned")
    else:
        # Both prune the smallest magnitudes, so ours is coremltools' minus the largest pruned.
        assert ((ours == 0) <= (expected == 0)).all()


def test_magnitude_ties_differ_from_coremltools():
    # coremltools prunes every magnitude equal to the cut; this encoder prunes exactly floor(N s).
    weight = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    expected = _coremltools_pruned(prune_weights.compress_by_magnitude(weight, 0.25))
    assert int((expected == 0).sum()) == 4
    ours = apply_mask(weight, magnitude_mask(weight, 0.25))
    assert (ours == 0).tolist() == [[True, True, False, False], [False] * 4]


BLOCK_CASES = [
    (shape, axis, block_size, sparsity)
    for shape in [(16, 24), (8, 16, 3, 3), (12, 12)]
    for axis in (0, 1)
    for block_size, sparsity in [(2, 0.5), (4, 0.5), (4, 0.25), (3, 0.5)]
    if shape[axis] % block_size == 0
]


@pytest.mark.parametrize("shape, axis, block_size, sparsity", BLOCK_CASES)
def test_block_matches_coremltools(shape, axis, block_size, sparsity):
    weight = _distinct_weight(shape, 3)
    expected = _coremltools_pruned(
        prune_weights.compress_by_magnitude(weight, sparsity, block_size=block_size, dim=axis)
    )
    ours = apply_mask(weight, block_mask(weight, sparsity, block_size, axis=axis))
    assert_bits_equal(ours, expected, "pruned")


@pytest.mark.parametrize("seed", range(3))
def test_partial_block_count_differs(seed):
    # Axis 0 of length 10 in blocks of 4 gives 3 x 8 = 24 blocks, the last ones of 2 elements.
    # coremltools applies its percentile to per-element scores, where a partial block weighs 2
    # and a full one 4, so it prunes more than half of the blocks here; this encoder prunes
    # exactly floor(24 / 2) = 12 blocks.
    weight = _distinct_weight((10, 8), seed)
    expected = _coremltools_pruned(prune_weights.compress_by_magnitude(weight, 0.5, block_size=4, dim=0))
    theirs_blocks = int((expected == 0)[[0, 4, 8]].sum())
    ours = block_mask(weight, 0.5, 4, axis=0)
    assert int((~ours)[[0, 4, 8]].sum()) == 12
    assert theirs_blocks > 12

    # Both prune whole blocks, in the order of their norms.
    assert (~ours <= (expected == 0)).all()


@pytest.mark.parametrize("shape", [(16, 24), (8, 16, 3, 3), (12, 10), (10, 11)])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 4), (1, 2), (2, 5)])
def test_n_m_matches_coremltools(shape, axis, n, m):
    weight = _distinct_weight(shape, 5)
    params = prune_weights.compress_by_nm_sparsity(weight, (n, m), dim=axis)
    ours = apply_mask(weight, n_m_mask(weight, n, m, axis=axis))
    if params is None:
        # coremltools skips the weight when m > shape[axis] / 2; this encoder prunes it.
        assert m > shape[axis] / 2
        return
    assert_bits_equal(ours, _coremltools_pruned(params), "pruned")


def test_fp16_weights_match_coremltools():
    weight = _distinct_weight((64, 32), 6, dtype=np.float16)
    for ours, params in [
        (n_m_mask(weight, 2, 4), prune_weights.compress_by_nm_sparsity(weight, (2, 4), dim=1)),
        (block_mask(weight, 0.5, 4), prune_weights.compress_by_magnitude(weight, 0.5, block_size=4, dim=0)),
        (threshold_mask(weight, 0.25), prune_weights.compress_by_threshold(weight, 0.25, 0.0)),
    ]:
        assert_bits_equal(apply_mask(weight, ours), _coremltools_pruned(params), "pruned")


def test_large_blocks_pruned_not_skipped(caplog):
    weight = _distinct_weight((6, 8), 7)
    with caplog.at_level(logging.WARNING):
        assert prune_weights.compress_by_magnitude(weight, 0.5, block_size=4, dim=0) is None
    keep = block_mask(weight, 0.5, 4, axis=0)
    # 2 x 8 blocks (the second of 2 rows), of which 8 are pruned.
    assert int((~keep)[[0, 4]].sum()) == 8
