"""compress_package: what it keeps, how it stores values, what it skips, and how it writes.

The numeric round trip of every pattern and value format is in ``test_mlpackage_matrix.py``.
Here: the rest of the program is unchanged, parameters are stored where coremltools stores
them, selection and overrides, skipped weights stay bit-identical, the same input gives the same
bytes, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

logging.getLogger("coremltools").setLevel(logging.ERROR)

import coremltools as ct  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.proto import MIL_pb2, Model_pb2  # noqa: E402

from sparseblob.encoder import apply_mask, mlpackage, n_m_mask, palettize_scaled, quantize_weight  # noqa: E402
from sparseblob.encoder.config import CompressionConfig, WeightConfig  # noqa: E402
from sparseblob.encoder.mlpackage import compress_package  # noqa: E402
from sparseblob.runtime import load  # noqa: E402
from sparseblob.runtime.blobfile import BlobFile, BlobWriter  # noqa: E402
from sparseblob.runtime.errors import EncodingError, OutputExistsError, PackagePathError  # noqa: E402
from sparseblob.verify.compare import assert_bits_equal  # noqa: E402

from ..conftest import FIXTURES  # noqa: E402
from ..runtime._packages import quiet_coremltools  # noqa: E402
from ._decode import decode  # noqa: E402
from .test_mlpackage_matrix import coremltools_weights, load_program  # noqa: E402

MODEL = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
DENSE16 = FIXTURES / "formats/ios16/dense.mlpackage"
DENSE18 = FIXTURES / "formats/ios18/dense.mlpackage"

JOINT = {"pattern": "n_m", "n_m": "2:4", "values": "palettize", "nbits": 4}


def read_spec(package: Path) -> Model_pb2.Model:
    spec = Model_pb2.Model()
    spec.ParseFromString((package / MODEL).read_bytes())
    return spec


def main_ops(spec: Model_pb2.Model):
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset].operations


def op_name(op) -> str:
    return op.attributes["name"].immediateValue.tensor.strings.values[0]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def blob_values(message):
    """Yield every MILSpec.Value inside ``message`` that references a blob."""
    if isinstance(message, MIL_pb2.Value):
        if message.HasField("blobFileValue"):
            yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = value.values() if descriptor.message_type.fields_by_name["value"].message_type else []
        elif descriptor.is_repeated:
            items = value
        else:
            items = [value]
        for item in items:
            yield from blob_values(item)


def payload(package: Path, offset: int) -> bytes:
    data = (package / WEIGHTS).read_bytes()
    _, dtype, size, data_offset, _ = struct.unpack_from("<IIQQQ", data, offset)
    return bytes([dtype]) + data[data_offset : data_offset + size]


def build_package(path: Path, program_fn, target=ct.target.iOS18) -> Path:
    """Convert a MIL builder program and save it as ``path``."""
    with quiet_coremltools():
        model = ct.convert(program_fn, convert_to="mlprogram", minimum_deployment_target=target, skip_model_load=True)
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def joint18(tmp_path_factory) -> tuple[Path, mlpackage.CompressionReport]:
    out = tmp_path_factory.mktemp("joint") / "joint.mlpackage"
    report = compress_package(DENSE18, out, CompressionConfig.from_options(**JOINT))
    return out, report


# --- the rest of the program is unchanged ----------------------------------------------------


def _normalized(spec: Model_pb2.Model, drop) -> Model_pb2.Model:
    """Copy ``spec`` without the ops for which ``drop(op)`` is true, blob offsets set to 0."""
    copy = Model_pb2.Model()
    copy.CopyFrom(spec)
    ops = main_ops(copy)
    kept = [_copied(op) for op in ops if not drop(op)]
    del ops[:]
    ops.extend(kept)
    for value in blob_values(copy):
        value.blobFileValue.offset = 0
    return copy


def _copied(op):
    copy = MIL_pb2.Operation()
    copy.CopyFrom(op)
    return copy


@pytest.mark.parametrize("source", [DENSE16, DENSE18], ids=["ios16", "ios18"])
def test_program_unchanged_apart_from_weights(tmp_path, source):
    out = tmp_path / "out.mlpackage"
    options = {"pattern": "unstructured", "sparsity": 0.5} if source == DENSE16 else JOINT
    report = compress_package(source, out, CompressionConfig.from_options(**options))
    replaced = {entry.name for entry in report.compressed}

    before = _normalized(read_spec(source), lambda op: op.type == "const" and op.outputs[0].name in replaced)
    after = _normalized(read_spec(out), lambda op: op.type.startswith("constexpr_"))

    assert replaced == {"linear_weight", "conv_weight", "grouped_conv_weight"}
    assert after == before


def test_kept_blobs_copied_byte_for_byte(joint18):
    out, _ = joint18
    before = {
        op.outputs[0].name: payload(DENSE18, op.attributes["val"].blobFileValue.offset)
        for op in main_ops(read_spec(DENSE18))
        if op.type == "const" and op.attributes["val"].HasField("blobFileValue")
    }
    after = {
        op.outputs[0].name: payload(out, op.attributes["val"].blobFileValue.offset)
        for op in main_ops(read_spec(out))
        if op.type == "const" and op.attributes["val"].HasField("blobFileValue")
    }

    assert sorted(after) == ["conv_bias", "grouped_conv_bias", "linear_bias"]
    for name, data in after.items():
        assert data == before[name], name


def test_weight_file_contains_only_referenced_blobs(joint18):
    out, _ = joint18
    referenced = {value.blobFileValue.offset for value in blob_values(read_spec(out))}

    with BlobFile(out / WEIGHTS) as blob_file:
        records = blob_file.validate()

    assert {record.metadata_offset for record in records} == referenced


def test_replaced_weights_absent_from_weight_file(joint18):
    out, _ = joint18
    data = (out / WEIGHTS).read_bytes()
    with load(DENSE18) as package:
        weight = np.array(package.function().operations[0].attributes["val"].read())

    assert package.function().operations[0].outputs[0].name == "linear_weight"
    assert weight.tobytes()[:256] not in data


def test_consumers_bind_the_original_names(joint18):
    out, _ = joint18
    before = {op_name(op): op for op in main_ops(read_spec(DENSE18)) if not op.type.startswith("const")}
    after = {op_name(op): op for op in main_ops(read_spec(out)) if not op.type.startswith("const")}

    assert sorted(after) == sorted(before)
    for name, op in after.items():
        assert op == before[name], name


def test_joint_chain_names_and_bindings(joint18):
    out, _ = joint18
    ops = {op_name(op): op for op in main_ops(read_spec(out)) if op.type.startswith("constexpr_")}
    first = ops["linear_weight_palettized"]
    final = ops["linear_weight_sparsified"]

    assert first.type == "constexpr_lut_to_sparse"
    assert [item.name for item in first.outputs] == ["linear_weight_palettized_0", "linear_weight_palettized_1"]
    assert final.type == "constexpr_sparse_to_dense"
    assert [item.name for item in final.outputs] == ["linear_weight"]
    assert final.inputs["mask"].arguments[0].name == "linear_weight_palettized_0"
    assert final.inputs["nonzero_data"].arguments[0].name == "linear_weight_palettized_1"
    assert list(final.attributes) == ["name"]


def test_report_lists_chain_and_sizes(joint18):
    _, report = joint18
    entry = {item.name: item for item in report.compressed}["linear_weight"]

    assert entry.chain == ("constexpr_lut_to_sparse", "constexpr_sparse_to_dense")
    assert entry.consumers == ("linear 'linear'",)
    assert entry.shape == (64, 128)
    assert entry.dense_bytes == 64 * 128 * 2
    # uint1 mask, 4096 uint4 indices and a 16-entry fp16 LUT.
    assert entry.stored_bytes == 1024 + 2048 + 32
    assert report.output_weight_bytes < report.input_weight_bytes


# --- values stored as coremltools stores them ------------------------------------------------


def _layout(op) -> dict[str, tuple]:
    """Each parameter's dtype, rank, shape and storage (blob, immediate field, or name binding).

    The lengths of ``nonzero_data`` and ``indices_nonzero_data`` depend on how many values the
    pruner kept, so only their rank is compared.
    """
    params = {key: value for key, value in op.attributes.items() if key != "name"}
    for key, argument in op.inputs.items():
        binding = argument.arguments[0]
        params[key] = binding.value if binding.WhichOneof("binding") == "value" else binding.name
    found = {}
    for key, value in params.items():
        if isinstance(value, str):
            found[key] = ("name",)
            continue
        tensor = value.type.tensorType
        dims = tuple(dim.constant.size for dim in tensor.dimensions)
        if key in ("nonzero_data", "indices_nonzero_data"):
            dims = len(dims)
        storage = "blob" if value.HasField("blobFileValue") else value.immediateValue.tensor.WhichOneof("value")
        found[key] = (tensor.dataType, dims, storage)
    return found


def _first_ops(package: Path) -> dict[str, list]:
    """The constexpr ops of each weight, by the const name they decode."""
    chains: dict[str, list] = {}
    for op in main_ops(read_spec(package)):
        if op.type.startswith("constexpr_"):
            weight = op_name(op).split("_weight")[0] + "_weight"
            chains.setdefault(weight, []).append(op)
    return chains


# (source, coremltools fixture, our settings); the first op of each chain is compared.
LAYOUTS = [
    ("ios16/dense", "ios16/prune_magnitude50", {"pattern": "unstructured", "sparsity": 0.5}),
    ("ios16/dense", "ios16/palettize_uniform2", {"values": "palettize", "nbits": 2, "palettize_mode": "uniform"}),
    ("ios16/dense", "ios16/palettize_uniform8", {"values": "palettize", "nbits": 8, "palettize_mode": "uniform"}),
    ("ios16/dense", "ios16/quantize_int8_symmetric_per_channel", {"values": "quantize"}),
    (
        "ios16/dense",
        "ios16/quantize_uint8_linear_per_tensor",
        {"values": "quantize", "quantize_dtype": "uint8", "quantize_mode": "affine", "quantize_granularity": "per_tensor"},
    ),
    ("ios18/dense", "ios18/prune_2of4_dim1", {"pattern": "n_m", "n_m": "2:4"}),
    ("ios18/dense", "ios18/palettize_uniform2", {"values": "palettize", "nbits": 2, "palettize_mode": "uniform"}),
    (
        "ios18/dense",
        "ios18/palettize_uniform4_group16",
        {"values": "palettize", "nbits": 4, "palettize_mode": "uniform", "group_size": 16},
    ),
    (
        "ios18/dense_lattice",
        "ios18/palettize_unique_vector4",
        {"values": "palettize", "palettize_mode": "unique", "cluster_dim": 4},
    ),
    (
        "ios18/dense",
        "ios18/quantize_uint4_linear_per_block8",
        {"values": "quantize", "quantize_dtype": "uint4", "quantize_mode": "affine", "quantize_block_size": 8},
    ),
    (
        "ios18/dense",
        "ios18/quantize_int4_symmetric_per_tensor",
        {"values": "quantize", "quantize_dtype": "int4", "quantize_granularity": "per_tensor"},
    ),
    (
        "ios18/dense",
        "ios18/joint_prune50_palettize4",
        {"pattern": "unstructured", "sparsity": 0.5, "values": "palettize", "nbits": 4, "palettize_mode": "uniform"},
    ),
    ("ios18/dense", "ios18/joint_prune50_int8", {"pattern": "unstructured", "sparsity": 0.5, "values": "quantize"}),
]


@pytest.mark.parametrize(("source", "reference", "options"), LAYOUTS, ids=[item[1] for item in LAYOUTS])
def test_parameters_stored_like_coremltools(tmp_path, source, reference, options):
    out = tmp_path / "out.mlpackage"
    compress_package(FIXTURES / "formats" / f"{source}.mlpackage", out, CompressionConfig.from_options(**options))

    ours = _first_ops(out)
    theirs = _first_ops(FIXTURES / "formats" / f"{reference}.mlpackage")

    assert sorted(ours) == sorted(theirs)
    for weight in ours:
        assert ours[weight][0].type == theirs[weight][0].type, weight
        assert _layout(ours[weight][0]) == _layout(theirs[weight][0]), weight
        assert ours[weight][-1].outputs[-1].type == theirs[weight][-1].outputs[-1].type, weight


# --- selection ------------------------------------------------------------------------------


def _compressed(report) -> list[str]:
    return sorted(entry.name for entry in report.compressed)


@pytest.mark.parametrize(("min_elements", "expected"), [(8192, []), (8191, ["linear_weight"])])
def test_min_elements_is_exclusive(tmp_path, min_elements, expected):
    # linear_weight has 8192 elements, the conv weights 4608.
    config = CompressionConfig.from_options(pattern="n_m", n_m="2:4", min_elements=min_elements)

    report = compress_package(DENSE18, tmp_path / "out.mlpackage", config)

    assert _compressed(report) == expected
    assert report.skipped == []


def test_override_min_elements(tmp_path):
    config = CompressionConfig(
        global_config=WeightConfig(pattern="n_m", n_m=(2, 4)),
        min_elements=8192,
        op_type={"conv": WeightConfig(min_elements=4607)},
    )

    report = compress_package(DENSE18, tmp_path / "out.mlpackage", config)

    assert _compressed(report) == ["conv_weight", "grouped_conv_weight"]


def test_op_types_limit_selection(tmp_path):
    config = CompressionConfig.from_options(pattern="n_m", n_m="2:4", op_types="conv")

    report = compress_package(DENSE18, tmp_path / "out.mlpackage", config)

    assert _compressed(report) == ["conv_weight", "grouped_conv_weight"]
    assert report.skipped == []


def test_op_name_overrides_exact_and_glob(tmp_path):
    config = CompressionConfig(
        global_config=WeightConfig(pattern="n_m", n_m=(2, 4)),
        op_name=(
            ("*conv*", WeightConfig(values="quantize")),
            ("grouped_conv", WeightConfig(enabled=False)),
        ),
    )

    report = compress_package(DENSE18, tmp_path / "out.mlpackage", config)
    chains = {entry.name: entry for entry in report.compressed}

    assert sorted(chains) == ["conv_weight", "linear_weight"]
    assert chains["linear_weight"].chain == ("constexpr_sparse_to_dense",)
    assert chains["conv_weight"].chain == ("constexpr_sparse_blockwise_shift_scale", "constexpr_sparse_to_dense")
    assert chains["conv_weight"].settings == '[global] + [op_name."*conv*"]'


def test_op_type_override_changes_values(tmp_path):
    config = CompressionConfig(
        global_config=WeightConfig(values="palettize", nbits=2),
        op_type={"conv": WeightConfig(values="quantize", quantize_dtype="uint8")},
    )

    report = compress_package(DENSE16, tmp_path / "out.mlpackage", config)
    chains = {entry.name: entry.chain for entry in report.compressed}

    assert chains == {
        "linear_weight": ("constexpr_lut_to_dense",),
        "conv_weight": ("constexpr_affine_dequantize",),
        "grouped_conv_weight": ("constexpr_affine_dequantize",),
    }


def test_values_dtype_mismatch_leaves_weight_dense(tmp_path):
    config = CompressionConfig.from_options(pattern="unstructured", sparsity=0.5, values="fp32")

    report = compress_package(DENSE18, tmp_path / "out.mlpackage", config)

    assert report.compressed == []
    assert len(report.skipped) == 3
    assert "values='fp32' would change the fp16 weight" in report.skipped[0].reason


# --- skipped weights stay bit-identical ------------------------------------------------------


@pytest.fixture(scope="module")
def small_linear(tmp_path_factory) -> Path:
    """An iOS18 package with one linear weight [6, 8] and one conv weight [32, 16, 3, 3]."""
    rng = np.random.default_rng(7)
    linear = rng.standard_normal((6, 8)).astype(np.float16)
    conv = rng.standard_normal((32, 16, 3, 3)).astype(np.float16)

    @mb.program(
        input_specs=[mb.TensorSpec((1, 8), dtype=ct.converters.mil.mil.types.fp16),
                     mb.TensorSpec((1, 16, 4, 4), dtype=ct.converters.mil.mil.types.fp16)],
        opset_version=ct.target.iOS18,
    )
    def program(x, image):
        return mb.linear(x=x, weight=linear, name="small"), mb.conv(x=image, weight=conv, name="conv")

    return build_package(tmp_path_factory.mktemp("small") / "small.mlpackage", program)


def _const_bytes(package: Path, name: str) -> bytes:
    for op in main_ops(read_spec(package)):
        if op.type == "const" and op.outputs[0].name == name:
            value = op.attributes["val"]
            if value.HasField("blobFileValue"):
                return payload(package, value.blobFileValue.offset)
            return value.immediateValue.SerializeToString()
    raise KeyError(name)


def _weight_names(package: Path, op_types=("linear", "conv")) -> dict[str, str]:
    """Consumer op name -> the name its weight input binds."""
    return {
        op_name(op): op.inputs["weight"].arguments[0].name
        for op in main_ops(read_spec(package))
        if op.type in op_types
    }


def test_declined_group_size_leaves_weight_identical(tmp_path, small_linear, caplog):
    weight = _weight_names(small_linear)["small"]
    config = CompressionConfig(
        global_config=WeightConfig(values="palettize", nbits=2, group_size=4, per_channel_scale=True),
        min_elements=0,
    )
    out = tmp_path / "out.mlpackage"

    with caplog.at_level(logging.INFO, logger="sparseblob.encoder.mlpackage"):
        report = compress_package(small_linear, out, config)

    assert [entry.name for entry in report.skipped] == [weight]
    assert "group_size=4 does not divide the 6 channels" in report.skipped[0].reason
    assert any("skipped" in record.message and weight in record.message for record in caplog.records)
    assert _const_bytes(out, weight) == _const_bytes(small_linear, weight)
    assert [entry.chain for entry in report.compressed] == [("constexpr_lut_to_dense", "constexpr_blockwise_shift_scale")]


def test_declined_block_size_leaves_weight_identical(tmp_path, small_linear):
    weights = _weight_names(small_linear)
    config = CompressionConfig(global_config=WeightConfig(values="quantize", quantize_block_size=16), min_elements=0)
    out = tmp_path / "out.mlpackage"

    report = compress_package(small_linear, out, config)

    assert [entry.name for entry in report.skipped] == [weights["small"]]
    assert "block_size=16 does not divide axis 1 of length 8" in report.skipped[0].reason
    assert _const_bytes(out, weights["small"]) == _const_bytes(small_linear, weights["small"])
    assert [entry.name for entry in report.compressed] == [weights["conv"]]


def test_declined_pattern_larger_than_axis(tmp_path, small_linear):
    weights = _weight_names(small_linear)
    config = CompressionConfig(
        global_config=WeightConfig(pattern="block", sparsity=0.5, pattern_block_size=8), min_elements=0
    )

    report = compress_package(small_linear, tmp_path / "out.mlpackage", config)

    assert [entry.name for entry in report.skipped] == [weights["small"]]
    assert "pattern_block_size=8 is larger than axis 0 of length 6" in report.skipped[0].reason


def test_per_channel_scale_chain_decodes(tmp_path, small_linear):
    weights = _weight_names(small_linear)
    config = CompressionConfig(
        global_config=WeightConfig(values="palettize", nbits=4, per_channel_scale=True), min_elements=0
    )
    out = tmp_path / "out.mlpackage"

    compress_package(small_linear, out, config)
    decompressed = consumer_weights(out)

    with load(small_linear) as package:
        dense = {op.outputs[0].name: np.array(op.attributes["val"].read()) for op in package.function().operations if op.type == "const"}
    for consumer, name in weights.items():
        expected = decode(palettize_scaled(dense[name], 4))
        assert_bits_equal(decompressed[consumer], expected, name=consumer)


def consumer_weights(path) -> dict[str, np.ndarray]:
    """Dense weights from coremltools' ``decompress_weights``, by consumer op name.

    The weight of linear, conv and conv_transpose is their ``weight`` input, of matmul its ``y``.
    """
    model = ct.models.MLModel(str(path), skip_model_load=True)
    with quiet_coremltools():
        decompressed = ct.optimize.coreml.decompress_weights(model)
    found = {}
    for op in decompressed._mil_program.functions["main"].operations:
        param = {"linear": "weight", "conv": "weight", "conv_transpose": "weight", "matmul": "y"}.get(op.op_type)
        if param is not None and op.inputs[param].val is not None:
            found[op.name] = op.inputs[param].val
    return found


# --- shared consts and other consumers ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_and_matmul(tmp_path_factory) -> Path:
    """iOS18: a weight shared by a linear and a mul, and a matmul with a constant ``y``."""
    rng = np.random.default_rng(11)
    shared = rng.standard_normal((64, 64)).astype(np.float16)
    right = rng.standard_normal((64, 96)).astype(np.float16)
    fp16 = ct.converters.mil.mil.types.fp16

    @mb.program(input_specs=[mb.TensorSpec((1, 64), dtype=fp16)], opset_version=ct.target.iOS18)
    def program(x):
        weight = mb.const(val=shared, name="shared_weight")
        dense = mb.linear(x=x, weight=weight, name="dense")
        scaled = mb.mul(x=weight, y=x, name="scaled")
        product = mb.matmul(x=x, y=right, name="product")
        return dense, scaled, product

    return build_package(tmp_path_factory.mktemp("shared") / "shared.mlpackage", program)


def test_shared_weight_stays_dense(tmp_path, shared_and_matmul):
    out = tmp_path / "out.mlpackage"

    report = compress_package(shared_and_matmul, out, CompressionConfig.from_options(pattern="unstructured", sparsity=0.5))
    skipped = {entry.name: entry for entry in report.skipped}

    assert list(skipped) == ["shared_weight"]
    assert "also feeds mul 'scaled'" in skipped["shared_weight"].reason
    assert _const_bytes(out, "shared_weight") == _const_bytes(shared_and_matmul, "shared_weight")
    assert len(report.compressed) == 1


def test_matmul_quantized_along_its_output_axis(tmp_path, shared_and_matmul):
    out = tmp_path / "out.mlpackage"

    report = compress_package(shared_and_matmul, out, CompressionConfig.from_options(values="quantize"))
    entry = {item.consumers[0]: item for item in report.compressed}["matmul 'product'"]
    scale = {op_name(op): op for op in main_ops(read_spec(out))}[f"{entry.name}_quantized"].inputs["scale"]
    scale_shape = [dim.constant.size for dim in scale.arguments[0].value.type.tensorType.dimensions]

    with load(shared_and_matmul) as package:
        dense = {op.outputs[0].name: np.array(op.attributes["val"].read()) for op in package.function().operations if op.type == "const"}
    expected = decode(quantize_weight(dense[entry.name], "int8", channel_axis=1, block_axis=0))
    program = load_program(out)
    matmul = [op for op in program.functions["main"].operations if op.op_type == "matmul"][0]
    with load(out) as package:
        ours = package.weights()[entry.name]

    assert scale_shape == [1, 96]
    assert_bits_equal(ours, expected, name=entry.name)
    assert matmul.y.op.op_type == "constexpr_blockwise_shift_scale"


def test_conv_transpose_model_matches_coremltools(tmp_path):
    source = FIXTURES / "models/conv1d_dilated/ios18_dense.mlpackage"
    out = tmp_path / "out.mlpackage"
    config = CompressionConfig.from_options(
        pattern="n_m", n_m="1:2", values="quantize", quantize_dtype="uint8", min_elements=0
    )

    report = compress_package(source, out, config)
    theirs = consumer_weights(out)
    bindings = _weight_names(out, ("linear", "conv", "conv_transpose"))
    with load(out) as package:
        ours = package.weights()

    assert any(consumer.startswith("conv_transpose") for entry in report.compressed for consumer in entry.consumers)
    assert sorted(bindings) == sorted(theirs)
    assert sorted(bindings.values()) == sorted(entry.name for entry in report.compressed)
    for consumer, weight in bindings.items():
        assert_bits_equal(ours[weight], theirs[consumer], name=consumer)


# --- determinism and atomic writes ------------------------------------------------------------


def test_same_input_gives_same_bytes(tmp_path, joint18):
    first, _ = joint18
    second = tmp_path / "joint.mlpackage"

    compress_package(DENSE18, second, CompressionConfig.from_options(**JOINT))

    assert tree_bytes(second) == tree_bytes(first)


class FailingWriter(BlobWriter):
    """A blob writer that raises on its ``fail_at``-th write, after the earlier ones succeeded."""

    fail_at = 4
    calls = 0

    def write(self, values, dtype, *, name="values"):
        FailingWriter.calls += 1
        if FailingWriter.calls == FailingWriter.fail_at:
            raise RuntimeError("injected failure")
        return super().write(values, dtype, name=name)


@pytest.fixture
def failing_writer(monkeypatch):
    FailingWriter.calls = 0
    monkeypatch.setattr(mlpackage, "BlobWriter", FailingWriter)
    return FailingWriter


def test_failure_leaves_no_package(tmp_path, failing_writer):
    out = tmp_path / "out.mlpackage"

    with pytest.raises(RuntimeError, match="injected failure"):
        compress_package(DENSE18, out, CompressionConfig.from_options(**JOINT))

    assert failing_writer.calls == failing_writer.fail_at
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_existing_output(tmp_path, joint18, failing_writer):
    out = tmp_path / "out.mlpackage"
    shutil.copytree(joint18[0], out)
    before = tree_bytes(out)

    with pytest.raises(RuntimeError, match="injected failure"):
        compress_package(DENSE18, out, CompressionConfig.from_options(pattern="n_m", n_m="2:4"), overwrite=True)

    assert tree_bytes(out) == before
    assert [path.name for path in tmp_path.iterdir()] == ["out.mlpackage"]


def test_existing_output_rejected(tmp_path):
    out = tmp_path / "out.mlpackage"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    with pytest.raises(OutputExistsError, match="overwrite=True"):
        compress_package(DENSE18, out, CompressionConfig.from_options(**JOINT))

    assert (out / "keep.txt").read_text() == "mine"
    assert [path.name for path in tmp_path.iterdir()] == ["out.mlpackage"]


def test_overwrite_replaces_output(tmp_path, joint18):
    out = tmp_path / "out.mlpackage"
    out.mkdir()
    (out / "stale.txt").write_text("old")

    compress_package(DENSE18, out, CompressionConfig.from_options(**JOINT), overwrite=True)

    assert tree_bytes(out) == tree_bytes(joint18[0])
    assert [path.name for path in tmp_path.iterdir()] == ["out.mlpackage"]


def test_overwrite_input_in_place(tmp_path, joint18):
    package = tmp_path / "model.mlpackage"
    shutil.copytree(DENSE18, package)

    compress_package(package, package, CompressionConfig.from_options(**JOINT), overwrite=True)

    assert tree_bytes(package) == tree_bytes(joint18[0])
    assert [path.name for path in tmp_path.iterdir()] == ["model.mlpackage"]


def test_output_inside_input_rejected(tmp_path):
    package = tmp_path / "model.mlpackage"
    shutil.copytree(DENSE18, package)

    with pytest.raises(PackagePathError, match="contain one another"):
        compress_package(package, package / "nested.mlpackage", CompressionConfig.from_options(**JOINT))


def test_target_error_names_op_and_writes_nothing(tmp_path):
    out = tmp_path / "out.mlpackage"

    with pytest.raises(EncodingError, match=r"linear_weight \(weight of linear 'linear'\).*3-bit LUTs"):
        compress_package(DENSE16, out, CompressionConfig.from_options(values="palettize", nbits=3))

    assert list(tmp_path.iterdir()) == []


def test_unique_mode_uses_four_bits_on_ios16(tmp_path):
    levels = np.array([-2, -1, 0, 1, 2], dtype=np.float16)
    weight = np.random.default_rng(3).choice(levels, size=(64, 64))
    fp16 = ct.converters.mil.mil.types.fp16

    @mb.program(input_specs=[mb.TensorSpec((1, 64), dtype=fp16)], opset_version=ct.target.iOS16)
    def program(x):
        return mb.linear(x=x, weight=weight, name="dense")

    source = build_package(tmp_path / "levels.mlpackage", program, target=ct.target.iOS16)
    out = tmp_path / "out.mlpackage"

    report = compress_package(source, out, CompressionConfig.from_options(values="palettize", palettize_mode="unique"))
    lut = [op for op in main_ops(read_spec(out)) if op.type == "constexpr_lut_to_dense"][0].attributes["lut"]

    assert len(report.compressed) == 1
    assert [dim.constant.size for dim in lut.type.tensorType.dimensions] == [16]
    assert_bits_equal(consumer_weights(out)["dense"], weight, name="dense")


@pytest.fixture(scope="module")
def two_functions(tmp_path_factory) -> Path:
    """An iOS18 package whose functions ``first`` and ``second`` share one dense weight file."""
    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    from ..runtime._packages import build_package as build_recipe

    plain = build_recipe("ios18_plain", tmp_path_factory)
    descriptor = MultiFunctionDescriptor()
    descriptor.add_function(str(plain), "main", "first")
    descriptor.add_function(str(plain), "main", "second")
    descriptor.default_function_name = "first"
    path = tmp_path_factory.mktemp("functions") / "functions.mlpackage"
    with quiet_coremltools():
        save_multifunction(descriptor, str(path))
    return path


def test_every_function_compressed(tmp_path, two_functions):
    out = tmp_path / "out.mlpackage"
    config = CompressionConfig.from_options(pattern="n_m", n_m="2:4", min_elements=100)

    report = compress_package(two_functions, out, config)
    with load(two_functions) as source, load(out) as package:
        dense = {
            op.outputs[0].name: np.array(op.attributes["val"].read())
            for op in source.function("first").operations
            if op.type == "const"
        }
        weights = {name: package.weights(name) for name in ("first", "second")}
        with BlobFile(out / WEIGHTS) as blob_file:
            records = blob_file.validate()

    assert sorted((entry.function, entry.consumers[0].split()[0]) for entry in report.compressed) == [
        ("first", "conv"), ("first", "linear"), ("second", "conv"), ("second", "linear"),
    ]
    for function, decoded in weights.items():
        assert sorted(decoded) == sorted(entry.name for entry in report.compressed if entry.function == function)
        for name, array in decoded.items():
            assert_bits_equal(array, apply_mask(dense[name], n_m_mask(dense[name], 2, 4)), name=f"{function} {name}")
    assert {record.metadata_offset for record in records} == {value.blobFileValue.offset for value in blob_values(read_spec(out))}


def test_compressed_input_kept_value_for_value(tmp_path):
    source = FIXTURES / "formats/ios18/joint_prune50_palettize4.mlpackage"
    out = tmp_path / "out.mlpackage"

    report = compress_package(source, out, CompressionConfig.from_options(**JOINT))
    with load(source) as before, load(out) as after:
        expected = before.constexpr_values()
        found = after.constexpr_values()

    assert report.compressed == []
    assert list(found) == list(expected)
    for name, array in found.items():
        assert_bits_equal(array, expected[name], name=name)


@pytest.fixture(scope="module")
def ios17_plain(tmp_path_factory) -> Path:
    from ..runtime._packages import build_package as build_recipe

    return build_recipe("ios17_plain", tmp_path_factory)


def test_ios17_uses_ios16_forms(tmp_path, ios17_plain):
    out = tmp_path / "out.mlpackage"
    config = CompressionConfig.from_options(values="quantize", quantize_dtype="uint8", min_elements=100)

    report = compress_package(ios17_plain, out, config)
    ops = [op for op in main_ops(read_spec(out)) if op.type.startswith("constexpr_")]
    theirs = consumer_weights(out)
    with load(out) as package:
        ours = package.weights()

    assert read_spec(out).mlProgram.functions["main"].opset == "CoreML7"
    assert [entry.chain for entry in report.compressed] == [("constexpr_affine_dequantize",)] * 2
    assert all(len(op.inputs) == 0 for op in ops)
    assert sorted(ops[0].attributes) == ["axis", "name", "quantized_data", "scale", "zero_point"]
    for entry in report.compressed:
        consumer = entry.consumers[0].split("'")[1]
        assert_bits_equal(ours[entry.name], theirs[consumer], name=entry.name)


def test_ios17_rejects_int4(tmp_path, ios17_plain):
    config = CompressionConfig.from_options(values="quantize", quantize_dtype="int4", min_elements=100)

    with pytest.raises(EncodingError, match="quantize_dtype='int4' starts with iOS18.*opset is CoreML7"):
        compress_package(ios17_plain, tmp_path / "out.mlpackage", config)

    assert list(tmp_path.iterdir()) == []
