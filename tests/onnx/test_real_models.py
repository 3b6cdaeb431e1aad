"""Real trained models from installed packages: compress, run four ways, compare.

magika's file-type model and rapidocr's text classification, detection and recognition models
are compressed at 50% unstructured, 2:4 and blocks of 4, each with fp16, 4-bit palettized and
int8 values. sparseblob's run of each file must equal onnxruntime's run of the same file,
which decodes through the function bodies. Both must equal onnxruntime's run of the
densified pruned weights. The error against the original model is recorded, not checked.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from sparseblob.encoder.onnx_compress import compress_onnx  # noqa: E402
from sparseblob.runtime.onnx_run import inspect_onnx  # noqa: E402
from sparseblob.verify.compare import tolerance_for  # noqa: E402
from sparseblob.verify.onnx_verify import onnxruntime_run, random_inputs, verify_onnx  # noqa: E402

from . import _models  # noqa: E402

# name: (package, file inside the package, input shapes for random inputs)
MODELS = {
    "magika": ("magika", "models/standard_v3_3/model.onnx", None),
    "ocr_cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}),
    "ocr_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 64, 64)}),
    "ocr_rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", {"x": (1, 3, 48, 64)}),
}
PATTERNS = {"sparse50": {"sparsity": 0.5}, "nm24": {"n_m": "2:4"}, "block4": {"sparsity": 0.5, "block": 4}}
VALUES = {
    "fp16": {"values": "fp16"},
    "lut4": {"values": "palettize", "nbits": 4},
    "int8": {"values": "quantize", "quantize_dtype": "int8"},
}
CASES = list(itertools.product(MODELS, PATTERNS, VALUES))


def _model_path(name: str):
    package, relative, _ = MODELS[name]
    pytest.importorskip(package)
    path = _models.package_file(package, relative)
    if not path.is_file():
        pytest.skip(f"{package} does not ship {relative}")
    return path


def _inputs(name: str, path) -> dict[str, np.ndarray]:
    if name == "ocr_det":
        # Detection gives near-zero output on noise; a page of glyph rows gives 0..1.
        return {"x": _models.text_page(64, 64)}
    return random_inputs(path, seed=0, shapes=MODELS[name][2])


@pytest.fixture(scope="module")
def compressed_files(tmp_path_factory):
    """Compress each (model, pattern, values) once per module; map the case to (path, report)."""
    cache: dict[tuple[str, str, str], tuple] = {}
    directory = tmp_path_factory.mktemp("compressed")

    def get(model: str, pattern: str, values: str):
        key = (model, pattern, values)
        if key not in cache:
            out = directory / f"{model}.{pattern}.{values}.onnx"
            report = compress_onnx(_model_path(model), out, **PATTERNS[pattern], **VALUES[values])
            cache[key] = (out, report)
        return cache[key]

    return get


@pytest.mark.parametrize("model", MODELS)
def test_model_outputs_exceed_tolerance(model):
    # The checked comparisons can fail only if the outputs are well above the tolerance.
    path = _model_path(model)
    outputs = onnxruntime_run(path, _inputs(model, path))
    for name, value in outputs.items():
        assert np.abs(value).max() > 100 * tolerance_for(value.dtype).atol, name


@pytest.mark.parametrize("model, pattern, values", CASES, ids=["-".join(case) for case in CASES])
def test_compressed_model_runs_agree(model, pattern, values, compressed_files, record_property):
    path = _model_path(model)
    out, report = compressed_files(model, pattern, values)
    assert report.weights, "no weight was compressed"

    result = verify_onnx(out, path, _inputs(model, path))
    assert result.kernel_nodes > 0
    for comparison in result.checked():
        assert comparison.passed, (
            f"{comparison.output}: {comparison.actual} versus {comparison.expected}: {comparison.mismatched} "
            f"elements outside tolerance, max abs error {comparison.max_abs:.3g}"
        )
    for comparison in result.error_vs_original():
        assert np.isfinite(comparison.max_abs)
        record_property(
            f"error_vs_original[{comparison.output}]",
            f"max_abs={comparison.max_abs:.3g} max_rel={comparison.max_rel:.3g} cosine={comparison.cosine:.4f}",
        )


@pytest.mark.parametrize("model", MODELS)
def test_inspect_matches_compress_report(model, compressed_files):
    out, report = compressed_files(model, "nm24", "lut4")
    summary = {weight.name: weight for weight in inspect_onnx(out).weights}
    assert sorted(summary) == sorted(weight.name for weight in report.weights)
    for weight in report.weights:
        found = summary[weight.name]
        assert found.shape == weight.shape
        assert found.stored_bytes == weight.stored_bytes
        assert found.density == pytest.approx(weight.density)
        assert found.value_format == "lut4<fp32>"


@pytest.mark.parametrize("model", MODELS)
def test_compressed_file_passes_checker(model, compressed_files):
    out, _ = compressed_files(model, "block4", "int8")
    onnx.checker.check_model(out, full_check=True)


@pytest.mark.parametrize("model", MODELS)
def test_compressed_file_is_smaller(model, compressed_files):
    out, report = compressed_files(model, "nm24", "int8")
    assert report.stored_bytes < report.dense_bytes / 2
    data = out.with_name(out.name + ".data")
    on_disk = out.stat().st_size + (data.stat().st_size if data.exists() else 0)
    assert on_disk < _model_path(model).stat().st_size
