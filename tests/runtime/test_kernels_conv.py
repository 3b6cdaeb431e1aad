"""conv kernels against a plain numpy convolution and onnx's reference Conv."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from sparseblob.runtime.errors import OpParameterError, ParameterShapeError, ShapeError
from sparseblob.runtime.kernels.conv import conv
from sparseblob.verify.compare import assert_close

from .test_kernels_builders import make_weight

STRATEGIES = ("sparse", "tiled", "dense")


def numpy_conv(x, w, bias, strides, dilations, pads, groups):
    """Direct loop over output positions, in fp64: the plain definition of MIL conv."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, cin = x.shape[:2]
    cout = w.shape[0]
    kernel = w.shape[2:]
    spatial = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    out_spatial = [
        (padded.shape[2 + a] - ((kernel[a] - 1) * dilations[a] + 1)) // strides[a] + 1 for a in range(spatial)
    ]
    cin_group, cout_group = cin // groups, cout // groups
    y = np.zeros((n, cout, *out_spatial))
    for o in range(cout):
        g = o // cout_group
        channels = slice(g * cin_group, (g + 1) * cin_group)
        for position in np.ndindex(*out_spatial):
            window = tuple(
                slice(position[a] * strides[a], position[a] * strides[a] + (kernel[a] - 1) * dilations[a] + 1, dilations[a])
                for a in range(spatial)
            )
            patch = padded[(slice(None), channels, *window)]
            y[(slice(None), o, *position)] = (patch * w[o]).reshape(n, -1).sum(axis=1)
    if bias is not None:
        y += bias.astype(np.float64).reshape((1, cout) + (1,) * spatial)
    return y


def onnx_conv(x, w, bias, strides, dilations, pads, groups):
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    node = helper.make_node(
        "Conv",
        inputs,
        ["y"],
        strides=list(strides),
        dilations=list(dilations),
        pads=[p[0] for p in pads] + [p[1] for p in pads],
        group=groups,
    )
    values = {"x": x.astype(np.float64), "w": w.astype(np.float64)}
    if bias is not None:
        values["b"] = bias.astype(np.float64)
    infos = [helper.make_tensor_value_info(k, TensorProto.DOUBLE, v.shape) for k, v in values.items()]
    graph = helper.make_graph([node], "conv", infos, [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    return ReferenceEvaluator(helper.make_model(graph)).run(None, values)[0]


# (input shape, weight shape, strides, dilations, pads, groups)
CASES = {
    "1d": ((2, 4, 9), (6, 4, 3), (1,), (1,), ((1, 1),), 1),
    "1d dilated strided": ((1, 4, 17), (4, 2, 5), (2,), (3,), ((2, 0),), 2),
    "2d grouped asymmetric": ((1, 4, 9, 8), (6, 2, 3, 3), (2, 1), (1, 2), ((1, 0), (2, 1)), 2),
    "2d depthwise dilated": ((1, 6, 7, 7), (6, 1, 3, 3), (1, 1), (2, 2), ((2, 2), (1, 1)), 6),
    "2d depthwise multiplier": ((1, 3, 7, 7), (6, 1, 3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), 3),
    "2d 1x1 strided padded": ((2, 8, 5, 5), (16, 8, 1, 1), (2, 2), (1, 1), ((0, 1), (1, 0)), 1),
    "2d 1x1 grouped": ((1, 8, 4, 4), (8, 2, 1, 1), (1, 1), (1, 1), ((0, 0), (0, 0)), 4),
    "2d wide": ((1, 32, 6, 6), (16, 32, 3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), 1),
    "3d": ((1, 4, 5, 5, 4), (4, 2, 2, 3, 2), (1, 2, 1), (1, 1, 2), ((0, 1), (1, 1), (1, 0)), 2),
    "3d depthwise": ((1, 2, 4, 4, 4), (2, 1, 3, 3, 3), (1, 1, 1), (1, 1, 1), ((1, 1), (1, 1), (1, 1)), 2),
}
LAYOUTS = {"unstructured": "unstructured", "row blocks": ("rows", 4), "column blocks": ("columns", 2), "2:4": ("nm", 2, 4, 1)}


PATTERN_AXIS = {"rows": 0, "columns": 1, "nm": 1}
LAYOUT_CASES = [
    pytest.param(case, layout, id=f"{case_name}-{layout_name}")
    for case_name, case in CASES.items()
    for layout_name, layout in LAYOUTS.items()
    if layout == "unstructured" or case[1][PATTERN_AXIS[layout[0]]] >= 2
]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_numpy_conv_matches_onnx(case):
    input_shape, weight_shape, strides, dilations, pads, groups = case
    rng = np.random.default_rng(29)
    x = rng.standard_normal(input_shape)
    w = rng.standard_normal(weight_shape)
    bias = rng.standard_normal(weight_shape[0])
    expected = onnx_conv(x, w, bias, strides, dilations, pads, groups)
    assert_close(numpy_conv(x, w, bias, strides, dilations, pads, groups), expected, dtype=np.float64)


@pytest.mark.parametrize("case, layout", LAYOUT_CASES)
def test_conv_matches_numpy(case, layout):
    input_shape, weight_shape, strides, dilations, pads, groups = case
    rng = np.random.default_rng(30)
    built = make_weight(rng, weight_shape, 0.5, "fp16", layout)
    x = rng.standard_normal(input_shape).astype(np.float32)
    bias = rng.standard_normal(weight_shape[0]).astype(np.float32)
    expected = numpy_conv(x, built.reference, bias, strides, dilations, pads, groups).astype(np.float32)
    for strategy in STRATEGIES:
        y = conv(x, built.weight, bias, strides=strides, dilations=dilations, pads=pads, groups=groups, strategy=strategy)
        assert y.dtype == np.float32
        assert_close(y, expected, name=strategy)


@pytest.mark.parametrize("value_format", ["lut4", "int8-per-channel", "uint8-per-block-offset", "lut2-grouped-rows"])
def test_conv_value_formats(value_format):
    rng = np.random.default_rng(31)
    built = make_weight(rng, (8, 4, 3, 3), 0.4, value_format)
    x = rng.standard_normal((2, 8, 6, 5)).astype(np.float32)
    expected = numpy_conv(x, built.reference, None, (1, 1), (1, 1), ((1, 1), (0, 2)), 2).astype(np.float32)
    for strategy in STRATEGIES:
        y = conv(x, built.weight, strides=(1, 1), pads=((1, 1), (0, 2)), groups=2, strategy=strategy)
        assert_close(y, expected, name=strategy)


@st.composite
def conv_cases(draw):
    spatial = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin_group = draw(st.integers(1, 4))
    cout_group = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(spatial))
    strides = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(spatial))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(spatial))
    minimum = [(k - 1) * d + 1 - b - e for k, d, (b, e) in zip(kernel, dilations, pads)]
    sizes = tuple(max(1, m) + draw(st.integers(0, 4)) for m in minimum)
    batch = draw(st.integers(1, 2))
    density = draw(st.sampled_from([0.0, 0.3, 1.0]))
    strategy = draw(st.sampled_from(STRATEGIES))
    seed = draw(st.integers(0, 2**32 - 1))
    weight_shape = (groups * cout_group, cin_group, *kernel)
    input_shape = (batch, groups * cin_group, *sizes)
    return input_shape, weight_shape, strides, dilations, pads, groups, density, strategy, seed


@given(conv_cases())
def test_conv_random_shapes(case):
    input_shape, weight_shape, strides, dilations, pads, groups, density, strategy, seed = case
    rng = np.random.default_rng(seed)
    built = make_weight(rng, weight_shape, density, "fp16")
    x = rng.standard_normal(input_shape).astype(np.float32)
    expected = numpy_conv(x, built.reference, None, strides, dilations, pads, groups).astype(np.float32)
    y = conv(x, built.weight, strides=strides, dilations=dilations, pads=pads, groups=groups, strategy=strategy)
    assert_close(y, expected)


def test_conv_fp64_reference():
    rng = np.random.default_rng(32)
    built = make_weight(rng, (4, 2, 3), 0.5, "fp32")
    x = rng.standard_normal((1, 2, 8))
    y = conv(x, built.weight, pads=((1, 1),), compute_dtype=np.float64)
    assert y.dtype == np.float64
    assert_close(y, numpy_conv(x, built.reference, None, (1,), (1,), ((1, 1),), 1))


def test_conv_docstring_example():
    from sparseblob.runtime.kernels.formats import from_sparse

    weight = from_sparse(np.ones((1, 1, 2), np.uint8), np.array([1, 1], np.float16))
    y = conv(np.array([[[1, 2, 3]]], np.float32), weight)
    assert y.tolist() == [[[3.0, 5.0]]]


def _weight(shape=(4, 2, 3, 3)):
    return make_weight(np.random.default_rng(33), shape, 0.5, "fp16").weight


X = np.ones((1, 4, 6, 6), np.float32)
INVALID = [
    ("input rank", lambda: conv(np.ones((4, 6)), _weight()), ShapeError, "expected \\[N, Cin, \\*D\\]"),
    ("weight rank", lambda: conv(X, _weight((4, 2, 3))), ShapeError, "expected rank 4"),
    ("channels", lambda: conv(X, _weight(), groups=1), ShapeError, "Cin = 2 \\* 1"),
    ("groups zero", lambda: conv(X, _weight(), groups=0), OpParameterError, "groups is 0"),
    ("stride zero", lambda: conv(X, _weight(), groups=2, strides=(0, 1)), OpParameterError, "strides is \\[0, 1\\]"),
    ("stride count", lambda: conv(X, _weight(), groups=2, strides=(1,)), OpParameterError, "expected 2"),
    ("dilation zero", lambda: conv(X, _weight(), groups=2, dilations=(1, 0)), OpParameterError, "dilations"),
    ("pads shape", lambda: conv(X, _weight(), groups=2, pads=(1, 1, 1, 1)), OpParameterError, "pads has shape \\[4\\]"),
    ("pads negative", lambda: conv(X, _weight(), groups=2, pads=((0, -1), (0, 0))), OpParameterError, "non-negative"),
    ("kernel too big", lambda: conv(np.ones((1, 4, 2, 6)), _weight(), groups=2), ShapeError, "padded size 2"),
    ("bias shape", lambda: conv(X, _weight(), np.ones(3), groups=2), ParameterShapeError, "bias has shape \\[3\\]"),
]


@pytest.mark.parametrize("call, error, message", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_conv_raises(call, error, message):
    with pytest.raises(error, match=message):
        call()
