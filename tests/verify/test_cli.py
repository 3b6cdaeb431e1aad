"""The installed ``sparseblob`` command, run in a subprocess for every subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURES

COMMAND = Path(sys.executable).with_name("sparseblob")
DENSE = FIXTURES / "formats/ios18/dense.mlpackage"
PRUNED = FIXTURES / "formats/ios18/prune_magnitude50.mlpackage"
TWO_OF_FOUR = FIXTURES / "formats/ios18/prune_2of4_dim1.mlpackage"
MLP = FIXTURES / "models/mlp/ios18_prune50.mlpackage"
MLP_INPUTS = FIXTURES / "models/mlp/inputs.npz"


def sparseblob(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COMMAND), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_usage_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_command_is_installed():
    assert COMMAND.is_file()


def test_help_lists_every_subcommand():
    result = sparseblob("--help")

    assert result.returncode == 0
    for name in ("inspect", "run", "encode", "verify", "latency", "demo"):
        assert name in result.stdout


def test_version():
    result = sparseblob("--version")

    assert result.returncode == 0
    assert "version" in result.stdout


def test_inspect_json_reports_density():
    result = sparseblob("inspect", PRUNED, "--json")

    assert result.returncode == 0, result.stderr
    weights = json.loads(result.stdout)["functions"][0]["weights"]
    assert [weight["chain"] for weight in weights] == [["constexpr_sparse_to_dense"]] * 3
    assert all(0.49 < weight["density"] < 0.51 for weight in weights)


def test_inspect_table():
    result = sparseblob("inspect", TWO_OF_FOUR)

    assert result.returncode == 0, result.stderr
    assert "sparse_to_dense" in result.stdout


def test_inspect_rejects_a_broken_package(tmp_path):
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    (broken / "Manifest.json").write_text("{")

    assert_usage_error(sparseblob("inspect", broken))


def test_run_writes_outputs(tmp_path):
    output = tmp_path / "out.npz"

    result = sparseblob("run", MLP, "--inputs", MLP_INPUTS, "-o", output)

    assert result.returncode == 0, result.stderr
    with np.load(output) as archive:
        assert archive.files == ["y"]
        assert archive["y"].shape == (1, 10)


def test_run_with_input_file_and_trace(tmp_path):
    with np.load(MLP_INPUTS) as archive:
        np.save(tmp_path / "x.npy", archive["x"])

    result = sparseblob("run", MLP, "--input", f"x={tmp_path / 'x.npy'}", "--trace", "--weights", "dense")

    assert result.returncode == 0, result.stderr
    assert "linear" in result.stdout
    assert "y:" in result.stdout


def test_run_rejects_missing_input():
    assert_usage_error(sparseblob("run", MLP))


def test_run_rejects_malformed_input_option():
    assert_usage_error(sparseblob("run", MLP, "--input", "x"))


def test_encode_then_verify(tmp_path):
    output = tmp_path / "p24.mlpackage"

    encoded = sparseblob("encode", DENSE, "-o", output, "--n-m", "2:4", "--min-elements", "100", "--json")
    # 2:4 pruning of these untrained random weights moves the outputs to a cosine of about 0.86.
    verified = sparseblob(
        "verify", output, "--reference", DENSE, "--expect", "2:4@axis1", "--min-cosine", "0.8", "--json"
    )

    assert encoded.returncode == 0, encoded.stderr
    assert len(json.loads(encoded.stdout)["compressed"]) == 3
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["status"] == "pass"


def test_encode_lists_small_weights(tmp_path):
    dense_mlp = FIXTURES / "models/mlp/ios18_dense.mlpackage"
    text = sparseblob("encode", dense_mlp, "-o", tmp_path / "text.mlpackage", "--sparsity", "0.5")
    as_json = sparseblob("encode", dense_mlp, "-o", tmp_path / "json.mlpackage", "--sparsity", "0.5", "--json")

    assert text.returncode == 0, text.stderr
    assert "left dense head_weight_to_fp16: 640 elements of rank 2" in text.stdout
    assert "below the size limit 1" in text.stdout
    below = json.loads(as_json.stdout)["below_limit"]
    assert [entry["name"] for entry in below] == ["head_weight_to_fp16"]


def test_encode_refuses_existing_output(tmp_path):
    output = tmp_path / "out.mlpackage"
    assert sparseblob("encode", DENSE, "-o", output, "--sparsity", "0.5").returncode == 0

    result = sparseblob("encode", DENSE, "-o", output, "--sparsity", "0.5")

    assert_usage_error(result)
    assert "--overwrite" in result.stderr


def test_encode_rejects_two_patterns(tmp_path):
    result = sparseblob("encode", DENSE, "-o", tmp_path / "x.mlpackage", "--n-m", "2:4", "--block", "4")

    assert_usage_error(result)
    assert not (tmp_path / "x.mlpackage").exists()


def test_encode_rejects_invalid_n_m(tmp_path):
    assert_usage_error(sparseblob("encode", DENSE, "-o", tmp_path / "x.mlpackage", "--n-m", "5:4"))


def test_verify_fails_on_wrong_pattern(tmp_path):
    junit = tmp_path / "report.xml"

    result = sparseblob("verify", PRUNED, "--expect", "2:4", "--no-run", "--junit", junit)

    assert result.returncode == 1
    failed = [case.get("name") for case in ElementTree.parse(junit).getroot().iter("testcase") if case.find("failure") is not None]
    assert "linear_weight_sparsified" in failed


def test_verify_rejects_malformed_expectation():
    assert_usage_error(sparseblob("verify", PRUNED, "--expect", "2of4"))


def test_latency_json():
    result = sparseblob("latency", PRUNED, "--device", "a16-ios17-ne", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device"] == "a16-ios17-ne"
    assert data["total_ms"] > 0
    assert len(data["layers"]) == 3


def test_latency_compare_prints_ratio():
    result = sparseblob("latency", DENSE, "--compare", PRUNED)

    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout


def test_latency_lists_devices():
    result = sparseblob("latency", "--list-devices")

    assert result.returncode == 0
    assert "a17pro-ios18-ne" in result.stdout.split()


def test_latency_rejects_unknown_device():
    assert_usage_error(sparseblob("latency", DENSE, "--device", "no-such-device"))


@pytest.mark.slow
def test_demo_passes(tmp_path):
    result = sparseblob("demo", "--keep", tmp_path / "demo")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary" in result.stdout
    assert "FAIL" not in result.stdout


def test_unknown_subcommand_is_usage_error():
    assert_usage_error(sparseblob("frobnicate"))


@pytest.fixture(scope="module")
def magika_model():
    magika = pytest.importorskip("magika")
    return Path(magika.__file__).parent / "models" / "standard_v3_3" / "model.onnx"


def test_onnx_encode_inspect_run_verify(tmp_path, magika_model):
    output = tmp_path / "magika-sparse.onnx"

    encoded = sparseblob("encode", magika_model, "-o", output, "--sparsity", "0.5", "--json")
    inspected = sparseblob("inspect", output)
    verified = sparseblob("verify", output, "--reference", magika_model, "--json")

    assert encoded.returncode == 0, encoded.stderr
    assert json.loads(inspected.stdout)["weights"]
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["passed"] is True


def test_onnx_verify_needs_reference(tmp_path, magika_model):
    assert_usage_error(sparseblob("verify", magika_model))


def test_encode_needs_something_to_do(tmp_path):
    result = sparseblob("encode", DENSE, "-o", tmp_path / "copy.mlpackage")

    assert_usage_error(result)
    assert not (tmp_path / "copy.mlpackage").exists()


def test_encode_rejects_sparsity_with_n_m(tmp_path):
    assert_usage_error(sparseblob("encode", DENSE, "-o", tmp_path / "x.mlpackage", "--sparsity", "0.5", "--n-m", "2:4"))


def test_encode_rejects_format_mismatch(tmp_path):
    assert_usage_error(sparseblob("encode", DENSE, "-o", tmp_path / "x.onnx", "--sparsity", "0.5"))


def test_run_rejects_missing_output_directory(tmp_path):
    result = sparseblob("run", MLP, "--inputs", MLP_INPUTS, "-o", tmp_path / "no" / "out.npz")

    assert_usage_error(result)


def test_verify_rejects_missing_junit_directory(tmp_path):
    assert_usage_error(sparseblob("verify", PRUNED, "--no-run", "--junit", tmp_path / "no" / "v.xml"))


def test_latency_rejects_onnx(magika_model):
    assert_usage_error(sparseblob("latency", magika_model))


def test_onnx_verify_rejects_package_options(magika_model):
    assert_usage_error(sparseblob("verify", magika_model, "--reference", magika_model, "--expect", "2:4"))


def test_run_rejects_unreadable_inputs_file(tmp_path):
    bad = tmp_path / "inputs.npz"
    bad.write_text("not an archive")

    assert_usage_error(sparseblob("run", MLP, "--inputs", bad))
