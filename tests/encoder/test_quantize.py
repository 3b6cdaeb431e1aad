"""Linear quantization: shapes, half-step accuracy, degenerate blocks and the iOS16 form."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.encoder import (
    apply_mask,
    block_sizes_for,
    magnitude_mask,
    quant_range,
    quantize_nonzero,
    quantize_weight,
)
from sparseblob.runtime.errors import EncodingError, NonFiniteError
from sparseblob.verify.compare import assert_bits_equal

from ._decode import decode
from .strategies import weights

DTYPES = ("int8", "uint8", "int4", "uint4")
MODES = ("symmetric", "affine")


def _within_half_step(decoded, weight, scale, where=None):
    """Check |decoded - weight| <= scale/2 plus half an ulp of the decoded dtype, per element."""
    step = np.broadcast_to(
        np.repeat(np.repeat(scale.astype(np.float64), weight.shape[0] // scale.shape[0], 0),
                  weight.shape[1] // scale.shape[1], 1) if scale.ndim == 2 else scale.astype(np.float64),
        weight.shape,
    )
    error = np.abs(decoded.astype(np.float64) - weight.astype(np.float64))
    ulp = np.spacing(np.abs(decoded)).astype(np.float64)
    bound = step / 2 * (1 + 1e-12) + ulp / 2
    if where is not None:
        error, bound = error[where], bound[where]
    return bool((error <= bound).all())


@given(
    weights(shape=st.tuples(st.integers(1, 6), st.sampled_from([4, 8, 12]))),
    st.sampled_from(DTYPES),
    st.sampled_from(MODES),
    st.sampled_from(["per_tensor", "per_channel", "per_block"]),
)
def test_quantized_values_within_half_step(weight, dtype, mode, granularity):
    params = quantize_weight(weight, dtype, mode=mode, granularity=granularity, block_size=4)
    decoded = decode(params)
    assert decoded.dtype == weight.dtype
    assert np.isfinite(decoded).all()
    assert _within_half_step(decoded, weight, params.scale)


@given(
    weights(shape=st.tuples(st.integers(1, 6), st.sampled_from([4, 8]))),
    st.sampled_from(DTYPES),
    st.sampled_from(MODES),
    st.sampled_from([0.0, 0.5, 0.75]),
)
def test_nonzero_quantization_round_trip(weight, dtype, mode, sparsity):
    pruned = apply_mask(weight, magnitude_mask(weight, sparsity))
    params = quantize_nonzero(pruned, dtype, mode=mode, granularity="per_block", block_size=4)
    decoded = decode(params)
    kept = pruned != 0
    assert np.array_equal(params.data_mask, kept.astype(np.uint8))
    assert params.nonzero_data.shape == (int(kept.sum()),)
    assert_bits_equal(decoded[~kept], np.zeros(int((~kept).sum()), pruned.dtype), "pruned zeros")
    assert _within_half_step(decoded, pruned, params.scale, where=kept)


@pytest.mark.parametrize(
    "shape, granularity, kwargs, scale_shape",
    [
        ((64, 128), "per_tensor", {}, (1, 1)),
        ((64, 128), "per_channel", {}, (64, 1)),
        ((64, 128), "per_block", {"block_size": 32}, (64, 4)),
        ((32, 16, 3, 3), "per_channel", {}, (32, 1, 1, 1)),
        ((32, 16, 3, 3), "per_block", {"block_size": 8}, (32, 2, 1, 1)),
        ((32, 16, 3, 3), "per_block", {"block_size": 8, "channel_axis": 1, "block_axis": 0}, (4, 16, 1, 1)),
    ],
)
def test_scale_shapes_match_core_ml(shape, granularity, kwargs, scale_shape):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    params = quantize_weight(weight, "uint4", mode="affine", granularity=granularity, **kwargs)
    assert params.data.shape == shape
    assert params.scale.shape == scale_shape
    assert params.offset.shape == scale_shape
    assert params.scale.dtype == np.float16


def test_blocks_along_any_axes():
    weight = np.random.default_rng(0).standard_normal((8, 12, 2)).astype(np.float32)
    params = quantize_weight(weight, "int8", block_sizes=(4, 3, 2))
    assert params.scale.shape == (2, 4, 1)
    assert params.offset is None
    assert _within_half_step(decode(params)[:, :, 0], weight[:, :, 0], params.scale[:, :, 0])


def test_core_ml_worked_example():
    row = np.array([[-1.0, 0.0, 0.5, 2.0]], dtype=np.float32)
    # Core ML stores 2/127 rounded to nearest, and -1 / scale rounds half to even to -64. This
    # encoder rounds the scale up, so -1 / scale is just below 63.5 in magnitude.
    symmetric = quantize_weight(row, "int8", mode="symmetric")
    assert symmetric.data.tolist() == [[-63, 0, 32, 127]]

    affine = quantize_weight(row, "uint8", mode="affine")
    assert affine.data.tolist() == [[0, 85, 127, 255]]
    assert affine.offset.tolist() == [[85]]


def test_quant_ranges():
    assert quant_range("int8", "symmetric") == (-127, 127)
    assert quant_range("uint8", "symmetric") == (0, 254)
    assert quant_range("int4", "affine") == (-8, 7)
    assert quant_range("uint4", "symmetric") == (0, 14)


def test_unsigned_symmetric_offsets():
    weight = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float16)
    assert (quantize_weight(weight, "uint8").offset == 127).all()
    assert (quantize_weight(weight, "uint4").offset == 7).all()


def _degenerate_weight() -> np.ndarray:
    rng = np.random.default_rng(1)
    weight = np.zeros((4, 8), dtype=np.float16)
    weight[1] = rng.choice([-1.0, 1.0], 8) * 1e-6
    weight[2:] = rng.standard_normal((2, 8))
    return weight


@pytest.mark.parametrize(
    "dtype, mode", [("int8", "symmetric"), ("int8", "affine"), ("uint8", "symmetric"), ("uint8", "affine")]
)
def test_degenerate_rows_stay_finite(dtype, mode, caplog):
    weight = _degenerate_weight()
    with caplog.at_level(logging.WARNING, logger="sparseblob.encoder.quantize"):
        params = quantize_weight(weight, dtype, mode=mode)
    scale = params.scale.astype(np.float64)
    assert np.isfinite(scale).all()
    assert (scale > 0).all()
    assert (params.scale >= np.finfo(np.float16).tiny).all()
    assert "below the smallest normal" in caplog.text

    decoded = decode(params)
    assert np.isfinite(decoded).all()
    assert_bits_equal(decoded[0], np.zeros(8, np.float16), "all-zero row")
    assert _within_half_step(decoded, weight, params.scale)
    if dtype == "uint8" and mode == "symmetric":
        assert params.offset.ravel().tolist() == [127] * 4


def test_degenerate_rows_of_nonzero_quantization():
    weight = _degenerate_weight()
    params = quantize_nonzero(weight, "int8")
    assert (params.scale.astype(np.float64) > 0).all()
    decoded = decode(params)
    assert np.isfinite(decoded).all()
    assert _within_half_step(decoded, weight, params.scale)


def test_fp32_scale_keeps_tiny_row():
    weight = _degenerate_weight().astype(np.float32)
    params = quantize_weight(weight, "int8", scale_dtype="fp32")
    decoded = decode(params)
    assert np.abs(decoded[1] - weight[1]).max() <= params.scale[1, 0] / 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weight_rejected(bad):
    weight = np.ones((4, 8), dtype=np.float16)
    weight[3, 7] = bad
    with pytest.raises(NonFiniteError, match=r"w: element \(3, 7\)"):
        quantize_weight(weight, name="w")


def test_scale_overflowing_fp16_rejected():
    weight = np.full((2, 4), 1e9, dtype=np.float32)
    with pytest.raises(EncodingError, match="overflows float16; use an fp32 scale"):
        quantize_weight(weight, scale_dtype="fp16")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int16"}, "dtype='int16'"),
        ({"mode": "linear"}, "mode='linear'"),
        ({"granularity": "per_row"}, "granularity='per_row'"),
        ({"granularity": "per_block"}, "block_size is required"),
        ({"granularity": "per_block", "block_size": 3}, "block_size=3 does not divide axis 1"),
        ({"granularity": "per_block", "block_size": 4, "block_axis": 0}, "block_axis=0 must differ"),
        ({"channel_axis": 2}, "channel_axis=2"),
        ({"block_sizes": (4,)}, "has 1 entries for a tensor of rank 2"),
        ({"block_sizes": (3, 8)}, r"block_sizes\[0\]=3 does not divide"),
        ({"scale_dtype": "bf16"}, "scale_dtype='bf16'"),
    ],
)
def test_invalid_argument_rejected(kwargs, message):
    weight = np.ones((4, 8), dtype=np.float16)
    with pytest.raises(EncodingError, match=message):
        quantize_weight(weight, **kwargs)


def test_block_sizes_for_names():
    assert block_sizes_for((64, 128), "per_tensor") == (64, 128)
    assert block_sizes_for((64, 128), "per_channel") == (1, 128)
    assert block_sizes_for((64, 128), "per_block", block_size=32) == (1, 32)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_ios16_form_decodes_identically(dtype, mode, granularity):
    weight = np.random.default_rng(2).standard_normal((6, 10)).astype(np.float16)
    params = quantize_weight(weight, dtype, mode=mode, granularity=granularity)
    ios16 = params.to_ios16()
    assert ios16.scale.ndim == (1 if granularity == "per_channel" else 0)
    assert ios16.zero_point.dtype == params.data.dtype
    assert_bits_equal(decode(ios16), decode(params), "decoded")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int4"}, "takes int8 or uint8, not int4"),
        ({"granularity": "per_block", "block_size": 5}, r"scale has shape \[6, 2\] \(per block\)"),
    ],
)
def test_ios16_form_rejects_inexpressible(kwargs, message):
    weight = np.random.default_rng(2).standard_normal((6, 10)).astype(np.float16)
    with pytest.raises(EncodingError, match=message):
        quantize_weight(weight, **kwargs).to_ios16()


def test_same_input_gives_same_bytes():
    weight = np.random.default_rng(4).standard_normal((16, 32)).astype(np.float16)
    first = quantize_weight(weight, "int4", mode="affine", granularity="per_block", block_size=8)
    second = quantize_weight(weight.copy(), "int4", mode="affine", granularity="per_block", block_size=8)
    assert first.data.tobytes() == second.data.tobytes()
    assert first.scale.tobytes() == second.scale.tobytes()
    assert first.offset.tobytes() == second.offset.tobytes()
