"""Weight comparisons against known-good values: a reference package, and expected arrays.

``reference_weight`` rows compare each decoded weight with the weight that the reference
package (usually the dense model before compression) binds at the same place: the compute op
of the same name, the same input. What passes depends on the chain:

- Lossless chains (only ``constexpr_sparse_to_dense`` and ``constexpr_cast``) store copies of
  the kept values. Every kept value (mask bit 1) must have the bits of the reference value
  cast to the decoded dtype. Pruned positions may hold anything in the reference. This
  catches a mask bit that moved, and values stored in the wrong order.
- Lossy chains (a LUT or quantization anywhere) pass when the cosine similarity of the kept
  values is at least ``min_weight_cosine`` (0.9 by default). Measured on coremltools 9.0
  fixtures with normal weights: 4-bit palettization 0.985, 4-bit quantization per tensor 0.977,
  int8 0.9999, and 1-bit and 2-bit uniform palettization 0.65 and 0.75, which need a lower
  threshold.

``expected`` rows compare decoded values bit for bit with arrays from an ``.npz`` file keyed
by constexpr output name, such as the expected values committed next to a fixture. They catch
any change of a stored byte, even one that leaves the weight plausible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from sparseblob.runtime.errors import OptionError
from sparseblob.runtime.package import Package
from sparseblob.verify.compare import bits_equal

from .checks import SPARSE_TO_DENSE, DecodedFunction, DecodedWeight, decode_function
from .differential import describe_bit_difference
from .outputs import output_metrics, read_arrays
from .report import CheckResult, Status

__all__ = [
    "DEFAULT_MIN_WEIGHT_COSINE",
    "LOSSLESS_OPS",
    "reference_weights",
    "compare_reference_weights",
    "read_expected",
    "compare_expected",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_WEIGHT_COSINE = 0.9
"""Default threshold of ``reference_weight`` rows for lossy chains: cosine of the kept values."""

LOSSLESS_OPS = frozenset({SPARSE_TO_DENSE, "constexpr_cast"})
"""Constexpr ops that store values unchanged; a chain made only of them is compared exactly."""


def reference_weights(package: Package, function: str | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Return the weight that each compute op input binds in a reference package.

    Args:
        package: the reference package.
        function: the function name; the default function when None.

    Returns:
        ``(op name, input name)`` to the ``const`` value or the decoded constexpr output
        that the input binds. Inputs bound to activations are left out.
    """
    decoded = decode_function(package, function)
    func = decoded.function
    values: dict[str, np.ndarray] = dict(decoded.values)
    for op in func.operations:
        if op.type == "const" and op.outputs and "val" in op.attributes:
            data = op.attributes["val"].read()
            if isinstance(data, np.ndarray) and data.ndim >= 1:
                values[op.outputs[0].name] = data

    found = {}
    for op in func.operations:
        if op.is_constexpr or op.type == "const":
            continue
        for key, argument in op.inputs.items():
            if len(argument.bindings) == 1 and argument.bindings[0].name in values:
                found[(op.name, key)] = values[argument.bindings[0].name]
    return found


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return output_metrics(a, b)["cosine"]


def _lossless(weight: DecodedWeight) -> bool:
    return all(op.type in LOSSLESS_OPS for op in weight.chain)


def _reference_row(weight: DecodedWeight, reference: np.ndarray, min_weight_cosine: float) -> CheckResult:
    ours = weight.value
    if ours.shape != reference.shape:
        return CheckResult(
            "reference_weight", weight.subject, Status.FAIL, f"shape {list(ours.shape)}", f"shape {list(reference.shape)}",
            "the decoded weight and the reference weight have different shapes",
        )
    kept = weight.mask if weight.mask is not None and weight.mask.shape == ours.shape else np.ones(ours.shape, dtype=bool)
    count = int(np.count_nonzero(kept))
    metrics = {"cosine": _cosine(ours, reference), "kept_cosine": _cosine(ours[kept], reference[kept]), "kept": count}

    if _lossless(weight) and ours.dtype.kind == "f":
        with np.errstate(over="ignore"):
            cast = reference.astype(ours.dtype)
        unsigned = np.dtype(f"u{ours.dtype.itemsize}")
        differ = kept & (np.ascontiguousarray(ours).view(unsigned) != np.ascontiguousarray(cast).view(unsigned))
        metrics["differing"] = int(np.count_nonzero(differ))
        if differ.any():
            first = tuple(int(i) for i in np.argwhere(differ)[0])
            return CheckResult(
                "reference_weight", weight.subject, Status.FAIL, f"{metrics['differing']} of {count} kept values differ",
                "kept values equal the reference",
                f"{metrics['differing']} kept values differ from the reference weight; first at {list(first)}: "
                f"decoded {ours[first]!r}, reference {cast[first]!r}",
                metrics=metrics,
            )
        return CheckResult(
            "reference_weight", weight.subject, Status.PASS, f"{count} kept values bit-identical",
            "kept values equal the reference", metrics=metrics,
        )

    measured = f"kept cosine {metrics['kept_cosine']:.6f}, cosine {metrics['cosine']:.6f}"
    expected = f"kept cosine >= {min_weight_cosine:g}"
    if metrics["kept_cosine"] >= min_weight_cosine:
        return CheckResult("reference_weight", weight.subject, Status.PASS, measured, expected, metrics=metrics)
    return CheckResult(
        "reference_weight", weight.subject, Status.FAIL, measured, expected,
        f"the kept values' cosine similarity with the reference weight is {metrics['kept_cosine']:.6f}, "
        f"below {min_weight_cosine:g}",
        metrics=metrics,
    )


def compare_reference_weights(
    decoded: DecodedFunction,
    reference: Mapping[tuple[str, str], np.ndarray],
    *,
    min_weight_cosine: float = DEFAULT_MIN_WEIGHT_COSINE,
) -> list[CheckResult]:
    """Return one ``reference_weight`` row per compressed weight.

    Args:
        decoded: the package's decoded function.
        reference: from :func:`reference_weights`.
        min_weight_cosine: threshold for lossy chains.
    """
    rows = []
    for weight in decoded.weights:
        if weight.value is None:
            rows.append(CheckResult("reference_weight", weight.subject, Status.SKIP, message="the weight did not decode"))
            continue
        match = next((reference[place] for place in weight.consumers if place in reference), None)
        if match is None:
            places = ", ".join(f"{op}.{key}" for op, key in weight.consumers) or "no compute op"
            rows.append(CheckResult(
                "reference_weight", weight.subject, Status.SKIP,
                message=f"the reference has no weight at {places}; weights are matched by op name and input",
            ))
            continue
        rows.append(_reference_row(weight, np.asarray(match), min_weight_cosine))
    return rows


def read_expected(source: str | os.PathLike | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return expected arrays from an ``.npz`` file or a mapping, keyed by constexpr output name.

    Raises:
        OptionError: the file cannot be read as an ``.npz`` of arrays.
    """
    return read_arrays(source, what="expected arrays", contents="constexpr output names to arrays")


def compare_expected(decoded: DecodedFunction, expected: Mapping[str, np.ndarray], *, prefix: str = "") -> list[CheckResult]:
    """Return one ``expected`` row per weight: every output of its chain found in ``expected`` must match bit for bit.

    Args:
        decoded: the package's decoded function.
        expected: output name to array (sub-byte values one per byte, as sparseblob decodes them).
        prefix: a key prefix such as ``"main:"`` tried before the bare name, for packages with
            several functions.
    """
    rows = []
    for weight in decoded.weights:
        names = [out.name for op in weight.chain for out in op.outputs]
        keys = {name: prefix + name if prefix + name in expected else name for name in names}
        present = [name for name in names if keys[name] in expected]
        if not present:
            rows.append(CheckResult("expected", weight.subject, Status.SKIP, message="no expected array for this weight"))
            continue
        problems = []
        for name in present:
            ours = decoded.values.get(name)
            if ours is None:
                problems.append(f"{name!r} did not decode")
            elif not bits_equal(ours, expected[keys[name]]):
                problems.append(describe_bit_difference(name, ours, np.asarray(expected[keys[name]]), "decoded", "expected"))
        status = Status.FAIL if problems else Status.PASS
        measured = f"{len(present) - len(problems)} of {len(present)} {'array' if len(present) == 1 else 'arrays'} bit-identical"
        rows.append(CheckResult("expected", weight.subject, status, measured, "same bits", "; ".join(problems)))
    return rows
