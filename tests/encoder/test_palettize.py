"""Palettization: values lie in their LUT, unique mode is lossless, LUT shapes, chains."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.encoder import (
    NBITS,
    LutParams,
    LutToSparseParams,
    apply_mask,
    magnitude_mask,
    n_m_mask,
    palettize_nonzero,
    palettize_quantized_lut,
    palettize_scaled,
    palettize_weight,
)
from sparseblob.runtime.errors import EncodingError, NonFiniteError
from sparseblob.verify.compare import assert_bits_equal

from ._decode import decode
from .strategies import weights

EVEN_SHAPES = st.tuples(st.sampled_from([2, 4, 8]), st.sampled_from([2, 4, 6]))


def _lut_rows(lut: np.ndarray, shape, channel_axis: int = 0) -> np.ndarray:
    """Return, for every channel along ``channel_axis``, the LUT entries of its group (scalar LUT)."""
    groups = lut.shape[channel_axis]
    per_group = lut.reshape(groups, -1)
    return np.repeat(per_group, shape[channel_axis] // groups, axis=0)


def _in_lut(decoded: np.ndarray, lut: np.ndarray, where=None) -> bool:
    """Check that every decoded value of channel c is bitwise one of channel c's LUT entries."""
    rows = _lut_rows(lut, decoded.shape)
    bits = decoded.reshape(decoded.shape[0], -1)
    lut_bits = rows.view(f"u{rows.itemsize}")
    found = (bits.view(f"u{bits.itemsize}")[:, :, None] == lut_bits[:, None, :]).any(axis=-1)
    if where is not None:
        found = found | ~where.reshape(found.shape)
    return bool(found.all())


@given(weights(shape=EVEN_SHAPES), st.sampled_from(NBITS), st.sampled_from(["uniform", "kmeans"]), st.sampled_from([None, 2]))
def test_palettized_values_lie_in_lut(weight, nbits, mode, group_size):
    params = palettize_weight(weight, nbits, mode=mode, group_size=group_size)
    groups = 1 if group_size is None else weight.shape[0] // group_size
    assert params.lut.shape == (groups, 1, 1 << nbits, 1)
    assert params.lut.dtype == weight.dtype
    assert params.indices.shape == weight.shape
    assert int(params.indices.max()) < 1 << nbits
    decoded = decode(params)
    assert decoded.dtype == weight.dtype
    assert _in_lut(decoded, params.lut)


@given(weights(shape=EVEN_SHAPES), st.sampled_from([None, 2]))
def test_unique_mode_is_lossless(weight, group_size):
    params = palettize_weight(weight, mode="unique", group_size=group_size)
    distinct = max(
        np.unique(part.view(f"u{weight.itemsize}")).size
        for part in np.split(weight, 1 if group_size is None else weight.shape[0] // group_size)
    )
    expected_bits = next(bits for bits in NBITS if distinct <= 1 << bits)
    assert params.nbits == expected_bits
    assert_bits_equal(decode(params), weight, "decoded")


def test_unique_lut_is_sorted_and_zero_padded():
    weight = np.array([[2.0, 0.5, 2.0], [1.0, 0.5, 1.0]], dtype=np.float16)
    params = palettize_weight(weight, mode="unique")
    assert params.nbits == 2
    assert params.lut.reshape(-1).tolist() == [0.5, 1.0, 2.0, 0.0]
    assert params.indices.tolist() == [[2, 0, 2], [1, 0, 1]]


def test_unique_keeps_negative_zero():
    weight = np.array([[-0.0, 0.0], [1.0, -0.0]], dtype=np.float32)
    assert_bits_equal(decode(palettize_weight(weight, mode="unique")), weight, "decoded")


def test_unique_with_too_few_bits_rejected():
    weight = np.arange(16, dtype=np.float32).reshape(4, 4)
    with pytest.raises(EncodingError, match="16 distinct values, more than the 8 entries of nbits=3"):
        palettize_weight(weight, 3, mode="unique")


def test_uniform_matches_core_ml_formula():
    weight = np.array([[-1.0, 0.0], [0.4, 2.0]], dtype=np.float32)
    params = palettize_weight(weight, 2, mode="uniform")
    assert params.lut.reshape(-1).tolist() == [-1.0, 0.0, 1.0, 2.0]
    assert params.indices.tolist() == [[0, 1], [1, 3]]


def test_uniform_constant_group():
    weight = np.full((2, 4), 0.75, dtype=np.float16)
    params = palettize_weight(weight, 4, mode="uniform")
    assert_bits_equal(decode(params), weight, "decoded")


def test_kmeans_is_lossless_when_values_fit():
    weight = np.tile(np.array([-1.5, 0.25, 3.0], np.float16), (4, 2))
    assert_bits_equal(decode(palettize_weight(weight, 2)), weight, "decoded")


def test_kmeans_error_not_worse_than_uniform():
    weight = np.random.default_rng(8).standard_normal((64, 64)).astype(np.float32)
    kmeans = decode(palettize_weight(weight, 4, mode="kmeans"))
    uniform = decode(palettize_weight(weight, 4, mode="uniform"))
    assert np.square(kmeans - weight).sum() < np.square(uniform - weight).sum()


def test_kmeans_picks_nearest_entry():
    weight = np.random.default_rng(9).standard_normal((16, 16)).astype(np.float16)
    params = palettize_weight(weight, 3)
    lut = params.lut.reshape(-1).astype(np.float64)
    distance = np.abs(weight.astype(np.float64)[..., None] - lut)
    chosen = np.take_along_axis(distance, params.indices[..., None].astype(np.int64), axis=-1)[..., 0]
    assert (chosen <= distance.min(axis=-1)).all()


@given(weights(shape=EVEN_SHAPES), st.sampled_from([0.25, 0.5]), st.sampled_from(["uniform", "kmeans", "unique"]))
def test_nonzero_palettization_round_trip(weight, sparsity, mode):
    pruned = apply_mask(weight, magnitude_mask(weight, sparsity))
    params = palettize_nonzero(pruned, None if mode == "unique" else 4, mode=mode, group_size=2)
    kept = pruned != 0
    assert np.array_equal(params.indices_mask, kept.astype(np.uint8))
    assert params.indices_nonzero_data.shape == (int(kept.sum()),)
    decoded = decode(params)
    assert_bits_equal(decoded[~kept], np.zeros(int((~kept).sum()), pruned.dtype), "pruned zeros")
    assert _in_lut(decoded, params.lut, where=kept)
    if mode == "unique":
        assert_bits_equal(decoded, pruned, "decoded")


def test_pruned_zeros_take_no_lut_entry():
    # Three distinct nonzero values fit 2 bits only if the zeros take no entry.
    weight = np.array([[0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 0.0, 1.0]], dtype=np.float16)
    params = palettize_nonzero(weight, mode="unique")
    assert params.nbits == 2
    assert 0.0 not in params.lut.reshape(-1)[:3].tolist()
    assert_bits_equal(decode(params), weight, "decoded")


@pytest.mark.parametrize("vector_axis", [0, 1])
def test_vector_palettization_shapes(vector_axis):
    weight = np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)
    params = palettize_weight(weight, 2, cluster_dim=2, vector_axis=vector_axis, group_size=4)
    indices_shape = [8, 12]
    indices_shape[vector_axis] //= 2
    assert params.indices.shape == tuple(indices_shape)
    assert params.lut.shape == (2, 1, 4, 2)
    assert params.vector_axis == vector_axis
    decoded = decode(params)
    assert decoded.shape == weight.shape


def test_vector_unique_is_lossless():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5, 2)).astype(np.float16)
    # Rows 2i and 2i+1 of each column form one of the five vectors.
    weight = np.ascontiguousarray(vectors[rng.integers(0, 5, size=(4, 6))].transpose(0, 2, 1)).reshape(8, 6)
    params = palettize_weight(weight, mode="unique", cluster_dim=2, vector_axis=0)
    assert_bits_equal(decode(params), weight, "decoded")


def test_vector_values_are_lut_rows():
    weight = np.random.default_rng(2).standard_normal((8, 4)).astype(np.float16)
    params = palettize_weight(weight, 2, cluster_dim=4, vector_axis=1)
    decoded = decode(params)
    rows = {tuple(row) for row in params.lut.reshape(-1, 4).view(np.uint16).tolist()}
    assert all(tuple(row) in rows for row in decoded.view(np.uint16).tolist())


def test_vector_nonzero_palettization_keeps_whole_vectors():
    weight = np.random.default_rng(3).standard_normal((8, 8)).astype(np.float16)
    keep = n_m_mask(weight, 2, 4, axis=1)
    # Zero whole vectors of 2 along axis 1 so that the kept mask is vector-aligned.
    keep = keep.reshape(8, 4, 2).any(axis=-1).repeat(2, axis=1)
    pruned = apply_mask(weight, keep)
    params = palettize_nonzero(pruned, mode="unique", cluster_dim=2, vector_axis=1)
    assert params.indices_mask.shape == (8, 4)
    assert_bits_equal(decode(params), pruned, "decoded")


def test_indivisible_group_leaves_weight_untouched():
    weight = np.random.default_rng(4).standard_normal((6, 8)).astype(np.float16)
    before = weight.copy()
    for call in (palettize_weight, palettize_nonzero, palettize_scaled, palettize_quantized_lut):
        with pytest.raises(EncodingError, match="group_size=4 does not divide the 6 channels of axis 0; the weight was not palettized"):
            call(weight, 4, mode="uniform", group_size=4)
        assert_bits_equal(weight, before, f"weight after {call.__name__}")


def test_per_channel_scale_chain():
    rng = np.random.default_rng(5)
    weight = (rng.standard_normal((6, 8)) * np.array([[0.01], [1], [100], [0], [3], [0.5]])).astype(np.float16)
    before = weight.copy()
    params = palettize_scaled(weight, 8, mode="unique", group_size=3)
    assert params.scale.shape == (6, 1)
    assert (params.scale.astype(np.float64) > 0).all()
    decoded = decode(params)
    assert_bits_equal(weight, before, "weight")
    relative = np.abs(decoded.astype(np.float64) - weight) / params.scale.astype(np.float64)
    assert relative.max() <= 2.0**-10


@pytest.mark.parametrize("nonzero_only", [False, True])
@pytest.mark.parametrize("lut_dtype, lut_mode", [("int8", "symmetric"), ("uint8", "affine")])
def test_quantized_lut_chain(nonzero_only, lut_dtype, lut_mode):
    weight = np.random.default_rng(6).standard_normal((8, 16)).astype(np.float16)
    pruned = apply_mask(weight, n_m_mask(weight, 2, 4))
    params = palettize_quantized_lut(
        pruned, 4, lut_dtype=lut_dtype, lut_mode=lut_mode, nonzero_only=nonzero_only, group_size=4
    )
    expected_type = LutToSparseParams if nonzero_only else LutParams
    assert isinstance(params.palettized, expected_type)
    assert params.lut_quant.data.shape == (2, 1, 16, 1)
    assert params.lut_quant.scale.shape == (1, 1, 1, 1)
    assert_bits_equal(decode(params.lut_quant), params.palettized.lut, "quantized lut")
    assert_bits_equal(decode(params), decode(params.palettized), "chain")


def test_ios16_form_decodes_identically():
    weight = np.random.default_rng(7).standard_normal((8, 10)).astype(np.float16)
    for nbits in (1, 2, 4, 6, 8):
        params = palettize_weight(weight, nbits)
        assert_bits_equal(decode(params.to_ios16()), decode(params), f"{nbits}-bit")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nbits": 3}, "no 3-bit indices"),
        ({"nbits": 4, "group_size": 4}, r"one scalar LUT per tensor, but the LUT has shape \[2, 1, 16, 1\]"),
        ({"nbits": 2, "cluster_dim": 2}, "one scalar LUT per tensor"),
    ],
)
def test_ios16_form_rejects_inexpressible(kwargs, message):
    weight = np.random.default_rng(7).standard_normal((8, 10)).astype(np.float16)
    with pytest.raises(EncodingError, match=message):
        palettize_weight(weight, **kwargs).to_ios16()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nbits": 5}, "nbits=5 is not one of"),
        ({"nbits": None, "mode": "kmeans"}, "nbits is required for mode='kmeans'"),
        ({"nbits": 4, "mode": "linear"}, "mode='linear'"),
        ({"nbits": 2, "mode": "uniform", "cluster_dim": 2}, "mode='uniform' palettizes scalars only"),
        ({"nbits": 2, "cluster_dim": 3}, "cluster_dim=3 does not divide axis 0 of length 8"),
        ({"nbits": 2, "cluster_dim": 4, "group_size": 2}, "cluster_dim=4 does not divide group_size=2"),
        ({"nbits": 2, "channel_axis": 2}, "channel_axis=2"),
        ({"nbits": 2, "group_size": 0}, "group_size=0"),
    ],
)
def test_invalid_argument_rejected(kwargs, message):
    weight = np.ones((8, 10), dtype=np.float16)
    with pytest.raises(EncodingError, match=message):
        palettize_weight(weight, **kwargs)


def test_non_finite_weight_rejected():
    weight = np.ones((4, 4), dtype=np.float16)
    weight[0, 3] = np.inf
    with pytest.raises(NonFiniteError, match=r"lin: element \(0, 3\)"):
        palettize_nonzero(weight, 4, name="lin")


@pytest.mark.parametrize("mode", ["uniform", "kmeans", "unique"])
def test_same_input_gives_same_bytes(mode):
    weight = np.random.default_rng(10).standard_normal((16, 32)).astype(np.float32)
    nbits = 8 if mode == "unique" else 4
    if mode == "unique":
        weight = np.round(weight * 20).astype(np.float32)
    first = palettize_nonzero(weight, nbits, mode=mode, group_size=4)
    second = palettize_nonzero(weight.copy(), nbits, mode=mode, group_size=4)
    assert first.lut.tobytes() == second.lut.tobytes()
    assert first.indices_nonzero_data.tobytes() == second.indices_nonzero_data.tobytes()
    assert first.indices_mask.tobytes() == second.indices_mask.tobytes()
