"""Output metrics, inputs, reference matching and the options that are usage errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparseblob.runtime import load
from sparseblob.runtime.errors import OptionError
from sparseblob.verify.outputs import RunOutcome, compare_reference, compare_sparse_dense, output_metrics, random_inputs, read_inputs
from sparseblob.verify.report import Status
from sparseblob.verify.verify import verify_package

from ._packages import FIXTURES

MLP = FIXTURES / "models" / "mlp"
CNN = FIXTURES / "models" / "cnn_residual"


@pytest.mark.parametrize(
    ("actual", "expected", "metrics"),
    [
        ([1.0, 2.0], [1.0, 2.0], {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}),
        ([0.0, 0.0], [0.0, 0.0], {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}),
        ([1.0, 0.0], [0.0, 0.0], {"max_abs": 1.0, "max_rel": math.inf, "cosine": 0.0}),
        ([1.0, 3.0], [1.0, 4.0], {"max_abs": 1.0, "max_rel": 0.25, "cosine": 13 / (math.sqrt(10) * math.sqrt(17))}),
        ([-1.0, -2.0], [1.0, 2.0], {"max_abs": 4.0, "max_rel": 2.0, "cosine": -1.0}),
        ([np.nan, 1.0], [np.nan, 1.0], {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}),
    ],
)
def test_output_metrics(actual, expected, metrics):
    found = output_metrics(np.array(actual), np.array(expected))

    for key, value in metrics.items():
        assert found[key] == pytest.approx(value), key


def test_infinity_gives_nan_cosine():
    found = output_metrics(np.array([np.inf, 1.0]), np.array([1.0, 1.0]))

    assert math.isnan(found["cosine"])
    assert found["max_abs"] == math.inf


def test_nan_in_one_output_gives_nan_metrics():
    found = output_metrics(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))

    assert all(math.isnan(value) for value in found.values())


def test_sparse_dense_tolerance_is_fp32():
    dense = RunOutcome({"y": np.array([1.0, 100.0], dtype=np.float32)})
    close = RunOutcome({"y": np.array([1.0 + 5e-6, 100.0 + 5e-3], dtype=np.float32)})
    far = RunOutcome({"y": np.array([1.0 + 1e-3, 100.0], dtype=np.float32)})

    assert compare_sparse_dense(close, dense, {"y": "y"})[0].status is Status.PASS
    assert compare_sparse_dense(far, dense, {"y": "y"})[0].status is Status.FAIL


def test_integer_outputs_must_be_equal():
    dense = RunOutcome({"i": np.array([1, 2], dtype=np.int32)})
    off = RunOutcome({"i": np.array([1, 3], dtype=np.int32)})

    assert compare_sparse_dense(off, dense, {"i": "i"})[0].status is Status.FAIL


@pytest.mark.parametrize(("cosine_floor", "status"), [(0.99, Status.FAIL), (0.9, Status.PASS)])
def test_reference_judged_by_cosine(cosine_floor, status):
    reference = RunOutcome({"y": np.array([1.0, 2.0, 3.0])})
    outcome = RunOutcome({"y": np.array([1.0, 2.5, 2.5])})

    row = compare_reference(outcome, reference, {"y": "y"}, min_cosine=cosine_floor)[0]

    assert row.status is status
    assert row.metrics["cosine"] == pytest.approx(0.98, abs=0.01)


def test_new_nan_fails_reference():
    reference = RunOutcome({"y": np.array([1.0, 2.0])})
    outcome = RunOutcome({"y": np.array([1.0, np.inf])})

    row = compare_reference(outcome, reference, {"y": "y"})[0]

    assert row.status is Status.FAIL
    assert "NaN or infinite" in row.message


def test_unsupported_op_skips_reference():
    outcome = RunOutcome({}, "op 'x': op type 'foo' is not supported", unsupported=True)

    row = compare_reference(outcome, RunOutcome({"y": np.zeros(1)}), {"y": "y"})[0]

    assert row.status is Status.SKIP


def test_random_inputs_follow_declared_types():
    with load(CNN / "ios18_dense.mlpackage") as package:
        function = package.function()
        first = random_inputs(function, seed=3)
        second = random_inputs(function, seed=3)
        other = random_inputs(function, seed=4)

    assert first["x"].shape == (1, 3, 32, 32)
    assert first["x"].dtype == np.float16
    assert np.array_equal(first["x"], second["x"])
    assert not np.array_equal(first["x"], other["x"])


def test_read_inputs_rejects_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))

    with pytest.raises(OptionError, match="expected an .npz file"):
        read_inputs(path)


def test_read_inputs_rejects_missing_file(tmp_path):
    with pytest.raises(OptionError, match="cannot read"):
        read_inputs(tmp_path / "missing.npz")


def test_reference_with_other_inputs_is_option_error():
    with pytest.raises(OptionError, match="in the package but"):
        verify_package(MLP / "ios18_prune50.mlpackage", reference=CNN / "ios18_dense.mlpackage")


def test_inputs_with_wrong_name_are_option_error(tmp_path):
    path = tmp_path / "inputs.npz"
    np.savez(path, image=np.zeros((1, 64), np.float16))

    with pytest.raises(OptionError, match=r"missing \['x'\], unknown \['image'\]"):
        verify_package(MLP / "ios18_prune50.mlpackage", inputs=path)


def test_inputs_with_wrong_shape_are_option_error():
    with pytest.raises(OptionError, match="has shape"):
        verify_package(MLP / "ios18_prune50.mlpackage", inputs={"x": np.zeros((2, 64), np.float16)})


def test_expected_outputs_need_inputs():
    with pytest.raises(OptionError, match="pass inputs too"):
        verify_package(MLP / "ios18_dense.mlpackage", expected_outputs=MLP / "torch_outputs.npz")


def test_expected_outputs_with_wrong_name_are_option_error():
    with pytest.raises(OptionError, match="matched by name"):
        verify_package(MLP / "ios18_dense.mlpackage", inputs=MLP / "inputs.npz", expected_outputs={"z": np.zeros((1, 10))})


@pytest.mark.parametrize("value", [1.5, -2.0])
def test_threshold_out_of_range_is_option_error(value):
    with pytest.raises(OptionError, match="min_cosine"):
        verify_package(MLP / "ios18_dense.mlpackage", min_cosine=value)


def test_missing_package_is_option_error(tmp_path):
    with pytest.raises(OptionError, match="not a directory"):
        verify_package(tmp_path / "missing.mlpackage")


def test_malformed_package_fails_load(tmp_path):
    package = tmp_path / "broken.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{")

    report = verify_package(package)

    assert report.exit_code == 1
    assert [(row.check, row.status) for row in report.checks] == [("load", Status.FAIL)]


def test_progress_reports_every_step():
    calls = []

    verify_package(
        MLP / "ios18_prune50.mlpackage",
        reference=MLP / "ios18_dense.mlpackage",
        progress=lambda description, completed, total: calls.append((description, completed, total)),
    )

    assert calls[-1] == ("done", 6, 6)
    assert [completed for _, completed, _ in calls] == list(range(7))
    assert calls[0][0] == "decompressing with coremltools"


def test_settings_recorded():
    report = verify_package(MLP / "ios18_prune50.mlpackage", seed=5, expect="sparsity>=0.4", coremltools=False)

    assert report.settings["seed"] == 5
    assert report.settings["expect"] == "sparsity>=0.4"
    assert report.settings["inputs"] == "random"
    assert all(row.status is Status.SKIP for row in report.rows(check="coremltools"))
