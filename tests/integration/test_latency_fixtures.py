"""The latency model on every fixture package and on packages the encoder writes."""

from __future__ import annotations

import json
import math

import pytest

from sparseblob.encoder.config import CompressionConfig
from sparseblob.encoder.mlpackage import compress_package
from sparseblob.runtime.latency import list_profiles, predict
from sparseblob.runtime.package import load
from tests.conftest import FIXTURES

INDEX = json.loads((FIXTURES / "index.json").read_text())
PACKAGES = [entry["package"] for entry in INDEX["formats"] + INDEX["models"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_latency_predicts_every_fixture(package):
    loaded = load(FIXTURES / package)

    for profile in list_profiles():
        prediction = predict(loaded, profile)

        assert math.isfinite(prediction.total_ms)
        assert prediction.total_ms > 0
        assert all(layer.ms > 0 for layer in prediction.layers)


@pytest.mark.parametrize(
    "options",
    [
        {"pattern": "unstructured", "sparsity": 0.5},
        {"pattern": "n_m", "n_m": "2:4"},
        {"pattern": "block", "sparsity": 0.5, "pattern_block_size": 4},
        {"values": "palettize", "nbits": 4, "palettize_mode": "uniform"},
        {"values": "quantize", "quantize_dtype": "int8"},
    ],
    ids=["unstructured", "2of4", "block4", "palettize4", "int8"],
)
def test_latency_predicts_encoder_output(tmp_path, options):
    dense = FIXTURES / "formats/ios18/dense.mlpackage"
    output = tmp_path / "compressed.mlpackage"
    compress_package(dense, output, CompressionConfig.from_options(min_elements=100, **options))

    for profile in list_profiles():
        prediction = predict(load(output), profile)

        assert len(prediction.layers) == 3
        assert math.isfinite(prediction.total_ms)
