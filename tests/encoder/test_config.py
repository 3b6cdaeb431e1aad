"""CompressionConfig: the TOML format, command-line options, layering and every invalid value."""

from __future__ import annotations

import textwrap

import pytest

from sparseblob.encoder.config import (
    DEFAULT_MIN_ELEMENTS,
    OP_TYPES,
    CompressionConfig,
    WeightConfig,
)
from sparseblob.runtime.errors import EncodingError

FULL = """
op_types = ["linear", "conv"]
min_elements = 100

[global]
pattern = "n_m"
n_m = "2:4"
pattern_axis = 1
values = "palettize"
nbits = 4
palettize_mode = "uniform"
group_size = 16

[op_type.conv]
values = "quantize"
quantize_dtype = "uint4"
quantize_mode = "affine"
quantize_block_size = 8

[op_name."decoder.*"]
enabled = false

[op_name."encoder.attn"]
pattern = "block"
sparsity = 0.25
pattern_block_size = 4
min_elements = 10
"""


def write(tmp_path, text: str):
    path = tmp_path / "compress.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_toml_file_reads_every_table(tmp_path):
    config = CompressionConfig.from_toml(write(tmp_path, FULL))

    assert config.op_types == ("linear", "conv")
    assert config.min_elements == 100
    assert config.global_config == WeightConfig(
        pattern="n_m", n_m=(2, 4), pattern_axis=1, values="palettize", nbits=4, palettize_mode="uniform", group_size=16
    )
    assert config.op_type == {
        "conv": WeightConfig(values="quantize", quantize_dtype="uint4", quantize_mode="affine", quantize_block_size=8)
    }
    assert config.op_name == (
        ("decoder.*", WeightConfig(enabled=False)),
        ("encoder.attn", WeightConfig(pattern="block", sparsity=0.25, pattern_block_size=4, min_elements=10)),
    )


def test_defaults_without_file():
    config = CompressionConfig()

    assert config.op_types == OP_TYPES
    assert config.min_elements == DEFAULT_MIN_ELEMENTS == 2048
    assert config.settings_for("linear", ["dense"])[0].compresses is False


def test_resolved_fills_defaults():
    settings = WeightConfig(values="palettize", nbits=2).resolved()

    assert settings.enabled is True
    assert settings.pattern == "none"
    assert settings.palettize_mode == "kmeans"
    assert settings.palettize_granularity == "per_tensor"
    assert settings.cluster_dim == 1
    assert settings.per_channel_scale is False
    assert settings.quantize_dtype == "int8"
    assert settings.quantize_mode == "symmetric"
    assert settings.quantize_granularity == "per_channel"
    assert settings.min_elements == DEFAULT_MIN_ELEMENTS
    assert settings.pattern_axis is None


@pytest.mark.parametrize(
    ("given", "key", "expected"),
    [
        ({"group_size": 8}, "palettize_granularity", "per_grouped_channel"),
        ({"quantize_block_size": 32}, "quantize_granularity", "per_block"),
        ({"group_size": 8, "palettize_granularity": "per_tensor"}, "palettize_granularity", "per_tensor"),
    ],
)
def test_granularity_follows_size_keys(given, key, expected):
    settings = WeightConfig(**given).resolved()

    assert getattr(settings, key) == expected


def test_layers_exact_name_before_glob(tmp_path):
    config = CompressionConfig.from_toml(write(tmp_path, FULL))

    settings, source = config.settings_for("linear", ["encoder.attn", "w"])

    assert source == '[global] + [op_name."encoder.attn"]'
    assert settings.pattern == "block"
    assert settings.values == "palettize"
    assert settings.min_elements == 10


def test_layers_glob_matches_weight_name(tmp_path):
    config = CompressionConfig.from_toml(write(tmp_path, FULL))

    settings, source = config.settings_for("conv", ["conv_7", "decoder.conv_7_weight"])

    assert source == '[global] + [op_type.conv] + [op_name."decoder.*"]'
    assert settings.enabled is False
    assert settings.compresses is False


def test_layers_op_type_replaces_only_its_keys(tmp_path):
    config = CompressionConfig.from_toml(write(tmp_path, FULL))

    settings, source = config.settings_for("conv", ["conv_1"])

    assert source == "[global] + [op_type.conv]"
    assert settings.values == "quantize"
    assert settings.quantize_granularity == "per_block"
    assert settings.n_m == (2, 4)


def test_first_matching_glob_wins():
    config = CompressionConfig(
        op_name=(("a*", WeightConfig(pattern="n_m", n_m=(1, 2))), ("ab*", WeightConfig(enabled=False)))
    )

    settings, source = config.settings_for("linear", ["abc"])

    assert source == '[global] + [op_name."a*"]'
    assert settings.n_m == (1, 2)


def test_options_set_global_settings():
    config = CompressionConfig.from_options(
        pattern="block", sparsity="0.5", pattern_block_size="4", values="quantize",
        quantize_dtype="int4", op_types="linear, matmul", min_elements="0", nbits=None,
    )

    assert config.global_config == WeightConfig(
        pattern="block", sparsity=0.5, pattern_block_size=4, values="quantize", quantize_dtype="int4"
    )
    assert config.op_types == ("linear", "matmul")
    assert config.min_elements == 0


def test_options_override_config_file(tmp_path):
    path = write(tmp_path, FULL)

    config = CompressionConfig.from_options(config=path, nbits=2, min_elements=5)

    assert config.global_config.nbits == 2
    assert config.global_config.n_m == (2, 4)
    assert config.min_elements == 5
    assert config.op_type == CompressionConfig.from_toml(path).op_type


def test_to_dict_round_trips(tmp_path):
    config = CompressionConfig.from_toml(write(tmp_path, FULL))

    assert CompressionConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("text", ["2:4", [2, 4], " 2 : 4 "])
def test_n_m_forms(text):
    assert WeightConfig.from_dict({"n_m": text}).n_m == (2, 4)


# (key, invalid value, fragment of the allowed values); every message also names key and value.
INVALID = [
    ("enabled", "yes", "true or false"),
    ("pattern", "blocks", "'none', 'unstructured', 'n_m', 'block', 'threshold'"),
    ("sparsity", 1.5, "between 0.0 and 1.0"),
    ("sparsity", "half", "a number"),
    ("sparsity", float("nan"), "between 0.0 and 1.0"),
    ("threshold", -0.1, ">= 0"),
    ("n_m", "5:4", "0 <= n <= m"),
    ("n_m", "2-4", '"n:m"'),
    ("n_m", [1, 2, 3], '"n:m"'),
    ("n_m", [True, 2], '"n:m"'),
    ("pattern_block_size", 1, ">= 2"),
    ("pattern_axis", 0.5, "an integer"),
    ("values", "int8", "'fp16', 'fp32', 'palettize', 'quantize'"),
    ("nbits", 5, "[1, 2, 3, 4, 6, 8]"),
    ("nbits", True, "an integer"),
    ("palettize_mode", "kmeans++", "'kmeans', 'uniform', 'unique'"),
    ("palettize_granularity", "per_channel", "'per_tensor', 'per_grouped_channel'"),
    ("group_size", 0, ">= 1"),
    ("cluster_dim", -2, ">= 1"),
    ("per_channel_scale", 1, "true or false"),
    ("quantize_dtype", "int16", "'int8', 'uint8', 'int4', 'uint4'"),
    ("quantize_mode", "linear_symmetric", "'symmetric', 'affine'"),
    ("quantize_granularity", "per_grouped_channel", "'per_tensor', 'per_channel', 'per_block'"),
    ("quantize_block_size", 0, ">= 1"),
    ("min_elements", -1, ">= 0"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), INVALID, ids=[f"{k}={v!r}" for k, v, _ in INVALID])
def test_invalid_value_names_key_value_and_choices(tmp_path, key, value, allowed):
    with pytest.raises(EncodingError) as raised:
        WeightConfig.from_dict({key: value}, where="[global]")

    message = str(raised.value)
    assert message.startswith("[global]: ")
    assert f"{key}={value!r}" in message
    assert allowed in message


def test_invalid_value_in_file_names_file_and_table(tmp_path):
    path = write(tmp_path, '[op_type.conv]\nquantize_dtype = "int2"\n')

    with pytest.raises(EncodingError, match=r"compress.toml \[op_type.conv\]: quantize_dtype='int2' is invalid"):
        CompressionConfig.from_toml(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[global]\nsparsty = 0.5\n", "unknown key 'sparsty'; expected one of ['enabled', 'pattern'"),
        ("[globals]\n", "unknown top-level key 'globals'"),
        ("[op_type.gather]\nenabled = false\n", "op_type='gather' is invalid; expected one of ['linear'"),
        ("op_types = ['linear', 'lstm']\n", "op_types='lstm' is invalid"),
        ("op_types = 3\n", "op_types=3 is invalid"),
        ("min_elements = 'many'\n", "min_elements='many' is invalid; expected an integer"),
        ("global = 3\n", "[global]: expected a table of settings, got int 3"),
        ("op_name = 3\n", "op_name must be a table of tables"),
        ("[global\n", "invalid TOML"),
    ],
)
def test_invalid_file_structure(tmp_path, text, fragment):
    with pytest.raises(EncodingError) as raised:
        CompressionConfig.from_toml(write(tmp_path, text))

    assert fragment in str(raised.value)
    assert str(tmp_path / "compress.toml") in str(raised.value)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(EncodingError, match="missing.toml: failed to read the config file"):
        CompressionConfig.from_toml(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ({"pattern": "n_m"}, "n_m is missing; pattern='n_m' requires it"),
        ({"pattern": "block", "sparsity": 0.5}, "pattern_block_size is missing; pattern='block' requires it"),
        ({"pattern": "unstructured"}, "sparsity is missing; pattern='unstructured' requires it"),
        ({"pattern": "threshold"}, "threshold is missing; pattern='threshold' requires it"),
        ({"values": "palettize"}, "nbits is missing; values='palettize' requires it"),
        (
            {"values": "palettize", "nbits": 4, "palettize_granularity": "per_grouped_channel"},
            "group_size is missing; values='palettize' requires it",
        ),
        (
            {"values": "quantize", "quantize_granularity": "per_block"},
            "quantize_block_size is missing; values='quantize' requires it",
        ),
        ({"per_channel_scale": True}, "per_channel_scale=true applies to values='palettize' only"),
        (
            {"values": "palettize", "nbits": 4, "per_channel_scale": True, "pattern": "n_m", "n_m": "2:4"},
            "per_channel_scale=true works with pattern='none' only",
        ),
    ],
)
def test_missing_or_contradicting_keys(entries, fragment):
    with pytest.raises(EncodingError, match="^\\[global\\]: " + fragment.replace("[", "\\[").replace("(", "\\(")):
        CompressionConfig(global_config=WeightConfig.from_dict(entries))


def test_unique_mode_needs_no_nbits():
    settings = WeightConfig(values="palettize", palettize_mode="unique").resolved()

    assert settings.nbits is None


def test_override_checked_on_top_of_global():
    with pytest.raises(EncodingError, match=r'\[op_name."x"\]: nbits is missing'):
        CompressionConfig(op_name=(("x", WeightConfig(values="palettize")),))


def test_unknown_option_named():
    with pytest.raises(EncodingError, match="options: unknown key 'sparse'"):
        CompressionConfig.from_options(sparse=0.5)


def test_constructor_checks_values():
    with pytest.raises(EncodingError, match=r"pattern='blocks' is invalid; expected one of \['none'"):
        WeightConfig(pattern="blocks")


def test_constructor_normalizes_n_m():
    assert WeightConfig(n_m="3:4").n_m == (3, 4)


def test_layer_must_be_weight_config():
    with pytest.raises(EncodingError, match=r"op_type\['conv'\]=\{'pattern': 'n_m'\} is invalid; expected a WeightConfig"):
        CompressionConfig(op_type={"conv": {"pattern": "n_m"}})
