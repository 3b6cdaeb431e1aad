"""Pattern detection from stored masks and the ``--expect`` language."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import OptionError
from sparseblob.verify.patterns import (
    Expectation,
    check_expectations,
    detect_pattern,
    min_zeros_per_run,
    parse_expectations,
)


def _two_of_four(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    moved = np.moveaxis(np.zeros(shape, dtype=bool), axis, -1).copy()
    groups = moved.reshape(*moved.shape[:-1], -1, 4)
    keys = rng.random(groups.shape)
    ranks = keys.argsort(axis=-1).argsort(axis=-1)
    groups[...] = ranks >= 2
    return np.moveaxis(groups.reshape(moved.shape), -1, axis)


def _blocks(shape, size, axis, seed=0):
    rng = np.random.default_rng(seed)
    moved_shape = list(shape)
    length = moved_shape.pop(axis)
    runs = -(-length // size)
    keep = rng.random((*moved_shape, runs)) < 0.5
    expanded = np.repeat(keep, size, axis=-1)[..., :length]
    return np.moveaxis(expanded, -1, axis)


def test_unstructured_mask_detected():
    mask = np.random.default_rng(1).random((64, 128)) < 0.5

    pattern = detect_pattern(mask)

    assert pattern.kind == "unstructured"
    assert pattern.block is None
    assert abs(pattern.sparsity - 0.5) < 0.05


@pytest.mark.parametrize("axis", [0, 1])
def test_two_of_four_detected_per_axis(axis):
    mask = _two_of_four((16, 32), axis)

    pattern = detect_pattern(mask)

    assert pattern.kind == "n:m"
    assert pattern.n_m == (2, 4, axis)
    assert pattern.sparsity == 0.5
    assert pattern.describe() == f"2:4@axis{axis}, sparsity 0.500"


def test_alternating_mask_is_one_of_two():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, ::2] = True

    assert detect_pattern(mask).n_m == (1, 2, 1)


def test_four_of_eight_detected():
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]], dtype=bool)

    pattern = detect_pattern(mask)

    assert pattern.n_m == (4, 8, 1)
    assert pattern.block == (4, 1)


@pytest.mark.parametrize(("size", "axis"), [(4, 0), (8, 1), (2, 0), (16, 1)])
def test_largest_block_detected(size, axis):
    mask = _blocks((32, 32), size, axis)

    pattern = detect_pattern(mask)

    assert pattern.kind == "block"
    assert pattern.block[0] >= size
    assert pattern.block[1] == axis


def test_trailing_partial_block_detected():
    mask = _blocks((10, 3), 4, 0, seed=3)

    assert detect_pattern(mask).block == (4, 0)


@pytest.mark.parametrize(
    ("mask", "kind"),
    [
        (np.ones((4, 4), dtype=bool), "dense"),
        (np.zeros((4, 4), dtype=bool), "empty"),
        (np.zeros((0, 4), dtype=bool), "dense"),
        (np.array([1, 0, 1, 1, 0], dtype=np.uint8), "unstructured"),
    ],
)
def test_degenerate_masks(mask, kind):
    assert detect_pattern(mask).kind == kind


def test_incidental_floor_is_not_n_m():
    # Random 50% masks of this size have at least some zeros in every run of 16 along an axis.
    mask = np.random.default_rng(7).random((64, 64)) < 0.5

    pattern = detect_pattern(mask)

    assert pattern.n_m is not None
    assert pattern.kind == "unstructured"


def test_min_zeros_counts_padding():
    mask = np.ones((2, 6), dtype=bool)

    assert min_zeros_per_run(mask, 4, 1) == 0
    assert min_zeros_per_run(np.ones((2, 2), dtype=bool), 4, 1) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2:4", Expectation("2:4", "n:m", n=2, m=4)),
        ("2:4@axis1", Expectation("2:4@axis1", "n:m", n=2, m=4, axis=1)),
        ("1:8@axis-1", Expectation("1:8@axis-1", "n:m", n=1, m=8, axis=-1)),
        ("block4@axis0", Expectation("block4@axis0", "block", size=4, axis=0)),
        ("block16", Expectation("block16", "block", size=16)),
        ("sparsity>=0.5", Expectation("sparsity>=0.5", "sparsity", comparison=">=", value=0.5)),
        ("sparsity <= .9", Expectation("sparsity <= .9", "sparsity", comparison="<=", value=0.9)),
        ("sparsity<1", Expectation("sparsity<1", "sparsity", comparison="<", value=1.0)),
    ],
)
def test_expectation_parses(text, expected):
    assert parse_expectations(text) == (expected,)


def test_expectations_combine_with_commas_and_lists():
    parsed = parse_expectations(["2:4@axis1, sparsity>=0.5", "block4"])

    assert [item.kind for item in parsed] == ["n:m", "sparsity", "block"]


def test_no_expectation_is_empty():
    assert parse_expectations(None) == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2-4", "'2-4' is not valid"),
        ("4:2", "1 <= n < m"),
        ("0:4", "1 <= n < m"),
        ("block1", "at least 2"),
        ("sparsity>=50", "write 0.5, not 50"),
        ("sparsity=0.5", "is not valid"),
        ("2:4,", "empty item"),
        ("2:4@axis", "is not valid"),
    ],
)
def test_invalid_expectation_rejected(text, message):
    with pytest.raises(OptionError, match=message):
        parse_expectations(text)


def test_two_of_four_expectation_holds():
    mask = _two_of_four((8, 16), 1)

    assert check_expectations(mask, mask.shape, parse_expectations("2:4@axis1, 2:4, sparsity>=0.5")) == []


def test_expectation_on_wrong_axis_fails():
    mask = _two_of_four((8, 16), 1)

    problems = check_expectations(mask, mask.shape, parse_expectations("2:4@axis0"))

    assert len(problems) == 1
    assert "along axis 0" in problems[0]


def test_group_with_three_kept_is_named():
    mask = _two_of_four((16, 16), 1)
    mask[5, 8:12] = [True, True, True, False]

    problems = check_expectations(mask, mask.shape, parse_expectations("2:4@axis1"))

    assert "starting at index (5, 8)" in problems[0]
    assert "3 nonzero values" in problems[0]


def test_all_nonzero_mask_fails_two_of_four():
    mask = np.ones((16, 16), dtype=bool)

    problems = check_expectations(mask, mask.shape, parse_expectations("2:4"))

    assert len(problems) == 1


def test_sparsity_bounds_checked():
    mask = np.array([[1, 0, 0, 0]], dtype=bool)

    assert check_expectations(mask, mask.shape, parse_expectations("sparsity>=0.75, sparsity<=0.75")) == []
    assert len(check_expectations(mask, mask.shape, parse_expectations("sparsity>0.75"))) == 1


def test_missing_axis_fails():
    mask = np.ones((4, 4), dtype=bool)

    problems = check_expectations(mask, mask.shape, parse_expectations("2:4@axis3"))

    assert "axis 3 does not exist" in problems[0]


def test_weight_without_mask_has_zero_sparsity():
    expectations = parse_expectations("sparsity<=0.9, sparsity>=0.5")

    problems = check_expectations(None, (4, 8), expectations)

    assert problems == ["expected sparsity>=0.5, but sparsity is 0.0000"]


def test_kernel_axis_does_not_satisfy_n_m():
    # 2:4 along the input channels of a 3x3 conv weight; the 3-wide kernel axes would pass any
    # n:m with m > 3 through their zero-padded partial group, so they must not be tried.
    rng = np.random.default_rng(3)
    mask = rng.random((8, 8, 3, 3)) < 0.9

    problems = check_expectations(mask, mask.shape, parse_expectations("2:5"))

    assert len(problems) == 1
    assert "axis 0" in problems[0]
    assert "axis 1" in problems[0]
