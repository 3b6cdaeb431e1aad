"""Check a compressed ONNX model against onnxruntime, its densified twin and the original model.

:func:`verify_onnx` runs the same inputs four times:

- ``sparseblob``: sparseblob's runner on the compressed file, compressed weights multiplied by
  the sparse kernels (:class:`sparseblob.runtime.onnx_run.OnnxRunner`);
- ``onnxruntime``: onnxruntime on the compressed file, which decodes the weights through the
  ``sparseblob`` function bodies;
- ``pruned dense``: onnxruntime on the file with every ``sparseblob`` chain decoded back into
  an initializer by sparseblob's decoders (:func:`~sparseblob.runtime.onnx_run.densify_onnx`);
- ``original``: onnxruntime on the uncompressed reference model.

The first three must agree within the tolerance of each output's dtype
(:func:`sparseblob.verify.compare.tolerance_for`), which checks the decoders, the function
bodies and the kernels against each other. The error of ``pruned dense`` against ``original``
is what compression costs; it is reported, never checked.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from sparseblob.runtime.errors import OpParameterError
from sparseblob.runtime.onnx_run import OnnxRunner, densify_onnx, load_model

from .compare import Tolerance, tolerance_for

__all__ = [
    "RUNS",
    "CHECKED_PAIRS",
    "OutputComparison",
    "OnnxVerifyReport",
    "random_inputs",
    "compare_outputs",
    "onnxruntime_run",
    "verify_onnx",
]

logger = logging.getLogger(__name__)

SPARSEBLOB, ONNXRUNTIME, PRUNED, ORIGINAL = "sparseblob", "onnxruntime", "pruned dense", "original"
RUNS = (SPARSEBLOB, ONNXRUNTIME, PRUNED, ORIGINAL)
CHECKED_PAIRS = ((SPARSEBLOB, ONNXRUNTIME), (SPARSEBLOB, PRUNED), (ONNXRUNTIME, PRUNED))
INFORMATIONAL_PAIRS = ((PRUNED, ORIGINAL),)

# Sizes for input dimensions that the model leaves symbolic: the first axis (batch) gets 1,
# every other one this size, which suits image models with downsampling (a multiple of 32).
DYNAMIC_SIZE = 64
INTEGER_RANGE = (0, 256)


@dataclass(frozen=True)
class OutputComparison:
    """How one output of one run differs from the same output of another run.

    Attributes:
        output: the graph output name.
        actual: label of the run compared (one of :data:`RUNS`).
        expected: label of the reference run.
        max_abs: largest ``|actual - expected|``.
        max_rel: largest ``|actual - expected| / |expected|`` over the elements where
            ``|expected|`` exceeds the tolerance's ``atol`` (0 when there are none).
        cosine: cosine similarity of the flattened outputs (1.0 when both are all zeros).
        mismatched: elements outside ``atol + rtol * |expected|``.
        tolerance: the tolerance checked, or None for an informational comparison.
    """

    output: str
    actual: str
    expected: str
    max_abs: float
    max_rel: float
    cosine: float
    mismatched: int
    tolerance: Tolerance | None

    @property
    def checked(self) -> bool:
        """True when this comparison decides whether the verification passes."""
        return self.tolerance is not None

    @property
    def passed(self) -> bool:
        """True when no element is outside the tolerance (always True when informational)."""
        return not self.checked or self.mismatched == 0

    def to_dict(self) -> dict:
        """Return the comparison as JSON-ready values."""
        return {
            "output": self.output,
            "actual": self.actual,
            "expected": self.expected,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "cosine": self.cosine,
            "mismatched": self.mismatched,
            "checked": self.checked,
            "passed": self.passed,
            "rtol": None if self.tolerance is None else self.tolerance.rtol,
            "atol": None if self.tolerance is None else self.tolerance.atol,
        }


@dataclass
class OnnxVerifyReport:
    """What :func:`verify_onnx` ran and found.

    Attributes:
        compressed_path: the compressed model.
        reference_path: the original model.
        inputs: input name to ``(shape, dtype)``.
        seconds: run label to wall time of that run, model loading included.
        comparisons: every compared pair of runs, per output.
        kernel_nodes: nodes that sparseblob's runner moved to the sparse kernels.
    """

    compressed_path: str
    reference_path: str
    inputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    comparisons: list[OutputComparison] = field(default_factory=list)
    kernel_nodes: int = 0

    @property
    def passed(self) -> bool:
        """True when every checked comparison is within tolerance."""
        return all(comparison.passed for comparison in self.comparisons)

    def checked(self) -> list[OutputComparison]:
        """Return the comparisons that decide :attr:`passed`."""
        return [comparison for comparison in self.comparisons if comparison.checked]

    def error_vs_original(self) -> list[OutputComparison]:
        """Return the informational comparisons of the pruned model against the original."""
        return [comparison for comparison in self.comparisons if not comparison.checked]

    def to_dict(self) -> dict:
        """Return the report as JSON-ready values."""
        return {
            "compressed_path": self.compressed_path,
            "reference_path": self.reference_path,
            "passed": self.passed,
            "inputs": {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in self.inputs.items()},
            "seconds": self.seconds,
            "kernel_nodes": self.kernel_nodes,
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
        }


def _input_shape(value: onnx.ValueInfoProto, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    if value.name in shapes:
        return tuple(int(d) for d in shapes[value.name])
    dims = value.type.tensor_type.shape.dim
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        else:
            shape.append(1 if axis == 0 else DYNAMIC_SIZE)
    return tuple(shape)


def random_inputs(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    integer_range: tuple[int, int] = INTEGER_RANGE,
) -> dict[str, np.ndarray]:
    """Return seeded random values for every graph input that no initializer provides.

    Dimensions come from the declared shape; a symbolic dimension becomes 1 on axis 0 and
    :data:`DYNAMIC_SIZE` elsewhere, unless ``shapes`` gives the input's full shape. Float
    inputs are uniform in [-1, 1); integer inputs uniform in ``integer_range`` (both ends
    included, clipped to the dtype), e.g. byte values 0..256 with a padding token for magika;
    bool inputs are fair coin flips.

    Raises:
        OpParameterError: an input is not a tensor of a numeric or bool type.
    """
    model = load_model(model)
    shapes = shapes or {}
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    inputs: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        if not value.type.HasField("tensor_type"):
            raise OpParameterError(f"input {value.name!r} is not a tensor; give its value explicitly")
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        shape = _input_shape(value, shapes)
        if dtype.kind == "f":
            inputs[value.name] = rng.uniform(-1.0, 1.0, shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            low, high = max(integer_range[0], info.min), min(integer_range[1], info.max)
            inputs[value.name] = rng.integers(low, high, shape, endpoint=True).astype(dtype)
        elif dtype.kind == "b":
            inputs[value.name] = rng.integers(0, 1, shape, endpoint=True).astype(bool)
        else:
            raise OpParameterError(f"input {value.name!r} has dtype {dtype}; give its value explicitly")
    return inputs


def compare_outputs(
    name: str, actual: np.ndarray, expected: np.ndarray, actual_run: str, expected_run: str, *, checked: bool
) -> OutputComparison:
    """Compare two values of one output; ``checked`` applies the tolerance of the output's dtype."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    tolerance = tolerance_for(expected.dtype)
    if actual.shape != expected.shape:
        return OutputComparison(name, actual_run, expected_run, np.inf, np.inf, 0.0, max(actual.size, expected.size), tolerance if checked else None)
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    difference = np.abs(a - e)
    finite = np.isfinite(difference)
    max_abs = float(difference[finite].max()) if finite.any() else 0.0
    if not finite.all() and not np.array_equal(np.isnan(a), np.isnan(e)):
        max_abs = float("inf")
    large = np.abs(e) > tolerance.atol
    max_rel = float((difference[large & finite] / np.abs(e[large & finite])).max()) if (large & finite).any() else 0.0
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(e))
    cosine = float(np.dot(a.ravel(), e.ravel()) / norms) if norms > 0 else (1.0 if not a.any() and not e.any() else 0.0)
    bad = ~np.isclose(a, e, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
    return OutputComparison(name, actual_run, expected_run, max_abs, max_rel, cosine, int(bad.sum()), tolerance if checked else None)


def _onnxruntime():
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "verifying ONNX models needs onnxruntime: pip install 'sparseblob[onnx]'"
        ) from error
    return onnxruntime


def onnxruntime_run(model: str | os.PathLike | onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a model with onnxruntime on the CPU and return its outputs by name."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    # Constant folding cannot fold Size on int8 inputs and warns for each function call.
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        if model.ByteSize() < (1 << 31) - (1 << 20):
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(inputs))))
        with tempfile.TemporaryDirectory(prefix="sparseblob-") as work:
            path = os.path.join(work, "model.onnx")
            onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
            return onnxruntime_run(path, inputs)
    session = ort.InferenceSession(os.fspath(model), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(inputs))))


def _timed(report: OnnxVerifyReport, label: str, run) -> dict[str, np.ndarray]:
    start = time.perf_counter()
    outputs = run()
    report.seconds[label] = time.perf_counter() - start
    logger.info("%s run took %.3f s", label, report.seconds[label])
    return outputs


def verify_onnx(
    compressed_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    inputs: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    integer_range: tuple[int, int] = INTEGER_RANGE,
    strategy: str | None = None,
) -> OnnxVerifyReport:
    """Run a compressed model four ways and compare the outputs.

    Args:
        compressed_path: the model written by ``sparseblob.encoder.onnx_compress``.
        reference_path: the original, uncompressed model.
        inputs: input values by name; None draws them with :func:`random_inputs`.
        seed: seed of the random inputs.
        shapes: full shapes of inputs with symbolic dimensions, for the random inputs.
        integer_range: range of random integer inputs, both ends included.
        strategy: kernel strategy of sparseblob's runner; None lets the kernels choose.

    Returns:
        The report; :attr:`OnnxVerifyReport.passed` is True when sparseblob, onnxruntime
        and the densified model agree on every output within tolerance.

    Raises:
        PackageError: a file is not an ONNX model.
        SparseblobError: a compressed weight is malformed.
    """
    compressed = load_model(compressed_path)
    if inputs is None:
        inputs = random_inputs(compressed, seed=seed, shapes=shapes, integer_range=integer_range)
    report = OnnxVerifyReport(os.fspath(compressed_path), os.fspath(reference_path))
    report.inputs = {name: (tuple(value.shape), str(value.dtype)) for name, value in inputs.items()}

    def sparseblob_run():
        runner = OnnxRunner(compressed, weights="sparse", strategy=strategy)
        report.kernel_nodes = runner.kernel_nodes
        return runner.run(inputs)

    results = {
        SPARSEBLOB: _timed(report, SPARSEBLOB, sparseblob_run),
        ONNXRUNTIME: _timed(report, ONNXRUNTIME, lambda: onnxruntime_run(compressed_path, inputs)),
        PRUNED: _timed(report, PRUNED, lambda: onnxruntime_run(densify_onnx(compressed), inputs)),
        ORIGINAL: _timed(report, ORIGINAL, lambda: onnxruntime_run(reference_path, inputs)),
    }
    outputs = [output.name for output in compressed.graph.output]
    for pairs, checked in ((CHECKED_PAIRS, True), (INFORMATIONAL_PAIRS, False)):
        for actual_run, expected_run in pairs:
            for name in outputs:
                report.comparisons.append(
                    compare_outputs(
                        name, results[actual_run][name], results[expected_run][name], actual_run, expected_run, checked=checked
                    )
                )
    for comparison in report.comparisons:
        if not comparison.passed:
            logger.warning(
                "%s differs between %s and %s: %d elements outside tolerance, max abs error %.3g",
                comparison.output, comparison.actual, comparison.expected, comparison.mismatched, comparison.max_abs,
            )
    return report
