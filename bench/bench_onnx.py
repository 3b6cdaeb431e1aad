"""Run time of compressed real ONNX models: sparseblob's runner against onnxruntime.

Each model shipped by an installed package (magika, rapidocr's text classifier, detector and
recognizer) is compressed with each pattern and value format. sparseblob runs the file with
onnx's reference evaluator, sparseblob's decoders and the sparse kernels. onnxruntime (CPU)
runs the same file and decodes the weights through the ``sparseblob`` function bodies.

Load times include decoding or building the compressed weights once. Run times are the best
of several runs after one warm-up run, so numba's compilation is not counted. onnxruntime
folds the decoded weights into constants when it loads the file, except fp16 values, which it
scatters at every run because it has no fp16 ``Pad`` kernel on the CPU.

Usage: ``python bench/bench_onnx.py [MODEL ...]`` with MODEL among magika, ocr_cls, ocr_det,
ocr_rec.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from sparseblob.encoder.onnx_compress import compress_onnx
from sparseblob.runtime.onnx_run import OnnxRunner
from sparseblob.verify.onnx_verify import random_inputs

REPEATS = 5

MODELS = {
    "magika": ("magika", "models/standard_v3_3/model.onnx", None),
    "ocr_cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": (1, 3, 48, 192)}),
    "ocr_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", {"x": (1, 3, 64, 64)}),
    "ocr_rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", {"x": (1, 3, 48, 64)}),
}
CONFIGS = {
    "50% fp16": {"sparsity": 0.5, "values": "fp16"},
    "2:4 lut4": {"n_m": "2:4", "values": "palettize", "nbits": 4},
    "block4 int8": {"sparsity": 0.5, "block": 4, "values": "quantize", "quantize_dtype": "int8"},
}


def model_path(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def best_seconds(run) -> float:
    run()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def onnxruntime_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str]) -> None:
    # The quantizer logs each scale it raises to the smallest normal number; the table is enough.
    logging.getLogger("sparseblob").setLevel(logging.ERROR)
    console = Console(width=180)
    table = Table(title=f"Compressed ONNX models: best of {REPEATS} runs, one thread for onnxruntime")
    for column in ("model", "compression", "weights", "stored / dense MB"):
        table.add_column(column)
    for column in ("sparseblob load s", "sparseblob run ms", "sparseblob dense ms", "onnxruntime load s", "onnxruntime run ms", "sparseblob / ort"):
        table.add_column(column, justify="right")

    names = [name for name in MODELS if not argv or name in argv]
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as directory:
        for name in names:
            package, relative, shapes = MODELS[name]
            source = model_path(package, relative)
            if source is None:
                console.print(f"skipped {name}: package {package} is not installed")
                continue
            inputs = random_inputs(source, seed=0, shapes=shapes)
            for label, options in CONFIGS.items():
                out = Path(directory) / f"{name}.onnx"
                report = compress_onnx(source, out, **options)

                load_sparse, runner = timed(lambda: OnnxRunner(out, weights="sparse"))
                sparse_run = best_seconds(lambda: runner.run(inputs))
                dense_runner = OnnxRunner(out, weights="dense")
                dense_run = best_seconds(lambda: dense_runner.run(inputs))
                load_ort, session = timed(lambda: onnxruntime_session(out))
                ort_run = best_seconds(lambda: session.run(None, inputs))

                table.add_row(
                    name,
                    label,
                    str(len(report.weights)),
                    f"{report.stored_bytes / 1e6:.2f} / {report.dense_bytes / 1e6:.2f}",
                    f"{load_sparse:.2f}",
                    f"{sparse_run * 1e3:.1f}",
                    f"{dense_run * 1e3:.1f}",
                    f"{load_ort:.2f}",
                    f"{ort_run * 1e3:.2f}",
                    f"{sparse_run / ort_run:.0f}x",
                )
    console.print(table)
    console.print(
        "sparseblob run: reference evaluator with the sparse kernels; sparseblob dense: the same with "
        "decoded weights and onnx's reference operators. Inputs: magika [1, 2048] bytes, OCR images "
        "of the sizes above, seed 0."
    )
    console.print(f"numpy {np.__version__}, onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
