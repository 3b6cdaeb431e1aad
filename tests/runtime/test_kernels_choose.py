"""The strategy rule: which strategy each layout, density and token count gets."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.kernels import _simd, choose, formats
from sparseblob.runtime.kernels.linear import sparse_supported
from sparseblob.runtime.kernels.patterns import Blocks

from .test_kernels_builders import make_weight

needs_avx512 = pytest.mark.skipif(not _simd.AVAILABLE, reason="the streaming kernels need AVX-512")


def _weight(layout="unstructured", density=0.5, value_format="fp16", shape=(64, 64)):
    return make_weight(np.random.default_rng(40), shape, density, value_format, layout).weight


def _exact_weight(pattern, density):
    """A 64x64 fp16 weight that keeps the first ``64 * density`` columns of every row."""
    mask = np.zeros((64, 64), bool)
    mask[:, : round(64 * density)] = True
    return formats.from_sparse(mask, np.ones(int(mask.sum()), np.float16), pattern=pattern)


@needs_avx512
@pytest.mark.parametrize(
    "pattern, density, tokens, expected",
    [
        (None, 0.5, 1, "sparse"),
        (None, 0.5, 8, "sparse"),
        (None, 0.5, 9, "tiled"),
        (None, 0.125, 64, "tiled"),
        (Blocks(4, 0), 0.5, 1, "sparse"),
        (Blocks(4, 0), 0.5, 9, "sparse"),
        (Blocks(4, 0), 0.5, 10, "tiled"),
        (Blocks(4, 0), 0.125, 144, "sparse"),
        (Blocks(4, 0), 0.125, 145, "tiled"),
        (Blocks(4, 1), 0.5, 6, "sparse"),
        (Blocks(4, 1), 0.5, 7, "tiled"),
        (Blocks(4, 1), 0.125, 96, "sparse"),
        (Blocks(4, 1), 0.125, 97, "tiled"),
    ],
)
def test_rule_table(pattern, density, tokens, expected):
    weight = _exact_weight(pattern, density)
    assert weight.density == density
    assert choose.choose_strategy(weight, tokens) == expected


@needs_avx512
def test_unsupported_grouping_goes_dense():
    # Per-block scales of 4 columns change inside every 16-column step.
    weight = _weight(value_format="uint8-per-block-offset", shape=(8, 64))
    assert not sparse_supported(weight)
    assert choose.choose_strategy(weight, 1) == "dense"


def test_no_avx512_goes_dense(monkeypatch):
    monkeypatch.setattr(_simd, "AVAILABLE", False)
    weight = _weight()
    assert choose.choose_strategy(weight, 1) == "dense"
