"""Rebuild the calibration models of the latency profiles and write their per-layer summaries.

The published latency rows measure ResNet50, MobileNetV2 and MobileNetV3-small at 224 px and
OPT-1.3B generating one token. This script writes their weight layers from the standard
architecture definitions (torchvision's ResNet50 v1.5, MobileNetV2 and MobileNetV3-small,
BatchNorm folded into the convs; the OPT-1.3B decoder), compresses them as each published row
says, and stores the :class:`LayerCost` lists as ``runtime/latency/profiles/calibration-*.json``.

Usage::

    python bench/latency_models.py           # rewrite the summaries
    python bench/latency_models.py --check   # exit 1 if the committed summaries differ

Masks of pruned rows come from the density model of unstructured magnitude pruning
(:func:`random_mask_stats`: zeros at uniformly random positions at the layer's sparsity), because
the fine-tuned masks were not published.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from sparseblob.runtime.latency.costs import LayerCost, layer_cost
from sparseblob.runtime.latency.masks import random_mask_stats
from sparseblob.runtime.latency.summaries import pack_costs

PROFILE_DIR = Path(__file__).resolve().parent.parent / "runtime" / "latency" / "profiles"


@dataclass(frozen=True)
class Layer:
    """Shape of one weight layer at batch 1."""

    name: str
    op: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        return self.op == "conv" and self.groups > 1 and self.weight_shape[1] == 1

    @property
    def elements(self) -> int:
        count = 1
        for d in self.weight_shape:
            count *= d
        return count


class _Builder:
    """Accumulates conv layers while tracking the activation shape."""

    def __init__(self, channels: int, size: int):
        self.channels = channels
        self.size = size
        self.layers: list[Layer] = []

    def conv(self, name: str, out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Padding (kernel - 1) // 2, so the output size is ceil(size / stride).
        out_size = (self.size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1
        self.layers.append(
            Layer(
                name,
                "conv",
                (out, self.channels // groups, kernel, kernel),
                (1, self.channels, self.size, self.size),
                (1, out, out_size, out_size),
                groups,
            )
        )
        self.channels, self.size = out, out_size

    def pooled_conv(self, name: str, channels_in: int, out: int) -> None:
        """A 1x1 conv on a globally pooled tensor (squeeze-and-excitation), shape unchanged."""
        self.layers.append(Layer(name, "conv", (out, channels_in, 1, 1), (1, channels_in, 1, 1), (1, out, 1, 1)))

    def linear(self, name: str, features_in: int, out: int) -> None:
        self.layers.append(Layer(name, "linear", (out, features_in), (1, features_in), (1, out)))


def resnet50() -> list[Layer]:
    """torchvision ResNet50 (v1.5: the stride sits on the 3x3 conv of each bottleneck)."""
    b = _Builder(3, 224)
    b.conv("conv1", 64, 7, 2)
    b.size = 56  # 3x3/2 max pool
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            channels_in, size_in = b.channels, b.size
            s = stride if block == 0 else 1
            b.conv(f"{prefix}.conv1", width, 1)
            b.conv(f"{prefix}.conv2", width, 3, s)
            b.conv(f"{prefix}.conv3", width * 4, 1)
            if block == 0:
                main_channels, main_size = b.channels, b.size
                b.channels, b.size = channels_in, size_in
                b.conv(f"{prefix}.downsample", width * 4, 1, s)
                b.channels, b.size = main_channels, main_size
    b.linear("fc", 2048, 1000)
    return b.layers


def mobilenet_v2() -> list[Layer]:
    """torchvision MobileNetV2 1.0."""
    b = _Builder(3, 224)
    b.conv("features.0", 32, 3, 2)
    index = 1
    for expand, out, repeats, stride in [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    ]:
        for repeat in range(repeats):
            prefix = f"features.{index}"
            hidden = b.channels * expand
            if expand != 1:
                b.conv(f"{prefix}.expand", hidden, 1)
            b.conv(f"{prefix}.depthwise", hidden, 3, stride if repeat == 0 else 1, groups=hidden)
            b.conv(f"{prefix}.project", out, 1)
            index += 1
    b.conv("features.18", 1280, 1)
    b.linear("classifier", 1280, 1000)
    return b.layers


def _make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v3_small() -> list[Layer]:
    """torchvision MobileNetV3-small, including the squeeze-and-excitation 1x1 convs."""
    b = _Builder(3, 224)
    b.conv("features.0", 16, 3, 2)
    settings = [
        # kernel, expanded, out, squeeze-and-excitation, stride
        (3, 16, 16, True, 2), (3, 72, 24, False, 2), (3, 88, 24, False, 1), (5, 96, 40, True, 2),
        (5, 240, 40, True, 1), (5, 240, 40, True, 1), (5, 120, 48, True, 1), (5, 144, 48, True, 1),
        (5, 288, 96, True, 2), (5, 576, 96, True, 1), (5, 576, 96, True, 1),
    ]
    for index, (kernel, expanded, out, se, stride) in enumerate(settings, 1):
        prefix = f"features.{index}"
        if expanded != b.channels:
            b.conv(f"{prefix}.expand", expanded, 1)
        b.conv(f"{prefix}.depthwise", expanded, kernel, stride, groups=expanded)
        if se:
            squeeze = _make_divisible(expanded // 4)
            b.pooled_conv(f"{prefix}.se.fc1", expanded, squeeze)
            b.pooled_conv(f"{prefix}.se.fc2", squeeze, expanded)
        b.conv(f"{prefix}.project", out, 1)
    b.conv("features.12", 576, 1)
    b.linear("classifier.0", 576, 1024)
    b.linear("classifier.3", 1024, 1000)
    return b.layers


def opt_1_3b() -> list[Layer]:
    """OPT-1.3B decoder layers for one generated token (batch 1, one position).

    Only the 24 decoder layers' projections are listed. The tied embedding / LM head (103 M
    weights, kept fp16 in every published row) is left out: reading it at the dense rate in the
    4-bit row would need more than the DRAM bandwidth, so the measured step is taken not to
    include it. Attention over the 64-token cache has no weights and about 0.1% of the MACs.
    """
    layers = []
    hidden, ffn = 2048, 8192
    for index in range(24):
        prefix = f"decoder.{index}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layers.append(Layer(f"{prefix}.{projection}", "linear", (hidden, hidden), (1, hidden), (1, hidden)))
        layers.append(Layer(f"{prefix}.fc1", "linear", (ffn, hidden), (1, hidden), (1, ffn)))
        layers.append(Layer(f"{prefix}.fc2", "linear", (hidden, ffn), (1, ffn), (1, hidden)))
    return layers


MODELS = {
    "resnet50": resnet50,
    "mobilenet-v2": mobilenet_v2,
    "mobilenet-v3-small": mobilenet_v3_small,
    "opt-1.3b": opt_1_3b,
}


# --- Compression recipes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How one published row compressed its model.

    Attributes:
        name: row name (``"sp50"``, ``"pal4"``, ``"pal4_g8"``, ``"w8a8"`` ...).
        kind: ``"dense"``, ``"sparse"``, ``"palettized"`` or ``"affine"``.
        sparsity: fraction of zeros for sparse rows.
        nbits: index or data bits.
        group_size: output channels per LUT (0: one LUT per tensor).
        activation_dtype: ``"int8"`` for W8A8 rows.
        ios18: iOS18 constexpr forms (uint1 mask, no zero point) instead of iOS16/17 ones.
        keep_dense: rule naming the tensors left uncompressed (see :func:`_kept_dense`).
        threshold: tensors with at most this many elements stay dense (coremltools'
            ``weight_threshold``).
    """

    name: str
    kind: str
    sparsity: float = 0.0
    nbits: int = 16
    group_size: int = 0
    activation_dtype: str = "fp16"
    ios18: bool = False
    keep_dense: str = ""
    threshold: int = 2048


def _kept_dense(layer: Layer, layers: list[Layer], recipe: Recipe) -> bool:
    if layer.elements <= recipe.threshold:
        return True
    if recipe.keep_dense == "depthwise+classifier":
        # MobileNet sparse rows: this rule reproduces the published CRs (1.37 and 1.73 for V2).
        return layer.depthwise or layer.op == "linear"
    return False


def _compressed_cost(layer: Layer, recipe: Recipe) -> LayerCost:
    common = dict(name=layer.name, groups=layer.groups, activation_dtype=recipe.activation_dtype)
    shapes = (layer.op, layer.weight_shape, layer.input_shape, layer.output_shape)
    cout = layer.weight_shape[0]
    rank = len(layer.weight_shape)
    if recipe.kind == "sparse":
        mask = random_mask_stats(layer.weight_shape, recipe.sparsity)
        return layer_cost(*shapes, mask=mask, **common)
    if recipe.kind == "palettized":
        entries = 2**recipe.nbits
        if recipe.group_size:
            lut_shape = (cout // recipe.group_size,) + (1,) * (rank - 1) + (entries, 1)
        else:
            lut_shape = (1,) * rank + (entries, 1)
        return layer_cost(*shapes, weight_dtype=f"uint{recipe.nbits}" if recipe.nbits < 8 else "uint8",
                          lut_shape=lut_shape, **common)
    if recipe.kind == "affine":
        # Symmetric int8 per output channel; iOS16/17 store an int8 zero point per channel too.
        scale_shape = (cout,) + (1,) * (rank - 1)
        return layer_cost(*shapes, weight_dtype="int8", scale_shape=scale_shape,
                          offset_shape=None if recipe.ios18 else scale_shape, **common)
    return layer_cost(*shapes, **common)


def compress(layers: list[Layer], recipe: Recipe) -> list[LayerCost]:
    """Return the per-layer costs of ``layers`` compressed by ``recipe``."""
    costs = []
    for layer in layers:
        if recipe.kind == "dense" or _kept_dense(layer, layers, recipe):
            shapes = (layer.op, layer.weight_shape, layer.input_shape, layer.output_shape)
            costs.append(layer_cost(*shapes, name=layer.name, groups=layer.groups,
                                    activation_dtype=recipe.activation_dtype))
        else:
            costs.append(_compressed_cost(layer, recipe))
    return costs


def _fp16_package_bytes(costs: list[LayerCost]) -> int:
    return sum(c.expanded_bytes for c in costs)


def _fit_threshold(layers: list[Layer], recipe: Recipe, published_cr: float) -> Recipe:
    """Return ``recipe`` with the weight_threshold whose compression ratio is closest to the published one.

    The low-bit MobileNet palettizations keep some tensors uncompressed, and their configs were
    not published. Leaving the smallest tensors dense (a larger ``weight_threshold``) is the one
    rule coremltools applies by size, so the threshold is chosen to reproduce the published CR.
    """
    best = recipe
    best_error = float("inf")
    for threshold in sorted({2048} | {layer.elements for layer in layers}):
        candidate = Recipe(**{**recipe.__dict__, "threshold": threshold})
        costs = compress(layers, candidate)
        ratio = _fp16_package_bytes(costs) / sum(c.weight_bytes.total for c in costs)
        error = abs(ratio / published_cr - 1)
        if error < best_error - 1e-12:
            best, best_error = candidate, error
    return best


# Recipes per model, with the published CR where a row gives one (used to choose thresholds).
_TABLE_A_PALETTES = {"pal2": 2, "pal4": 4, "pal6": 6, "pal8": 8}
_PUBLISHED_CR = {
    "mobilenet-v2": {"pal2": 5.92, "pal4": 3.38, "pal6": 2.54, "pal8": 1.97},
    "mobilenet-v3-small": {"sp50": 1.73, "sp75": 3.06, "pal2": 5.82, "pal4": 3.47, "pal6": 2.6, "pal8": 1.93},
}


def recipes(model: str) -> list[Recipe]:
    """Return the compression recipes of every published row of ``model``, dense first."""
    rows = [Recipe("fp16", "dense")]
    if model == "opt-1.3b":
        rows.append(Recipe("pal4", "palettized", nbits=4, ios18=True))
        rows.extend(Recipe(f"pal4_g{g}", "palettized", nbits=4, group_size=g, ios18=True) for g in (8, 4, 1))
        return rows

    # MobileNetV2's sparse CRs come out exactly with its depthwise convs and classifier dense;
    # MobileNetV3-small's classifier holds most of its weights, so its rows use a fitted threshold.
    sparse_rule = "depthwise+classifier" if model == "mobilenet-v2" else ""
    rows.append(Recipe("sp50", "sparse", sparsity=0.5, keep_dense=sparse_rule))
    rows.append(Recipe("sp75", "sparse", sparsity=0.75, keep_dense=sparse_rule))
    for name, nbits in _TABLE_A_PALETTES.items():
        rows.append(Recipe(name, "palettized", nbits=nbits))
    rows.append(Recipe("w8", "affine", nbits=8))
    rows.append(Recipe("w8a8", "affine", nbits=8, activation_dtype="int8"))
    if model == "resnet50":
        # iOS18 rows of the ResNet50 optimization guide.
        rows.extend([
            Recipe("ios18_sp50", "sparse", sparsity=0.5, ios18=True),
            Recipe("ios18_sp75", "sparse", sparsity=0.75, ios18=True),
            Recipe("ios18_pal6", "palettized", nbits=6, ios18=True),
            Recipe("ios18_pal4", "palettized", nbits=4, ios18=True),
            Recipe("ios18_pal4_g16", "palettized", nbits=4, group_size=16, ios18=True),
            Recipe("ios18_pal4_g8", "palettized", nbits=4, group_size=8, ios18=True),
            Recipe("ios18_pal1", "palettized", nbits=1, ios18=True),
            Recipe("ios18_w8a8", "affine", nbits=8, activation_dtype="int8", ios18=True),
        ])
    return rows


def build_summary(model: str) -> dict:
    """Return the JSON-ready summary of ``model``: every recipe's per-layer costs."""
    layers = MODELS[model]()
    variants = {}
    described = {}
    for recipe in recipes(model):
        published = _PUBLISHED_CR.get(model, {}).get(recipe.name)
        if published is not None:
            recipe = _fit_threshold(layers, recipe, published)
        variants[recipe.name] = compress(layers, recipe)
        described[recipe.name] = {k: v for k, v in recipe.__dict__.items() if k != "name"}
    return {
        "kind": "calibration_model",
        "model": model,
        "description": (MODELS[model].__doc__ or "").strip().splitlines()[0],
        **pack_costs(variants, described),
    }


def summary_path(model: str) -> Path:
    return PROFILE_DIR / f"calibration-{model}.json"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed summaries only")
    args = parser.parse_args(argv)
    status = 0
    for model in MODELS:
        text = json.dumps(build_summary(model), indent=None, separators=(",", ":")) + "\n"
        path = summary_path(model)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path.name}: differs from the rebuilt summary", file=sys.stderr)
                status = 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path} ({len(text) // 1024} KiB)")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
