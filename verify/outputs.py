"""Run a package on inputs and compare its outputs: sparse against dense, and against a reference.

Every run uses sparseblob's interpreter with ``precision="fp32"`` and ``round_to_declared=False``:
each op computes in float32 and keeps float32 results instead of rounding them to the declared
fp16. Rounding after every op would let a last-bit difference inside one kernel (a different
summation order in the sparse kernel) flip an fp16 rounding and grow through later layers, so the
comparison would measure rounding luck instead of the kernels.

Two comparisons, one row per output each:

- ``sparse_vs_dense``: the same package with sparse kernels (``weights="sparse"``) and with every
  weight decoded dense (``weights="dense"``). Both compute the same function, so they must agree
  within the fp32 row of :data:`sparseblob.verify.compare.TOLERANCES`
  (``|a - b| <= atol + rtol * |b|`` per element). Integer and bool outputs must be equal.
- ``reference_output``: the package (sparse kernels) against a reference package, usually the
  dense model it was compressed from. Compression changes the function, so no elementwise
  tolerance applies. The row passes when the cosine similarity of the flattened outputs is at
  least ``min_cosine`` (0.99 by default). It fails on a shape mismatch, on a NaN or infinity
  that the reference does not have, and on a lower cosine.

Each row's metrics are ``max_abs`` (largest ``|a - b|``), ``max_rel`` (``max_abs`` over the
largest ``|b|``, so that elements near zero do not dominate) and ``cosine``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sparseblob.runtime.errors import OptionError, SparseblobError, UnsupportedOpError
from sparseblob.runtime.interpreter import run
from sparseblob.runtime.package import Function, Package
from sparseblob.runtime.values import TensorType
from sparseblob.verify.compare import tolerance_for

from .report import CheckResult, Status

__all__ = [
    "DEFAULT_MIN_COSINE",
    "RunOutcome",
    "random_inputs",
    "read_arrays",
    "read_inputs",
    "check_inputs",
    "check_reference_interface",
    "run_outputs",
    "output_metrics",
    "compare_sparse_dense",
    "compare_reference",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_COSINE = 0.99
"""Default threshold of the ``reference_output`` check: cosine similarity of each output."""


@dataclass
class RunOutcome:
    """Outputs of one run, or why there are none.

    Attributes:
        outputs: output name to array, empty when the run failed.
        error: the error message, or None.
        unsupported: True when the run failed on an op that sparseblob does not implement.
    """

    outputs: dict[str, np.ndarray]
    error: str | None = None
    unsupported: bool = False


# ---------------------------------------------------------------------------------------------
# Inputs


def _concrete_shape(value_type: TensorType) -> tuple[int, ...]:
    # NOTE: a dimension without a fixed size (a flexible input) gets size 1.
    return tuple(1 if dim is None else int(dim) for dim in value_type.shape)


def random_inputs(function: Function, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw one seeded input per declared input of ``function``.

    Float inputs are standard normal, integer inputs are 0 or 1 (valid indices for any gather
    or embedding), bool inputs are random. Each array has the declared dtype; dimensions
    without a fixed size get size 1. Pass real inputs to check models that need them.

    Raises:
        OptionError: an input is not a tensor.
    """
    rng = np.random.default_rng(seed)
    inputs = {}
    for item in function.inputs:
        if not isinstance(item.type, TensorType):
            raise OptionError(f"input {item.name!r} has type {item.type}; random inputs exist only for tensors, so pass inputs")
        shape = _concrete_shape(item.type)
        dtype = item.type.dtype.numpy_dtype
        if item.type.dtype.is_float:
            inputs[item.name] = rng.standard_normal(shape).astype(dtype)
        elif np.dtype(dtype) == np.bool_:
            inputs[item.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            inputs[item.name] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def read_arrays(source: str | os.PathLike | Mapping[str, np.ndarray], *, what: str, contents: str) -> dict[str, np.ndarray]:
    """Return named arrays from an ``.npz`` file or a mapping.

    Args:
        source: the ``.npz`` path, or a mapping of names to arrays.
        what: the option the arrays came from, e.g. ``"inputs"``, for messages.
        contents: what the file should map, e.g. ``"input names to arrays"``, for messages.

    Raises:
        OptionError: the file cannot be read as an ``.npz`` of arrays.
    """
    if isinstance(source, Mapping):
        return {str(name): np.asarray(value) for name, value in source.items()}
    try:
        loaded = np.load(source, allow_pickle=False)
    except OSError as error:
        raise OptionError(f"{what} {source}: cannot read an .npz file: {error}") from error
    except ValueError as error:
        # numpy reports any non-numpy file as pickled data; pickles are never loaded here.
        raise OptionError(f"{what} {source}: not an .npz file mapping {contents}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise OptionError(f"{what} {source}: expected an .npz file mapping {contents}, got one array")
    with loaded:
        return {name: loaded[name] for name in loaded.files}


def read_inputs(source: str | os.PathLike | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return inputs from an ``.npz`` file (input name to array) or a mapping.

    Raises:
        OptionError: the file cannot be read as an ``.npz`` of arrays.
    """
    return read_arrays(source, what="inputs", contents="input names to arrays")


def check_inputs(function: Function, inputs: Mapping[str, np.ndarray], *, where: str) -> None:
    """Check that ``inputs`` names exactly the declared inputs, with the declared shapes.

    Raises:
        OptionError: names are missing or unknown, or a shape differs.
    """
    declared = {item.name: item.type for item in function.inputs}
    missing = sorted(set(declared) - set(inputs))
    unknown = sorted(set(inputs) - set(declared))
    if missing or unknown:
        raise OptionError(
            f"{where}: the inputs do not match function {function.name!r}, which takes "
            f"{sorted(declared)}; missing {missing}, unknown {unknown}"
        )
    for name, value_type in declared.items():
        if not isinstance(value_type, TensorType):
            continue
        shape = np.shape(inputs[name])
        if len(shape) != value_type.rank or any(
            dim is not None and dim != size for dim, size in zip(value_type.shape, shape)
        ):
            raise OptionError(f"{where}: input {name!r} has shape {list(shape)}; the function declares {value_type}")


def check_reference_interface(function: Function, reference: Function) -> None:
    """Check that a reference function takes the same inputs and returns the same outputs, by name.

    Raises:
        OptionError: input or output names differ, or an input's declared shape differs.
    """
    ours_in = {item.name: item.type for item in function.inputs}
    theirs_in = {item.name: item.type for item in reference.inputs}
    if set(ours_in) != set(theirs_in):
        raise OptionError(
            f"the reference takes inputs {sorted(theirs_in)}, but the package takes {sorted(ours_in)}; "
            "inputs are matched by name"
        )
    if set(function.outputs) != set(reference.outputs):
        raise OptionError(
            f"the reference returns {sorted(reference.outputs)}, but the package returns "
            f"{sorted(function.outputs)}; outputs are matched by name"
        )
    for name, ours in ours_in.items():
        theirs = theirs_in[name]
        if isinstance(ours, TensorType) and isinstance(theirs, TensorType) and ours.shape != theirs.shape:
            raise OptionError(f"input {name!r} is {ours} in the package but {theirs} in the reference")


# ---------------------------------------------------------------------------------------------
# Runs


def run_outputs(package: Package, inputs: Mapping[str, np.ndarray], *, weights: str, function: str | None = None) -> RunOutcome:
    """Run a package in fp32 without rounding to declared dtypes, catching sparseblob errors.

    Args:
        package: the loaded package.
        inputs: input name to array.
        weights: ``"sparse"`` or ``"dense"``, as in :func:`sparseblob.runtime.interpreter.run`.
        function: the function; the default function when None.
    """
    try:
        outputs = run(package, inputs, function=function, weights=weights, precision="fp32", round_to_declared=False)
    except UnsupportedOpError as error:
        return RunOutcome({}, str(error), unsupported=True)
    except SparseblobError as error:
        logger.info("run of %s with %s weights failed: %s", package.path, weights, error)
        return RunOutcome({}, str(error))
    return RunOutcome(outputs)


# ---------------------------------------------------------------------------------------------
# Comparisons


def output_metrics(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Return ``max_abs``, ``max_rel`` and ``cosine`` of two arrays of the same shape, in float64.

    Positions where both arrays are NaN are left out. ``cosine`` is 1.0 when both arrays are all
    zero and 0.0 when only one is. Any NaN left makes every metric NaN, and an infinity makes
    the cosine NaN.
    """
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    b = np.asarray(expected, dtype=np.float64).reshape(-1)
    both_nan = np.isnan(a) & np.isnan(b)
    a, b = a[~both_nan], b[~both_nan]
    if np.isnan(a).any() or np.isnan(b).any():
        return {"max_abs": float("nan"), "max_rel": float("nan"), "cosine": float("nan")}
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}

    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.abs(a - b)
        max_abs = float(difference.max())
        scale = float(np.abs(b).max())
        if scale > 0:
            max_rel = max_abs / scale
        else:
            max_rel = 0.0 if max_abs == 0 else float("inf")
        norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not (math.isfinite(norm_a) and math.isfinite(norm_b)):
        cosine = float("nan")
    elif norm_a == 0 and norm_b == 0:
        cosine = 1.0
    elif norm_a == 0 or norm_b == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(a / norm_a, b / norm_b))
    return {"max_abs": max_abs, "max_rel": max_rel, "cosine": cosine}


def _measured(metrics: Mapping[str, float]) -> str:
    return f"max abs {metrics['max_abs']:.3g}, max rel {metrics['max_rel']:.3g}, cosine {metrics['cosine']:.6f}"


def compare_sparse_dense(sparse: RunOutcome, dense: RunOutcome, subjects: Mapping[str, str]) -> list[CheckResult]:
    """Return one ``sparse_vs_dense`` row per output.

    Args:
        sparse: the run with ``weights="sparse"``.
        dense: the run with ``weights="dense"``.
        subjects: output name to its name in the report.
    """
    rows = []
    for name, subject in subjects.items():
        failed = sparse.error or dense.error
        if failed:
            which = "sparse" if sparse.error else "dense"
            status = Status.SKIP if (sparse.unsupported or dense.unsupported) else Status.FAIL
            rows.append(CheckResult("sparse_vs_dense", subject, status, "run failed", "", f"the {which} run failed: {failed}"))
            continue
        actual, expected = sparse.outputs[name], dense.outputs[name]
        if actual.shape != expected.shape:
            rows.append(CheckResult(
                "sparse_vs_dense", subject, Status.FAIL, f"shape {list(actual.shape)}", f"shape {list(expected.shape)}",
                "the sparse and dense runs give different shapes",
            ))
            continue

        tolerance = tolerance_for(np.float32 if expected.dtype.kind == "f" else expected.dtype)
        metrics = output_metrics(actual, expected)
        close = np.isclose(
            actual.astype(np.float64), expected.astype(np.float64), rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True
        )
        expected_text = f"|a-b| <= {tolerance.atol:g} + {tolerance.rtol:g}*|b|"
        if close.all():
            rows.append(CheckResult("sparse_vs_dense", subject, Status.PASS, _measured(metrics), expected_text, metrics=metrics))
            continue
        first = [int(i) for i in np.argwhere(~close)[0]]
        rows.append(CheckResult(
            "sparse_vs_dense", subject, Status.FAIL, _measured(metrics), expected_text,
            f"{int((~close).sum())} of {close.size} elements differ beyond the tolerance ({tolerance.reason}); "
            f"first at {first}: sparse {actual[tuple(first)]!r}, dense {expected[tuple(first)]!r}",
            metrics=metrics,
        ))
    return rows


def compare_reference(
    outcome: RunOutcome,
    reference: RunOutcome,
    subjects: Mapping[str, str],
    *,
    min_cosine: float = DEFAULT_MIN_COSINE,
    check: str = "reference_output",
) -> list[CheckResult]:
    """Return one row per output that passes when the cosine similarity is at least ``min_cosine``.

    Args:
        outcome: the package's run with sparse kernels.
        reference: the reference package's run, or the given expected outputs.
        subjects: output name to its name in the report.
        min_cosine: the threshold.
        check: ``reference_output`` for a reference package, ``expected_output`` for given
            expected outputs.
    """
    rows = []
    expected_text = f"cosine >= {min_cosine:g}"
    for name, subject in subjects.items():
        if outcome.error or reference.error:
            which = "package" if outcome.error else "reference"
            status = Status.SKIP if (outcome.unsupported or reference.unsupported) else Status.FAIL
            rows.append(CheckResult(check, subject, status, "run failed", expected_text,
                                    f"the {which} run failed: {outcome.error or reference.error}"))
            continue
        actual, expected = outcome.outputs[name], reference.outputs[name]
        if actual.shape != expected.shape:
            rows.append(CheckResult(
                check, subject, Status.FAIL, f"shape {list(actual.shape)}", f"shape {list(expected.shape)}",
                "the package and the reference give different shapes",
            ))
            continue

        metrics = output_metrics(actual, expected)
        new_non_finite = ~np.isfinite(actual.astype(np.float64)) & np.isfinite(expected.astype(np.float64))
        if new_non_finite.any():
            first = [int(i) for i in np.argwhere(new_non_finite)[0]]
            rows.append(CheckResult(
                check, subject, Status.FAIL, _measured(metrics), expected_text,
                f"{int(new_non_finite.sum())} elements are NaN or infinite where the reference is finite; first at {first}",
                metrics=metrics,
            ))
        elif not metrics["cosine"] >= min_cosine:
            rows.append(CheckResult(
                check, subject, Status.FAIL, _measured(metrics), expected_text,
                f"cosine similarity {metrics['cosine']:.6f} is below {min_cosine:g}",
                metrics=metrics,
            ))
        else:
            rows.append(CheckResult(check, subject, Status.PASS, _measured(metrics), expected_text, metrics=metrics))
    return rows
