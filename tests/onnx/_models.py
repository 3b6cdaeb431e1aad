"""Small ONNX models and inputs for the ONNX tests, built with onnx.helper."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT


def weight(shape, seed=0, dtype=np.float32) -> np.ndarray:
    """Return a seeded standard-normal weight with distinct magnitudes."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def make_model(nodes, inputs, outputs, initializers=(), *, opset=13, ir_version=8) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, FLOAT, shape) for name, shape in outputs],
        initializer=[numpy_helper.from_array(np.asarray(value), name) for name, value in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def conv_model(*, opset=13, group=1, cin=8, cout=16, kernel=(3, 3), seed=0, **attributes) -> onnx.ModelProto:
    w = weight((cout, cin // group, *kernel), seed)
    b = weight((cout,), seed + 1)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", group=group, **attributes)
    return make_model([node], [("x", [1, cin, 9, 9])], [("y", None)], [("w", w), ("b", b)], opset=opset)


def conv_transpose_model(*, opset=13, cin=8, cout=6, kernel=(3, 3), seed=0, **attributes) -> onnx.ModelProto:
    w = weight((cin, cout, *kernel), seed)
    b = weight((cout,), seed + 1)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="deconv", **attributes)
    return make_model([node], [("x", [1, cin, 5, 5])], [("y", None)], [("w", w), ("b", b)], opset=opset)


def gemm_model(*, trans_b=1, opset=13, seed=0) -> onnx.ModelProto:
    shape = (12, 16) if trans_b else (16, 12)
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="gemm", transB=trans_b, alpha=0.5, beta=2.0)
    return make_model(
        [node], [("x", [3, 16])], [("y", None)], [("w", weight(shape, seed)), ("c", weight((12,), seed + 1))], opset=opset
    )


def gemm_a_model(*, trans_a=0, opset=13, seed=0) -> onnx.ModelProto:
    shape = (16, 12) if trans_a else (12, 16)
    node = helper.make_node("Gemm", ["w", "x"], ["y"], name="gemm_a", transA=trans_a)
    return make_model([node], [("x", [16, 3])], [("y", None)], [("w", weight(shape, seed))], opset=opset)


def matmul_model(*, weight_left=False, opset=13, seed=0) -> onnx.ModelProto:
    if weight_left:
        node = helper.make_node("MatMul", ["w", "x"], ["y"], name="matmul")
        return make_model([node], [("x", [2, 16, 3])], [("y", None)], [("w", weight((12, 16), seed))], opset=opset)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")
    return make_model([node], [("x", [2, 3, 16])], [("y", None)], [("w", weight((16, 12), seed))], opset=opset)


def transpose_matmul_model(*, opset=13, seed=0) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], name="transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt"], ["y"], name="matmul"),
    ]
    return make_model(nodes, [("x", [3, 16])], [("y", None)], [("w", weight((12, 16), seed))], opset=opset)


def constant_conv_model(*, opset=13, seed=0) -> onnx.ModelProto:
    """A Conv whose weight comes from a Constant node, followed by a Relu."""
    w = weight((16, 8, 3, 3), seed)
    nodes = [
        helper.make_node("Constant", [], ["w"], name="w_const", value=numpy_helper.from_array(w, "w_value")),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return make_model(nodes, [("x", [1, 8, 6, 6])], [("y", None)], opset=opset)


def two_layer_model(*, opset=13, seed=0) -> onnx.ModelProto:
    """Conv -> Relu -> Flatten -> Gemm, with a bias initializer and an untouched Add constant."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w2"], ["g"], name="fc", transB=1),
        helper.make_node("Add", ["g", "shift"], ["y"], name="add"),
    ]
    initializers = [
        ("w1", weight((16, 8, 3, 3), seed)),
        ("b1", weight((16,), seed + 1)),
        ("w2", weight((10, 16 * 4 * 4), seed + 2)),
        ("shift", weight((10,), seed + 3)),
    ]
    return make_model(nodes, [("x", [1, 8, 8, 8])], [("y", [1, 10])], initializers, opset=opset)


def x_for(model: onnx.ModelProto, seed=1) -> dict[str, np.ndarray]:
    """Return a seeded input for every graph input with a fixed shape."""
    rng = np.random.default_rng(seed)
    inits = {init.name for init in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        found[value.name] = rng.standard_normal(shape).astype(np.float32)
    return found


def package_file(package: str, relative: str) -> Path:
    """Return the path of a file shipped inside an installed package, found through importlib."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def text_page(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return an image of dark glyph-like boxes in rows on white, ``[1, 3, H, W]``, ImageNet-normalized.

    OCR detection models give near-zero output on noise; on this page they mark the rows.
    """
    rng = np.random.default_rng(seed)
    page = np.ones((height, width), np.float32)
    for row in range(6, height - 8, 14):
        x = 4
        while x < width - 10:
            glyph = int(rng.integers(3, 8))
            page[row : row + 8, x : x + glyph] = rng.uniform(0.0, 0.3)
            x += glyph + int(rng.integers(1, 4))
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return ((np.stack([page] * 3)[None] - mean) / std).astype(np.float32)
