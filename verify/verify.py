"""Verify a compressed Core ML package: :func:`verify_package` runs every check and returns a report.

The checks, in order, for every function of the package:

1. ``decode``, ``mask``, ``lut``, ``scale``, ``finite``, ``pattern`` per compressed weight
   (:mod:`sparseblob.verify.checks`), with the ``--expect`` expectations;
2. ``coremltools`` per weight: coremltools' decompression gives the same bits
   (:mod:`sparseblob.verify.differential`);
3. ``expected`` per weight when expected arrays are given, and ``reference_weight`` per weight
   when a reference package is given (:mod:`sparseblob.verify.reference`);
4. ``sparse_vs_dense`` per output, ``reference_output`` per output with a reference, and
   ``expected_output`` per output with given expected outputs (:mod:`sparseblob.verify.outputs`).

Example::

    from sparseblob.verify.verify import verify_package
    from sparseblob.verify.report import render_table

    report = verify_package("pruned.mlpackage", reference="dense.mlpackage", expect="2:4@axis1")
    render_table(report, rich.console.Console())
    raise SystemExit(report.exit_code)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sparseblob.runtime.constexpr import constexpr_outputs
from sparseblob.runtime.errors import OptionError, SparseblobError
from sparseblob.runtime.package import Package, load

from .checks import check_weights, decode_function, subject_name
from .differential import coremltools_values, coremltools_version, compare_with_coremltools
from .outputs import (
    DEFAULT_MIN_COSINE,
    RunOutcome,
    check_inputs,
    check_reference_interface,
    compare_reference,
    compare_sparse_dense,
    random_inputs,
    read_inputs,
    run_outputs,
)
from .patterns import parse_expectations
from .reference import DEFAULT_MIN_WEIGHT_COSINE, compare_expected, compare_reference_weights, read_expected, reference_weights
from .report import CheckResult, Report, Status

__all__ = ["ProgressCallback", "verify_package"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(description, completed, total)`` before each step and once at the end."""


class _Steps:
    """Counts steps and reports them to an optional progress callback."""

    def __init__(self, progress: ProgressCallback | None, total: int):
        self.progress = progress
        self.total = total
        self.completed = 0

    def start(self, description: str) -> None:
        logger.info("%s", description)
        if self.progress is not None:
            self.progress(description, self.completed, self.total)

    def done(self) -> None:
        self.completed += 1

    def finish(self) -> None:
        if self.progress is not None:
            self.progress("done", self.total, self.total)


def _describe_inputs(inputs) -> str:
    if inputs is None:
        return "random"
    if isinstance(inputs, Mapping):
        return "given"
    return str(inputs)


def _load_reference(reference: str | os.PathLike) -> Package:
    try:
        return load(reference)
    except (SparseblobError, OSError) as error:
        raise OptionError(f"reference {reference}: cannot load: {error}") from error


def _pair_functions(package: Package, reference: Package | None) -> dict[str, str | None]:
    """Map each function of ``package`` to the reference function it is compared with.

    Two single-function packages pair their functions whatever the names; otherwise names must match.

    Raises:
        OptionError: a function has no namesake in the reference.
    """
    names = sorted(package.functions)
    if reference is None:
        return {name: None for name in names}
    if len(package.functions) == 1 and len(reference.functions) == 1:
        return {names[0]: next(iter(reference.functions))}
    missing = [name for name in names if name not in reference.functions]
    if missing:
        raise OptionError(
            f"the reference has functions {sorted(reference.functions)}, but the package also has {missing}; "
            "functions are matched by name"
        )
    return {name: name for name in names}


def verify_package(
    path: str | os.PathLike,
    *,
    reference: str | os.PathLike | None = None,
    inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    expect: str | Sequence[str] | None = None,
    coremltools: bool = True,
    progress: ProgressCallback | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE,
    min_weight_cosine: float = DEFAULT_MIN_WEIGHT_COSINE,
    expected: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    expected_outputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    run_model: bool = True,
) -> Report:
    """Check every compressed weight of a package and compare its outputs.

    Args:
        path: the ``.mlpackage`` directory to verify.
        reference: a package that computes what this one should approximate, usually the
            dense model before compression. Inputs and outputs are matched by name.
        inputs: an ``.npz`` file or a mapping of input name to array; seeded random inputs
            (see :func:`sparseblob.verify.outputs.random_inputs`) when None.
        seed: the seed of the random inputs.
        expect: expectations on every compressed weight's mask, such as ``"2:4@axis1"`` or
            ``"block4@axis0, sparsity>=0.5"`` (see :mod:`sparseblob.verify.patterns`), or a
            sequence of such strings.
        coremltools: cross-check every decoded array with coremltools' decompression.
        progress: called as ``progress(description, completed, total)`` before each step.
        min_cosine: pass threshold of the ``reference_output`` rows.
        min_weight_cosine: pass threshold of the ``reference_weight`` rows of lossy chains.
        expected: an ``.npz`` file or a mapping of constexpr output name to its known-good
            decoded array, compared bit for bit.
        expected_outputs: an ``.npz`` file or a mapping of output name to the outputs that
            ``inputs`` should give, computed by another runtime (the source framework, or
            Core ML on a Mac). They are judged like a reference, by ``min_cosine``. Runs of
            the reference package use sparseblob's interpreter too, so only outputs from
            another runtime catch an op that sparseblob computes wrong everywhere.
        run_model: run the model; without it the output rows are left out.

    Returns:
        The report. A package that fails to load gives a report with one failed ``load`` row.

    Raises:
        OptionError: an option cannot be used. ``path`` is not a directory, an expectation
            does not parse, or a threshold is not in [-1, 1]. Or the reference cannot be
            loaded, or its inputs, outputs or functions do not match by name. Or the inputs
            do not match the declared inputs.
    """
    expectations = parse_expectations(expect)
    for name, value in (("min_cosine", min_cosine), ("min_weight_cosine", min_weight_cosine)):
        if not -1.0 <= float(value) <= 1.0:
            raise OptionError(f"{name}={value!r}; expected a cosine similarity in [-1, 1]")
    if not Path(path).is_dir():
        raise OptionError(f"{path}: not a directory; expected an .mlpackage directory")
    given_inputs = read_inputs(inputs) if inputs is not None else None
    expected_arrays = read_expected(expected) if expected is not None else None
    expected_runs = read_inputs(expected_outputs) if expected_outputs is not None else None
    if expected_runs is not None and inputs is None:
        raise OptionError("expected outputs need the inputs they were computed from; pass inputs too")
    if coremltools and coremltools_version() is None:
        logger.warning("coremltools cannot be imported; the coremltools cross-check is skipped")

    report = Report(
        package=str(path),
        reference=None if reference is None else str(reference),
        settings={
            "seed": seed,
            "inputs": _describe_inputs(inputs),
            "expect": ", ".join(item.text for item in expectations),
            "min_cosine": float(min_cosine),
            "min_weight_cosine": float(min_weight_cosine),
            "coremltools": coremltools_version() if coremltools else None,
            "run_model": run_model,
        },
    )

    try:
        package = load(path)
    except SparseblobError as error:
        report.checks.append(CheckResult("load", str(path), Status.FAIL, "failed", "a well-formed package", str(error)))
        return report

    reference_package = _load_reference(reference) if reference is not None else None
    try:
        _verify_loaded(
            package, reference_package, report, given_inputs, seed, expectations, coremltools,
            progress, min_cosine, min_weight_cosine, expected_arrays, expected_runs, run_model,
        )
    finally:
        package.close()
        if reference_package is not None:
            reference_package.close()
    return report


def _verify_loaded(
    package, reference, report, given_inputs, seed, expectations, use_coremltools,
    progress, min_cosine, min_weight_cosine, expected_arrays, expected_runs, run_model,
) -> None:
    pairs = _pair_functions(package, reference)
    if reference is not None:
        for name, reference_name in pairs.items():
            check_reference_interface(package.function(name), reference.function(reference_name))
    if given_inputs is not None and run_model:
        for name in pairs:
            check_inputs(package.function(name), given_inputs, where=f"function {name!r}")
    expected_outputs = {name: _expected_outputs(package.function(name), expected_runs, len(pairs) > 1) for name in pairs}
    if expected_arrays is not None:
        _check_expected_names(package, pairs, expected_arrays)

    use_coremltools = use_coremltools and coremltools_version() is not None
    runs = (2 + (reference is not None)) if run_model else 0
    per_function = 1 + (reference is not None) + runs
    steps = _Steps(progress, (1 if use_coremltools else 0) + len(pairs) * per_function)

    oracle = None
    if use_coremltools:
        steps.start("decompressing with coremltools")
        oracle = coremltools_values(package.path)
        steps.done()

    for name, reference_name in pairs.items():
        steps.start(f"checking the weights of {name}")
        decoded = decode_function(package, name)
        report.checks.extend(check_weights(decoded, expectations=expectations))
        if oracle is not None:
            report.checks.extend(compare_with_coremltools(decoded, oracle))
        elif decoded.weights:
            report.checks.extend(
                CheckResult("coremltools", weight.subject, Status.SKIP, message="the coremltools cross-check is off or coremltools is missing")
                for weight in decoded.weights
            )
        if expected_arrays is not None:
            prefix = f"{name}:" if len(pairs) > 1 else ""
            report.checks.extend(compare_expected(decoded, expected_arrays, prefix=prefix))
        steps.done()

        if reference is not None:
            steps.start(f"comparing the weights of {name} with the reference")
            report.checks.extend(
                compare_reference_weights(decoded, reference_weights(reference, reference_name), min_weight_cosine=min_weight_cosine)
            )
            steps.done()

        if run_model:
            _check_outputs(
                package, reference, name, reference_name, given_inputs, seed, min_cosine, expected_outputs[name], report, steps
            )
    steps.finish()


def _check_expected_names(package: Package, functions: Sequence[str], expected_arrays: Mapping[str, np.ndarray]) -> None:
    """Raise when an expected weight array names no constexpr output of the checked functions.

    Such an array would be compared with nothing, and a file whose keys all miss would pass.
    """
    known = set()
    for name in functions:
        outputs = constexpr_outputs(package.function(name))
        known.update(outputs)
        if len(functions) > 1:
            known.update(f"{name}:{output}" for output in outputs)
    unknown = sorted(set(expected_arrays) - known)
    if unknown:
        listed = ", ".join(repr(key) for key in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        hint = f"e.g. {', '.join(repr(key) for key in sorted(known)[:3])}" if known else "it has no constexpr ops"
        raise OptionError(
            f"the expected weights {listed} name no constexpr output of {package.path.name}; "
            f"expected the output names of its constexpr ops ({hint})"
        )


def _expected_outputs(function, expected_runs, prefixed: bool) -> RunOutcome | None:
    """Pick one function's outputs from the given expected outputs (keys ``function:name`` or ``name``)."""
    if expected_runs is None:
        return None
    found = {}
    for output in function.outputs:
        key = f"{function.name}:{output}" if prefixed and f"{function.name}:{output}" in expected_runs else output
        if key not in expected_runs:
            raise OptionError(
                f"the expected outputs have {sorted(expected_runs)}, but function {function.name!r} returns "
                f"{output!r}; outputs are matched by name"
            )
        found[output] = np.asarray(expected_runs[key])
    return RunOutcome(found)


def _check_outputs(package, reference, name, reference_name, given_inputs, seed, min_cosine, expected, report, steps) -> None:
    function = package.function(name)
    inputs = given_inputs if given_inputs is not None else random_inputs(function, seed=seed)
    subjects = {output: subject_name(package, name, output) for output in function.outputs}

    steps.start(f"running {name} with sparse kernels")
    sparse = run_outputs(package, inputs, weights="sparse", function=name)
    steps.done()
    steps.start(f"running {name} with dense weights")
    dense = run_outputs(package, inputs, weights="dense", function=name)
    steps.done()
    report.checks.extend(compare_sparse_dense(sparse, dense, subjects))

    if reference is not None:
        steps.start(f"running the reference {reference_name}")
        reference_run = run_outputs(reference, inputs, weights="dense", function=reference_name)
        steps.done()
        report.checks.extend(compare_reference(sparse, reference_run, subjects, min_cosine=min_cosine))
    if expected is not None:
        report.checks.extend(compare_reference(sparse, expected, subjects, min_cosine=min_cosine, check="expected_output"))
