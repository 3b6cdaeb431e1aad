"""Loading ``.mlpackage`` directories: structure, values, and every check on malformed input.

The structure and values read by :func:`sparseblob.runtime.load` are compared with coremltools'
own protobuf loader (the MIL program it builds from the same saved package). Corruption tests
copy a built package into ``tmp_path``, change one byte field of ``weight.bin`` or one protobuf
field, and expect the specific error class with a message naming the op and parameter.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime import Argument, Package, SparseblobError, TensorType, load
from sparseblob.runtime.dtypes import by_name
from sparseblob.runtime.errors import (
    BlobBoundsError,
    BlobHeaderError,
    BlobOverlapError,
    BlobSentinelError,
    ElementLimitError,
    PackageError,
    PackagePathError,
    PaddingError,
    ShapeError,
    UnknownDtypeError,
)
from sparseblob.runtime.values import STRING, BlobValue
from sparseblob.verify.compare import assert_bits_equal

from . import _packages
from ._packages import (
    MODEL_FILE,
    WEIGHT_FILE,
    build_package,
    copy_package,
    find_op,
    main_block,
    parameter_value,
    patch_record,
    read_record,
    read_spec,
    write_spec,
)

LINEAR_SPARSE_OP = "linear_0_weight_0_to_fp16_sparsified"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Build (once per session) and return a function from recipe name to package path."""
    return lambda name: build_package(name, tmp_path_factory)


def edited(packages, tmp_path, name, edit) -> Path:
    """Copy package ``name``, apply ``edit(spec)`` to its protobuf, and return the copy."""
    package = copy_package(packages(name), tmp_path)
    spec = read_spec(package)
    edit(spec)
    write_spec(package, spec)
    return package


# --- structure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, version, opset",
    [("ios16_prune", 7, "CoreML6"), ("ios17_quantize_int8", 8, "CoreML7"), ("ios18_prune", 9, "CoreML8")],
)
def test_load_reads_version_and_opset(packages, name, version, opset):
    package = load(packages(name))

    assert package.specification_version == version
    assert package.default_function_name == "main"
    assert package.function().opset == opset


def test_function_inputs_have_dtype_and_shape(packages):
    function = load(packages("ios18_prune")).function("main")

    assert [item.name for item in function.inputs] == ["x", "y"]
    assert function.inputs[0].type == TensorType(by_name("fp32"), (1, 128))
    assert function.inputs[1].type == TensorType(by_name("fp32"), (1, 16, 8, 8))


def test_function_outputs_match_model_description(packages):
    path = packages("ios18_prune")

    function = load(path).function()

    assert list(function.outputs) == [feature.name for feature in read_spec(path).description.output]


@pytest.mark.parametrize("name", ["ios16_prune", "ios18_prune_palettize", "ios18_palettize_quantize"])
def test_operations_match_coremltools_program(packages, name):
    """Same ops in the same order; coremltools adds const ops for iOS16 constexpr attributes."""
    path = packages(name)
    program = _packages.load_program(path)
    expected = [(op.op_type, [out.name for out in op.outputs]) for op in program.functions["main"].operations]

    actual = [(op.type, [out.name for out in op.outputs]) for op in load(path).function().operations]

    assert [item for item in actual if item[0] != "const"] == [item for item in expected if item[0] != "const"]
    assert [item for item in actual if item[0] == "const"] == [
        item for item in expected if item[0] == "const" and item in actual
    ]


def test_operation_outputs_have_declared_types(packages):
    function = load(packages("ios18_prune_palettize")).function()
    op = next(op for op in function.operations if op.type == "constexpr_lut_to_sparse")

    assert op.outputs[0].type == TensorType(by_name("uint1"), (64, 128))
    assert op.outputs[1].type.dtype == by_name("fp16")


def test_concat_values_keep_every_binding(packages):
    function = load(packages("ios18_plain")).function()
    concat = next(op for op in function.operations if op.type == "concat")

    values = concat.inputs["values"]

    assert isinstance(values, Argument)
    assert [binding.name for binding in values] == ["linear_0_cast_fp16", "linear_0_cast_fp16"]


def test_op_name_comes_from_name_attribute(packages):
    function = load(packages("ios18_prune")).function()
    op = next(op for op in function.operations if op.type == "constexpr_sparse_to_dense")

    assert op.name == LINEAR_SPARSE_OP
    assert "name" not in op.attributes


def test_ios16_constexpr_parameters_are_attributes(packages):
    op = next(op for op in load(packages("ios16_prune")).function().operations if op.is_constexpr)

    assert sorted(op.attributes) == ["mask", "nonzero_data", "shape"]
    assert op.inputs == {}
    assert op.attributes["mask"].type == TensorType(by_name("uint8"), (1024,))


def test_ios18_constexpr_parameters_are_input_bindings(packages):
    function = load(packages("ios18_prune_palettize")).function()
    lut_op, dense_op = [op for op in function.operations if op.is_constexpr][:2]

    assert sorted(lut_op.inputs) == ["indices_mask", "indices_nonzero_data", "lut"]
    assert lut_op.inputs["indices_nonzero_data"].bindings[0].value.type == TensorType(by_name("uint2"), (4094,))
    assert dense_op.inputs["mask"].bindings[0].name == lut_op.outputs[0].name
    assert dense_op.inputs["nonzero_data"].bindings[0].name == lut_op.outputs[1].name


def test_string_attribute_is_string_scalar(packages):
    function = load(packages("ios18_plain")).function()
    op = next(op for op in function.operations if op.outputs[0].name == "conv_0_pad_type_0")

    value = op.attributes["val"]

    assert value.type == TensorType(STRING, ())
    assert value.read().item() == "valid"


@pytest.mark.parametrize("name", ["ios16_plain", "ios18_plain"])
def test_const_values_match_coremltools(packages, name):
    path = packages(name)
    program = _packages.load_program(path)
    expected = {
        op.outputs[0].name: op.outputs[0].val for op in program.functions["main"].operations if op.op_type == "const"
    }

    function = load(path).function()
    consts = {op.outputs[0].name: op.attributes["val"].read() for op in function.operations if op.type == "const"}

    assert sorted(consts) == sorted(expected)
    for key, actual in consts.items():
        if isinstance(expected[key], str):
            assert actual.item() == expected[key], key
        else:
            assert_bits_equal(actual, np.asarray(expected[key]), name=key)


@pytest.mark.parametrize("name", sorted(_packages.RECIPES))
def test_constexpr_parameters_match_coremltools(packages, name):
    """Every literal constexpr parameter, blob or immediate, equals coremltools' loaded value."""
    path = packages(name)
    program = _packages.load_program(path)
    expected = {}
    for op in program.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            for param, var in op.inputs.items():
                if var.op is None or var.op.op_type == "const":
                    expected[(op.name, param)] = var.val

    actual = {}
    for op in load(path).function().operations:
        if not op.is_constexpr:
            continue
        for param, value in op.attributes.items():
            actual[(op.name, param)] = value.read()
        for param, argument in op.inputs.items():
            if argument.bindings[0].value is not None:
                actual[(op.name, param)] = argument.bindings[0].value.read()

    assert sorted(actual) == sorted(expected)
    for key, array in actual.items():
        reference = np.asarray(expected[key])
        if reference.dtype.metadata:
            reference = reference.view(reference.dtype.type)
        assert_bits_equal(array.reshape(reference.shape), reference, name=str(key))


def test_blob_file_is_opened_once(packages):
    package = load(packages("ios18_prune_quantize"))

    blob_values = [
        binding.value
        for op in package.function().operations
        for argument in op.inputs.values()
        for binding in argument
        if isinstance(binding.value, BlobValue)
    ]

    assert len(package.blob_files) == 1
    assert len(blob_values) > 4
    assert all(value.blob_file is blob_values[0].blob_file for value in blob_values)


def test_shared_mask_blob_is_accepted(packages):
    """Prune then quantize binds the same mask blob to two parameters; that is not an overlap."""
    function = load(packages("ios18_prune_quantize")).function()
    first, second = [op for op in function.operations if op.is_constexpr][:2]

    shared = first.inputs["data_mask"].bindings[0].value
    again = second.inputs["mask"].bindings[0].value

    assert shared.offset == again.offset


def test_package_is_a_context_manager(packages):
    with load(packages("ios18_prune")) as package:
        assert isinstance(package, Package)
        value = next(op for op in package.function().operations if op.is_constexpr).inputs["nonzero_data"]
        array = value.bindings[0].value.read()

    assert array.shape == (4094,)


def test_unknown_function_is_reported(packages):
    package = load(packages("ios18_prune"))

    with pytest.raises(PackageError, match=r"no function 'other'; the package has \['main'\]"):
        package.function("other")


def test_multifunction_package_lists_every_function(tmp_path_factory):
    package = load(_packages.build_multifunction(tmp_path_factory))

    assert sorted(package.functions) == ["pruned", "quantized"]
    assert package.default_function_name == "quantized"
    assert package.function().name == "quantized"
    assert len(package.blob_files) == 1


def test_multifunction_functions_keep_their_ops(tmp_path_factory):
    package = load(_packages.build_multifunction(tmp_path_factory))

    pruned = [op.type for op in package.function("pruned").operations if op.is_constexpr]
    quantized = [op.type for op in package.function("quantized").operations if op.is_constexpr]

    assert pruned == ["constexpr_sparse_to_dense"] * 2
    assert quantized == ["constexpr_blockwise_shift_scale"] * 2


# --- Manifest.json --------------------------------------------------------------------------


def rewrite_manifest(package, edit) -> None:
    path = package / "Manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def root_entry(manifest) -> dict:
    return manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]


def test_missing_manifest_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    (package / "Manifest.json").unlink()

    with pytest.raises(PackageError, match="Manifest.json: .* not found"):
        load(package)


def test_malformed_manifest_json_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    (package / "Manifest.json").write_text("{not json")

    with pytest.raises(PackageError, match="failed to read the manifest"):
        load(package)


@pytest.mark.parametrize("key", ["fileFormatVersion", "itemInfoEntries", "rootModelIdentifier"])
def test_missing_manifest_field_is_rejected(packages, tmp_path, key):
    package = copy_package(packages("ios18_prune"), tmp_path)
    rewrite_manifest(package, lambda manifest: manifest.pop(key))

    with pytest.raises(PackageError, match=f"manifest has no '{key}' entry"):
        load(package)


def test_missing_root_entry_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    rewrite_manifest(package, lambda manifest: manifest.update(rootModelIdentifier="no-such-id"))

    with pytest.raises(PackageError, match="rootModelIdentifier 'no-such-id' has no entry in itemInfoEntries"):
        load(package)


def test_missing_root_entry_path_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    rewrite_manifest(package, lambda manifest: root_entry(manifest).pop("path"))

    with pytest.raises(PackageError, match=r"itemInfoEntries\[.*\] has no 'path' entry"):
        load(package)


def test_unknown_manifest_version_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    rewrite_manifest(package, lambda manifest: manifest.update(fileFormatVersion="2.0.0"))

    with pytest.raises(PackageError, match="fileFormatVersion is '2.0.0'; expected a 1.x version"):
        load(package)


@pytest.mark.parametrize(
    "model_path, message",
    [
        ("/etc/hostname", "expected a relative path inside the package"),
        ("com.apple.CoreML/../../Manifest.json", "'..' is not allowed"),
        ("", "expected a relative path inside the package"),
        ("com.apple.CoreML/model.mlmodel\x00", "the path contains a NUL character"),
    ],
)
def test_manifest_path_must_stay_inside(packages, tmp_path, model_path, message):
    package = copy_package(packages("ios18_prune"), tmp_path)
    rewrite_manifest(package, lambda manifest: root_entry(manifest).update(path=model_path))

    with pytest.raises(PackagePathError, match=message):
        load(package)


def test_manifest_symlink_out_of_package_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    outside = tmp_path / "outside.mlmodel"
    shutil.move(package / MODEL_FILE, outside)
    os.symlink(outside, package / MODEL_FILE)

    with pytest.raises(PackagePathError, match="outside the package"):
        load(package)


def test_missing_model_file_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    (package / MODEL_FILE).unlink()

    with pytest.raises(PackageError, match="model.mlmodel not found"):
        load(package)


def test_path_that_is_not_a_directory_is_rejected(tmp_path):
    with pytest.raises(PackageError, match="not a directory"):
        load(tmp_path / "absent.mlpackage")


# --- model protobuf -------------------------------------------------------------------------


def test_malformed_protobuf_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    (package / MODEL_FILE).write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")

    with pytest.raises(PackageError, match="malformed model protobuf"):
        load(package)


def test_model_that_is_not_ml_program_is_rejected(packages, tmp_path):
    def to_neural_network(spec):
        spec.ClearField("mlProgram")
        spec.neuralNetwork.SetInParent()

    package = edited(packages, tmp_path, "ios18_prune", to_neural_network)

    with pytest.raises(PackageError, match="model type is 'neuralNetwork'; expected 'mlProgram'"):
        load(package)


def test_opset_without_block_is_rejected(packages, tmp_path):
    def rename_opset(spec):
        spec.mlProgram.functions["main"].opset = "CoreML99"

    package = edited(packages, tmp_path, "ios18_prune", rename_opset)

    with pytest.raises(PackageError, match="opset 'CoreML99' has no block"):
        load(package)


def test_unknown_binding_name_is_rejected(packages, tmp_path):
    def rebind(spec):
        find_op(spec, "linear").inputs["weight"].arguments[0].name = "no_such_var"

    package = edited(packages, tmp_path, "ios18_prune", rebind)

    with pytest.raises(
        PackageError,
        match="op 'linear_0_cast_fp16' \\(linear\\) input 'weight': binding 'no_such_var' names no function input",
    ):
        load(package)


def test_binding_to_later_output_is_rejected(packages, tmp_path):
    def rebind(spec):
        find_op(spec, "linear").inputs["x"].arguments[0].name = "conv_0_cast_fp16"

    package = edited(packages, tmp_path, "ios18_plain", rebind)

    with pytest.raises(PackageError, match="binding 'conv_0_cast_fp16' names no function input or earlier op output"):
        load(package)


def test_duplicate_output_name_is_rejected(packages, tmp_path):
    def duplicate(spec):
        find_op(spec, "conv").outputs[0].name = "linear_0_cast_fp16"

    package = edited(packages, tmp_path, "ios18_plain", duplicate)

    with pytest.raises(PackageError, match="variable 'linear_0_cast_fp16' is defined more than once"):
        load(package)


def test_unknown_block_output_is_rejected(packages, tmp_path):
    package = edited(packages, tmp_path, "ios18_plain", lambda spec: main_block(spec).outputs.append("ghost"))

    with pytest.raises(PackageError, match="block output 'ghost' is not a known variable"):
        load(package)


def test_unknown_proto_dtype_names_op_and_parameter(packages, tmp_path):
    def corrupt(spec):
        parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "nonzero_data").type.tensorType.dataType = 99

    package = edited(packages, tmp_path, "ios18_prune", corrupt)

    with pytest.raises(
        UnknownDtypeError, match=f"op '{LINEAR_SPARSE_OP}' \\(constexpr_sparse_to_dense\\) input 'nonzero_data'.*DataType 99"
    ):
        load(package)


# --- blob references ------------------------------------------------------------------------


def set_file_name(file_name):
    def edit(spec):
        parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "nonzero_data").blobFileValue.fileName = file_name

    return edit


@pytest.mark.parametrize(
    "file_name, message",
    [
        ("weights/weight.bin", "expected a path starting with '@model_path/'"),
        ("@model_path//etc/hostname", "expected a relative path inside the package"),
        ("@model_path/../../../weight.bin", "'..' is not allowed"),
        ("@model_path/weights/../weights/weight.bin", "'..' is not allowed"),
        ("@model_path/", "expected a relative path inside the package"),
        ("@model_path/weights/weight.bin\x00.txt", "the path contains a NUL character"),
    ],
)
def test_blob_path_must_stay_inside(packages, tmp_path, file_name, message):
    package = edited(packages, tmp_path, "ios18_prune", set_file_name(file_name))

    with pytest.raises(PackagePathError, match=message) as info:
        load(package)

    assert f"op '{LINEAR_SPARSE_OP}' (constexpr_sparse_to_dense) input 'nonzero_data'" in str(info.value)
    assert repr(file_name) in str(info.value)


def test_blob_symlink_out_of_package_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    outside = tmp_path / "weight.bin"
    shutil.move(package / WEIGHT_FILE, outside)
    os.symlink(outside, package / WEIGHT_FILE)

    with pytest.raises(PackagePathError, match="resolves to .*, outside the package"):
        load(package)


def test_symlink_inside_package_is_followed(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    moved = package / "Data" / "moved.bin"
    shutil.move(package / WEIGHT_FILE, moved)
    os.symlink(moved, package / WEIGHT_FILE)

    assert len(load(package).blob_files) == 1


def test_missing_blob_file_is_rejected(packages, tmp_path):
    package = edited(packages, tmp_path, "ios18_prune", set_file_name("@model_path/weights/other.bin"))

    with pytest.raises(PackageError, match="other.bin not found"):
        load(package)


def linear_sparse_offsets(package) -> dict[str, int]:
    """Metadata offsets of the linear weight's ``nonzero_data`` and ``mask`` blobs."""
    op = find_op(read_spec(package), "constexpr_sparse_to_dense")
    return {param: parameter_value(op, param).blobFileValue.offset for param in ("nonzero_data", "mask")}


def test_wrong_storage_version_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    data = bytearray((package / WEIGHT_FILE).read_bytes())
    data[4] = 1
    (package / WEIGHT_FILE).write_bytes(bytes(data))

    with pytest.raises(BlobHeaderError, match="has version 1; expected 2"):
        load(package)


def test_bad_sentinel_names_op_and_parameter(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    offset = linear_sparse_offsets(package)["mask"]
    patch_record(package, offset, "sentinel", 0xDEADBEEE)

    with pytest.raises(BlobSentinelError, match="sentinel is 0xdeadbeee; expected 0xdeadbeef") as info:
        load(package)

    assert f"op '{LINEAR_SPARSE_OP}' (constexpr_sparse_to_dense) input 'mask'" in str(info.value)


def test_value_offset_past_end_of_file_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    past_end = ((package / WEIGHT_FILE).stat().st_size // 64 + 1) * 64
    spec = read_spec(package)
    parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "mask").blobFileValue.offset = past_end
    write_spec(package, spec)

    with pytest.raises(BlobBoundsError, match=f"offset {past_end}: the 64-byte record ends at .* past the end"):
        load(package)


def test_payload_size_past_end_of_file_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    offset = linear_sparse_offsets(package)["nonzero_data"]
    patch_record(package, offset, "size", 1 << 40)

    with pytest.raises(BlobBoundsError, match="lies outside the blob area"):
        load(package)


def test_payload_offset_past_end_of_file_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    offset = linear_sparse_offsets(package)["mask"]
    patch_record(package, offset, "offset", (package / WEIGHT_FILE).stat().st_size - 10)

    with pytest.raises(BlobBoundsError, match="lies outside the blob area"):
        load(package)


def test_overlapping_blobs_are_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    offsets = linear_sparse_offsets(package)
    nonzero_payload = read_record(package, offsets["nonzero_data"])["offset"]
    # The 1024-byte mask payload now starts inside the 8188-byte nonzero_data payload.
    patch_record(package, offsets["mask"], "offset", nonzero_payload + 64)

    with pytest.raises(BlobOverlapError, match="payload of blob at offset .* overlaps payload of blob") as info:
        load(package)

    assert "input 'nonzero_data'" in str(info.value)
    assert "input 'mask'" in str(info.value)


def test_unknown_blob_dtype_code_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    patch_record(package, linear_sparse_offsets(package)["mask"], "dtype", 99)

    with pytest.raises(UnknownDtypeError, match="unknown blob dtype code 99") as info:
        load(package)

    assert "input 'mask'" in str(info.value)


def test_stored_dtype_must_match_declared(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    # uint2 (code 10) over the same 1024 bytes would read 4096 elements; the dtype is checked first.
    patch_record(package, linear_sparse_offsets(package)["mask"], "dtype", 10)

    with pytest.raises(UnknownDtypeError, match=r"blob stores uint2, but the tensor is declared tensor<uint1, \[64, 128\]>"):
        load(package)


def test_ios16_packed_mask_must_be_stored_as_uint8(packages, tmp_path):
    """iOS16 masks are declared UINT8[M]; the byte-identical uint1 blob of iOS18 is not accepted."""
    package = copy_package(packages("ios16_prune"), tmp_path)
    op = find_op(read_spec(package), "constexpr_sparse_to_dense")
    patch_record(package, parameter_value(op, "mask").blobFileValue.offset, "dtype", 9)

    with pytest.raises(UnknownDtypeError, match=r"blob stores uint1, but the tensor is declared tensor<uint8, \[1024\]>"):
        load(package)


def test_declared_element_count_must_match_blob(packages, tmp_path):
    def shrink(spec):
        parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "nonzero_data").type.tensorType.dimensions[0].constant.size = 4093

    package = edited(packages, tmp_path, "ios18_prune", shrink)

    with pytest.raises(ShapeError, match=r"blob contains 4094 fp16 elements, but the declared tensor<fp16, \[4093\]> has 4093") as info:
        load(package)

    assert "input 'nonzero_data'" in str(info.value)


def test_sub_byte_byte_count_must_match_shape(packages, tmp_path):
    def grow(spec):
        parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "mask").type.tensorType.dimensions[0].constant.size = 65

    package = edited(packages, tmp_path, "ios18_prune", grow)

    with pytest.raises(ShapeError, match=r"blob contains 1024 bytes \(8192 uint1 elements\), but the declared"):
        load(package)


def test_padding_inconsistent_with_shape_is_rejected(packages, tmp_path):
    """uint3 [64, 128] fills 3072 bytes exactly; padding 3 would read 8191 elements."""
    package = copy_package(packages("ios18_palettize3_grouped"), tmp_path)
    op = find_op(read_spec(package), "constexpr_lut_to_dense")
    offset = parameter_value(op, "indices").blobFileValue.offset
    patch_record(package, offset, "padding", 3)

    with pytest.raises(PaddingError, match="padding_size_in_bits is 3, which reads 8191 elements.*needs 0 padding bits") as info:
        load(package)

    assert "input 'indices'" in str(info.value)


def test_padding_of_eight_bits_is_rejected(packages, tmp_path):
    package = copy_package(packages("ios18_prune"), tmp_path)
    patch_record(package, linear_sparse_offsets(package)["mask"], "padding", 8)

    with pytest.raises(PaddingError, match="padding_size_in_bits is 8; expected 0 to 7"):
        load(package)


def test_shape_over_max_elements_is_rejected(packages):
    with pytest.raises(ElementLimitError, match="exceeds the limit of 1000"):
        load(packages("ios18_prune"), max_elements=1000)


def test_overflowing_blob_shape_is_rejected_before_reading(packages, tmp_path):
    def inflate(spec):
        tensor_type = parameter_value(find_op(spec, "constexpr_sparse_to_dense"), "mask").type.tensorType
        tensor_type.dimensions[0].constant.size = (1 << 64) - 1
        tensor_type.dimensions[1].constant.size = (1 << 64) - 1

    package = edited(packages, tmp_path, "ios18_prune", inflate)

    with pytest.raises(ElementLimitError, match="input 'mask'.*exceeds the limit"):
        load(package)


# --- arbitrary corruption -------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch_package(packages, tmp_path_factory):
    """A private copy of a joint-compressed package that the corruption tests overwrite."""
    return copy_package(packages("ios18_prune_palettize"), tmp_path_factory.mktemp("scratch"))


@pytest.mark.parametrize("target", [MODEL_FILE, WEIGHT_FILE])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4))
def test_byte_edits_raise_only_sparseblob_errors(packages, scratch_package, target, edits):
    """A corrupted file either loads and decodes, or raises a SparseblobError; nothing else."""
    original = (packages("ios18_prune_palettize") / target).read_bytes()
    data = bytearray(original)
    for fraction, byte in edits:
        data[int(fraction * len(data))] = byte
    (scratch_package / target).write_bytes(bytes(data))

    try:
        load(scratch_package).constexpr_values()
    except SparseblobError:
        pass
    finally:
        (scratch_package / target).write_bytes(original)
