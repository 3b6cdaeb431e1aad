"""Device profiles: the fitted parameters of the latency model for one chip, OS and compute unit.

A profile is a JSON file ``profiles/<chip>-<os>-<unit>.json`` shipped with the package. It contains
the model's parameters (bandwidth, compute rates, overheads, decode rates, skip rule), which
weight formats stream compressed and which are expanded to fp16 before dispatch, the published
rows it was fitted on, and its residuals. ``bench/fit_latency.py`` writes these files; the model
itself is in :mod:`.model`.

Parameters (all positive; the units are in the names):

==========================  ====================================================================
``bandwidth_gbps``          DRAM bandwidth for compressed weight streams and activations, GB/s.
``dense_weight_efficiency`` fraction of ``bandwidth_gbps`` reached when a weight is read as
                            dense fp16 (uncompressed, or expanded before dispatch).
``weight_cache_mb``         system-level cache that keeps weights between predictions, MB.
``cache_bandwidth_gbps``    bandwidth of weight bytes served from that cache, GB/s.
``conv_tmacs``              effective compute rate of dense convs, TMAC/s (also ``depthwise_``,
                            ``linear_``).
``int8_speedup``            compute-rate multiplier when weights and activations are both int8.
``op_overhead_us``          fixed cost of each weight layer, microseconds.
``dispatch_us``             fixed cost of each prediction, microseconds.
``activation_cache_mb``     on-chip buffer: a layer whose input plus output is larger spills.
``activation_spill``        fraction of a spilling layer's activation bytes that reach DRAM.
``<format>_decode_gelems``  decode throughput of streamed sparse, palettized and affine
                            weights, giga-elements/s.
``lut_ns``                  decode cost of each lookup table, nanoseconds.
``lut_pair_ps``             decode cost per squared table count of a layer, picoseconds
                            (the superlinear growth as LUT groups shrink).
``lut_layer_us``            setup cost of a layer with grouped LUTs (more than one table),
                            microseconds; it adds to the layer's time instead of overlapping.
``skip_efficiency``         fraction of the all-zero skip units whose MACs the unit skips.
==========================  ====================================================================
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import SparseblobError

__all__ = ["PARAMETERS", "DeviceProfile", "PublishedRow", "list_profiles", "load_profile", "profile_from_dict"]

logger = logging.getLogger(__name__)

PARAMETERS: tuple[str, ...] = (
    "bandwidth_gbps",
    "dense_weight_efficiency",
    "weight_cache_mb",
    "cache_bandwidth_gbps",
    "conv_tmacs",
    "depthwise_tmacs",
    "linear_tmacs",
    "int8_speedup",
    "op_overhead_us",
    "dispatch_us",
    "activation_cache_mb",
    "activation_spill",
    "sparse_decode_gelems",
    "palettized_decode_gelems",
    "affine_decode_gelems",
    "lut_ns",
    "lut_pair_ps",
    "lut_layer_us",
    "skip_efficiency",
)

# Keys of a profile's stream flags: each format either streams compressed or is expanded to fp16
# before dispatch.
STREAM_KEYS: tuple[str, ...] = ("sparse", "palettized", "affine", "affine_int8_activations")

# Parameters that divide a quantity: they must be strictly positive. The rest may be 0.
_POSITIVE = frozenset(
    {
        "bandwidth_gbps",
        "dense_weight_efficiency",
        "cache_bandwidth_gbps",
        "conv_tmacs",
        "depthwise_tmacs",
        "linear_tmacs",
        "int8_speedup",
        "activation_cache_mb",
        "sparse_decode_gelems",
        "palettized_decode_gelems",
        "affine_decode_gelems",
    }
)

_CALIBRATION_PREFIX = "calibration-"


@dataclass(frozen=True)
class PublishedRow:
    """One published latency measurement of a compressed or dense model.

    Attributes:
        table: source table id (rows are compared only within one table).
        model: calibration model name (``"resnet50"`` ...).
        variant: compression variant of that model's summary (``"fp16"``, ``"sp50"`` ...).
        ms: published latency, milliseconds.
        dense_variant: the variant of the same table that the ratio is taken to.
        cr: published compression ratio, when given.
        use: False for a row kept out of the fit (its ``note`` gives the reason).
        note: reason for excluding or flagging the row.
    """

    table: str
    model: str
    variant: str
    ms: float
    dense_variant: str = "fp16"
    cr: float | None = None
    use: bool = True
    note: str = ""

    @property
    def key(self) -> str:
        """Identifier ``table/model/variant``."""
        return f"{self.table}/{self.model}/{self.variant}"

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass(frozen=True)
class DeviceProfile:
    """Parameters of the latency model for one chip, OS and compute unit.

    Attributes:
        name: ``<chip>-<os>-<unit>``, e.g. ``"a16-ios17-ne"``.
        chip: chip name.
        os: OS build family.
        compute_unit: ``"NE"``, ``"GPU"`` or ``"CPU"``.
        parameters: values of :data:`PARAMETERS`.
        streams: format key -> True when that format streams compressed at prediction time,
            False when it is expanded to fp16 before dispatch.
        skip: skip rule ``{"group": g, "axis": "input" or "output", "min_sparsity": s}``.
        combine: ``"max"`` (decode overlaps memory and compute) or ``"add"`` (decode adds).
        description: what the profile covers and where its numbers come from.
        rows: published rows the profile was fitted on (and rows kept aside, ``use`` False).
        fit: fitting set-up: free parameters, bounds, priors, and results (residuals,
            leave-one-row-out predictions).
        coverage: what the fitted rows exercise; anything outside is an extrapolation.
    """

    name: str
    chip: str
    os: str
    compute_unit: str
    parameters: dict[str, float]
    streams: dict[str, bool]
    skip: dict
    combine: str = "max"
    description: str = ""
    rows: tuple[PublishedRow, ...] = ()
    fit: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)

    def with_parameters(self, values: dict[str, float]) -> DeviceProfile:
        """Return a copy with some parameters replaced."""
        return DeviceProfile(**{**self.__dict__, "parameters": {**self.parameters, **values}})

    def to_dict(self) -> dict:
        """Return the JSON-ready form read by :func:`profile_from_dict`."""
        data = {"kind": "device_profile", **copy.deepcopy(self.__dict__)}
        data["rows"] = [row.to_dict() for row in self.rows]
        return data


def profile_from_dict(data: dict) -> DeviceProfile:
    """Build a :class:`DeviceProfile` from its JSON form, checking every parameter is present.

    Raises:
        SparseblobError: a parameter or stream flag is missing, unknown or not positive, or the
            combine mode or skip axis is unknown.
    """
    name = data.get("name", "<unnamed>")
    parameters = {key: float(value) for key, value in data.get("parameters", {}).items()}
    missing = [key for key in PARAMETERS if key not in parameters]
    unknown = [key for key in parameters if key not in PARAMETERS]
    if missing or unknown:
        raise SparseblobError(f"profile {name!r}: missing parameters {missing}, unknown parameters {unknown}")
    not_positive = {key: value for key, value in parameters.items() if key in _POSITIVE and not value > 0}
    negative = {key: value for key, value in parameters.items() if not value >= 0}
    if not_positive or negative:
        raise SparseblobError(
            f"profile {name!r}: parameters {not_positive | negative} are invalid; rates, bandwidths and "
            "efficiencies must be positive and every other parameter non-negative"
        )
    streams = {key: bool(value) for key, value in data.get("streams", {}).items()}
    if sorted(streams) != sorted(STREAM_KEYS):
        raise SparseblobError(f"profile {name!r}: stream flags {sorted(streams)}; expected {sorted(STREAM_KEYS)}")
    skip = dict(data.get("skip", {}))
    if skip.get("axis") not in ("input", "output") or int(skip.get("group", 0)) not in (2, 4, 8, 16):
        raise SparseblobError(f"profile {name!r}: skip rule {skip}; expected group 2, 4, 8 or 16 on axis input or output")
    combine = data.get("combine", "max")
    if combine not in ("max", "add"):
        raise SparseblobError(f"profile {name!r}: combine={combine!r}; expected 'max' or 'add'")
    return DeviceProfile(
        name=name,
        chip=data.get("chip", ""),
        os=data.get("os", ""),
        compute_unit=data.get("compute_unit", ""),
        parameters=parameters,
        streams=streams,
        skip={"group": int(skip["group"]), "axis": skip["axis"], "min_sparsity": float(skip.get("min_sparsity", 0.0))},
        combine=combine,
        description=data.get("description", ""),
        rows=tuple(PublishedRow(**row) for row in data.get("rows", [])),
        fit=dict(data.get("fit", {})),
        coverage=dict(data.get("coverage", {})),
    )


def _profile_dir():
    return resources.files(__package__) / "profiles"


def list_profiles() -> list[str]:
    """Return the names of the shipped device profiles, sorted."""
    names = []
    for entry in _profile_dir().iterdir():
        if entry.name.endswith(".json") and not entry.name.startswith(_CALIBRATION_PREFIX):
            names.append(entry.name[: -len(".json")])
    return sorted(names)


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> DeviceProfile:
    path = _profile_dir() / f"{name}.json"
    if name.startswith(_CALIBRATION_PREFIX) or not path.is_file():
        raise SparseblobError(f"device profile {name!r} not found; expected one of {list_profiles()}")
    return profile_from_dict(json.loads(path.read_text()))


def load_profile(name_or_path: str | Path | DeviceProfile) -> DeviceProfile:
    """Return a shipped profile by name, a profile read from a JSON file path, or the profile given.

    Raises:
        SparseblobError: no shipped profile has that name and no such file exists, or the file
            is not a valid profile.
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return profile_from_dict(json.loads(path.read_text()))
    return _load_shipped(str(name_or_path))
