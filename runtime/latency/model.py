"""Per-layer latency model of compressed weights: roofline over compressed bytes, skipped compute,
decode and overhead.

For each weight layer l of a prediction on a device profile P::

    W_l   = stored bytes                  if P streams the layer's format, else 2 N  (fp16 expansion)
    t_w   = W_l * (h / B_cache + (1 - h) / (B * e_l))     weight read time
    A_l   = a * (in_l + out_l)            if in_l + out_l > activation cache, else 0
    t_m   = t_w + A_l / B                                 memory time
    s_l   = k * z_l                       skipped MAC fraction (streamed sparse layers only)
    t_c   = MAC_l * (1 - s_l) / (C_class * u_l)           compute time
    t_d   = N_l / D_format + c_lut n_LUT + c_pair n_LUT^2   decode time (streamed compressed layers)
    t_g   = g_lut                         if n_LUT > 1 (grouped LUTs, streamed), else 0
    t_l   = max(t_c + t_g, t_m + t_g, t_d) + o            ("max" profiles)
          = max(t_c, t_m) + t_d + t_g + o                 ("add" profiles)
    T     = t_dispatch + sum_l t_l

Each symbol and the assumption behind it:

* B is the DRAM bandwidth. Weights read as dense fp16 reach only a fraction e of it
  (``dense_weight_efficiency``), because the published fp16 rows stream slower than a roofline at
  the compressed rows' rate predicts (OPT-1.3B: 26 GB/s fp16 against 41 GB/s at 4 bits on one
  phone); e = 1 for compressed streams.
* h = min(1, weight cache / total weight bytes of the prediction) is the share of weight bytes
  that a system-level cache keeps between back-to-back predictions, read at B_cache.
* Activations live in an on-chip buffer. A layer whose input plus output is larger than it is
  taken to spill a fraction a of those bytes to DRAM, once.
* z_l is the fraction of aligned all-zero groups of the profile's skip size along its skip axis.
  It is exact for a real mask and comes from the density model for a statistical one. k is the
  fraction of those groups whose MACs the hardware skips. Weights expanded before dispatch skip
  nothing.
* C depends on the rate class (conv, depthwise conv, linear); u is ``int8_speedup`` when both
  weights and activations are int8, else 1.
* Decode runs in the weight-fetch path: it overlaps memory and compute in "max" profiles. A
  joint format pays the decode of each of its forms.
* g_lut (``lut_layer_us``) is a fixed setup cost of a streamed layer with grouped LUTs (more
  than one table). The compute and weight streams start g_lut late, because they wait for the
  decoder's first table set. A decode-bound layer does not pay it again: its decode time
  already counts the loading of every table (c_lut, c_pair). Apple's A17 Pro / iOS 18 rows
  show it: 4-bit with one LUT per 8 output channels costs about 4 us per layer more than one LUT
  per tensor on ResNet50 (0.22 ms over 54 layers) and about 5 us per layer on OPT-1.3B (0.73 ms
  over 144 layers), although OPT has 16 times as many LUTs. A per-LUT cost alone cannot fit both.
* o is a fixed cost per weight layer; non-weight ops (activations, pooling, adds) are not
  modelled separately and are absorbed into o and t_dispatch by the fit.

The bound of a layer is the largest of compute, memory and decode, or ``"overhead"`` when o is
larger than all three.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import SparseblobError
from .costs import LayerCost
from .masks import GROUP_SIZES
from .profiles import DeviceProfile, load_profile

__all__ = [
    "LayerPrediction",
    "Prediction",
    "Features",
    "features",
    "evaluate",
    "extrapolation_reasons",
    "coverage_of",
    "predict",
    "Comparison",
    "compare",
]

logger = logging.getLogger(__name__)

_RATE_CLASSES = ("conv", "depthwise", "linear")
BOUNDS = ("compute", "memory", "decode", "overhead")


@dataclass(frozen=True)
class Features:
    """Per-layer model inputs as arrays over the layers of one or more predictions.

    ``prediction`` maps each layer to the index of the prediction (model) it belongs to.
    """

    prediction: np.ndarray
    macs: np.ndarray
    rate_class: np.ndarray
    activation_bytes: np.ndarray
    stored_bytes: np.ndarray
    expanded_bytes: np.ndarray
    elements: np.ndarray
    n_luts: np.ndarray
    sparse: np.ndarray
    palettized: np.ndarray
    affine: np.ndarray
    int8: np.ndarray
    int8_weights: np.ndarray
    zero_units: np.ndarray
    sparsity: np.ndarray
    count: int


def features(predictions: Sequence[Sequence[LayerCost]], skip: dict) -> Features:
    """Stack the layers of several predictions into :class:`Features` for the profile's skip rule."""
    index = GROUP_SIZES.index(int(skip["group"]))
    axis = skip["axis"]
    rows = [(i, c) for i, costs in enumerate(predictions) for c in costs]

    def column(get, dtype=float):
        return np.array([get(c) for _, c in rows], dtype=dtype)

    def zero_units(c: LayerCost) -> float:
        if c.mask is None:
            return 0.0
        groups = c.mask.zero_groups_input if axis == "input" else c.mask.zero_groups_output
        return groups[index]

    return Features(
        prediction=np.array([i for i, _ in rows], dtype=np.int64),
        macs=column(lambda c: c.macs),
        rate_class=column(lambda c: _RATE_CLASSES.index(c.rate_class), np.int64),
        activation_bytes=column(lambda c: c.input_bytes + c.output_bytes),
        stored_bytes=column(lambda c: c.weight_bytes.total),
        expanded_bytes=column(lambda c: c.expanded_bytes),
        elements=column(lambda c: c.elements if c.weight_bytes.total else 0),
        n_luts=column(lambda c: c.n_luts),
        sparse=column(lambda c: "sparse" in c.format, bool),
        palettized=column(lambda c: "palettized" in c.format, bool),
        affine=column(lambda c: "affine" in c.format, bool),
        int8=column(lambda c: c.activation_dtype in ("int8", "uint8"), bool),
        int8_weights=column(lambda c: c.weight_dtype in ("int8", "uint8") and "affine" in c.format, bool),
        zero_units=column(zero_units),
        sparsity=column(lambda c: c.sparsity if c.mask is not None else 0.0),
        count=len(predictions),
    )


def evaluate(f: Features, parameters: dict[str, float], streams: dict[str, bool], skip: dict, combine: str) -> dict[str, np.ndarray]:
    """Return per-layer times in seconds (``compute``, ``memory``, ``decode``, ``overhead``, ``time``),
    per-layer ``streamed`` flags and bytes read, and per-prediction ``total`` seconds.
    """
    p = parameters
    compressed = f.sparse | f.palettized | f.affine

    # Which weights stream compressed; the rest are expanded to fp16 before dispatch.
    affine_streams = np.where(f.int8 & f.int8_weights, streams["affine_int8_activations"], streams["affine"])
    streamed = compressed.copy()
    streamed &= ~f.sparse | streams["sparse"]
    streamed &= ~f.palettized | streams["palettized"]
    streamed &= ~f.affine | affine_streams
    weight_bytes = np.where(streamed, f.stored_bytes, f.expanded_bytes)

    # Memory: weight reads (cache share h, dense-read efficiency e) plus spilled activations.
    bandwidth = p["bandwidth_gbps"] * 1e9
    efficiency = np.where(streamed, 1.0, p["dense_weight_efficiency"])
    totals = np.bincount(f.prediction, weights=weight_bytes, minlength=f.count)
    cache = p["weight_cache_mb"] * 1e6
    hit = np.minimum(1.0, cache / np.maximum(totals, 1.0))[f.prediction]
    weight_time = weight_bytes * (hit / (p["cache_bandwidth_gbps"] * 1e9) + (1.0 - hit) / (bandwidth * efficiency))
    spilled = np.where(f.activation_bytes > p["activation_cache_mb"] * 1e6, f.activation_bytes * p["activation_spill"], 0.0)
    memory = weight_time + spilled / bandwidth

    # Compute: dense MACs less the skipped share, at the rate of the layer's class.
    rates = np.array([p["conv_tmacs"], p["depthwise_tmacs"], p["linear_tmacs"]]) * 1e12
    speedup = np.where(f.int8, p["int8_speedup"], 1.0)
    skipping = f.sparse & streamed & (f.sparsity >= skip.get("min_sparsity", 0.0))
    skipped = np.where(skipping, np.clip(p["skip_efficiency"] * f.zero_units, 0.0, 1.0), 0.0)
    compute = f.macs * (1.0 - skipped) / (rates[f.rate_class] * speedup)

    # Decode: each streamed compressed form decodes every weight element; LUTs cost extra.
    decode = np.zeros_like(compute)
    decode += np.where(streamed & f.sparse, f.elements / (p["sparse_decode_gelems"] * 1e9), 0.0)
    decode += np.where(streamed & f.palettized, f.elements / (p["palettized_decode_gelems"] * 1e9), 0.0)
    decode += np.where(streamed & f.affine & ~f.int8, f.elements / (p["affine_decode_gelems"] * 1e9), 0.0)
    lut_time = f.n_luts * p["lut_ns"] * 1e-9 + f.n_luts**2 * p["lut_pair_ps"] * 1e-12
    decode += np.where(streamed, lut_time, 0.0)

    # Grouped LUTs: compute and weight streams wait for the decoder's first table set, so the
    # setup delays them; the decoder's own time already includes loading every table.
    setup = np.where(streamed & (f.n_luts > 1), p["lut_layer_us"] * 1e-6, 0.0)

    overhead = np.full_like(compute, p["op_overhead_us"] * 1e-6)
    if combine == "max":
        time = np.maximum(np.maximum(compute, memory) + setup, decode) + overhead
    else:
        time = np.maximum(compute, memory) + decode + setup + overhead
    total = np.bincount(f.prediction, weights=time, minlength=f.count) + p["dispatch_us"] * 1e-6
    return {
        "compute": compute,
        "memory": memory,
        "decode": decode,
        "overhead": overhead,
        "time": time,
        "streamed": streamed,
        "weight_bytes": weight_bytes,
        "skipped": skipped,
        "total": total,
    }


# --- Coverage and extrapolation -------------------------------------------------------------------


def _lut_channels(c: LayerCost) -> int:
    """Output channels per lookup table (0 for one table per tensor)."""
    if c.n_luts <= 1:
        return 0
    axis = 1 if c.op == "conv_transpose" else 0
    return max(c.weight_shape[axis] // c.n_luts, 1)


def _structured(c: LayerCost) -> bool:
    """True when a mask has more zero structure than random positions at its sparsity would give."""
    stats = c.mask
    if stats is None or stats.elements == 0:
        return False
    s = stats.sparsity
    random_pairs = s * s
    paired = max(stats.zero_groups_input[0], stats.zero_groups_output[0])
    nm = any(stats.nm_min_zeros[i] * 2 >= m and stats.nm_min_zeros[i] > 0 for i, m in enumerate(GROUP_SIZES) if m <= 8)
    return paired > random_pairs + 0.05 or nm


def coverage_of(predictions: Sequence[Sequence[LayerCost]]) -> dict:
    """Describe what a set of calibration predictions exercises, for :func:`extrapolation_reasons`."""
    ops, formats, activation = set(), set(), set()
    palettized_bits, affine_bits, lut_channels = set(), set(), set()
    sparsities = []
    for costs in predictions:
        for c in costs:
            ops.add(c.rate_class if c.op != "matmul" else "matmul")
            if c.op in ("conv_transpose", "matmul"):
                ops.add(c.op)
            activation.add(c.activation_dtype)
            if c.format == "dense":
                continue
            formats.add(c.format)
            if "palettized" in c.format:
                palettized_bits.add(c.nbits)
                lut_channels.add(_lut_channels(c))
            if c.format == "affine":
                affine_bits.add(c.nbits)
            if c.mask is not None:
                sparsities.append(c.sparsity)
    return {
        "ops": sorted(ops),
        "formats": sorted(formats),
        "activation_dtypes": sorted(activation),
        "palettized_nbits": sorted(palettized_bits),
        "affine_nbits": sorted(affine_bits),
        "lut_channels_per_table": sorted(lut_channels),
        "sparsity": [round(min(sparsities), 4), round(max(sparsities), 4)] if sparsities else [],
        "sparse_patterns": ["unstructured"] if sparsities else [],
    }


# Margin around the calibrated sparsity range that still counts as calibrated.
_SPARSITY_MARGIN = 0.05


def extrapolation_reasons(c: LayerCost, coverage: dict) -> list[str]:
    """Return why a layer's prediction leaves the profile's calibration (empty when it does not)."""
    if not coverage:
        return ["the profile has no published rows"]
    reasons = []

    kind = c.rate_class if c.op in ("conv", "linear") else c.op
    if kind not in coverage.get("ops", []):
        reasons.append(f"op {kind} is not in the calibration rows")
    if c.activation_dtype not in coverage.get("activation_dtypes", []):
        reasons.append(f"activation dtype {c.activation_dtype} is not in the calibration rows")
    if c.format == "dense" or not c.weight_bytes.total:
        return reasons

    if c.format not in coverage.get("formats", []):
        reasons.append(f"format {c.format} is not in the calibration rows")
    if "palettized" in c.format:
        if c.nbits not in coverage.get("palettized_nbits", []):
            reasons.append(f"{c.nbits}-bit palettization is not in the calibration rows")
        channels = _lut_channels(c)
        if channels not in coverage.get("lut_channels_per_table", []):
            granularity = "one LUT per tensor" if channels == 0 else f"one LUT per {channels} channels"
            reasons.append(f"{granularity} is not in the calibration rows")

    if c.format == "affine":
        if c.nbits not in coverage.get("affine_nbits", []):
            reasons.append(f"{c.nbits}-bit affine weights are not in the calibration rows")
        axis_channels = c.weight_shape[1 if c.op == "conv_transpose" else 0]
        if c.n_scales > axis_channels:
            reasons.append("per-block scales are not in the calibration rows (only per-channel)")

    if c.mask is not None:
        if _structured(c):
            reasons.append("structured sparsity (block or n:m) is not in the calibration rows")
        bounds = coverage.get("sparsity", [])
        if bounds and not bounds[0] - _SPARSITY_MARGIN <= c.sparsity <= bounds[1] + _SPARSITY_MARGIN:
            reasons.append(
                f"sparsity {c.sparsity:.2f} is outside the calibrated range {bounds[0]:.2f}-{bounds[1]:.2f}"
            )
    return reasons


# --- Results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPrediction:
    """Predicted time of one layer.

    Attributes:
        name: layer name.
        ms: predicted milliseconds, overhead and grouped-LUT setup included.
        compute_ms, memory_ms, decode_ms, overhead_ms: the terms of the model.
        bound: ``"compute"``, ``"memory"``, ``"decode"`` or ``"overhead"``.
        streamed: True when the weight streams compressed, False when expanded to fp16 first.
        weight_bytes: weight bytes read per prediction.
        skipped_fraction: fraction of MACs skipped.
        extrapolated: True when the layer leaves the profile's calibration.
        reasons: why it is extrapolated.
    """

    name: str
    ms: float
    compute_ms: float
    memory_ms: float
    decode_ms: float
    overhead_ms: float
    bound: str
    streamed: bool
    weight_bytes: int
    skipped_fraction: float
    extrapolated: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """Predicted latency of one prediction (model run) on one profile.

    Attributes:
        profile: profile name.
        layers: per-layer predictions.
        total_ms: dispatch plus every layer.
        dispatch_ms: the per-prediction fixed cost.
        dense_ms: the same layers with every weight dense fp16 (the dense-equivalent time).
        bounds: bound label -> number of layers bound by it.
        extrapolated: True when any layer is extrapolated.
    """

    profile: str
    layers: tuple[LayerPrediction, ...]
    total_ms: float
    dispatch_ms: float
    dense_ms: float
    bounds: dict[str, int] = field(default_factory=dict)
    extrapolated: bool = False

    @property
    def ratio_to_dense(self) -> float:
        """total_ms / dense_ms."""
        return self.total_ms / self.dense_ms

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {
            "profile": self.profile,
            "total_ms": self.total_ms,
            "dispatch_ms": self.dispatch_ms,
            "dense_ms": self.dense_ms,
            "ratio_to_dense": self.ratio_to_dense,
            "bounds": dict(self.bounds),
            "extrapolated": self.extrapolated,
            "layers": [layer.__dict__ | {"reasons": list(layer.reasons)} for layer in self.layers],
        }


def _dense_equivalent(c: LayerCost) -> LayerCost:
    values = {**c.__dict__}
    values.update(format="dense", weight_dtype="fp16", nonzeros=c.elements, n_luts=0, lut_entries=0, n_scales=0, mask=None)
    values["weight_bytes"] = type(c.weight_bytes)(values=c.expanded_bytes) if c.weight_bytes.total else c.weight_bytes
    return LayerCost(**values)


def _as_costs(source, function: str) -> list[LayerCost]:
    if isinstance(source, (list, tuple)) and all(isinstance(c, LayerCost) for c in source):
        return list(source)
    if hasattr(source, "functions") or isinstance(source, str) or hasattr(source, "__fspath__"):
        from .package_costs import costs_from_package

        return costs_from_package(source, function=function)
    raise SparseblobError(
        f"cannot predict from {type(source).__name__}; expected a list of LayerCost, a Package or a path"
    )


def predict(source, profile: str | DeviceProfile, *, function: str = "main") -> Prediction:
    """Predict the latency of one prediction.

    Args:
        source: a list of :class:`LayerCost` (e.g. a calibration summary variant), a loaded
            package, or the path of an ``.mlpackage``.
        profile: a profile name from :func:`list_profiles`, a profile JSON path, or a profile.
        function: the package function to read.

    Returns:
        A :class:`Prediction` with per-layer times, bounds and extrapolation flags.
    """
    profile = load_profile(profile)
    costs = _as_costs(source, function)
    if not costs:
        raise SparseblobError("nothing to predict: the source has no linear, matmul, conv or conv_transpose layer")
    f = features([costs, [_dense_equivalent(c) for c in costs]], profile.skip)
    result = evaluate(f, profile.parameters, profile.streams, profile.skip, profile.combine)

    layers = []
    counts = dict.fromkeys(BOUNDS, 0)
    for i, c in enumerate(costs):
        terms = {name: float(result[name][i]) for name in ("compute", "memory", "decode")}
        bound = max(terms, key=terms.get)
        if result["overhead"][i] > terms[bound]:
            bound = "overhead"
        counts[bound] += 1
        reasons = tuple(extrapolation_reasons(c, profile.coverage))
        layers.append(
            LayerPrediction(
                name=c.name,
                ms=float(result["time"][i]) * 1e3,
                compute_ms=terms["compute"] * 1e3,
                memory_ms=terms["memory"] * 1e3,
                decode_ms=terms["decode"] * 1e3,
                overhead_ms=float(result["overhead"][i]) * 1e3,
                bound=bound,
                streamed=bool(result["streamed"][i]),
                weight_bytes=int(result["weight_bytes"][i]),
                skipped_fraction=float(result["skipped"][i]),
                extrapolated=bool(reasons),
                reasons=reasons,
            )
        )
    return Prediction(
        profile=profile.name,
        layers=tuple(layers),
        total_ms=float(result["total"][0]) * 1e3,
        dispatch_ms=profile.parameters["dispatch_us"] * 1e-3,
        dense_ms=float(result["total"][1]) * 1e3,
        bounds=counts,
        extrapolated=any(layer.extrapolated for layer in layers),
    )


@dataclass(frozen=True)
class Comparison:
    """Predicted latency of two predictions on one profile and their ratio ``b / a``."""

    a: Prediction
    b: Prediction

    @property
    def ratio(self) -> float:
        """b.total_ms / a.total_ms."""
        return self.b.total_ms / self.a.total_ms

    @property
    def extrapolated(self) -> bool:
        """True when either side is extrapolated."""
        return self.a.extrapolated or self.b.extrapolated


def compare(a, b, profile: str | DeviceProfile, *, function: str = "main") -> Comparison:
    """Predict two packages (or cost lists) on one profile; ``.ratio`` is b over a."""
    return Comparison(predict(a, profile, function=function), predict(b, profile, function=function))
