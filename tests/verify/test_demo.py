"""The demo job builds, compresses and verifies its models, and every report passes."""

from __future__ import annotations

from rich.console import Console

from sparseblob.verify.demo import DEMO_VARIANTS, run_demo
from sparseblob.verify.report import Status


def test_demo_reports_pass(tmp_path):
    console = Console(record=True, width=160)

    reports = run_demo(tmp_path, console)
    text = console.export_text()
    by_name = dict(zip((variant.name for variant in DEMO_VARIANTS), reports))
    patterns = by_name["prune2of4"].rows(check="pattern")

    assert [report.status for report in reports] == [Status.PASS] * len(DEMO_VARIANTS)
    assert all(report.reference.endswith("dense.mlpackage") for report in reports)
    assert all(report.rows(check="reference_output") for report in reports)
    assert {row.expected for row in patterns} == {"2:4@axis1"}
    assert all(row.measured.startswith("2:4@axis1") for row in patterns)
    assert "summary" in text
    assert (tmp_path / "prune2of4.mlpackage").is_dir()
