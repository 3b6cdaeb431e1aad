"""Packages written by compress_package, against coremltools' own loader and decompression.

Every pattern (dense, 50% unstructured, 2:4, blocks of 4) is combined with every value format
(fp16 values; palettized with 1, 2, 3, 4, 6 and 8 bits per tensor, per group of 16 channels and
as vectors of 4; quantized to int8, uint8, int4 and uint4, symmetric and affine, per tensor,
per channel and per block of 8) and written for iOS16 and iOS18 from the dense format fixtures
(linear ``[64, 128]``, conv and grouped conv ``[32, 16, 3, 3]``).

A written package must load in coremltools (``MLModel`` and its milproto program loader), and
``decompress_weights`` must give, bit for bit, the weight that the encoder's array API produces
for the same settings: the mask applied, then the values palettized or quantized, decoded by
coremltools' static ``decompress`` methods. The runtime's ``Package.weights()`` must agree. The
combinations that iOS16 ops cannot express must raise ``EncodingError`` and write nothing.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import pytest

logging.getLogger("coremltools").setLevel(logging.ERROR)

import coremltools as ct  # noqa: E402
import coremltools.optimize.coreml as cto  # noqa: E402

from sparseblob.encoder import (  # noqa: E402
    apply_mask,
    block_mask,
    encode_sparse,
    magnitude_mask,
    n_m_mask,
    palettize_nonzero,
    palettize_weight,
    quantize_nonzero,
    quantize_weight,
)
from sparseblob.encoder.config import CompressionConfig  # noqa: E402
from sparseblob.encoder.mlpackage import compress_package  # noqa: E402
from sparseblob.runtime import load  # noqa: E402
from sparseblob.runtime.errors import EncodingError  # noqa: E402
from sparseblob.verify.compare import assert_bits_equal  # noqa: E402

from ..conftest import FIXTURES  # noqa: E402
from ._decode import decode  # noqa: E402

# Consumer op name -> weight const name in the dense format fixtures.
WEIGHTS = {"linear": "linear_weight", "conv": "conv_weight", "grouped_conv": "grouped_conv_weight"}

PATTERNS = {
    "dense": {},
    "unstructured50": {"pattern": "unstructured", "sparsity": 0.5},
    "2of4": {"pattern": "n_m", "n_m": "2:4"},
    "block4": {"pattern": "block", "sparsity": 0.5, "pattern_block_size": 4},
}

VALUES = {"fp16": {}}
for _nbits in (1, 2, 3, 4, 6, 8):
    VALUES[f"lut{_nbits}_tensor"] = {"values": "palettize", "nbits": _nbits}
    VALUES[f"lut{_nbits}_group16"] = {"values": "palettize", "nbits": _nbits, "group_size": 16}
    VALUES[f"lut{_nbits}_vector4"] = {"values": "palettize", "nbits": _nbits, "cluster_dim": 4}
for _dtype in ("int8", "uint8", "int4", "uint4"):
    for _mode in ("symmetric", "affine"):
        for _granularity in ("per_tensor", "per_channel", "per_block"):
            _options = {
                "values": "quantize",
                "quantize_dtype": _dtype,
                "quantize_mode": _mode,
                "quantize_granularity": _granularity,
            }
            if _granularity == "per_block":
                _options["quantize_block_size"] = 8
            VALUES[f"{_dtype}_{_mode}_{_granularity}"] = _options

CASES = [(pattern, values) for pattern in PATTERNS for values in VALUES if (pattern, values) != ("dense", "fp16")]


def ios16_problem(pattern: str, values: str) -> str | None:
    """Return a fragment of the error iOS16 raises for a combination, or None when it is supported."""
    options = VALUES[values]
    if pattern != "dense" and options.get("values"):
        return "joint op chain"
    if options.get("nbits") == 3:
        return "3-bit LUTs"
    if "group_size" in options:
        return "grouped LUTs"
    if "cluster_dim" in options:
        return "vector LUTs"
    if options.get("quantize_dtype") in ("int4", "uint4"):
        return "starts with iOS18"
    if options.get("quantize_granularity") == "per_block":
        return "per-block quantization"
    return None


def _dense_package(target: str):
    return FIXTURES / "formats" / target / "dense.mlpackage"


@functools.cache
def dense_weights(target: str) -> dict[str, np.ndarray]:
    """The fixture's weights by const name, copied out of the blob file."""
    with load(_dense_package(target)) as package:
        return {
            op.outputs[0].name: np.array(op.attributes["val"].read())
            for op in package.function().operations
            if op.type == "const" and op.outputs[0].name in WEIGHTS.values()
        }


def intended_weight(weight: np.ndarray, pattern: str, values: str) -> np.ndarray:
    """The dense weight the array API gives for these settings, decoded by coremltools.

    Every fixture weight has its output channels on axis 0 and its input channels on axis 1.
    """
    options = {**PATTERNS[pattern], **VALUES[values]}
    mask = None
    if pattern == "unstructured50":
        mask = magnitude_mask(weight, 0.5)
    elif pattern == "2of4":
        mask = n_m_mask(weight, 2, 4, axis=1)
    elif pattern == "block4":
        mask = block_mask(weight, 0.5, 4, axis=0)
    pruned = weight if mask is None else apply_mask(weight, mask)

    if options.get("values") == "palettize":
        lut_options = {
            "mode": "kmeans",
            "group_size": options.get("group_size"),
            "cluster_dim": options.get("cluster_dim", 1),
        }
        if mask is None:
            return decode(palettize_weight(weight, options["nbits"], **lut_options))
        return decode(palettize_nonzero(pruned, options["nbits"], **lut_options))
    if options.get("values") == "quantize":
        quant_options = {
            "mode": options["quantize_mode"],
            "granularity": options["quantize_granularity"],
            "block_size": options.get("quantize_block_size"),
        }
        if mask is None:
            return decode(quantize_weight(weight, options["quantize_dtype"], **quant_options))
        return decode(quantize_nonzero(pruned, options["quantize_dtype"], **quant_options))
    return decode(encode_sparse(pruned))


def coremltools_weights(path) -> dict[str, np.ndarray]:
    """Dense weights from coremltools' ``decompress_weights``, by consumer op name."""
    model = ct.models.MLModel(str(path), skip_model_load=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        decompressed = cto.decompress_weights(model)
    found = {}
    for op in decompressed._mil_program.functions["main"].operations:
        if op.op_type in ("linear", "conv"):
            found[op.name] = op.inputs["weight"].val
    return found


def load_program(path):
    """Load a package's MIL program with coremltools' milproto loader, which type-checks every op."""
    from coremltools.models.utils import _apply_graph_pass

    model = ct.models.MLModel(str(path), skip_model_load=True)
    return _apply_graph_pass(model, [], return_pymil_prog=True)


@pytest.mark.parametrize("target", ["ios16", "ios18"])
@pytest.mark.parametrize(("pattern", "values"), CASES, ids=[f"{p}-{v}" for p, v in CASES])
def test_written_package_decodes_as_intended(tmp_path, target, pattern, values):
    config = CompressionConfig.from_options(**PATTERNS[pattern], **VALUES[values])
    out = tmp_path / "out.mlpackage"
    problem = ios16_problem(pattern, values) if target == "ios16" else None

    if problem is not None:
        with pytest.raises(EncodingError, match=problem):
            compress_package(_dense_package(target), out, config)
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []
        return

    report = compress_package(_dense_package(target), out, config)

    assert sorted(entry.name for entry in report.compressed) == sorted(WEIGHTS.values())
    assert report.skipped == []
    assert load_program(out).functions["main"] is not None
    decompressed = coremltools_weights(out)
    with load(out) as package:
        ours = package.weights()
    for consumer, const in WEIGHTS.items():
        expected = intended_weight(dense_weights(target)[const], pattern, values)
        assert_bits_equal(decompressed[consumer], expected, name=f"coremltools {consumer}")
        assert_bits_equal(ours[const], expected, name=f"runtime {consumer}")
