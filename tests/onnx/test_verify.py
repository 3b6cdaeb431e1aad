"""verify_onnx and its helpers: inputs, comparisons, and a verification that fails."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from sparseblob.encoder.onnx_compress import compress_onnx  # noqa: E402
from sparseblob.runtime import onnx_run  # noqa: E402
from sparseblob.runtime.errors import OpParameterError  # noqa: E402
from sparseblob.verify.compare import TOLERANCES  # noqa: E402
from sparseblob.verify.onnx_verify import (  # noqa: E402
    CHECKED_PAIRS,
    DYNAMIC_SIZE,
    compare_outputs,
    random_inputs,
    verify_onnx,
)

from . import _models  # noqa: E402


def _dynamic_model(elem_type, dims):
    value = helper.make_tensor_value_info("x", elem_type, dims)
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [value], [helper.make_tensor_value_info("y", elem_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_random_inputs_respect_fixed_dims():
    inputs = random_inputs(_dynamic_model(TensorProto.FLOAT, [2, 3, 5]))
    assert inputs["x"].shape == (2, 3, 5)
    assert inputs["x"].dtype == np.float32
    assert inputs["x"].min() >= -1.0
    assert inputs["x"].max() < 1.0


def test_random_inputs_fill_symbolic_dims():
    inputs = random_inputs(_dynamic_model(TensorProto.FLOAT, ["batch", 3, "height", None]))
    assert inputs["x"].shape == (1, 3, DYNAMIC_SIZE, DYNAMIC_SIZE)


def test_random_inputs_take_given_shapes():
    inputs = random_inputs(_dynamic_model(TensorProto.FLOAT, ["batch", 3, "h", "w"]), shapes={"x": (1, 3, 48, 192)})
    assert inputs["x"].shape == (1, 3, 48, 192)


def test_random_integer_inputs_cover_range():
    inputs = random_inputs(_dynamic_model(TensorProto.INT32, [1, 4096]))
    assert inputs["x"].dtype == np.int32
    assert inputs["x"].min() == 0
    assert inputs["x"].max() == 256


def test_random_uint8_inputs_clip_to_dtype():
    inputs = random_inputs(_dynamic_model(TensorProto.UINT8, [1, 4096]))
    assert inputs["x"].max() == 255


def test_random_inputs_are_seeded():
    model = _dynamic_model(TensorProto.FLOAT, [4, 4])
    assert np.array_equal(random_inputs(model, seed=3)["x"], random_inputs(model, seed=3)["x"])
    assert not np.array_equal(random_inputs(model, seed=3)["x"], random_inputs(model, seed=4)["x"])


def test_random_inputs_skip_initializer_inputs():
    model = _models.conv_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [16, 8, 3, 3]))
    assert list(random_inputs(model)) == ["x"]


def test_string_input_is_rejected():
    with pytest.raises(OpParameterError, match="give its value explicitly"):
        random_inputs(_dynamic_model(TensorProto.STRING, [2]))


def test_compare_outputs_metrics():
    expected = np.array([1.0, -2.0, 4.0, 0.0], np.float32)
    actual = np.array([1.0, -2.0, 4.5, 0.0], np.float32)
    comparison = compare_outputs("y", actual, expected, "a", "b", checked=True)
    assert comparison.max_abs == pytest.approx(0.5)
    assert comparison.max_rel == pytest.approx(0.125)
    assert comparison.cosine == pytest.approx(float(actual @ expected) / (np.linalg.norm(actual) * np.linalg.norm(expected)))
    assert comparison.mismatched == 1
    assert not comparison.passed


def test_compare_outputs_within_tolerance_passes():
    expected = np.linspace(-1, 1, 50, dtype=np.float32)
    actual = expected + np.float32(TOLERANCES["fp32"].atol / 2)
    comparison = compare_outputs("y", actual, expected, "a", "b", checked=True)
    assert comparison.passed
    assert comparison.mismatched == 0


def test_informational_comparison_always_passes():
    comparison = compare_outputs("y", np.ones(3, np.float32), np.zeros(3, np.float32), "a", "b", checked=False)
    assert comparison.passed
    assert not comparison.checked
    assert comparison.max_abs == 1.0


def test_shape_mismatch_fails():
    comparison = compare_outputs("y", np.ones(3, np.float32), np.ones(4, np.float32), "a", "b", checked=True)
    assert not comparison.passed
    assert comparison.max_abs == np.inf


def test_integer_outputs_must_be_exact():
    comparison = compare_outputs("y", np.array([1, 2], np.int64), np.array([1, 3], np.int64), "a", "b", checked=True)
    assert comparison.mismatched == 1


def test_verify_passes_on_compressed_model(tmp_path):
    reference = tmp_path / "model.onnx"
    onnx.save_model(_models.two_layer_model(), reference)
    compress_onnx(reference, tmp_path / "model.sparse.onnx", n_m="2:4", values="palettize", min_elements=0)
    report = verify_onnx(tmp_path / "model.sparse.onnx", reference)
    assert report.passed
    assert report.kernel_nodes == 2
    assert [(c.actual, c.expected) for c in report.checked()] == list(CHECKED_PAIRS)
    (error,) = report.error_vs_original()
    assert error.max_abs > 0
    assert set(report.seconds) == {"sparseblob", "onnxruntime", "pruned dense", "original"}
    assert report.to_dict()["inputs"] == {"x": {"shape": [1, 8, 8, 8], "dtype": "float32"}}


def test_verify_fails_when_function_body_is_wrong(tmp_path):
    reference = tmp_path / "model.onnx"
    onnx.save_model(_models.two_layer_model(), reference)
    out = tmp_path / "model.sparse.onnx"
    compress_onnx(reference, out, sparsity=0.5, min_elements=0)
    model = onnx.load(out)
    # An exclusive running count reads every value one position early.
    function = next(f for f in model.functions if f.name == onnx_run.SPARSE_TO_DENSE)
    cumsum = next(node for node in function.node if node.op_type == "CumSum")
    cumsum.attribute.append(helper.make_attribute("exclusive", 1))
    onnx.save_model(model, out)
    report = verify_onnx(out, reference)
    assert not report.passed
    failed = {(c.actual, c.expected) for c in report.checked() if not c.passed}
    assert failed == {("sparseblob", "onnxruntime"), ("onnxruntime", "pruned dense")}
