"""Copies of fixture packages and in-place edits of their stored parameters, for verifier tests.

Every edit rewrites bytes of a blob payload in the copy's ``weight.bin``. The package keeps its
structure, so it still loads and only the values change.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparseblob.runtime import load
from sparseblob.runtime.values import BlobValue

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
INDEX = json.loads((FIXTURES / "index.json").read_text()) if (FIXTURES / "index.json").is_file() else {}


def entry(name: str) -> dict:
    """Return the index entry of a fixture, e.g. ``"ios18/prune_2of4_dim1"``."""
    for item in INDEX.get("formats", []) + INDEX.get("models", []):
        if item["name"] == name:
            return item
    raise KeyError(name)


def fixture_path(name: str) -> Path:
    return FIXTURES / entry(name)["package"]


def copy_fixture(name: str, directory: Path) -> Path:
    """Copy a fixture package into ``directory`` and return the copy's path."""
    source = fixture_path(name)
    target = directory / source.name
    shutil.copytree(source, target)
    return target


def blob_of(package_path: Path, op_name: str, param: str) -> BlobValue:
    """Return the blob value bound to one parameter of a constexpr op (input or attribute)."""
    with load(package_path) as package:
        for op in package.function().operations:
            if op.name != op_name:
                continue
            value = op.attributes.get(param)
            if value is None:
                value = op.inputs[param].bindings[0].value
            if not isinstance(value, BlobValue):
                raise AssertionError(f"{op_name}.{param} is not stored in a blob")
            return value
    raise AssertionError(f"no op {op_name!r} in {package_path}")


def edit_payload(package_path: Path, op_name: str, param: str, edit: Callable[[np.ndarray], None], dtype) -> None:
    """Read a whole-byte payload as ``dtype``, let ``edit`` change the array, and write it back."""
    value = blob_of(package_path, op_name, param)
    record = value.record
    with open(value.path, "r+b") as file:
        file.seek(record.data_offset)
        data = np.frombuffer(file.read(record.size_in_bytes), dtype=dtype).copy()
        edit(data)
        file.seek(record.data_offset)
        file.write(data.tobytes())


def flip_mask_bit(package_path: Path, op_name: str, param: str, index: int) -> None:
    """Flip the mask bit of element ``index`` (C order) of a uint1 or packed uint8 mask blob."""

    def flip(data: np.ndarray) -> None:
        data[index // 8] ^= np.uint8(1 << (index % 8))

    edit_payload(package_path, op_name, param, flip, np.uint8)


def mask_bit(package_path: Path, op_name: str, param: str, index: int) -> int:
    value = blob_of(package_path, op_name, param)
    with open(value.path, "rb") as file:
        file.seek(value.record.data_offset + index // 8)
        return (file.read(1)[0] >> (index % 8)) & 1
