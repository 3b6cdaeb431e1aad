"""Compact JSON form of per-layer cost lists, and the committed summaries of the calibration models.

A summary file stores the layer shapes once and, for every compressed variant of the model, only
what the variant changes: activation dtype, weight format, byte counts and mask statistics. Each
record is one :class:`LayerCost` without its shape fields, which come from the shared layer list.
Identical records (repeated blocks) are stored once per variant and referenced by index.

The calibration summaries ship as ``profiles/calibration-<model>.json``. ``bench/latency_models.py``
rebuilds them from the architecture definitions.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ..errors import SparseblobError
from .costs import LayerCost

__all__ = ["pack_costs", "unpack_costs", "calibration_models", "load_calibration", "calibration_recipes"]

_SHAPE_FIELDS = ("name", "op", "weight_shape", "input_shape", "output_shape", "groups")
_PREFIX = "calibration-"


def pack_costs(variants: dict[str, list[LayerCost]], recipes: dict[str, dict] | None = None) -> dict:
    """Return the compact JSON-ready form of several cost lists over the same layers.

    Args:
        variants: variant name -> per-layer costs; every list must describe the same layers.
        recipes: optional variant name -> description of how it was compressed.

    Raises:
        SparseblobError: two variants describe different layers.
    """
    first = next(iter(variants.values()))
    layers = [{key: value for key, value in c.to_dict().items() if key in _SHAPE_FIELDS} for c in first]
    packed = {}
    for name, costs in variants.items():
        records: list[dict] = []
        indices = []
        for layer, cost in zip(layers, costs, strict=True):
            record = cost.to_dict()
            if {key: record[key] for key in _SHAPE_FIELDS} != layer:
                raise SparseblobError(f"variant {name!r}: layer {cost.name!r} differs from the shared layer list")
            record["weight_bytes"] = {key: value for key, value in record["weight_bytes"].items() if value}
            record = {key: value for key, value in record.items() if key not in _SHAPE_FIELDS and value}
            if record not in records:
                records.append(record)
            indices.append(records.index(record))
        packed[name] = {"recipe": (recipes or {}).get(name, {}), "records": records, "layers": indices}
    return {"layers": layers, "variants": packed}


def unpack_costs(data: dict) -> dict[str, list[LayerCost]]:
    """Return variant name -> per-layer costs from the form written by :func:`pack_costs`."""
    defaults = {"n_luts": 0, "lut_entries": 0, "n_scales": 0, "mask": None}
    variants = {}
    for name, variant in data["variants"].items():
        costs = []
        for layer, index in zip(data["layers"], variant["layers"], strict=True):
            values = {**defaults, **layer, **variant["records"][index]}
            values.setdefault("weight_bytes", {})
            for key in ("macs", "input_bytes", "output_bytes", "elements", "nonzeros", "expanded_bytes"):
                values.setdefault(key, 0)
            costs.append(LayerCost.from_dict(values))
        variants[name] = costs
    return variants


def calibration_models() -> list[str]:
    """Return the names of the calibration models whose summaries ship with the package."""
    folder = resources.files(__package__) / "profiles"
    names = [entry.name for entry in folder.iterdir() if entry.name.startswith(_PREFIX) and entry.name.endswith(".json")]
    return sorted(name[len(_PREFIX) : -len(".json")] for name in names)


@lru_cache(maxsize=None)
def _load_raw(model: str) -> dict:
    path = resources.files(__package__) / "profiles" / f"{_PREFIX}{model}.json"
    if not path.is_file():
        raise SparseblobError(
            f"calibration model {model!r} not found; expected one of {calibration_models()}"
        )
    return json.loads(path.read_text())


def load_calibration(model: str) -> dict[str, list[LayerCost]]:
    """Return variant name -> per-layer costs of a shipped calibration model (``"resnet50"`` ...)."""
    return unpack_costs(_load_raw(model))


def calibration_recipes(model: str) -> dict[str, dict]:
    """Return variant name -> compression recipe of a shipped calibration model."""
    return {name: variant["recipe"] for name, variant in _load_raw(model)["variants"].items()}
