"""Compression settings for whole packages: global settings, per-op overrides, a TOML file format.

A :class:`CompressionConfig` chooses which weights :func:`~.mlpackage.compress_package`
compresses and how. It has one global :class:`WeightConfig`, overrides by consumer op type and
by op name (exact or glob), the op types to consider, and the minimum weight size.

The settings of one weight are layered. The global settings come first, then the override of
its consumer's op type, then one ``op_name`` override. That is the first one whose name equals
the consumer op name, the weight's const op name or its output name, or else the first glob
that matches one of them, in file order. Each layer replaces only the keys it sets.

A TOML file has the same structure (see ``docs/encode.md`` for every key)::

    op_types = ["linear", "conv"]
    min_elements = 2048

    [global]
    pattern = "n_m"
    n_m = "2:4"
    values = "palettize"
    nbits = 4

    [op_type.conv]
    values = "quantize"
    quantize_dtype = "int8"

    [op_name."decoder.*"]
    enabled = false

Every invalid key or value raises :class:`EncodingError` naming the key, the value and the
allowed values.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from sparseblob.runtime.errors import EncodingError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "OP_TYPES",
    "PATTERNS",
    "VALUE_FORMATS",
    "PALETTIZE_MODES",
    "PALETTIZE_GRANULARITIES",
    "QUANTIZE_DTYPES",
    "QUANTIZE_MODES",
    "QUANTIZE_GRANULARITIES",
    "NBITS",
    "DEFAULT_MIN_ELEMENTS",
    "WeightConfig",
    "CompressionConfig",
]

OP_TYPES = ("linear", "matmul", "conv", "conv_transpose")
PATTERNS = ("none", "unstructured", "n_m", "block", "threshold")
VALUE_FORMATS = ("fp16", "fp32", "palettize", "quantize")
PALETTIZE_MODES = ("kmeans", "uniform", "unique")
PALETTIZE_GRANULARITIES = ("per_tensor", "per_grouped_channel")
QUANTIZE_DTYPES = ("int8", "uint8", "int4", "uint4")
QUANTIZE_MODES = ("symmetric", "affine")
QUANTIZE_GRANULARITIES = ("per_tensor", "per_channel", "per_block")
NBITS = (1, 2, 3, 4, 6, 8)
# coremltools' weight_threshold default: weights with more elements than this are compressed.
DEFAULT_MIN_ELEMENTS = 2048


# ---------------------------------------------------------------------------------------------
# Value checks. Each takes the value and the key, and the error names both.


def _fail(where: str, key: str, value, expected: str) -> EncodingError:
    prefix = f"{where}: " if where else ""
    return EncodingError(f"{prefix}{key}={value!r} is invalid; expected {expected}")


def _choice(value, key: str, choices: Sequence, where: str):
    if value not in choices:
        raise _fail(where, key, value, f"one of {list(choices)}")
    return value


def _integer(value, key: str, where: str, *, minimum: int | None = None) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _fail(where, key, value, "an integer") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(where, key, value, "an integer")
    if minimum is not None and value < minimum:
        raise _fail(where, key, value, f"an integer >= {minimum}")
    return int(value)


def _number(value, key: str, where: str, *, low: float, high: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(where, key, value, "a number") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(where, key, value, "a number")
    if not math.isfinite(value) or not low <= value <= high:
        bound = "a number >= 0" if high == math.inf else f"a number between {low} and {high}"
        raise _fail(where, key, value, bound)
    return float(value)


def _boolean(value, key: str, where: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise _fail(where, key, value, "true or false")
    return value


def _n_m(value, key: str, where: str) -> tuple[int, int]:
    """Parse ``"n:m"`` or ``[n, m]``: n zeros in every m consecutive elements."""
    expected = '"n:m" or [n, m] with integers 0 <= n <= m and m >= 1'
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2:
            raise _fail(where, key, value, expected)
        try:
            pair = [int(part.strip()) for part in parts]
        except ValueError:
            raise _fail(where, key, value, expected) from None
    elif isinstance(value, Sequence) and len(value) == 2:
        pair = list(value)
        if any(isinstance(item, bool) or not isinstance(item, numbers.Integral) for item in pair):
            raise _fail(where, key, value, expected)
    else:
        raise _fail(where, key, value, expected)
    n, m = (int(item) for item in pair)
    if m < 1 or not 0 <= n <= m:
        raise _fail(where, key, value, expected)
    return n, m


def _string(value, key: str, choices: Sequence, where: str) -> str:
    if isinstance(value, str):
        value = value.strip()
    return _choice(value, key, choices, where)


# Key -> parser, in the order the docs list them. Every parser returns the normalized value.
_PARSERS = {
    "enabled": lambda v, k, w: _boolean(v, k, w),
    "pattern": lambda v, k, w: _string(v, k, PATTERNS, w),
    "sparsity": lambda v, k, w: _number(v, k, w, low=0.0, high=1.0),
    "threshold": lambda v, k, w: _number(v, k, w, low=0.0, high=math.inf),
    "n_m": _n_m,
    "pattern_block_size": lambda v, k, w: _integer(v, k, w, minimum=2),
    "pattern_axis": lambda v, k, w: _integer(v, k, w),
    "values": lambda v, k, w: _string(v, k, VALUE_FORMATS, w),
    "nbits": lambda v, k, w: _choice(_integer(v, k, w), k, NBITS, w),
    "palettize_mode": lambda v, k, w: _string(v, k, PALETTIZE_MODES, w),
    "palettize_granularity": lambda v, k, w: _string(v, k, PALETTIZE_GRANULARITIES, w),
    "group_size": lambda v, k, w: _integer(v, k, w, minimum=1),
    "cluster_dim": lambda v, k, w: _integer(v, k, w, minimum=1),
    "per_channel_scale": lambda v, k, w: _boolean(v, k, w),
    "quantize_dtype": lambda v, k, w: _string(v, k, QUANTIZE_DTYPES, w),
    "quantize_mode": lambda v, k, w: _string(v, k, QUANTIZE_MODES, w),
    "quantize_granularity": lambda v, k, w: _string(v, k, QUANTIZE_GRANULARITIES, w),
    "quantize_block_size": lambda v, k, w: _integer(v, k, w, minimum=1),
    "min_elements": lambda v, k, w: _integer(v, k, w, minimum=0),
}


# The keys each pattern requires.
_PATTERN_KEYS = {
    "unstructured": ("sparsity",),
    "block": ("sparsity", "pattern_block_size"),
    "n_m": ("n_m",),
    "threshold": ("threshold",),
}


@dataclass(frozen=True)
class WeightConfig:
    """How to compress one weight. ``None`` means "not set here": a lower layer or the default applies.

    Attributes:
        enabled: False leaves the weight dense. Default True.
        pattern: the pruning pattern, ``none`` by default. ``unstructured`` prunes the
            ``sparsity`` fraction of smallest magnitudes. ``n_m`` prunes ``n`` of every ``m``
            consecutive elements along ``pattern_axis``. ``block`` prunes the ``sparsity``
            fraction of blocks of ``pattern_block_size`` consecutive elements along
            ``pattern_axis``, smallest L2 norm first. ``threshold`` prunes every
            ``|w| <= threshold``.
        sparsity: fraction pruned, in [0, 1], for ``unstructured`` and ``block``.
        threshold: magnitude at or below which ``threshold`` prunes, ``>= 0``.
        n_m: ``(n, m)`` for ``n_m``, Core ML's convention: ``n`` zeros in every ``m``.
        pattern_block_size: elements per block for ``block``, ``>= 2``.
        pattern_axis: the axis of ``n_m`` groups or ``block`` blocks. Default: the consumer's
            input-channel axis for ``n_m`` and its output-channel axis for ``block`` (1 and 0
            for linear and conv, as in Core ML).
        values: how the kept values are stored: ``fp16`` or ``fp32`` as they are (default: the
            weight's own dtype), ``palettize`` or ``quantize``. A float format that differs
            from the weight's dtype would change the dtype the consumer receives, so the
            weight is then left dense.
        nbits: palettization index width, 1, 2, 3, 4, 6 or 8 (optional for ``unique``).
        palettize_mode: ``kmeans`` (default), ``uniform`` or ``unique``.
        palettize_granularity: ``per_tensor`` or ``per_grouped_channel``. Default
            ``per_grouped_channel`` when ``group_size`` is set, else ``per_tensor``.
        group_size: output channels per LUT for ``per_grouped_channel``.
        cluster_dim: elements per LUT entry along the output-channel axis (vector
            palettization when > 1). Default 1.
        per_channel_scale: divide each output channel by its largest magnitude before
            palettizing, and multiply back with ``constexpr_blockwise_shift_scale``. Default False.
        quantize_dtype: ``int8`` (default), ``uint8``, ``int4`` or ``uint4``.
        quantize_mode: ``symmetric`` (default) or ``affine``.
        quantize_granularity: ``per_tensor``, ``per_channel`` or ``per_block``. Default
            ``per_block`` when ``quantize_block_size`` is set, else ``per_channel``.
        quantize_block_size: input channels per block for ``per_block``.
        min_elements: compress only weights with more elements than this. Default: the
            config's ``min_elements``.
    """

    enabled: bool | None = None
    pattern: str | None = None
    sparsity: float | None = None
    threshold: float | None = None
    n_m: tuple[int, int] | None = None
    pattern_block_size: int | None = None
    pattern_axis: int | None = None
    values: str | None = None
    nbits: int | None = None
    palettize_mode: str | None = None
    palettize_granularity: str | None = None
    group_size: int | None = None
    cluster_dim: int | None = None
    per_channel_scale: bool | None = None
    quantize_dtype: str | None = None
    quantize_mode: str | None = None
    quantize_granularity: str | None = None
    quantize_block_size: int | None = None
    min_elements: int | None = None

    def __post_init__(self):
        # Checks values given to the constructor directly, and normalizes them ("2:4" -> (2, 4)).
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                object.__setattr__(self, item.name, _PARSERS[item.name](value, item.name, ""))

    @classmethod
    def from_dict(cls, entries: Mapping[str, object], *, where: str = "") -> WeightConfig:
        """Build a layer from keys and raw values, checking every key and value.

        Entries whose value is None are left unset, so unset command-line options can be
        passed through.

        Raises:
            EncodingError: an unknown key or an invalid value; the message names both.
        """
        parsed = {}
        for key, value in entries.items():
            if key not in _PARSERS:
                raise EncodingError(
                    f"{where + ': ' if where else ''}unknown key {key!r}; expected one of {list(_PARSERS)}"
                )
            if value is not None:
                parsed[key] = _PARSERS[key](value, key, where)
        return cls(**parsed)

    def to_dict(self) -> dict[str, object]:
        """Return the keys that are set, in the TOML spelling (``n_m`` as ``"n:m"``)."""
        found = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                found[item.name] = f"{value[0]}:{value[1]}" if item.name == "n_m" else value
        return found

    def merged(self, override: WeightConfig) -> WeightConfig:
        """Return this layer with every key that ``override`` sets replaced by its value."""
        return replace(self, **{key: value for key, value in override.__dict__.items() if value is not None})

    def resolved(self, *, min_elements: int = DEFAULT_MIN_ELEMENTS, where: str = "") -> WeightConfig:
        """Return the settings with every default filled in, after checking that they fit together.

        ``pattern_axis`` and ``values`` stay None when unset, because their defaults depend on
        the consumer and on the weight's dtype.

        Raises:
            EncodingError: a required key is missing for the chosen pattern or values, or two
                keys contradict each other.
        """
        pattern = self.pattern or "none"
        values = self.values
        settings = replace(
            self,
            enabled=True if self.enabled is None else self.enabled,
            pattern=pattern,
            palettize_mode=self.palettize_mode or "kmeans",
            palettize_granularity=self.palettize_granularity
            or ("per_grouped_channel" if self.group_size is not None else "per_tensor"),
            cluster_dim=self.cluster_dim or 1,
            per_channel_scale=bool(self.per_channel_scale),
            quantize_dtype=self.quantize_dtype or "int8",
            quantize_mode=self.quantize_mode or "symmetric",
            quantize_granularity=self.quantize_granularity
            or ("per_block" if self.quantize_block_size is not None else "per_channel"),
            min_elements=min_elements if self.min_elements is None else self.min_elements,
        )

        # Each required key with the setting that requires it.
        required = [(key, f"pattern={pattern!r}") for key in _PATTERN_KEYS.get(pattern, ())]
        if values == "palettize":
            if settings.palettize_mode != "unique":
                required.append(("nbits", f"values={values!r}"))
            if settings.palettize_granularity == "per_grouped_channel":
                required.append(("group_size", f"values={values!r}"))
        if values == "quantize" and settings.quantize_granularity == "per_block":
            required.append(("quantize_block_size", f"values={values!r}"))
        prefix = f"{where}: " if where else ""
        for key, reason in required:
            if getattr(settings, key) is None:
                raise EncodingError(f"{prefix}{key} is missing; {reason} requires it")

        if settings.per_channel_scale:
            if values != "palettize":
                raise EncodingError(
                    f"{prefix}per_channel_scale=true applies to values='palettize' only, not values={values!r}"
                )
            if pattern != "none":
                raise EncodingError(
                    f"{prefix}per_channel_scale=true works with pattern='none' only, not pattern={pattern!r}"
                )
        return settings

    @property
    def compresses(self) -> bool:
        """True when the (resolved) settings ask for any change to the weight."""
        if self.enabled is False:
            return False
        return (self.pattern or "none") != "none" or self.values in ("palettize", "quantize")


def _layer(entries, where: str) -> WeightConfig:
    if not isinstance(entries, Mapping):
        raise EncodingError(f"{where}: expected a table of settings, got {type(entries).__name__} {entries!r}")
    return WeightConfig.from_dict(entries, where=where)


@dataclass(frozen=True)
class CompressionConfig:
    """Selection and settings of the weights to compress in a package.

    Attributes:
        global_config: the settings of every weight without an override.
        op_type: overrides by consumer op type (linear, matmul, conv, conv_transpose).
        op_name: overrides by name, ``(name or glob, settings)`` in order. A name matches the
            consumer op name, the weight's const op name or its output name.
        op_types: the consumer op types whose weights may be compressed. Default all four.
        min_elements: compress only weights with more elements than this (default 2048, as
            coremltools' ``weight_threshold``). An override's ``min_elements`` replaces it.
    """

    global_config: WeightConfig = field(default_factory=WeightConfig)
    op_type: Mapping[str, WeightConfig] = field(default_factory=dict)
    op_name: tuple[tuple[str, WeightConfig], ...] = ()
    op_types: tuple[str, ...] = OP_TYPES
    min_elements: int = DEFAULT_MIN_ELEMENTS

    def __post_init__(self):
        object.__setattr__(self, "op_types", _op_types(self.op_types, "op_types", ""))
        object.__setattr__(self, "min_elements", _integer(self.min_elements, "min_elements", "", minimum=0))
        object.__setattr__(self, "op_type", dict(self.op_type))
        object.__setattr__(self, "op_name", tuple((str(name), layer) for name, layer in self.op_name))
        for op_type in self.op_type:
            _choice(op_type, "op_type", OP_TYPES, "")
        layers = [("global_config", self.global_config)]
        layers += [(f"op_type[{name!r}]", layer) for name, layer in self.op_type.items()]
        layers += [(f"op_name[{name!r}]", layer) for name, layer in self.op_name]
        for key, layer in layers:
            if not isinstance(layer, WeightConfig):
                raise _fail("", key, layer, "a WeightConfig")

        # Every layer must resolve on top of the global settings, so that a missing key is
        # reported when the config is built rather than at the first matching weight.
        self.global_config.resolved(min_elements=self.min_elements, where="[global]")
        for op_type, layer in self.op_type.items():
            self.global_config.merged(layer).resolved(min_elements=self.min_elements, where=f"[op_type.{op_type}]")
        for name, layer in self.op_name:
            self.global_config.merged(layer).resolved(min_elements=self.min_elements, where=f'[op_name."{name}"]')

    def settings_for(self, op_type: str, names: Iterable[str]) -> tuple[WeightConfig, str]:
        """Return the resolved settings of a weight and the layers they came from.

        Args:
            op_type: the consumer op type.
            names: the names to match against ``op_name`` overrides: the consumer op name,
                the weight's const op name and its output name.

        Returns:
            The resolved :class:`WeightConfig` and a description of its layers, e.g.
            ``'[global] + [op_type.conv] + [op_name."conv*"]'``.

        Raises:
            EncodingError: the layers together miss a required key or contradict each other.
        """
        names = [name for name in names if name]
        layers = ["[global]"]
        settings = self.global_config
        if op_type in self.op_type:
            settings = settings.merged(self.op_type[op_type])
            layers.append(f"[op_type.{op_type}]")

        match = self._match_name(names)
        if match is not None:
            pattern, layer = match
            settings = settings.merged(layer)
            layers.append(f'[op_name."{pattern}"]')

        source = " + ".join(layers)
        return settings.resolved(min_elements=self.min_elements, where=source), source

    def _match_name(self, names: list[str]) -> tuple[str, WeightConfig] | None:
        for pattern, layer in self.op_name:
            if pattern in names:
                return pattern, layer
        for pattern, layer in self.op_name:
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return pattern, layer
        return None

    @classmethod
    def from_dict(cls, document: Mapping[str, object], *, where: str = "config") -> CompressionConfig:
        """Build a config from the parsed TOML structure (tables as dicts).

        Raises:
            EncodingError: an unknown key or table, or an invalid value; the message names the
                table, the key and the value.
        """
        allowed = ("op_types", "min_elements", "global", "op_type", "op_name")
        for key in document:
            if key not in allowed:
                raise EncodingError(f"{where}: unknown top-level key {key!r}; expected one of {list(allowed)}")

        kwargs: dict[str, object] = {}
        if "op_types" in document:
            kwargs["op_types"] = _op_types(document["op_types"], "op_types", where)
        if "min_elements" in document:
            kwargs["min_elements"] = _integer(document["min_elements"], "min_elements", where, minimum=0)
        if "global" in document:
            kwargs["global_config"] = _layer(document["global"], f"{where} [global]")

        op_type_tables = _table(document.get("op_type", {}), "op_type", where)
        op_type = {}
        for name, entries in op_type_tables.items():
            _choice(name, "op_type", OP_TYPES, f"{where} [op_type]")
            op_type[name] = _layer(entries, f"{where} [op_type.{name}]")
        kwargs["op_type"] = op_type

        op_name_tables = _table(document.get("op_name", {}), "op_name", where)
        kwargs["op_name"] = tuple(
            (name, _layer(entries, f'{where} [op_name."{name}"]')) for name, entries in op_name_tables.items()
        )
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> CompressionConfig:
        """Read a config file in TOML.

        Raises:
            EncodingError: the file cannot be read or parsed, or contains an invalid key or value.
        """
        path = Path(path)
        try:
            with path.open("rb") as file:
                document = tomllib.load(file)
        except OSError as err:
            raise EncodingError(f"{path}: failed to read the config file: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise EncodingError(f"{path}: invalid TOML: {err}") from err
        return cls.from_dict(document, where=str(path))

    @classmethod
    def from_options(cls, config: str | os.PathLike | None = None, **options) -> CompressionConfig:
        """Build a config from command-line options, on top of a config file when one is given.

        Args:
            config: a TOML config file, or None.
            **options: ``op_types`` (a list or a comma-separated string), ``min_elements``, and
                any :class:`WeightConfig` key, which sets the global settings. Options whose
                value is None are ignored, so unset command-line options can be passed as they
                are. Numbers and booleans may be given as strings.

        Raises:
            EncodingError: an unknown option or an invalid value; the message names both.
        """
        base = cls.from_toml(config) if config is not None else cls()
        options = {key: value for key, value in options.items() if value is not None}

        kwargs: dict[str, object] = {}
        if "op_types" in options:
            kwargs["op_types"] = _op_types(options.pop("op_types"), "op_types", "options")
        if "min_elements" in options:
            kwargs["min_elements"] = _integer(options.pop("min_elements"), "min_elements", "options", minimum=0)
        layer = WeightConfig.from_dict(options, where="options")
        kwargs["global_config"] = base.global_config.merged(layer)
        return replace(base, **kwargs)

    def to_dict(self) -> dict[str, object]:
        """Return the config as the TOML structure that :meth:`from_dict` reads."""
        return {
            "op_types": list(self.op_types),
            "min_elements": self.min_elements,
            "global": self.global_config.to_dict(),
            "op_type": {name: layer.to_dict() for name, layer in self.op_type.items()},
            "op_name": {name: layer.to_dict() for name, layer in self.op_name},
        }


def _table(value, key: str, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise EncodingError(f"{where}: {key} must be a table of tables, got {type(value).__name__} {value!r}")
    return value


def _op_types(value, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, Iterable):
        raise _fail(where, key, value, f"a list of op types from {list(OP_TYPES)}")
    found = tuple(value)
    for item in found:
        if item not in OP_TYPES:
            raise _fail(where, key, item, f"op types from {list(OP_TYPES)}")
    return found
