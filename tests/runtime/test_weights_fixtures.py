"""Every committed fixture package decodes to its committed expected arrays, bit for bit.

``fixtures/index.json`` lists each fixture (sections ``formats`` and ``models``) with its
package, its ``.npz`` of expected values and, under ``arrays``, the op that produces each
``.npz`` key. A key produced by a ``constexpr_*`` op must equal that output of
``Package.constexpr_values()``; a key produced by a ``const`` op must equal the const's value.
Each entry's ``weights`` with a non-empty ``chain`` are the outputs that ``Package.weights()``
returns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparseblob.runtime import load
from sparseblob.verify.compare import assert_bits_equal

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INDEX = FIXTURES / "index.json"


def fixture_entries() -> list:
    if not INDEX.is_file():
        return []
    index = json.loads(INDEX.read_text())
    entries = index.get("formats", []) + index.get("models", [])
    return [pytest.param(entry, id=entry["name"]) for entry in entries]


@pytest.fixture(scope="module")
def registry():
    return pytest.importorskip("sparseblob.runtime.decode.registry")


@pytest.mark.parametrize("entry", fixture_entries())
def test_fixture_decodes_to_expected_arrays(entry, registry):
    package_path = FIXTURES / entry["package"]
    if not package_path.is_dir():
        pytest.skip(f"{entry['package']} is listed in index.json but not present")

    package = load(package_path)
    function = package.function()
    values = package.constexpr_values()
    weights = package.weights()
    consts = {op.outputs[0].name: op.attributes["val"] for op in function.operations if op.type == "const"}

    with np.load(FIXTURES / entry["expected"]) as expected:
        assert sorted(expected.files) == sorted(entry["arrays"])
        for key, info in entry["arrays"].items():
            if info["op_type"] == "const":
                actual = consts[key].read()
            else:
                actual = values[key]
            assert_bits_equal(actual, expected[key], name=f"{entry['name']}: {key}")

    compressed = [weight["output"] for weight in entry["weights"] if weight["chain"]]
    assert sorted(weights) == sorted(compressed)
    for name in compressed:
        assert_bits_equal(weights[name], values[name], name=f"{entry['name']}: weights()[{name!r}]")
