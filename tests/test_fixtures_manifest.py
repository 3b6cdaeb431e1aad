"""fixtures/index.json must describe the committed fixture files exactly.

Each indexed package must be complete on disk, its `.npz` must contain the listed arrays with the
listed dtypes and shapes, and its protobuf must contain the constexpr ops that the listed
compression produces. The protobuf is read with coremltools' generated classes only, so a broken
or partial regeneration fails here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coremltools.proto import MIL_pb2, Model_pb2

from tests.conftest import FIXTURES

INDEX = json.loads((FIXTURES / "index.json").read_text())
FORMAT_ENTRIES = INDEX.get("formats", [])
MODEL_ENTRIES = INDEX.get("models", [])
ALL_ENTRIES = FORMAT_ENTRIES + MODEL_ENTRIES

# Entries whose compression fixes the palettization nbits (`unique` mode picks its own) or
# includes linear quantization.
PALETTIZED_ENTRIES = [
    entry
    for entry in ALL_ENTRIES
    if any(step["technique"] == "palettization" and step["nbits"] is not None for step in entry["compression"])
]
QUANTIZED_ENTRIES = [
    entry
    for entry in ALL_ENTRIES
    if any(step["technique"] == "linear_quantization" for step in entry["compression"])
]

SPARSE_TO_DENSE = "constexpr_sparse_to_dense"
LUT_TO_DENSE = "constexpr_lut_to_dense"
LUT_TO_SPARSE = "constexpr_lut_to_sparse"
AFFINE_DEQUANTIZE = "constexpr_affine_dequantize"
SHIFT_SCALE = "constexpr_blockwise_shift_scale"
SPARSE_SHIFT_SCALE = "constexpr_sparse_blockwise_shift_scale"

# numpy container of each MIL dtype in the expected `.npz` files. Sub-byte unsigned types are
# stored one element per uint8, and int4 one element per int8.
CONTAINERS = {
    "fp16": np.float16,
    "fp32": np.float32,
    "int4": np.int8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "uint1": np.uint8,
    "uint2": np.uint8,
    "uint3": np.uint8,
    "uint4": np.uint8,
    "uint6": np.uint8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": np.bool_,
}

PROTO_DTYPES = {
    "FLOAT16": "fp16",
    "FLOAT32": "fp32",
    "FLOAT64": "fp64",
    "BOOL": "bool",
    **{f"INT{bits}": f"int{bits}" for bits in (4, 8, 16, 32, 64)},
    **{f"UINT{bits}": f"uint{bits}" for bits in (1, 2, 3, 4, 6, 8, 16, 32, 64)},
}


def entry_id(entry: dict[str, Any]) -> str:
    return entry["name"]


def package_path(entry: dict[str, Any]) -> Path:
    return FIXTURES / entry["package"]


# --- reading the protobuf -------------------------------------------------------------------


class Program:
    """The main block of a saved package, read with the protobuf classes only."""

    def __init__(self, package: Path) -> None:
        spec = Model_pb2.Model()
        spec.ParseFromString((package / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
        function = spec.mlProgram.functions["main"]

        self.specification_version = spec.specificationVersion
        self.opset = function.opset
        self.operations = list(function.block_specializations[function.opset].operations)
        self.producer = {output.name: op for op in self.operations for output in op.outputs}
        self.position = {id(op): position for position, op in enumerate(self.operations)}

    def by_name(self, name: str) -> MIL_pb2.Operation:
        for op in self.operations:
            if op_name(op) == name:
                return op
        raise KeyError(f"no operation named {name!r}")

    def chain(self, output: str) -> list[MIL_pb2.Operation]:
        """Constexpr ops producing `output`, directly or through bound names, in program order."""
        found: dict[int, MIL_pb2.Operation] = {}
        pending = [output]
        while pending:
            op = self.producer.get(pending.pop())
            if op is None or not op.type.startswith("constexpr_") or id(op) in found:
                continue
            found[id(op)] = op
            pending.extend(bound_names(op))
        return sorted(found.values(), key=lambda op: self.position[id(op)])

    def parameter_dtype(self, op: MIL_pb2.Operation, param: str) -> tuple[str, list[int]]:
        """MIL dtype and shape of one parameter of a constexpr op, wherever it is stored.

        iOS16 ops keep parameters in `attributes`. iOS18 ops bind them in `inputs`, either to a
        literal value or to the name of another op's output.
        """
        if param in op.attributes:
            return tensor_type(op.attributes[param].type)
        binding = op.inputs[param].arguments[0]
        if binding.WhichOneof("binding") == "name":
            producer = self.producer[binding.name]
            output = next(output for output in producer.outputs if output.name == binding.name)
            return tensor_type(output.type)
        return tensor_type(binding.value.type)


def op_name(op: MIL_pb2.Operation) -> str:
    return op.attributes["name"].immediateValue.tensor.strings.values[0]


def bound_names(op: MIL_pb2.Operation) -> list[str]:
    return [
        binding.name
        for argument in op.inputs.values()
        for binding in argument.arguments
        if binding.WhichOneof("binding") == "name"
    ]


def tensor_type(value_type: MIL_pb2.ValueType) -> tuple[str, list[int]]:
    tensor = value_type.tensorType
    dtype = PROTO_DTYPES[MIL_pb2.DataType.Name(tensor.dataType)]
    return dtype, [int(dim.constant.size) for dim in tensor.dimensions]


@lru_cache(maxsize=None)
def load_program(package: str) -> Program:
    return Program(FIXTURES / package)


@lru_cache(maxsize=None)
def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# --- what a compression description implies -------------------------------------------------


def expected_op_types(target: str, compression: list[dict[str, Any]]) -> list[str]:
    """The constexpr op types that coremltools emits per weight for a list of compression steps."""
    techniques = {step["technique"] for step in compression}
    pruned = "pruning" in techniques
    palettized = "palettization" in techniques
    quantized = "linear_quantization" in techniques
    channel_scale = any(step.get("enable_per_channel_scale") for step in compression)

    if target == "iOS16":
        single = {
            "pruning": SPARSE_TO_DENSE,
            "palettization": LUT_TO_DENSE,
            "linear_quantization": AFFINE_DEQUANTIZE,
        }
        return sorted(single[technique] for technique in techniques)

    types = []
    if pruned:
        types.append(SPARSE_TO_DENSE)
        if palettized:
            types.append(LUT_TO_SPARSE)
            if quantized:
                types.append(SHIFT_SCALE)
        elif quantized:
            types.append(SPARSE_SHIFT_SCALE)
    elif palettized:
        types.append(LUT_TO_DENSE)
        if quantized or channel_scale:
            types.append(SHIFT_SCALE)
    elif quantized:
        types.append(SHIFT_SCALE)
    return sorted(types)


# --- tests ----------------------------------------------------------------------------------


def test_index_lists_format_fixtures():
    assert len(FORMAT_ENTRIES) > 0


def test_index_lists_model_fixtures():
    assert len(MODEL_ENTRIES) > 0


def test_index_names_are_unique():
    names = [entry["name"] for entry in ALL_ENTRIES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("section", ["formats", "models"])
def test_every_package_on_disk_is_indexed(section):
    indexed = {entry["package"] for entry in INDEX.get(section, [])}
    on_disk = {path.relative_to(FIXTURES).as_posix() for path in (FIXTURES / section).rglob("*.mlpackage")}
    assert on_disk == indexed


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_package_has_manifest_model_and_weights(entry):
    package = package_path(entry)
    assert (package / "Manifest.json").is_file()
    assert (package / "Data" / "com.apple.CoreML" / "model.mlmodel").is_file()
    assert (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").is_file()


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_manifest_root_is_model(entry):
    manifest = json.loads((package_path(entry) / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    assert root["path"] == "com.apple.CoreML/model.mlmodel"


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_spec_version_and_opset_match(entry):
    program = load_program(entry["package"])
    assert program.specification_version == entry["specification_version"]
    assert program.opset == entry["opset"]


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_npz_has_listed_arrays(entry):
    arrays = load_npz(entry["expected"])
    assert sorted(arrays) == sorted(entry["arrays"])


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_npz_dtypes_and_shapes_match(entry):
    arrays = load_npz(entry["expected"])
    for name, described in entry["arrays"].items():
        assert arrays[name].dtype == CONTAINERS[described["dtype"]], name
        assert list(arrays[name].shape) == described["shape"], name


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_npz_includes_every_weight(entry):
    arrays = load_npz(entry["expected"])
    for weight in entry["weights"]:
        assert weight["output"] in arrays, weight["output"]


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_arrays_are_declared_in_protobuf(entry):
    program = load_program(entry["package"])
    for name, described in entry["arrays"].items():
        op = program.producer[name]
        output = next(output for output in op.outputs if output.name == name)
        assert op.type == described["op_type"], name
        assert op_name(op) == described["op"], name
        assert list(tensor_type(output.type)) == [described["dtype"], described["shape"]], name


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_consumers_bind_listed_weights(entry):
    program = load_program(entry["package"])
    for weight in entry["weights"] + entry.get("uncompressed_weights", []):
        consumer = program.by_name(weight["consumer"])
        bindings = consumer.inputs[weight["input"]].arguments
        assert [binding.name for binding in bindings] == [weight["output"]], weight["consumer"]


@pytest.mark.parametrize("entry", MODEL_ENTRIES, ids=entry_id)
def test_uncompressed_weights_are_consts(entry):
    program = load_program(entry["package"])
    for weight in entry["uncompressed_weights"]:
        assert program.producer[weight["output"]].type == "const", weight["output"]


@pytest.mark.parametrize("entry", MODEL_ENTRIES, ids=entry_id)
def test_model_inputs_file_matches_inputs(entry):
    inputs = load_npz(entry["inputs_file"])
    assert sorted(inputs) == sorted(feature["name"] for feature in entry["inputs"])
    for feature in entry["inputs"]:
        assert inputs[feature["name"]].dtype == CONTAINERS[feature["dtype"]], feature["name"]
        assert list(inputs[feature["name"]].shape) == feature["shape"], feature["name"]


@pytest.mark.parametrize("entry", MODEL_ENTRIES, ids=entry_id)
def test_torch_outputs_file_matches_outputs(entry):
    outputs = load_npz(entry["torch_outputs_file"])
    assert sorted(outputs) == sorted(feature["name"] for feature in entry["outputs"])
    for feature in entry["outputs"]:
        assert outputs[feature["name"]].dtype == np.float32, feature["name"]
        assert list(outputs[feature["name"]].shape) == feature["shape"], feature["name"]
        assert np.isfinite(outputs[feature["name"]]).all(), feature["name"]


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_weights_come_from_listed_chain(entry):
    program = load_program(entry["package"])
    for weight in entry["weights"]:
        chain = [op.type for op in program.chain(weight["output"])]
        assert chain == weight["chain"], weight["output"]


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_every_constexpr_op_belongs_to_a_weight(entry):
    program = load_program(entry["package"])
    found = sum(op.type.startswith("constexpr_") for op in program.operations)
    assert found == sum(len(weight["chain"]) for weight in entry["weights"])


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=entry_id)
def test_chain_matches_compression(entry):
    expected = expected_op_types(entry["target"], entry["compression"])
    for weight in entry["weights"]:
        assert sorted(weight["chain"]) == expected, weight["output"]


@pytest.mark.parametrize("entry", PALETTIZED_ENTRIES, ids=entry_id)
def test_index_nbits_match_protobuf(entry):
    nbits = [step["nbits"] for step in entry["compression"] if step["technique"] == "palettization"]
    program = load_program(entry["package"])
    for weight in entry["weights"]:
        for op in program.chain(weight["output"]):
            if op.type == LUT_TO_DENSE and entry["target"] == "iOS16":
                _, lut_shape = program.parameter_dtype(op, "lut")
                assert lut_shape == [2 ** nbits[0]], weight["output"]
            elif op.type in (LUT_TO_DENSE, LUT_TO_SPARSE):
                param = "indices" if op.type == LUT_TO_DENSE else "indices_nonzero_data"
                dtype, _ = program.parameter_dtype(op, param)
                assert dtype == f"uint{nbits[0]}", weight["output"]


@pytest.mark.parametrize("entry", QUANTIZED_ENTRIES, ids=entry_id)
def test_index_quantized_dtype_matches_protobuf(entry):
    dtypes = [step["dtype"] for step in entry["compression"] if step["technique"] == "linear_quantization"]
    data_param = {AFFINE_DEQUANTIZE: "quantized_data", SHIFT_SCALE: "data", SPARSE_SHIFT_SCALE: "nonzero_data"}
    program = load_program(entry["package"])
    for weight in entry["weights"]:
        quantizing = [op for op in program.chain(weight["output"]) if op.type in data_param]
        stored = {program.parameter_dtype(op, data_param[op.type])[0] for op in quantizing}
        assert dtypes[0] in stored, weight["output"]
