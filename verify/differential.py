"""Differential check: coremltools' own decompression must give the bits that sparseblob decodes.

coremltools 9.0 loads the package's program with its protobuf loader and runs the
``WeightDecompressor`` pass, the pass behind ``coremltools.optimize.coreml.decompress_weights``.
The pass replaces every ``constexpr_*`` op by a ``const`` in program order, so ops inside a
chain see their inputs already materialized. Each output of every op in a weight's chain
(masks, indices, LUTs and the dense weight) must then equal sparseblob's decoded value bit for
bit, compared as raw bits so that -0.0 and NaN payloads count.

This check proves that both decoders read the file the same way. It cannot notice a weight
that was written wrong: a corrupted but well-formed file decodes identically in both. The
structure checks, the expected arrays and the comparison with a reference package catch those.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from pathlib import Path

import numpy as np

from sparseblob.verify.compare import bits_equal

from .checks import DecodedFunction
from .report import CheckResult, Status

__all__ = [
    "CoremltoolsValues",
    "coremltools_version",
    "coremltools_values",
    "compare_with_coremltools",
    "describe_bit_difference",
]

logger = logging.getLogger(__name__)


@dataclass
class CoremltoolsValues:
    """Values that coremltools decompressed, by function and constexpr output name.

    Attributes:
        functions: function name to (output name to array), with sub-byte values in plain
            uint8 or int8 arrays.
        error: the error coremltools raised while loading or decompressing, or None.
    """

    functions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    error: str | None = None


def coremltools_version() -> str | None:
    """Return the installed coremltools version, or None when it cannot be imported."""
    try:
        import coremltools
    except ImportError:
        return None
    return coremltools.__version__


def _plain(value) -> np.ndarray:
    """Copy a coremltools value into an array without its sub-byte dtype metadata."""
    array = np.array(value)
    return array.view(np.dtype(array.dtype.str))


def _model_file(package: Path) -> Path:
    """Return the model protobuf that the package's Manifest.json names as its root model."""
    manifest = json.loads((package / "Manifest.json").read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    return package / "Data" / entry["path"]


def coremltools_values(path: str | os.PathLike) -> CoremltoolsValues:
    """Decompress every constexpr op of a package with coremltools.

    Args:
        path: the ``.mlpackage`` directory.

    Returns:
        The values of every function, or an empty result with :attr:`CoremltoolsValues.error`
        set when coremltools rejects the package.
    """
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
    from coremltools.proto import Model_pb2
    from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

    outputs: dict[str, dict[str, np.ndarray]] = {}
    try:
        with warnings.catch_warnings():
            # coremltools warns about untested torch versions and deprecated APIs while loading.
            warnings.simplefilter("ignore")
            # coremltools' MLModel opens the package for writing and rewrites its Manifest.json,
            # so the spec is read here and the user's package is never touched.
            model_file = _model_file(Path(path))
            spec = Model_pb2.Model()
            spec.ParseFromString(model_file.read_bytes())
            program = milproto_load(spec, spec.specificationVersion, file_weights_dir=str(model_file.parent / "weights"))
            constexpr_outputs = {
                name: {out.name for op in function.operations if op.op_type.startswith("constexpr_") for out in op.outputs}
                for name, function in program.functions.items()
            }
            WeightDecompressor(op_selector=lambda op: True).apply(program)
            for name, function in program.functions.items():
                wanted = constexpr_outputs[name]
                outputs[name] = {
                    op.outputs[0].name: _plain(op.outputs[0].val)
                    for op in function.operations
                    if op.op_type == "const" and op.outputs[0].name in wanted
                }
    except Exception as error:
        # The oracle's verdict is the result here: any exception means coremltools rejects it.
        logger.info("coremltools failed on %s: %s: %s", path, type(error).__name__, error)
        return CoremltoolsValues(error=f"{type(error).__name__}: {error}")
    return CoremltoolsValues(outputs)


def compare_with_coremltools(decoded: DecodedFunction, reference: CoremltoolsValues) -> list[CheckResult]:
    """Compare each weight's decoded chain with coremltools' values; one ``coremltools`` row per weight.

    Status per weight:

    - pass: every output of every op in the chain has the same dtype, shape and bits;
    - fail: a value differs, coremltools gave no value, coremltools rejected the package
      while sparseblob decoded the chain, or sparseblob rejected a chain that coremltools
      decoded;
    - skip: both rejected the chain (the ``decode`` row has sparseblob's reason), or
      coremltools rejected the whole package while sparseblob rejected another weight, which
      explains it.
    """
    function_name = decoded.function.name
    theirs: Mapping[str, np.ndarray] = reference.functions.get(function_name, {})
    rows = []
    for weight in decoded.weights:
        ours_failed = [op for op in weight.chain if op.name in decoded.errors]
        names = [out.name for op in weight.chain for out in op.outputs]

        if reference.error is not None:
            rows.append(_rejected_row(weight.subject, bool(ours_failed), bool(decoded.errors), reference.error))
            continue
        if ours_failed:
            first = ours_failed[0]
            rows.append(CheckResult(
                "coremltools", weight.subject, Status.FAIL, "decoded by coremltools only", "same bits",
                f"coremltools decodes op {first.name!r} ({first.type}), but sparseblob rejects it: "
                f"{decoded.errors[first.name]}",
            ))
            continue

        problems = []
        for name in names:
            if name not in theirs:
                problems.append(f"coremltools gave no value for {name!r}")
                continue
            ours = decoded.values[name]
            if not bits_equal(ours, theirs[name]):
                problems.append(describe_bit_difference(name, ours, theirs[name], "sparseblob", "coremltools"))
        if problems:
            rows.append(CheckResult(
                "coremltools", weight.subject, Status.FAIL, f"{len(problems)} of {len(names)} {_arrays(len(names))} differ",
                "same bits", "; ".join(problems), metrics={"arrays": len(names), "differing": len(problems)},
            ))
        else:
            rows.append(CheckResult(
                "coremltools", weight.subject, Status.PASS, f"{len(names)} {_arrays(len(names))} bit-identical", "same bits",
                metrics={"arrays": len(names), "differing": 0},
            ))
    return rows


def _rejected_row(subject: str, chain_failed: bool, any_failed: bool, error: str) -> CheckResult:
    """Return the row of a weight when coremltools rejected the whole package."""
    if chain_failed:
        return CheckResult("coremltools", subject, Status.SKIP, "rejected", "same bits",
                           f"sparseblob and coremltools both reject the chain; coremltools: {error}")
    if any_failed:
        return CheckResult("coremltools", subject, Status.SKIP, "not compared", "same bits",
                           f"coremltools rejects the package because of another weight, which sparseblob rejects too: {error}")
    return CheckResult("coremltools", subject, Status.FAIL, "rejected", "same bits",
                       f"coremltools rejects the package, but sparseblob decodes every weight: {error}")


def _arrays(count: int) -> str:
    return "array" if count == 1 else "arrays"


def describe_bit_difference(name: str, actual: np.ndarray, expected: np.ndarray, actual_label: str, expected_label: str) -> str:
    """Describe how two arrays differ: dtype, shape, or the count and first element whose bits differ."""
    if actual.dtype != expected.dtype:
        return f"{name}: {actual_label} gives dtype {actual.dtype}, {expected_label} {expected.dtype}"
    if actual.shape != expected.shape:
        return f"{name}: {actual_label} gives shape {list(actual.shape)}, {expected_label} {list(expected.shape)}"
    unsigned = np.dtype(np.uint8) if actual.dtype == np.bool_ else np.dtype(f"u{actual.dtype.itemsize}")
    differ = np.ascontiguousarray(actual).view(unsigned) != np.ascontiguousarray(expected).view(unsigned)
    if not differ.any():
        return f"{name}: the bits are equal"
    first = tuple(int(i) for i in np.argwhere(differ)[0])
    return (
        f"{name}: {int(differ.sum())} of {differ.size} elements differ in their bits; first at "
        f"{list(first)}: {actual_label} {actual[first]!r}, {expected_label} {expected[first]!r}"
    )
