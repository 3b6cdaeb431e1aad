"""run_onnx, inspect_onnx and densify_onnx on small models and onnx's own backend test cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper, version_converter  # noqa: E402

from sparseblob.encoder.onnx_compress import compress_model, compress_onnx  # noqa: E402
from sparseblob.runtime import onnx_run  # noqa: E402
from sparseblob.runtime.bitpack import pack_bits  # noqa: E402
from sparseblob.runtime.errors import (  # noqa: E402
    MaskError,
    OpParameterError,
    PackageError,
    PaddingError,
    ShapeError,
    UnknownDtypeError,
    UnsupportedOpError,
)
from sparseblob.runtime.onnx_run import OnnxRunner, densify_onnx, inspect_onnx, run_onnx  # noqa: E402
from sparseblob.verify.compare import assert_bits_equal, assert_close  # noqa: E402
from sparseblob.verify.onnx_verify import onnxruntime_run  # noqa: E402

from . import _models  # noqa: E402

BACKEND_CASES = sorted(
    path.parent
    for pattern in ("test_Conv*", "test_Linear*")
    for path in (Path(onnx.__file__).parent / "backend/test/data/pytorch-converted").glob(f"{pattern}/model.onnx")
)


def _backend_case(directory: Path):
    model = onnx.load(directory / "model.onnx")
    x = numpy_helper.to_array(onnx.load_tensor(directory / "test_data_set_0/input_0.pb"))
    y = numpy_helper.to_array(onnx.load_tensor(directory / "test_data_set_0/output_0.pb"))
    initializers = {init.name for init in model.graph.initializer}
    name = next(value.name for value in model.graph.input if value.name not in initializers)
    return model, {name: x}, y


def _only(outputs: dict) -> np.ndarray:
    (value,) = outputs.values()
    return value


# ---------------------------------------------------------------------------------------------
# onnx backend test data (pytorch-converted Conv, ConvTranspose and Linear cases)


def test_backend_cases_found():
    names = {directory.name for directory in BACKEND_CASES}
    assert {"test_Conv1d", "test_Conv2d_depthwise", "test_Conv3d_groups", "test_ConvTranspose2d", "test_Linear"} <= names


@pytest.mark.parametrize("directory", BACKEND_CASES, ids=[d.name for d in BACKEND_CASES])
def test_backend_case_dense_path_matches_output(directory):
    model, inputs, expected = _backend_case(directory)
    assert_close(_only(run_onnx(model, inputs, weights="dense")), expected, name=directory.name)


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("directory", BACKEND_CASES, ids=[d.name for d in BACKEND_CASES])
def test_backend_case_sparse_path_matches_pruned_dense(directory, sparsity):
    model, inputs, expected = _backend_case(directory)
    # The cases use opset 6; the function bodies need opset 11 or later. fp32 values keep the
    # weights exact, so at 0% sparsity the output also matches the case's expected output.
    upgraded = version_converter.convert_version(model, 13)
    compressed, report = compress_model(upgraded, sparsity=sparsity, values="fp32", min_elements=0)
    assert len(report.weights) == 1
    runner = OnnxRunner(compressed, weights="sparse")
    assert runner.kernel_nodes == 1
    sparse = _only(runner.run(inputs))
    pruned_dense = _only(run_onnx(densify_onnx(compressed), inputs, weights="dense"))
    assert_close(sparse, pruned_dense, name=directory.name)
    if sparsity == 0.0:
        assert_close(sparse, expected, name=directory.name)


# ---------------------------------------------------------------------------------------------
# Sparse kernels against onnxruntime


KERNEL_CASES = {
    "conv": lambda: _models.conv_model(pads=[1, 0, 1, 2], strides=[2, 1]),
    "conv_same_upper": lambda: _models.conv_model(auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv_same_lower": lambda: _models.conv_model(auto_pad="SAME_LOWER", kernel=(2, 2)),
    "conv_grouped": lambda: _models.conv_model(group=2, dilations=[2, 1]),
    "conv_depthwise": lambda: _models.conv_model(group=8, cin=8, cout=16),
    "conv_transpose": lambda: _models.conv_transpose_model(strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1]),
    "conv_transpose_dilated": lambda: _models.conv_transpose_model(dilations=[2, 1], kernel=(2, 3)),
    "conv_transpose_output_shape": lambda: _models.conv_transpose_model(strides=[2, 2], output_shape=[10, 11]),
    "gemm": _models.gemm_model,
    "gemm_no_trans_b": lambda: _models.gemm_model(trans_b=0),
    "gemm_a": _models.gemm_a_model,
    "gemm_a_trans": lambda: _models.gemm_a_model(trans_a=1),
    "matmul": _models.matmul_model,
    "matmul_left": lambda: _models.matmul_model(weight_left=True),
    "transpose_matmul": _models.transpose_matmul_model,
    "constant_conv": _models.constant_conv_model,
}

VALUE_FORMATS = {
    "fp16": {"values": "fp16"},
    "lut3": {"values": "palettize", "nbits": 3, "palettize_mode": "uniform"},
    "int8": {"values": "quantize", "quantize_dtype": "int8", "quantize_mode": "affine"},
    "uint4": {"values": "quantize", "quantize_dtype": "uint4"},
}


@pytest.mark.parametrize("values", VALUE_FORMATS, ids=list(VALUE_FORMATS))
@pytest.mark.parametrize("case", KERNEL_CASES, ids=list(KERNEL_CASES))
def test_sparse_kernels_match_onnxruntime(case, values):
    model = KERNEL_CASES[case]()
    compressed, report = compress_model(model, sparsity=0.5, min_elements=0, **VALUE_FORMATS[values])
    assert len(report.weights) == 1
    inputs = _models.x_for(model)
    sparse = run_onnx(compressed, inputs, weights="sparse")["y"]
    dense = run_onnx(compressed, inputs, weights="dense")["y"]
    from_functions = onnxruntime_run(compressed, inputs)["y"]
    assert_close(sparse, from_functions, name=f"{case} sparse")
    assert_close(dense, from_functions, name=f"{case} dense")


@pytest.mark.parametrize("values", ["lut3", "int8", "uint4"])
def test_dense_formats_use_kernels(values):
    model = _models.two_layer_model()
    compressed, report = compress_model(model, min_elements=0, **VALUE_FORMATS[values])
    runner = OnnxRunner(compressed, weights="sparse")
    assert runner.kernel_nodes == 2
    inputs = _models.x_for(model)
    assert_close(runner.run(inputs)["y"], onnxruntime_run(compressed, inputs)["y"], name="y")


def test_kernel_node_count_per_model():
    compressed, _ = compress_model(_models.two_layer_model(), n_m="2:4", min_elements=0)
    assert OnnxRunner(compressed, weights="sparse").kernel_nodes == 2
    assert OnnxRunner(compressed, weights="dense").kernel_nodes == 0


def test_grouped_conv_transpose_keeps_standard_node():
    w = _models.weight((8, 3, 3, 3))
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="deconv", group=2, strides=[2, 2])
    model = _models.make_model([node], [("x", [1, 8, 4, 4])], [("y", None)], [("w", w)])
    compressed, _ = compress_model(model, sparsity=0.5, min_elements=0)
    runner = OnnxRunner(compressed, weights="sparse")
    assert runner.kernel_nodes == 0
    inputs = _models.x_for(model)
    assert_close(runner.run(inputs)["y"], onnxruntime_run(compressed, inputs)["y"], name="y")


CONV_TRANSPOSE_ATTRIBUTES = {
    "output_shape": {"strides": [2, 2], "output_shape": [10, 11]},
    "same_upper": {"strides": [2, 3], "auto_pad": "SAME_UPPER"},
    "same_lower": {"strides": [2, 3], "auto_pad": "SAME_LOWER"},
    "valid": {"strides": [3, 1], "auto_pad": "VALID", "output_padding": [2, 0]},
    "pads": {"pads": [2, 0, 1, 1], "dilations": [1, 2]},
}


@pytest.mark.parametrize("case", CONV_TRANSPOSE_ATTRIBUTES, ids=list(CONV_TRANSPOSE_ATTRIBUTES))
def test_conv_transpose_matches_onnxruntime(case):
    model = _models.conv_transpose_model(**CONV_TRANSPOSE_ATTRIBUTES[case])
    inputs = _models.x_for(model)
    expected = onnxruntime_run(model, inputs)["y"]
    assert_close(run_onnx(model, inputs, weights="dense")["y"], expected, name="dense")
    compressed, _ = compress_model(model, sparsity=0.0, values="fp32", min_elements=0)
    runner = OnnxRunner(compressed, weights="sparse")
    assert runner.kernel_nodes == 1
    assert_close(runner.run(inputs)["y"], expected, name="sparse")


def test_shared_weight_read_by_two_nodes():
    w = _models.weight((16, 12))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="first"),
        helper.make_node("MatMul", ["x", "w"], ["b"], name="second"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    model = _models.make_model(nodes, [("x", [3, 16])], [("y", None)], [("w", w)])
    compressed, report = compress_model(model, n_m="2:4", min_elements=0)
    assert report.weights[0].readers == ("MatMul first", "MatMul second")
    runner = OnnxRunner(compressed, weights="sparse")
    assert runner.kernel_nodes == 2
    inputs = _models.x_for(model)
    assert_close(runner.run(inputs)["y"], onnxruntime_run(compressed, inputs)["y"], name="y")


def test_reversed_conv_weight_keeps_standard_node():
    # A chain decodes w [3, 3, 8, 16]; Transpose without perm reverses it to a conv weight.
    stored = _models.weight((3, 3, 8, 16))
    source = _models.make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [("x", [1, 3, 9, 17])], [("y", None)], [("w", stored)]
    )
    compressed, _ = compress_model(source, sparsity=0.5, values="fp32", min_elements=0)
    chain = [node for node in compressed.graph.node if node.domain == onnx_run.DOMAIN]
    nodes = chain + [
        helper.make_node("Transpose", ["w"], ["wt"], name="reverse"),
        helper.make_node("Conv", ["x", "wt"], ["y"], name="conv"),
    ]
    model = _models.make_model(nodes, [("x", [1, 8, 6, 6])], [("y", None)])
    model.graph.initializer.extend(compressed.graph.initializer)
    model.functions.extend(compressed.functions)
    model.opset_import.append(helper.make_opsetid(onnx_run.DOMAIN, 1))
    inputs = _models.x_for(model)
    runner = OnnxRunner(model, weights="sparse")
    assert runner.kernel_nodes == 0
    assert_close(runner.run(inputs)["y"], onnxruntime_run(model, inputs)["y"], name="y")


def test_reversed_weight_is_not_compressed():
    stored = _models.weight((3, 3, 8, 16))
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], name="reverse"),
        helper.make_node("Conv", ["x", "wt"], ["y"], name="conv"),
    ]
    model = _models.make_model(nodes, [("x", [1, 8, 6, 6])], [("y", None)], [("w", stored)])
    _, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert report.weights == []
    assert report.skipped == []


def test_decoded_weight_equals_kernel_weight():
    model = _models.conv_model()
    compressed, _ = compress_model(model, n_m="2:4", values="palettize", min_elements=0)
    densified = {init.name: numpy_helper.to_array(init) for init in densify_onnx(compressed).graph.initializer}
    tensors = onnx_run.find_compressed_tensors(compressed.graph)
    values = {init.name: numpy_helper.to_array(init) for init in compressed.graph.initializer}
    op_type, params = onnx_run._chain_params(tensors["w"], values, 1 << 30)
    kernel_weight = onnx_run._weight_from_params(op_type, params, "w", as_matrix=False)
    assert_bits_equal(kernel_weight.dense(), densified["w"], "w")


# ---------------------------------------------------------------------------------------------
# The reference evaluator's operators that the runner replaces


def test_global_max_pool_on_rank_three_input():
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"])
    model = _models.make_model([node], [("x", [2, 3, 5])], [("y", None)])
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype(np.float32)
    assert_bits_equal(run_onnx(model, {"x": x})["y"], x.max(axis=2, keepdims=True), "y")


def test_batch_normalization_uses_running_statistics():
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], momentum=0.9, epsilon=1e-5)
    rng = np.random.default_rng(0)
    stats = [("s", rng.uniform(0.5, 2, 4)), ("b", rng.standard_normal(4)), ("m", rng.standard_normal(4)), ("v", rng.uniform(0.5, 2, 4))]
    model = _models.make_model(
        [node], [("x", [2, 4, 3, 3])], [("y", None)], [(n, v.astype(np.float32)) for n, v in stats], opset=11
    )
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    assert_close(run_onnx(model, {"x": x})["y"], onnxruntime_run(model, {"x": x})["y"], name="y")


# ---------------------------------------------------------------------------------------------
# inspect_onnx and densify_onnx


def test_inspect_lists_compressed_weights(tmp_path):
    out = tmp_path / "m.onnx"
    compress_onnx(_models.two_layer_model(), out, n_m="2:4", values="palettize", nbits=4, min_elements=0)
    summary = inspect_onnx(out)
    by_name = {weight.name: weight for weight in summary.weights}
    assert sorted(by_name) == ["w1", "w2"]
    w1 = by_name["w1"]
    assert w1.chain == (onnx_run.LUT_TO_SPARSE, onnx_run.SPARSE_TO_DENSE)
    assert w1.shape == (16, 8, 3, 3)
    assert w1.dtype == "fp32"
    assert w1.value_format == "lut4<fp32>"
    assert w1.density == pytest.approx(0.5)
    assert w1.consumers == ("Conv conv",)
    assert w1.dense_bytes == 16 * 8 * 9 * 4
    assert 0 < w1.stored_bytes < w1.dense_bytes
    assert summary.opsets["sparseblob"] == 1
    assert "sparseblob.constexpr_lut_to_sparse" in summary.functions
    assert summary.to_dict()["weights"][0]["chain"] == list(w1.chain)


def test_inspect_reports_fp16_chain_dtype():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, min_elements=0)
    (weight,) = inspect_onnx(compressed).weights
    assert weight.chain == (onnx_run.SPARSE_TO_DENSE, "Cast")
    assert weight.value_format == "fp16"
    assert weight.dtype == "fp32"


def test_inspect_rejects_truncated_mask():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, min_elements=0)
    init = next(i for i in compressed.graph.initializer if i.name == "w.sparseblob.mask")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:-1], init.name))
    with pytest.raises(ShapeError, match="mask has 143 bytes"):
        inspect_onnx(compressed)


def test_densify_gives_plain_onnx():
    compressed, _ = compress_model(_models.two_layer_model(), sparsity=0.5, values="quantize", min_elements=0)
    dense = densify_onnx(compressed)
    onnx.checker.check_model(dense, full_check=True)
    assert all(node.domain == "" for node in dense.graph.node)
    assert [node.op_type for node in dense.graph.node] == ["Conv", "Relu", "Flatten", "Gemm", "Add"]
    assert dense.functions == []
    assert "sparseblob" not in {entry.domain for entry in dense.opset_import}
    assert not [init.name for init in dense.graph.initializer if "sparseblob" in init.name]


# ---------------------------------------------------------------------------------------------
# Errors


def _tampered(name: str, value: np.ndarray):
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, values="quantize", quantize_dtype="int4", min_elements=0)
    for init in compressed.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(value, name))
    return compressed


def test_set_padding_bits_are_rejected():
    # 15 * 3 * 3 * 3 = 405 mask bits leave 3 padding bits in the last byte.
    model = _models.conv_model(cin=3, cout=15)
    compressed, _ = compress_model(model, sparsity=0.5, min_elements=0)
    init = next(i for i in compressed.graph.initializer if i.name == "w.sparseblob.mask")
    mask = numpy_helper.to_array(init).copy()
    mask[-1] |= 0x80
    init.CopyFrom(numpy_helper.from_array(mask, init.name))
    with pytest.raises(PaddingError, match="set padding bits"):
        run_onnx(compressed, _models.x_for(model), weights="dense")


def test_wrong_packed_size_is_rejected():
    compressed = _tampered("w.sparseblob.data_mask", np.zeros(3, np.uint8))
    with pytest.raises(ShapeError, match="data_mask has 3 bytes"):
        OnnxRunner(compressed, weights="sparse")


def test_unknown_data_dtype_is_rejected():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, values="quantize", min_elements=0)
    node = next(n for n in compressed.graph.node if n.op_type == onnx_run.SPARSE_BLOCKWISE_SHIFT_SCALE)
    next(a for a in node.attribute if a.name == "data_dtype").i = TensorProto.INT16
    with pytest.raises(UnknownDtypeError, match="data_dtype is 5"):
        run_onnx(compressed, _models.x_for(_models.conv_model()), weights="dense")


def test_value_count_must_match_mask_popcount():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, values="fp32", min_elements=0)
    init = next(i for i in compressed.graph.initializer if i.name == "w.sparseblob.nonzero_data")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:-1], init.name))
    with pytest.raises(MaskError, match="nonzero_data"):
        densify_onnx(compressed)


@pytest.mark.parametrize(
    "shape, message",
    [
        (np.array([[4], [8]], np.int64), "expected a non-empty tensor<int64, \\[K\\]>"),
        (np.zeros(0, np.int64), "expected a non-empty tensor<int64, \\[K\\]>"),
        (np.array([4, 8], np.int32), "expected a non-empty tensor<int64, \\[K\\]>"),
        (np.array([0], np.int64), "mask has 4 bytes; 0 elements of 1 bits need 0"),
        (np.array([4, 9], np.int64), "mask has 4 bytes; 36 elements of 1 bits need 5"),
    ],
)
def test_shape_is_checked_against_mask(shape, message):
    values = np.arange(1, 17, dtype=np.float32)
    mask = pack_bits(np.tile([1, 0], 16).astype(np.uint8), 1)
    with pytest.raises(ShapeError, match=message):
        onnx_run.decode_node(onnx_run.SPARSE_TO_DENSE, [values, mask, shape])


def test_vector_lut_is_rejected():
    lut = np.zeros((1, 1, 4, 2), np.float32)
    inputs = [pack_bits(np.zeros(8, np.uint8), 2), lut, np.array([4, 2], np.int64)]
    with pytest.raises(UnsupportedOpError, match="no vector_axis"):
        onnx_run.decode_node(onnx_run.LUT_TO_DENSE, inputs)


def test_negative_shape_is_rejected():
    inputs = [np.ones(1, np.float32), np.zeros(1, np.uint8), np.array([-1, 2], np.int64)]
    with pytest.raises(ShapeError, match="negative dimension"):
        onnx_run.decode_node(onnx_run.SPARSE_TO_DENSE, inputs)


def test_fp16_scale_below_opset_15_is_rejected():
    compressed, _ = compress_model(_models.conv_model(opset=13), sparsity=0.5, values="quantize", min_elements=0)
    init = next(i for i in compressed.graph.initializer if i.name == "w.sparseblob.scale")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    with pytest.raises(UnsupportedOpError, match="fp16 scales need opset 15"):
        OnnxRunner(compressed)


def test_unknown_sparseblob_op_is_rejected():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, min_elements=0)
    compressed.graph.node[0].op_type = "constexpr_cast"
    with pytest.raises(UnsupportedOpError, match="'constexpr_cast' is not a sparseblob op"):
        densify_onnx(compressed)


def test_missing_input_is_rejected():
    with pytest.raises(OpParameterError, match="missing model input"):
        run_onnx(_models.conv_model(), {})


def test_unknown_input_is_rejected():
    inputs = _models.x_for(_models.conv_model())
    inputs["z"] = np.zeros(1, np.float32)
    with pytest.raises(OpParameterError, match=r"unknown model input\(s\) \['z'\]"):
        run_onnx(_models.conv_model(), inputs)


def test_unknown_weights_mode_is_rejected():
    with pytest.raises(OpParameterError, match="weights='packed'"):
        OnnxRunner(_models.conv_model(), weights="packed")


def test_non_onnx_file_is_rejected(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00\xff not a protobuf \x13")
    with pytest.raises(PackageError, match="not an ONNX model"):
        inspect_onnx(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(PackageError, match="cannot read ONNX model"):
        run_onnx(tmp_path / "absent.onnx", {})
