"""Whole converted models run by the interpreter, against torch and between weight paths.

The fixture models were converted from torch by coremltools; ``torch_outputs.npz`` holds the
torch model's fp32 outputs on the committed inputs. Only the uncompressed packages compute
the same function as torch. Every package, compressed or not, must give the same outputs on the
sparse and the dense weight paths.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparseblob.runtime.interpreter import run, run_with_trace
from sparseblob.runtime.package import load
from sparseblob.verify.compare import assert_close
from tests.conftest import FIXTURES

INDEX = json.loads((FIXTURES / "index.json").read_text())
MODELS = INDEX["models"]
DENSE_MODELS = [entry for entry in MODELS if not entry["compression"]]


def _inputs(entry: dict) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / entry["inputs_file"]) as archive:
        return {name: archive[name] for name in archive.files}


def _torch_outputs(entry: dict) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / entry["torch_outputs_file"]) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.mark.parametrize("entry", DENSE_MODELS, ids=[entry["name"] for entry in DENSE_MODELS])
def test_dense_model_matches_torch(entry):
    package = load(FIXTURES / entry["package"])
    outputs = run(package, _inputs(entry), weights="dense")
    expected = _torch_outputs(entry)

    assert sorted(outputs) == sorted(expected)
    for name, value in outputs.items():
        # The program computes and stores every activation in fp16, so the fp16 row applies.
        assert_close(value.astype(np.float32), expected[name].astype(np.float32), dtype="fp16", name=name)


@pytest.mark.parametrize("entry", MODELS, ids=[entry["name"] for entry in MODELS])
def test_sparse_path_matches_dense_path(entry):
    package = load(FIXTURES / entry["package"])
    inputs = _inputs(entry)
    dense = run(package, inputs, weights="dense", round_to_declared=False)
    sparse = run(package, inputs, weights="sparse", round_to_declared=False)

    assert sorted(sparse) == sorted(dense)
    for name in dense:
        # Without per-op rounding to fp16, the two paths differ only in fp32 summation order.
        assert_close(sparse[name], dense[name], dtype="fp32", name=name)


SPARSE_MODELS = [
    entry for entry in MODELS if any(step["technique"] == "pruning" for step in entry["compression"])
]


@pytest.mark.parametrize("entry", SPARSE_MODELS, ids=[entry["name"] for entry in SPARSE_MODELS])
def test_pruned_model_runs_sparse_kernels(entry):
    package = load(FIXTURES / entry["package"])
    result = run_with_trace(package, _inputs(entry), weights="sparse")

    kernels = [item.kernel for item in result.trace if item.type in ("linear", "matmul", "conv")]
    assert "sparse" in kernels


def test_dense_mode_runs_no_sparse_kernel():
    entry = SPARSE_MODELS[0]
    package = load(FIXTURES / entry["package"])
    result = run_with_trace(package, _inputs(entry), weights="dense")

    assert {item.kernel for item in result.trace} == {"dense"}
