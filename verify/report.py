"""The result of a verification: one row per check, an overall status, and three renderings.

A :class:`Report` holds :class:`CheckResult` rows. Each row names the kind of check (one of
:data:`CHECKS`), its subject (a weight or an output name), a :class:`Status`, the measured and
expected values as short texts, a message, and the measured numbers under ``metrics``.

The overall status is ``fail`` when any row failed, else ``warn`` when any row warned, else
``pass``. Warnings never fail a verification: :attr:`Report.exit_code` is 1 only when a row
failed. Skipped rows record a check that could not run (no coremltools, no mask, a weight that
did not decode) and do not change the status.

Renderings:

- :func:`render_table` prints a rich table and a summary line.
- :func:`to_json` returns a JSON-ready dictionary; its keys are listed in that function's
  docstring.
- :func:`write_junit` writes JUnit XML that CI systems read: one ``testcase`` per row, a
  ``failure`` element for each failed row and a ``skipped`` element for each skipped row.
"""

from __future__ import annotations

import enum
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "CHECKS",
    "JSON_FORMAT",
    "JSON_VERSION",
    "Status",
    "CheckResult",
    "Report",
    "render_table",
    "to_json",
    "write_junit",
]

JSON_FORMAT = "sparseblob-verify"
JSON_VERSION = 1

CHECKS: Mapping[str, str] = {
    "load": "the package loads: manifest, protobuf and blob file are well formed",
    "decode": "sparseblob's decoders evaluate every constexpr op of the weight's chain",
    "mask": "mask bits are 0 or 1, padding bits are clear, and set bits equal the stored values",
    "lut": "LUT shape, entry count and vector axis fit the indices, entries are finite, "
    "indices are in range",
    "scale": "scale, offset and zero point shapes fit the data, and every scale that a stored "
    "value uses is finite and positive",
    "finite": "stored float values and the decoded weight are finite",
    "pattern": "the sparsity pattern detected from the stored mask, and the expected patterns",
    "coremltools": "coremltools' own decompression gives the same bits as sparseblob's decoders",
    "expected": "the decoded weight equals the given expected array, bit for bit",
    "reference_weight": "the decoded weight agrees with the reference package's weight",
    "sparse_vs_dense": "outputs with sparse kernels agree with outputs of dense decoded weights",
    "reference_output": "outputs agree with the reference package's outputs within the threshold",
    "expected_output": "outputs agree with the given expected outputs within the threshold",
}
"""Kinds of check, with what each one establishes when it passes."""


class Status(str, enum.Enum):
    """Outcome of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


# Precedence when several findings merge into one row, and for the overall status.
_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


def worst(statuses) -> Status:
    """Return the most severe status: fail, then warn, then pass, then skip."""
    found = Status.SKIP
    for status in statuses:
        if _SEVERITY[Status(status)] > _SEVERITY[found]:
            found = Status(status)
    return found


@dataclass(frozen=True)
class CheckResult:
    """One row of a report.

    Attributes:
        check: the kind of check, a key of :data:`CHECKS`.
        subject: the weight or output the check is about (``function:name`` in packages with
            several functions), or the package path for package-wide checks.
        status: pass, warn, fail or skip.
        measured: the measured value, as a short text.
        expected: the value or condition the check requires, as a short text.
        message: what was found, naming the op and the parameter when a check fails.
        metrics: the measured numbers behind ``measured`` (errors, cosine similarity, counts).
    """

    check: str
    subject: str
    status: Status
    measured: str = ""
    expected: str = ""
    message: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"check={self.check!r} is not a known check; expected one of {sorted(CHECKS)}")
        object.__setattr__(self, "status", Status(self.status))


@dataclass
class Report:
    """The rows of one verification and the settings it ran with.

    Attributes:
        package: path of the verified package.
        checks: the rows, in the order the checks ran.
        reference: path of the reference package, or None.
        settings: the options of the run (seed, thresholds, coremltools version), for the record.
    """

    package: str
    checks: list[CheckResult] = field(default_factory=list)
    reference: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """``fail`` when a row failed, else ``warn`` when a row warned, else ``pass``."""
        found = worst(row.status for row in self.checks)
        return Status.PASS if found is Status.SKIP else found

    @property
    def exit_code(self) -> int:
        """1 when a row failed, else 0; warnings and skips do not fail."""
        return 1 if self.status is Status.FAIL else 0

    def counts(self) -> dict[str, int]:
        """Return the number of rows per status, for every status."""
        counts = {status.value: 0 for status in Status}
        for row in self.checks:
            counts[row.status.value] += 1
        return counts

    def rows(self, *, check: str | None = None, status: Status | str | None = None) -> list[CheckResult]:
        """Return the rows of one kind of check and/or one status."""
        found = self.checks
        if check is not None:
            found = [row for row in found if row.check == check]
        if status is not None:
            found = [row for row in found if row.status is Status(status)]
        return found

    def failures(self) -> list[CheckResult]:
        """Return the failed rows."""
        return self.rows(status=Status.FAIL)


# ---------------------------------------------------------------------------------------------
# Rendering

_STYLES = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def render_table(report: Report, console: Console) -> None:
    """Print ``report`` as a rich table followed by a one-line summary.

    Args:
        report: the report.
        console: the rich console to print to.
    """
    from rich.markup import escape
    from rich.table import Table

    title = report.package if report.reference is None else f"{report.package} against {report.reference}"
    table = Table(title=escape(title), show_edge=False, expand=False)
    for column in ("check", "subject", "status", "measured", "expected", "message"):
        table.add_column(column, overflow="fold")
    for row in report.checks:
        style = _STYLES[row.status]
        table.add_row(
            row.check,
            escape(row.subject),
            f"[{style}]{row.status.value}[/]",
            escape(row.measured),
            escape(row.expected),
            escape(row.message),
        )
    console.print(table)
    console.print(summary_line(report))


def summary_line(report: Report) -> str:
    """Return the summary as rich markup, e.g. ``FAIL: 2 failed, 1 warning, 30 passed, 0 skipped``."""
    counts = report.counts()
    style = _STYLES[report.status]
    return (
        f"[{style}]{report.status.value.upper()}[/]: {counts['fail']} failed, "
        f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}, {counts['pass']} passed, "
        f"{counts['skip']} skipped"
    )


def _json_number(value: float) -> float | str | None:
    """Return a float that JSON can hold; NaN and infinities become the strings "nan", "inf"."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def to_json(report: Report) -> dict[str, Any]:
    """Return ``report`` as a JSON-ready dictionary.

    Keys:

    - ``format``: always ``"sparseblob-verify"``; ``version``: the layout version, 1.
    - ``package``, ``reference``: the paths (``reference`` is null without one).
    - ``status``: ``pass``, ``warn`` or ``fail``; ``exit_code``: 0, or 1 when a check failed.
    - ``counts``: rows per status, keys ``pass``, ``warn``, ``fail``, ``skip``.
    - ``settings``: the options of the run.
    - ``checks``: one object per row with ``check``, ``subject``, ``status``, ``measured``,
      ``expected``, ``message`` and ``metrics`` (name to number; NaN and infinities are the
      strings ``"nan"``, ``"inf"`` and ``"-inf"``).
    """
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "package": report.package,
        "reference": report.reference,
        "status": report.status.value,
        "exit_code": report.exit_code,
        "counts": report.counts(),
        "settings": dict(report.settings),
        "checks": [
            {
                "check": row.check,
                "subject": row.subject,
                "status": row.status.value,
                "measured": row.measured,
                "expected": row.expected,
                "message": row.message,
                "metrics": {key: _json_number(value) for key, value in row.metrics.items()},
            }
            for row in report.checks
        ],
    }


def write_junit(report: Report, path: str | os.PathLike) -> None:
    """Write ``report`` as JUnit XML to ``path``, replacing the file atomically.

    The file has one ``testsuite`` named after the package. Each row is a ``testcase`` with
    ``classname`` ``sparseblob.verify.<check>`` and ``name`` the subject. A failed row has a
    ``failure`` element whose ``message`` is the row's message. A skipped row has a
    ``skipped`` element. A warning stays a passing test case whose ``system-out`` starts with
    ``warning:``, because JUnit has no warning outcome.
    """
    counts = report.counts()
    suites = ET.Element(
        "testsuites",
        name="sparseblob verify",
        tests=str(len(report.checks)),
        failures=str(counts["fail"]),
        errors="0",
        skipped=str(counts["skip"]),
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=report.package,
        tests=str(len(report.checks)),
        failures=str(counts["fail"]),
        errors="0",
        skipped=str(counts["skip"]),
    )
    properties = ET.SubElement(suite, "properties")
    if report.reference is not None:
        ET.SubElement(properties, "property", name="reference", value=report.reference)
    for key, value in report.settings.items():
        ET.SubElement(properties, "property", name=str(key), value=str(value))

    for row in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"sparseblob.verify.{row.check}", name=row.subject)
        details = f"measured: {row.measured}\nexpected: {row.expected}\n{row.message}"
        if row.status is Status.FAIL:
            failure = ET.SubElement(case, "failure", message=row.message or row.measured, type=row.check)
            failure.text = details
        elif row.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=row.message)
        elif row.status is Status.WARN:
            ET.SubElement(case, "system-out").text = f"warning: {details}"

    ET.indent(suites)
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    ET.ElementTree(suites).write(partial, encoding="utf-8", xml_declaration=True)
    os.replace(partial, target)
