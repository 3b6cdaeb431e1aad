"""The report model: status and exit code policy, JSON, JUnit XML and the rich table."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from sparseblob.verify.report import (
    CHECKS,
    CheckResult,
    Report,
    Status,
    render_table,
    to_json,
    write_junit,
)


def _report(*statuses: str) -> Report:
    rows = [
        CheckResult("mask", f"weight{index}", status, "4 set bits, 4 values", "one value per set bit", f"message {index}")
        for index, status in enumerate(statuses)
    ]
    return Report(package="model.mlpackage", checks=rows, settings={"seed": 0})


@pytest.mark.parametrize(
    ("statuses", "status", "exit_code"),
    [
        (("pass", "pass"), Status.PASS, 0),
        (("pass", "warn"), Status.WARN, 0),
        (("warn", "fail", "pass"), Status.FAIL, 1),
        (("skip", "skip"), Status.PASS, 0),
        ((), Status.PASS, 0),
        (("skip", "fail"), Status.FAIL, 1),
    ],
)
def test_overall_status_and_exit_code(statuses, status, exit_code):
    report = _report(*statuses)

    assert report.status is status
    assert report.exit_code == exit_code


def test_counts_cover_every_status():
    assert _report("pass", "fail", "fail").counts() == {"pass": 1, "warn": 0, "fail": 2, "skip": 0}


def test_unknown_check_rejected():
    with pytest.raises(ValueError, match="not a known check"):
        CheckResult("bogus", "w", Status.PASS)


def test_rows_filter_by_check_and_status():
    report = _report("pass", "fail")

    assert [row.subject for row in report.failures()] == ["weight1"]
    assert report.rows(check="mask", status="pass")[0].subject == "weight0"


def test_json_has_documented_keys():
    report = _report("pass", "fail")
    report.checks.append(CheckResult("reference_output", "y", Status.FAIL, metrics={"cosine": float("nan"), "max_abs": float("inf")}))

    data = to_json(report)
    text = json.dumps(data, allow_nan=False)

    assert set(data) == {"format", "version", "package", "reference", "status", "exit_code", "counts", "settings", "checks"}
    assert data["format"] == "sparseblob-verify"
    assert data["status"] == "fail"
    assert data["exit_code"] == 1
    assert set(data["checks"][0]) == {"check", "subject", "status", "measured", "expected", "message", "metrics"}
    assert json.loads(text)["checks"][2]["metrics"] == {"cosine": "nan", "max_abs": "inf"}


def test_junit_parses_back(tmp_path):
    report = _report("pass", "fail", "warn", "skip")
    path = tmp_path / "report.xml"

    write_junit(report, path)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")

    assert root.tag == "testsuites"
    assert suite.get("tests") == "4"
    assert suite.get("failures") == "1"
    assert suite.get("skipped") == "1"
    assert [case.get("name") for case in cases] == ["weight0", "weight1", "weight2", "weight3"]
    assert cases[0].get("classname") == "sparseblob.verify.mask"
    assert cases[0].find("failure") is None
    assert cases[1].find("failure").get("message") == "message 1"
    assert "measured: 4 set bits" in cases[1].find("failure").text
    assert cases[2].find("system-out").text.startswith("warning:")
    assert cases[3].find("skipped").get("message") == "message 3"
    assert not list(tmp_path.glob("*.partial"))


def test_junit_properties_hold_settings(tmp_path):
    report = _report("pass")
    report.reference = "dense.mlpackage"
    path = tmp_path / "report.xml"

    write_junit(report, path)
    properties = {item.get("name"): item.get("value") for item in ET.parse(path).getroot().iter("property")}

    assert properties == {"reference": "dense.mlpackage", "seed": "0"}


def test_table_shows_rows_and_summary():
    console = Console(record=True, width=200)

    render_table(_report("pass", "fail"), console)
    text = console.export_text()

    assert "weight1" in text
    assert "FAIL: 1 failed, 0 warnings, 1 passed, 0 skipped" in text


def test_table_escapes_markup():
    console = Console(record=True, width=200)
    report = Report("p", [CheckResult("mask", "w[bold]", Status.FAIL, message="[red]x[/red]")])

    render_table(report, console)

    assert "[red]x[/red]" in console.export_text()


def test_every_check_kind_documented():
    assert all(description for description in CHECKS.values())


def test_real_report_round_trips(tmp_path):
    from sparseblob.verify.verify import verify_package

    from ._packages import FIXTURES

    report = verify_package(FIXTURES / "formats/ios18/joint_prune50_uint4_linear_block8.mlpackage", expect="2:4")
    path = tmp_path / "report.xml"

    data = json.loads(json.dumps(to_json(report), allow_nan=False))
    write_junit(report, path)
    cases = ET.parse(path).getroot().findall("testsuite/testcase")

    assert data["status"] == "fail"
    assert data["counts"]["warn"] == 1
    assert len(data["checks"]) == len(report.checks) == len(cases)
    assert {case.get("classname") for case in cases if case.find("failure") is not None} == {"sparseblob.verify.pattern"}
