"""verify_package passes on every committed fixture and on packages that sparseblob's encoder writes.

Format fixtures run every check: structure, the coremltools cross-check, their committed
expected arrays and the model on seeded random inputs. Model fixtures also run on their
committed inputs against their dense package, and dense models against torch's outputs.
"""

from __future__ import annotations

import pytest

from sparseblob.verify.report import Status
from sparseblob.verify.verify import verify_package

from ._packages import FIXTURES, INDEX, entry

# The model fixtures are untrained torch models compressed with no fine-tuning; 2:4 pruning of
# mobilenet_v2_block measures an output cosine of 0.897 against its dense package.
MODEL_MIN_COSINE = 0.85


def _compressed(section: str) -> list:
    return [
        pytest.param(item["name"], id=item["name"])
        for item in INDEX.get(section, [])
        if any(weight["chain"] for weight in item["weights"])
    ]


def _dense_models() -> list:
    return [
        pytest.param(item["name"], id=item["name"])
        for item in INDEX.get("models", [])
        if not any(weight["chain"] for weight in item["weights"])
    ]


def _statuses(report) -> dict[tuple[str, str], Status]:
    return {(row.check, row.subject): row.status for row in report.checks}


@pytest.mark.parametrize("name", _compressed("formats"))
def test_format_fixture_verifies(name):
    item = entry(name)

    report = verify_package(FIXTURES / item["package"], expected=FIXTURES / item["expected"])
    rows = _statuses(report)

    assert report.exit_code == 0, [row for row in report.checks if row.status is Status.FAIL]
    for weight in item["weights"]:
        for check in ("decode", "finite", "pattern", "coremltools", "expected"):
            assert rows[(check, weight["output"])] is Status.PASS, (check, weight["output"])
    for output in item["outputs"]:
        assert rows[("sparse_vs_dense", output["name"])] is Status.PASS


@pytest.mark.parametrize("name", _compressed("models"))
def test_model_fixture_verifies(name):
    item = entry(name)
    model = FIXTURES / "models" / item["model"]

    report = verify_package(
        FIXTURES / item["package"],
        reference=FIXTURES / item["dense_package"],
        inputs=model / "inputs.npz",
        min_cosine=MODEL_MIN_COSINE,
    )
    rows = _statuses(report)

    assert report.exit_code == 0, [row for row in report.checks if row.status is Status.FAIL]
    for weight in item["weights"]:
        if weight["chain"]:
            assert rows[("coremltools", weight["output"])] is Status.PASS
            assert rows[("reference_weight", weight["output"])] is Status.PASS
    assert rows[("reference_output", "y")] is Status.PASS


@pytest.mark.parametrize("name", _dense_models())
def test_dense_model_matches_torch(name):
    item = entry(name)
    model = FIXTURES / "models" / item["model"]

    report = verify_package(
        FIXTURES / item["package"], inputs=model / "inputs.npz", expected_outputs=model / "torch_outputs.npz"
    )

    assert report.exit_code == 0
    assert _statuses(report)[("expected_output", "y")] is Status.PASS


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("ios18/joint_prune50_uint4_linear_block8", ["linear_weight_sparsified"]),
        (
            "mobilenet_v2_block/ios18_joint_prune50_int8",
            ["const_4_to_fp16_sparsified", "const_8_to_fp16_sparsified", "const_10_to_fp16_sparsified"],
        ),
    ],
)
def test_unused_zero_scales_warn(name, weights):
    report = verify_package(FIXTURES / entry(name)["package"], run_model=False)
    warned = [row for row in report.checks if row.status is Status.WARN]

    assert report.status is Status.WARN
    assert report.exit_code == 0
    assert sorted(row.subject for row in warned) == sorted(weights)
    assert all(row.check == "scale" and "mask bits are all 0" in row.message for row in warned)


@pytest.mark.parametrize(
    ("name", "expect", "pattern"),
    [
        ("ios18/prune_2of4_dim1", "2:4@axis1", "2:4@axis1"),
        ("ios16/prune_2of4_dim0", "2:4@axis0", "2:4@axis0"),
        ("ios18/prune_block4_dim0", "block4@axis0, sparsity>=0.4", "block4@axis0"),
        ("ios16/prune_block4_dim1", "block4", "block4@axis1"),
        ("ios18/prune_magnitude50", "sparsity>=0.49, sparsity<=0.51", "unstructured"),
        ("ios18/joint_prune2of4_palettize2", "2:4@axis1", "2:4@axis1"),
    ],
)
def test_fixture_pattern_detected_and_expected(name, expect, pattern):
    report = verify_package(FIXTURES / entry(name)["package"], expect=expect, coremltools=False, run_model=False)
    rows = report.rows(check="pattern")

    assert report.exit_code == 0
    assert len(rows) == 3
    assert all(row.measured.startswith(pattern) for row in rows)


@pytest.mark.parametrize(
    ("target", "options"),
    [
        ("ios16", {"pattern": "unstructured", "sparsity": 0.5}),
        ("ios16", {"values": "palettize", "nbits": 4}),
        ("ios18", {"pattern": "n_m", "n_m": "2:4"}),
        ("ios18", {"values": "quantize", "quantize_dtype": "int4", "quantize_granularity": "per_block", "quantize_block_size": 16}),
        ("ios18", {"pattern": "unstructured", "sparsity": 0.5, "values": "quantize", "quantize_dtype": "int8"}),
        ("ios18", {"pattern": "n_m", "n_m": "2:4", "values": "palettize", "nbits": 4}),
    ],
)
def test_encoder_package_verifies(tmp_path, target, options):
    from sparseblob.encoder.config import CompressionConfig
    from sparseblob.encoder.mlpackage import compress_package

    model = FIXTURES / "models" / "mlp"
    dense = model / f"{target}_dense.mlpackage"
    compressed = tmp_path / "compressed.mlpackage"
    compress_package(dense, compressed, CompressionConfig.from_options(min_elements=256, **options))

    report = verify_package(compressed, reference=dense, inputs=model / "inputs.npz", min_cosine=MODEL_MIN_COSINE)

    assert report.exit_code == 0, [row for row in report.checks if row.status is Status.FAIL]
    assert report.rows(check="coremltools")
    assert all(row.status is Status.PASS for row in report.rows(check="coremltools"))
