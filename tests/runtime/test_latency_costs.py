"""Cost accounting of weight layers: MACs, activation bytes and stored weight bytes by component."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import ParameterShapeError, ShapeError, UnknownDtypeError, UnsupportedOpError
from sparseblob.runtime.latency.costs import LayerCost, WeightBytes, layer_cost, weight_axes
from sparseblob.runtime.latency.masks import random_mask_stats

LINEAR = ("linear", (64, 128), (1, 128), (1, 64))


def test_dense_fp16_linear_bytes_and_macs():
    cost = layer_cost(*LINEAR)
    assert cost.format == "dense"
    assert cost.weight_bytes == WeightBytes(values=64 * 128 * 2)
    assert cost.expanded_bytes == 16384
    assert cost.macs == 64 * 128
    assert cost.input_bytes == 256
    assert cost.output_bytes == 128


def test_sparse_mask_is_one_bit_per_element():
    mask = np.zeros((64, 128), dtype=bool)
    mask[:, ::2] = True
    cost = layer_cost(*LINEAR, mask=mask)
    assert cost.format == "sparse"
    assert cost.nonzeros == 4096
    assert cost.weight_bytes == WeightBytes(values=8192, mask=1024)
    assert cost.sparsity == 0.5


def test_sparse_mask_bytes_round_up():
    # 15 elements: ceil(15 / 8) = 2 mask bytes; 4 stored fp16 values = 8 bytes.
    mask = np.zeros((3, 5), dtype=bool)
    mask[0, :4] = True
    cost = layer_cost("linear", (3, 5), (1, 5), (1, 3), mask=mask)
    assert cost.weight_bytes.mask == 2
    assert cost.weight_bytes.values == 8


def test_sparse_int8_values_count_one_byte_each():
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = False
    cost = layer_cost("linear", (3, 5), (1, 5), (1, 3), mask=mask, weight_dtype="int8",
                      scale_shape=(3, 1))
    assert cost.format == "sparse+affine"
    assert cost.weight_bytes == WeightBytes(values=10, mask=2, scales=6)


@pytest.mark.parametrize(
    ("nbits", "indices_bytes", "lut_bytes"),
    [(1, 1024, 4), (2, 2048, 8), (3, 3072, 16), (4, 4096, 32), (6, 6144, 128), (8, 8192, 512)],
)
def test_palettized_indices_pack_nbits(nbits, indices_bytes, lut_bytes):
    dtype = "uint8" if nbits == 8 else f"uint{nbits}"
    cost = layer_cost(*LINEAR, weight_dtype=dtype, lut_shape=(1, 1, 2**nbits, 1))
    assert cost.format == "palettized"
    assert cost.weight_bytes.indices == indices_bytes
    assert cost.weight_bytes.lut == lut_bytes
    assert cost.n_luts == 1
    assert cost.lut_entries == 2**nbits


def test_odd_count_of_3_bit_indices_rounds_up():
    # 15 indices of 3 bits are 45 bits: 6 bytes.
    cost = layer_cost("linear", (3, 5), (1, 5), (1, 3), weight_dtype="uint3", lut_shape=(1, 1, 8, 1))
    assert cost.weight_bytes.indices == 6


def test_grouped_luts_count_one_table_per_group():
    cost = layer_cost(*LINEAR, weight_dtype="uint4", lut_shape=(8, 1, 16, 1))
    assert cost.n_luts == 8
    assert cost.weight_bytes.lut == 8 * 16 * 2


def test_vector_palettization_stores_one_index_per_vector():
    cost = layer_cost(*LINEAR, weight_dtype="uint4", lut_shape=(1, 1, 16, 2))
    assert cost.weight_bytes.indices == 2048
    assert cost.weight_bytes.lut == 64


def test_per_channel_scale_and_uint4_offset_bytes():
    cost = layer_cost(*LINEAR, weight_dtype="uint4", scale_shape=(64, 1), offset_shape=(64, 1))
    assert cost.format == "affine"
    assert cost.weight_bytes == WeightBytes(values=4096, scales=128, offsets=32)
    assert cost.n_scales == 64


def test_per_block_scales_count_every_block():
    cost = layer_cost(*LINEAR, weight_dtype="int4", scale_shape=(64, 4))
    assert cost.n_scales == 256
    assert cost.weight_bytes.scales == 512


def test_quantized_lut_is_int8_with_its_scale():
    cost = layer_cost(*LINEAR, weight_dtype="uint4", lut_shape=(1, 1, 16, 1), lut_dtype="int8",
                      scale_shape=(1, 1, 1, 1))
    assert cost.format == "palettized+affine"
    assert cost.weight_bytes == WeightBytes(indices=4096, lut=16, scales=2)


def test_sparse_palettized_indices_cover_nonzeros_only():
    mask = np.zeros((64, 128), dtype=bool)
    mask[:16] = True
    cost = layer_cost(*LINEAR, mask=mask, weight_dtype="uint2", lut_shape=(1, 1, 4, 1))
    assert cost.format == "sparse+palettized"
    assert cost.weight_bytes == WeightBytes(mask=1024, indices=512, lut=8)


def test_conv_macs_reduce_over_kernel_and_input_channels():
    cost = layer_cost("conv", (32, 16, 3, 3), (1, 16, 8, 8), (1, 32, 8, 8))
    assert cost.macs == 32 * 64 * 16 * 9
    assert cost.rate_class == "conv"


def test_depthwise_conv_has_its_own_rate_class():
    cost = layer_cost("conv", (16, 1, 3, 3), (1, 16, 8, 8), (1, 16, 8, 8), groups=16)
    assert cost.rate_class == "depthwise"
    assert cost.macs == 16 * 64 * 9


def test_conv_transpose_macs_scatter_each_input():
    cost = layer_cost("conv_transpose", (8, 4, 4), (1, 8, 26), (1, 4, 52))
    assert cost.macs == 26 * 8 * 4 * 4
    assert weight_axes("conv_transpose") == (0, 1)


def test_matmul_without_const_weight_has_no_weight_bytes():
    cost = layer_cost("matmul", (1, 4, 16, 32), (1, 4, 8, 16), (1, 4, 8, 32), const_weight=False)
    assert cost.weight_bytes.total == 0
    assert cost.macs == 4 * 8 * 32 * 16
    assert cost.input_bytes == (4 * 8 * 16 + 4 * 16 * 32) * 2


def test_int8_activations_halve_activation_bytes():
    cost = layer_cost(*LINEAR, activation_dtype="int8")
    assert cost.input_bytes == 128
    assert cost.output_bytes == 64


def test_statistical_mask_sets_nonzero_count():
    cost = layer_cost(*LINEAR, mask=random_mask_stats((64, 128), 0.75))
    assert cost.nonzeros == 2048
    assert cost.mask.estimated


def test_round_trip_through_dict():
    mask = np.random.default_rng(0).random((64, 128)) > 0.5
    cost = layer_cost(*LINEAR, mask=mask, weight_dtype="uint4", lut_shape=(4, 1, 16, 1))
    again = LayerCost.from_dict(cost.to_dict())
    assert again == cost
    # Mask fractions are stored to 6 significant digits.
    assert again.mask.zero_groups_input == pytest.approx(cost.mask.zero_groups_input, rel=1e-5)
    assert again.mask.nm_min_zeros == cost.mask.nm_min_zeros


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"op": "gather"}, UnsupportedOpError, "gather"),
        ({"weight_shape": (64, 127)}, ShapeError, "do not match"),
        ({"mask": np.ones((64, 127), bool)}, ShapeError, "mask shape"),
        ({"weight_dtype": "uint4", "lut_shape": (1, 1, 8, 1)}, ParameterShapeError, "lut shape"),
        ({"weight_dtype": "int8", "scale_shape": (64, 3)}, ParameterShapeError, "does not tile"),
        ({"weight_dtype": "int8", "scale_shape": (64, 1), "offset_shape": (1, 1)}, ParameterShapeError, "offset"),
        ({"weight_dtype": "int5", "lut_shape": (1, 1, 32, 1)}, UnknownDtypeError, "int5"),
    ],
)
def test_invalid_layers_raise(kwargs, error, match):
    args = dict(zip(("op", "weight_shape", "input_shape", "output_shape"), LINEAR))
    args.update(kwargs)
    op, weight, x, out = (args.pop(k) for k in ("op", "weight_shape", "input_shape", "output_shape"))
    with pytest.raises(error, match=match):
        layer_cost(op, weight, x, out, **args)


def test_conv_channels_must_match_groups():
    with pytest.raises(ShapeError, match="groups=2"):
        layer_cost("conv", (32, 16, 3, 3), (1, 16, 8, 8), (1, 32, 8, 8), groups=2)
