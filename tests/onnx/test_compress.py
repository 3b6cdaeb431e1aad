"""compress_onnx: which weights it touches, how it stores them, and what it leaves alone."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from sparseblob import encoder  # noqa: E402
from sparseblob.encoder import onnx_compress  # noqa: E402
from sparseblob.encoder.onnx_compress import CompressOptions, compress_model, compress_onnx  # noqa: E402
from sparseblob.runtime import onnx_run  # noqa: E402
from sparseblob.runtime.errors import EncodingError  # noqa: E402
from sparseblob.verify.compare import assert_bits_equal, assert_close  # noqa: E402
from sparseblob.verify.onnx_verify import onnxruntime_run  # noqa: E402

from . import _models  # noqa: E402


def _initializers(model) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _decoded(model) -> dict[str, np.ndarray]:
    """Return the decoded weights of a compressed model by name."""
    dense = onnx_run.densify_onnx(model)
    return _initializers(dense)


def _nodes(model, domain=""):
    return [node for node in model.graph.node if node.domain == domain]


def _original_nodes(compressed, report):
    """Return the nodes that are not part of a decoding chain."""
    chain_outputs = {weight.name for weight in report.weights}
    return [
        node
        for node in compressed.graph.node
        if node.domain != onnx_run.DOMAIN and not set(node.output) & chain_outputs
    ]


# ---------------------------------------------------------------------------------------------
# What changes and what does not


def test_other_nodes_initializers_and_attributes_unchanged():
    model = _models.two_layer_model()
    compressed, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert [w.name for w in report.weights] == ["w1", "w2"]
    before = [node.SerializeToString() for node in model.graph.node]
    after = [node.SerializeToString() for node in _original_nodes(compressed, report)]
    assert after == before
    kept = _initializers(compressed)
    for name in ("b1", "shift"):
        assert_bits_equal(kept[name], _initializers(model)[name], name)
    assert "w1" not in kept
    assert "w2" not in kept
    assert [v.SerializeToString() for v in compressed.graph.input] == [v.SerializeToString() for v in model.graph.input]
    assert [v.SerializeToString() for v in compressed.graph.output] == [v.SerializeToString() for v in model.graph.output]


def test_input_model_is_not_modified():
    model = _models.two_layer_model()
    serialized = model.SerializeToString()
    compress_model(model, n_m="2:4", min_elements=0)
    assert model.SerializeToString() == serialized


def test_chain_output_keeps_weight_name():
    compressed, _ = compress_model(_models.conv_model(), sparsity=0.5, min_elements=0)
    chain = compressed.graph.node[:2]
    assert [(node.domain, node.op_type) for node in chain] == [(onnx_run.DOMAIN, onnx_run.SPARSE_TO_DENSE), ("", "Cast")]
    assert chain[0].output[0] == chain[1].input[0]
    assert chain[1].output[0] == "w"


def test_model_gains_functions_opset_and_ir_version():
    model = _models.conv_model(opset=13)
    model.ir_version = 7
    compressed, _ = compress_model(model, sparsity=0.5, values="palettize", min_elements=0)
    assert {(f.domain, f.name) for f in compressed.functions} == {
        (onnx_run.DOMAIN, onnx_run.LUT_TO_SPARSE),
        (onnx_run.DOMAIN, onnx_run.SPARSE_TO_DENSE),
    }
    assert (onnx_run.DOMAIN, 1) in {(e.domain, e.version) for e in compressed.opset_import}
    assert compressed.ir_version == 8


def test_compressed_model_passes_checker():
    compressed, _ = compress_model(_models.two_layer_model(), n_m="2:4", values="quantize", quantize_dtype="int4", min_elements=0)
    onnx.checker.check_model(compressed, full_check=True)


def test_second_pass_changes_nothing():
    once, _ = compress_model(_models.two_layer_model(), sparsity=0.5, min_elements=0)
    twice, report = compress_model(once, sparsity=0.5, min_elements=0)
    assert report.weights == []
    assert twice.SerializeToString() == once.SerializeToString()


def test_constant_node_weight_is_replaced():
    model = _models.constant_conv_model()
    compressed, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert [w.name for w in report.weights] == ["w"]
    assert "Constant" not in [node.op_type for node in compressed.graph.node]
    original = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    decoded = _decoded(compressed)["w"]
    kept = decoded != 0
    assert np.count_nonzero(kept) == original.size // 2
    assert_bits_equal(decoded[kept].astype(np.float16), original[kept].astype(np.float16), "kept values")


def test_graph_input_initializer_is_removed_from_inputs():
    model = _models.conv_model(opset=13)
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [16, 8, 3, 3]))
    compressed, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert [w.name for w in report.weights] == ["w"]
    assert [value.name for value in compressed.graph.input] == ["x"]


# ---------------------------------------------------------------------------------------------
# Axes of each op


AXIS_CASES = [
    ("conv", _models.conv_model, 1, 0),
    ("conv_transpose", _models.conv_transpose_model, 0, 1),
    ("gemm_trans_b", lambda: _models.gemm_model(trans_b=1), 1, 0),
    ("gemm_no_trans_b", lambda: _models.gemm_model(trans_b=0), 0, 1),
    ("gemm_a", lambda: _models.gemm_a_model(trans_a=0), 1, 0),
    ("gemm_a_trans", lambda: _models.gemm_a_model(trans_a=1), 0, 1),
    ("matmul_right", _models.matmul_model, 0, 1),
    ("matmul_left", lambda: _models.matmul_model(weight_left=True), 1, 0),
    ("transpose_matmul", _models.transpose_matmul_model, 1, 0),
]


@pytest.mark.parametrize("label, build, input_axis, output_axis", AXIS_CASES, ids=[case[0] for case in AXIS_CASES])
def test_n_m_groups_run_along_input_axis(label, build, input_axis, output_axis):
    model = build()
    compressed, report = compress_model(model, n_m="2:4", min_elements=0)
    weight = _decoded(compressed)[report.weights[0].name]
    encoder.check_n_m(weight, 2, 4, axis=input_axis)
    assert report.weights[0].pattern.endswith(f"(stored axis {input_axis})")


@pytest.mark.parametrize("label, build, input_axis, output_axis", AXIS_CASES, ids=[case[0] for case in AXIS_CASES])
def test_blocks_run_along_output_axis(label, build, input_axis, output_axis):
    model = build()
    compressed, report = compress_model(model, sparsity=0.5, block=2, min_elements=0)
    weight = _decoded(compressed)[report.weights[0].name]
    encoder.check_blocks(weight != 0, 2, axis=output_axis)


@pytest.mark.parametrize("label, build, input_axis, output_axis", AXIS_CASES, ids=[case[0] for case in AXIS_CASES])
def test_quantize_scales_per_output_channel(label, build, input_axis, output_axis):
    compressed, report = compress_model(build(), sparsity=0.5, values="quantize", min_elements=0)
    scale = _initializers(compressed)[f"{report.weights[0].name}.sparseblob.scale"]
    assert scale.shape[output_axis] == report.weights[0].shape[output_axis]
    assert scale.shape[input_axis] == 1


@pytest.mark.parametrize("label, build, input_axis, output_axis", AXIS_CASES, ids=[case[0] for case in AXIS_CASES])
def test_onnxruntime_matches_pruned_dense(label, build, input_axis, output_axis):
    model = build()
    compressed, _ = compress_model(model, n_m="2:4", values="palettize", nbits=4, min_elements=0)
    inputs = _models.x_for(model)
    from_functions = onnxruntime_run(compressed, inputs)["y"]
    from_dense = onnxruntime_run(onnx_run.densify_onnx(compressed), inputs)["y"]
    assert_close(from_functions, from_dense, name="y")


def test_n_m_axis_option_output_channels():
    compressed, _ = compress_model(_models.conv_model(), n_m="2:4", axis=0, min_elements=0)
    encoder.check_n_m(_decoded(compressed)["w"], 2, 4, axis=0)


# ---------------------------------------------------------------------------------------------
# Stored bytes


def test_mask_bytes_are_packed_lsb_first():
    # The first 11 mask bits 1,0,1,1,0,0,0,1,1,0,1 pack to 8d 05 (Core ML's uint1 packing).
    weight = np.zeros((2, 16), np.float32)
    bits = [1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1]
    weight[0, : len(bits)] = np.array(bits, np.float32) * np.arange(1, len(bits) + 1)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    model = _models.make_model([node], [("x", [1, 2])], [("y", None)], [("w", weight)])
    compressed, _ = compress_model(model, sparsity=0.0, min_elements=0)
    mask = _initializers(compressed)["w.sparseblob.mask"]
    assert mask.dtype == np.uint8
    assert bytes(mask[:2]) == bytes([0x8D, 0x05])
    assert mask.size == 4


def test_int4_values_are_packed_low_nibble_first():
    # Affine int4 over [-8, 7] has scale 1 and offset 0, so the codes are the values; int4
    # -1, 2, -8, 7, -3 pack to 2f 78 0d, the first value in the low nibble.
    weight = np.array([[-1, 2, -8, 7, -3]], np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    model = _models.make_model([node], [("x", [1, 1])], [("y", None)], [("w", weight)])
    compressed, _ = compress_model(
        model,
        sparsity=0.0,
        values="quantize",
        quantize_dtype="int4",
        quantize_mode="affine",
        granularity="per_tensor",
        min_elements=0,
    )
    stored = _initializers(compressed)
    assert stored["w.sparseblob.scale"].tolist() == [[1.0]]
    assert bytes(stored["w.sparseblob.offset"]) == bytes([0x00])
    assert bytes(stored["w.sparseblob.nonzero_data"]) == bytes([0x2F, 0x78, 0x0D])


def test_uint4_indices_are_positions_in_lut():
    lut_values = np.array([-1.5, -0.5, 0.5, 1.5], np.float32)
    weight = np.tile(lut_values[[0, 1, 2, 3, 3, 2, 1, 0]], (4, 1))
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    model = _models.make_model([node], [("x", [1, 4])], [("y", None)], [("w", weight)])
    compressed, _ = compress_model(model, values="palettize", nbits=2, palettize_mode="unique", min_elements=0)
    stored = _initializers(compressed)
    assert stored["w.sparseblob.lut"].reshape(-1).tolist() == lut_values.tolist()
    # Indices 0,1,2,3,3,2,1,0 as uint2: e4 1b.
    assert bytes(stored["w.sparseblob.indices"][:2]) == bytes([0xE4, 0x1B])


def test_report_counts_bytes_and_density():
    compressed, report = compress_model(_models.conv_model(), sparsity=0.75, min_elements=0)
    entry = report.weights[0]
    assert entry.nonzeros == 16 * 8 * 9 // 4
    assert entry.density == pytest.approx(0.25)
    assert entry.dense_bytes == 16 * 8 * 9 * 4
    stored = _initializers(compressed)
    expected = sum(stored[name].nbytes for name in stored if name.startswith("w.sparseblob."))
    assert entry.stored_bytes == expected
    assert report.to_dict()["weights"][0]["chain"] == [onnx_run.SPARSE_TO_DENSE, "Cast"]


def test_fp32_values_need_no_cast():
    compressed, report = compress_model(_models.conv_model(), sparsity=0.5, values="fp32", min_elements=0)
    assert report.weights[0].chain == (onnx_run.SPARSE_TO_DENSE,)


def test_fp16_weight_old_opset_fp32_scales():
    model = _models.conv_model(opset=13)
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), "w"))
    compressed, report = compress_model(model, sparsity=0.5, values="quantize", min_elements=0)
    assert _initializers(compressed)["w.sparseblob.scale"].dtype == np.float32
    assert report.weights[0].chain[-1] == "Cast"


def test_dense_palettization_uses_lut_to_dense():
    compressed, report = compress_model(_models.conv_model(), values="palettize", nbits=3, min_elements=0)
    assert report.weights[0].chain == (onnx_run.LUT_TO_DENSE,)


def test_dense_quantization_uses_blockwise_shift_scale():
    compressed, report = compress_model(
        _models.conv_model(), values="quantize", quantize_dtype="uint4", granularity="per_block", block_size=4, min_elements=0
    )
    assert report.weights[0].chain == (onnx_run.BLOCKWISE_SHIFT_SCALE,)
    assert _initializers(compressed)["w.sparseblob.scale"].shape == (16, 2, 1, 1)


# ---------------------------------------------------------------------------------------------
# Selection and skipped weights


def _skip_reasons(report) -> dict[str, str]:
    return {entry.name: entry.reason for entry in report.skipped}


def test_small_weights_skipped_by_default():
    compressed, report = compress_model(_models.conv_model(), sparsity=0.5)
    assert report.weights == []
    assert "fewer than min_elements=2048" in _skip_reasons(report)["w"]
    assert compressed.functions == []


def test_op_type_selection():
    _, report = compress_model(_models.two_layer_model(), sparsity=0.5, op_types=("Gemm",), min_elements=0)
    assert [w.name for w in report.weights] == ["w2"]
    assert "excludes" in _skip_reasons(report)["w1"]


def test_node_name_selection():
    _, report = compress_model(_models.two_layer_model(), sparsity=0.5, node_names=("con*",), min_elements=0)
    assert [w.name for w in report.weights] == ["w1"]
    assert "matches none of node_names" in _skip_reasons(report)["w2"]


def test_weight_with_other_reader_is_left_untouched():
    model = _models.conv_model()
    model.graph.node.append(helper.make_node("Identity", ["w"], ["w_copy"], name="copy"))
    model.graph.output.append(helper.make_tensor_value_info("w_copy", TensorProto.FLOAT, None))
    compressed, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert "Identity copy" in _skip_reasons(report)["w"]
    assert_bits_equal(_initializers(compressed)["w"], _initializers(model)["w"], "w")


def test_indivisible_group_size_keeps_weight():
    weight = _models.weight((6, 8))
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    model = _models.make_model([node], [("x", [1, 8])], [("y", None)], [("w", weight)])
    compressed, report = compress_model(
        model, sparsity=0.5, values="palettize", granularity="per_grouped_channel", group_size=4, min_elements=0
    )
    assert report.weights == []
    assert "group_size=4 does not divide the 6 channels" in _skip_reasons(report)["w"]
    assert _initializers(compressed)["w"].tobytes() == weight.tobytes()
    assert compressed.SerializeToString() == model.SerializeToString()


def test_n_m_longer_than_half_axis_is_skipped():
    model = _models.conv_model(group=8, cin=8, cout=8)
    _, report = compress_model(model, n_m="2:4", min_elements=0)
    assert "more than half of axis 1" in _skip_reasons(report)["w"]


def test_fp16_overflow_is_skipped():
    model = _models.conv_model()
    init = model.graph.initializer[0]
    values = numpy_helper.to_array(init).copy()
    values[0, 0, 0, 0] = 1e6
    init.CopyFrom(numpy_helper.from_array(values, "w"))
    _, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert "exceeds the fp16 range" in _skip_reasons(report)["w"]


def test_integer_weight_is_skipped():
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    model = _models.make_model([node], [("x", [1, 16])], [("y", None)])
    model.graph.initializer.append(numpy_helper.from_array(np.ones((16, 4), np.int32), "w"))
    _, report = compress_model(model, sparsity=0.5, min_elements=0)
    assert "dtype int32 is not fp16 or fp32" in _skip_reasons(report)["w"]


# ---------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    "options, message",
    [
        ({"values": "fp16"}, "needs a pruning pattern"),
        ({"sparsity": 1.5}, "between 0 and 1"),
        ({"block": 4}, "block needs sparsity"),
        ({"n_m": "2:4", "sparsity": 0.5}, "either sparsity"),
        ({"n_m": "5:4"}, "cannot exceed"),
        ({"n_m": "2-4"}, "not of the form"),
        ({"sparsity": 0.5, "axis": 1}, "axis applies to n_m and block"),
        ({"sparsity": 0.5, "values": "lut"}, "values='lut' is not one of"),
        ({"sparsity": 0.5, "values": "palettize", "granularity": "per_channel"}, "granularity='per_channel'"),
        ({"sparsity": 0.5, "values": "palettize", "nbits": 5}, "nbits=5"),
        ({"sparsity": 0.5, "values": "palettize", "granularity": "per_grouped_channel"}, "needs group_size"),
        ({"sparsity": 0.5, "values": "quantize", "quantize_dtype": "int2"}, "quantize_dtype='int2'"),
        ({"sparsity": 0.5, "values": "quantize", "granularity": "per_block"}, "needs block_size"),
        ({"sparsity": 0.5, "op_types": ("Conv", "LSTM")}, "are not supported"),
    ],
)
def test_invalid_options_are_rejected(options, message):
    with pytest.raises(EncodingError, match=message):
        CompressOptions(**options)


def test_n_m_accepts_pair():
    assert CompressOptions(n_m=(1, 4)).n_m == (1, 4)


def test_opset_below_eleven_is_rejected():
    with pytest.raises(EncodingError, match="convert_version"):
        compress_model(_models.conv_model(opset=10), sparsity=0.5, min_elements=0)


# ---------------------------------------------------------------------------------------------
# Writing files


def test_large_tensors_go_to_external_data(tmp_path):
    out = tmp_path / "model.sparse.onnx"
    report = compress_onnx(_models.two_layer_model(), out, sparsity=0.5, min_elements=0, size_threshold=256)
    assert report.data_path == os.fspath(tmp_path / "model.sparse.onnx.data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.sparse.onnx", "model.sparse.onnx.data"]
    stored = onnx.load(out, load_external_data=False)
    external = [init.name for init in stored.graph.initializer if onnx.external_data_helper.uses_external_data(init)]
    assert "w2.sparseblob.nonzero_data" in external
    assert "b1" not in external


def test_written_file_runs_in_onnxruntime(tmp_path):
    model = _models.two_layer_model()
    out = tmp_path / "m.onnx"
    compress_onnx(model, out, n_m="2:4", values="quantize", min_elements=0, size_threshold=0)
    inputs = _models.x_for(model)
    assert onnxruntime_run(out, inputs)["y"].shape == (1, 10)


def test_path_input_is_loaded_with_external_data(tmp_path):
    source = tmp_path / "source.onnx"
    onnx.save_model(_models.two_layer_model(), source, save_as_external_data=True, size_threshold=0, location="source.data")
    report = compress_onnx(source, tmp_path / "out.onnx", sparsity=0.5, min_elements=0)
    assert report.source == os.fspath(source)
    assert len(report.weights) == 2


def test_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    real_replace = os.replace

    def failing_replace(source, target):
        if os.fspath(target) == os.fspath(out):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(onnx_compress.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        compress_onnx(_models.two_layer_model(), out, sparsity=0.5, min_elements=0, size_threshold=0)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(*args, **kwargs):
        raise OSError("write failed")

    monkeypatch.setattr(onnx_compress.onnx, "save_model", failing_save)
    with pytest.raises(OSError, match="write failed"):
        compress_onnx(_models.two_layer_model(), tmp_path / "model.onnx", sparsity=0.5, min_elements=0)
    assert list(tmp_path.iterdir()) == []
