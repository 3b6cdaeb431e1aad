"""Layer costs read from .mlpackage files that coremltools writes (MIL builder plus optimize APIs)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("coremltools")

from sparseblob.runtime.errors import PackageError  # noqa: E402
from sparseblob.runtime.latency import costs_from_package, predict  # noqa: E402
from sparseblob.runtime.package import load  # noqa: E402

from ._packages import build_package  # noqa: E402

# Every package contains linear [64, 128] on x [1, 128] and conv [32, 16, 3, 3] (valid padding) on
# y [1, 16, 8, 8]; see tests/runtime/_packages.py.
LINEAR_N = 64 * 128
CONV_N = 32 * 16 * 9


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return lambda name: build_package(name, tmp_path_factory)


def _layers(path):
    costs = costs_from_package(path)
    return {c.op: c for c in costs}


@pytest.mark.parametrize("name", ["ios16_plain", "ios18_plain"])
def test_dense_package_costs(package, name):
    layers = _layers(package(name))
    fc, cv = layers["linear"], layers["conv"]
    assert (fc.format, fc.weight_dtype, fc.weight_bytes.total, fc.macs) == ("dense", "fp16", 2 * LINEAR_N, LINEAR_N)
    assert (cv.format, cv.weight_bytes.total) == ("dense", 2 * CONV_N)
    assert cv.macs == 32 * 6 * 6 * 16 * 9
    assert (cv.input_shape, cv.output_shape) == ((1, 16, 8, 8), (1, 32, 6, 6))


@pytest.mark.parametrize("name", ["ios16_prune", "ios18_prune"])
def test_sparse_package_reads_the_real_mask(package, name):
    path = package(name)
    with load(path) as loaded:
        dense = list(loaded.weights().values())
    costs = costs_from_package(path)
    assert len(costs) == len(dense) == 2
    for cost, weight in zip(costs, dense):
        nonzeros = int(np.count_nonzero(weight))
        assert cost.format == "sparse"
        assert cost.nonzeros == nonzeros
        assert cost.weight_bytes.values == 2 * nonzeros
        assert cost.weight_bytes.mask == -(-weight.size // 8)
        assert not cost.mask.estimated
        assert cost.sparsity == pytest.approx(0.5, abs=0.01)


def test_ios16_palettized_package_bytes(package):
    fc = _layers(package("ios16_palettize4"))["linear"]
    assert fc.format == "palettized"
    assert (fc.weight_dtype, fc.weight_bytes.indices, fc.weight_bytes.lut, fc.n_luts) == ("uint4", 4096, 32, 1)


def test_grouped_3_bit_package_counts_tables(package):
    layers = _layers(package("ios18_palettize3_grouped"))
    fc, cv = layers["linear"], layers["conv"]
    assert (fc.weight_dtype, fc.n_luts, fc.lut_entries) == ("uint3", 4, 8)
    assert fc.weight_bytes.indices == LINEAR_N * 3 // 8
    assert fc.weight_bytes.lut == 4 * 8 * 2
    assert cv.n_luts == 2


@pytest.mark.parametrize(
    ("name", "dtype", "values", "scales", "offsets"),
    [
        # iOS16/17 constexpr_affine_dequantize stores a zero point per channel.
        ("ios16_quantize_uint8", "uint8", LINEAR_N, 128, 64),
        ("ios17_quantize_int8", "int8", LINEAR_N, 128, 64),
        ("ios18_quantize_int4_channel", "int4", LINEAR_N // 2, 128, 0),
        # Blocks of 8 input channels: scale [64, 16] fp16 and offset [64, 16] uint4.
        ("ios18_quantize_uint4_block", "uint4", LINEAR_N // 2, 2048, 512),
    ],
)
def test_affine_package_bytes(package, name, dtype, values, scales, offsets):
    fc = _layers(package(name))["linear"]
    assert fc.format == "affine"
    assert (fc.weight_dtype, fc.weight_bytes.values, fc.weight_bytes.scales, fc.weight_bytes.offsets) == (
        dtype, values, scales, offsets)


def test_joint_sparse_palettized_package(package):
    fc = _layers(package("ios18_prune_palettize"))["linear"]
    assert (fc.format, fc.weight_dtype) == ("sparse+palettized", "uint2")
    assert fc.weight_bytes.indices == -(-fc.nonzeros * 2 // 8)
    assert fc.weight_bytes.mask == LINEAR_N // 8


def test_joint_sparse_quantized_package(package):
    fc = _layers(package("ios18_prune_quantize"))["linear"]
    assert (fc.format, fc.weight_dtype) == ("sparse+affine", "int8")
    assert fc.weight_bytes.values == fc.nonzeros
    assert fc.weight_bytes.scales == 128


def test_quantized_lut_package(package):
    fc = _layers(package("ios18_palettize_quantize"))["linear"]
    assert fc.format == "palettized+affine"
    assert fc.weight_bytes.lut == 16
    assert fc.n_scales == 1


def test_predict_reads_a_package_path(package):
    path = package("ios18_palettize3_grouped")
    from_path = predict(path, "a17pro-ios18-ne")
    from_costs = predict(costs_from_package(path), "a17pro-ios18-ne")
    assert from_path.total_ms == pytest.approx(from_costs.total_ms)
    # 3-bit indices are in no published row.
    assert from_path.extrapolated


def test_missing_function_is_reported(package):
    with pytest.raises(PackageError, match="no function"):
        costs_from_package(package("ios18_plain"), function="decoder")
