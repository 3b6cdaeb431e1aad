"""conv and conv_transpose against onnx.reference, the adjoint identity and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime.errors import (
    OpParameterError,
    ParameterShapeError,
    ShapeError,
    UnsupportedOpError,
)
from sparseblob.runtime.ops._spatial import same_padding
from sparseblob.runtime.ops.conv import conv, conv_transpose
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node

AUTO_PAD = {"same": "SAME_UPPER", "same_lower": "SAME_LOWER"}


def _random(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _onnx_conv(x, weight, bias, strides, dilations, groups, pad_type, pad):
    """ONNX Conv with MIL's padding spelled the ONNX way (all begins, then all ends)."""
    spatial = x.ndim - 2
    attributes = dict(strides=list(strides), dilations=list(dilations), group=groups)
    if pad_type in AUTO_PAD:
        attributes["auto_pad"] = AUTO_PAD[pad_type]
    elif pad_type == "custom":
        attributes["pads"] = list(pad[0::2]) + list(pad[1::2])
    else:
        attributes["pads"] = [0] * (2 * spatial)
    return run_onnx_node("Conv", [x, weight, bias], **attributes)[0]


# (x shape, weight shape, strides, dilations, groups, pad_type, pad)
CONV_CASES = [
    ((1, 3, 16, 16), (8, 3, 7, 7), (2, 2), (1, 1), 1, "custom", (3, 3, 3, 3)),
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (2, 1), 2, "custom", (1, 2, 0, 1)),
    ((1, 8, 10, 10), (8, 1, 3, 3), (1, 1), (1, 1), 8, "custom", (1, 1, 1, 1)),
    ((1, 4, 10, 10), (8, 1, 3, 3), (2, 2), (1, 1), 4, "valid", None),
    ((1, 4, 11, 9), (4, 1, 4, 2), (2, 3), (1, 1), 4, "same", None),
    ((1, 4, 11, 9), (4, 1, 4, 2), (2, 3), (1, 1), 4, "same_lower", None),
    ((1, 2, 12, 12), (4, 2, 2, 4), (3, 2), (2, 1), 1, "same", None),
    ((1, 2, 12, 12), (4, 2, 2, 4), (3, 2), (2, 1), 1, "same_lower", None),
    ((1, 8, 20), (8, 8, 3), (1,), (2,), 1, "custom", (2, 2)),
    ((1, 8, 20), (8, 8, 3), (1,), (4,), 1, "valid", None),
    ((2, 6, 21), (4, 6, 5), (2,), (1,), 1, "valid", None),
    ((1, 4, 21), (4, 2, 4), (3,), (1,), 2, "same", None),
    ((1, 3, 5, 6, 7), (4, 3, 2, 3, 2), (1, 2, 2), (1, 1, 1), 1, "same", None),
    ((1, 4, 6, 6, 6), (4, 2, 3, 1, 2), (2, 1, 2), (1, 2, 1), 2, "custom", (1, 0, 2, 1, 0, 1)),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, dilations, groups, pad_type, pad", CONV_CASES)
def test_conv_matches_onnx(x_shape, w_shape, strides, dilations, groups, pad_type, pad):
    rng = np.random.default_rng(0)
    x, weight, bias = _random(rng, x_shape), _random(rng, w_shape), _random(rng, w_shape[0])
    actual = conv(
        x, weight, bias, strides=strides, pad_type=pad_type, pad=pad, dilations=dilations,
        groups=groups,
    )
    expected = _onnx_conv(x, weight, bias, strides, dilations, groups, pad_type, pad)
    assert actual.dtype == np.float32
    assert_close(actual, expected, name="conv")


@st.composite
def conv_problems(draw):
    spatial = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 4), min_size=spatial, max_size=spatial))
    strides = draw(st.lists(st.integers(1, 3), min_size=spatial, max_size=spatial))
    dilations = draw(st.lists(st.integers(1, 3), min_size=spatial, max_size=spatial))
    pad_type = draw(st.sampled_from(["valid", "custom", "same", "same_lower"]))
    pad = draw(st.lists(st.integers(0, 3), min_size=2 * spatial, max_size=2 * spatial))
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    sizes = [draw(st.integers(max(1, e - 2), e + 6)) for e in extents]
    if pad_type == "valid":
        sizes = [max(s, e) for s, e in zip(sizes, extents)]
    if pad_type == "custom":
        sizes = [
            max(s, e - pad[2 * i] - pad[2 * i + 1]) for i, (s, e) in enumerate(zip(sizes, extents))
        ]
    x_shape = (draw(st.integers(1, 2)), cin, *sizes)
    w_shape = (cout, cin // groups, *kernel)
    return x_shape, w_shape, strides, dilations, groups, pad_type, pad


@given(conv_problems(), st.integers(0, 2**32 - 1))
def test_conv_random_geometry_matches_onnx(problem, seed):
    x_shape, w_shape, strides, dilations, groups, pad_type, pad = problem
    rng = np.random.default_rng(seed)
    x, weight, bias = _random(rng, x_shape), _random(rng, w_shape), _random(rng, w_shape[0])
    actual = conv(
        x, weight, bias, strides=strides, pad_type=pad_type, pad=pad, dilations=dilations,
        groups=groups,
    )
    expected = _onnx_conv(x, weight, bias, strides, dilations, groups, pad_type, pad)
    assert_close(actual, expected, name="conv")


# (size, kernel extent, stride, same, same_lower)
SAME_PADDING = [
    (5, 4, 2, (1, 2), (2, 1)),
    (6, 4, 2, (1, 1), (1, 1)),
    (7, 2, 1, (0, 1), (1, 0)),
    (8, 2, 2, (0, 0), (0, 0)),
    (10, 3, 3, (1, 1), (1, 1)),
    (9, 6, 4, (2, 3), (3, 2)),
    (4, 1, 3, (0, 0), (0, 0)),
]


@pytest.mark.parametrize("size, kernel, stride, same, same_lower", SAME_PADDING)
def test_same_padding_puts_extra_after(size, kernel, stride, same, same_lower):
    assert same_padding(size, kernel, stride, lower=False) == same
    assert same_padding(size, kernel, stride, lower=True) == same_lower


def test_conv_same_equals_custom_with_split_padding():
    rng = np.random.default_rng(1)
    x, weight = _random(rng, (1, 2, 5, 9)), _random(rng, (3, 2, 4, 6))
    same = conv(x, weight, strides=[2, 4], pad_type="same")
    lower = conv(x, weight, strides=[2, 4], pad_type="same_lower")
    # Totals: height (3-1)*2+4-5 = 3, width (3-1)*4+6-9 = 5.
    assert_close(same, conv(x, weight, strides=[2, 4], pad_type="custom", pad=[1, 2, 2, 3]))
    assert_close(lower, conv(x, weight, strides=[2, 4], pad_type="custom", pad=[2, 1, 3, 2]))
    assert same.shape == (1, 3, 3, 3)


def test_conv_defaults_are_valid_stride_one():
    rng = np.random.default_rng(2)
    x, weight = _random(rng, (1, 2, 6, 5)), _random(rng, (4, 2, 3, 3))
    expected = _onnx_conv(x, weight, None, (1, 1), (1, 1), 1, "valid", None)
    assert_close(conv(x, weight), expected)


def test_conv_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, weight, bias = _random(rng, (2, 6, 13, 11)), _random(rng, (9, 2, 3, 4)), _random(rng, 9)
    actual = conv(
        x, weight, bias, strides=[2, 3], pad_type="custom", pad=[1, 1, 2, 2], dilations=[2, 1],
        groups=3,
    )
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias),
        stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=3,
    ).numpy()
    assert_close(actual, expected)


def test_conv_fp16_through_run_op_rounds_to_fp16():
    rng = np.random.default_rng(4)
    x, weight = _random(rng, (1, 4, 8, 8)), _random(rng, (4, 4, 3, 3))
    x16, weight16 = x.astype(np.float16), weight.astype(np.float16)
    (y,) = run_op(
        "conv",
        {"x": x16, "weight": weight16, "pad_type": "same", "groups": np.array(1, np.int32)},
        name="conv_0",
    )
    reference = conv(x16.astype(np.float32), weight16.astype(np.float32), pad_type="same")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, reference.astype(np.float16))


# ---- conv_transpose ----


def _onnx_conv_transpose(x, weight, bias, groups, **attributes):
    """ONNX ConvTranspose, one call per group: onnx.reference mishandles group > 1."""
    cin_group = x.shape[1] // groups
    cout_group = weight.shape[1]
    outputs = []
    for g in range(groups):
        part = slice(g * cin_group, (g + 1) * cin_group)
        group_bias = None if bias is None else bias[g * cout_group : (g + 1) * cout_group]
        outputs.append(
            run_onnx_node("ConvTranspose", [x[:, part], weight[part], group_bias], **attributes)[0]
        )
    return np.concatenate(outputs, axis=1)


# (x shape, weight shape, strides, dilations, groups, pad)
TRANSPOSE_CASES = [
    ((1, 8, 25), (8, 4, 4), (2,), (1,), 1, (1, 1)),
    ((2, 4, 9, 8), (4, 3, 3, 2), (2, 3), (1, 2), 1, (1, 0, 2, 1)),
    ((1, 4, 5, 6), (4, 2, 3, 3), (2, 2), (1, 1), 2, (1, 1, 1, 1)),
    ((1, 6, 4, 4), (6, 1, 3, 3), (1, 1), (2, 2), 6, (0, 0, 0, 0)),
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), (2, 1, 2), (1, 1, 2), 1, (0, 1, 1, 1, 0, 0)),
]


@pytest.mark.parametrize("x_shape, w_shape, strides, dilations, groups, pad", TRANSPOSE_CASES)
def test_conv_transpose_matches_onnx(x_shape, w_shape, strides, dilations, groups, pad):
    rng = np.random.default_rng(5)
    x, weight = _random(rng, x_shape), _random(rng, w_shape)
    bias = _random(rng, w_shape[1] * groups)
    actual = conv_transpose(
        x, weight, bias, pad=pad, pad_type="custom", strides=strides, dilations=dilations,
        groups=groups,
    )
    expected = _onnx_conv_transpose(
        x, weight, bias, groups, strides=list(strides), dilations=list(dilations),
        pads=list(pad[0::2]) + list(pad[1::2]),
    )
    assert_close(actual, expected, name="conv_transpose")


def test_conv_transpose_valid_is_full_output():
    rng = np.random.default_rng(6)
    x, weight = _random(rng, (1, 3, 5, 4)), _random(rng, (3, 2, 3, 2))
    actual = conv_transpose(x, weight, strides=[2, 3])
    expected = _onnx_conv_transpose(x, weight, None, 1, strides=[2, 3])
    assert actual.shape == (1, 2, 11, 11)
    assert_close(actual, expected)


def test_conv_transpose_output_shape_matches_onnx_output_padding():
    # torch's ConvTranspose2d(output_padding=1) converts to output_shape one larger than the
    # formula; the extra row and column read the full output past the pad crop.
    rng = np.random.default_rng(7)
    x, weight, bias = _random(rng, (2, 4, 9, 8)), _random(rng, (4, 3, 3, 2)), _random(rng, 3)
    actual = conv_transpose(
        x, weight, bias, pad=[1, 1, 0, 0], output_shape=[2, 3, 18, 24], pad_type="custom",
        strides=[2, 3],
    )
    expected = _onnx_conv_transpose(
        x, weight, bias, 1, strides=[2, 3], pads=[1, 0, 1, 0], output_padding=[1, 1]
    )
    assert actual.shape == (2, 3, 18, 24)
    assert_close(actual, expected)


def test_conv_transpose_same_matches_onnx_same_upper():
    rng = np.random.default_rng(8)
    x, weight, bias = _random(rng, (1, 4, 6, 5)), _random(rng, (4, 2, 4, 5)), _random(rng, 2)
    actual = conv_transpose(x, weight, bias, pad_type="same", strides=[2, 3])
    expected = _onnx_conv_transpose(x, weight, bias, 1, strides=[2, 3], auto_pad="SAME_UPPER")
    assert actual.shape == (1, 2, 12, 15)
    assert_close(actual, expected)


def test_conv_transpose_matches_torch_output_padding():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x, weight, bias = _random(rng, (1, 4, 7, 6)), _random(rng, (4, 3, 3, 3)), _random(rng, 6)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=2,
        padding=1, output_padding=1, groups=2, dilation=(1, 2),
    ).numpy()
    actual = conv_transpose(
        x, weight, bias, pad=[1, 1, 1, 1], output_shape=expected.shape, pad_type="custom",
        strides=[2, 2], dilations=[1, 2], groups=2,
    )
    assert_close(actual, expected)


@given(conv_problems(), st.integers(0, 2**32 - 1))
def test_conv_transpose_is_adjoint_of_conv(problem, seed):
    """<conv(x, w), y> == <x, conv_transpose(y, w)> for every geometry, groups included."""
    x_shape, w_shape, strides, dilations, groups, pad_type, pad = problem
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    if pad_type in ("same", "same_lower"):
        # conv_transpose has no same_lower, so both become the equivalent custom padding.
        extents = [(k - 1) * d + 1 for k, d in zip(w_shape[2:], dilations)]
        pairs = [
            same_padding(size, e, s, lower=pad_type == "same_lower")
            for size, e, s in zip(x_shape[2:], extents, strides)
        ]
        pad_type, pad = "custom", [p for pair in pairs for p in pair]
    forward = conv(
        x, weight, strides=strides, pad_type=pad_type, pad=pad, dilations=dilations, groups=groups
    )
    y = rng.standard_normal(forward.shape)
    backward = conv_transpose(
        y, weight, pad=pad, output_shape=x_shape, pad_type=pad_type, strides=strides,
        dilations=dilations, groups=groups,
    )
    assert backward.shape == x_shape
    np.testing.assert_allclose(np.vdot(forward, y), np.vdot(x, backward), rtol=1e-9, atol=1e-9)


# ---- invalid parameters ----

BAD_CONV = [
    ("rank 2 x", dict(x=(4, 4), weight=(2, 4, 1)), ShapeError, "rank 2"),
    ("groups do not divide", dict(groups=3), ShapeError, "groups=3"),
    ("weight channels", dict(weight=(4, 3, 3, 3)), ShapeError, "Cin/groups"),
    ("pad length", dict(pad_type="custom", pad=[1, 1, 1]), ParameterShapeError, "pad=[1, 1, 1]"),
    ("negative pad", dict(pad_type="custom", pad=[1, -1, 0, 0]), OpParameterError, "negative"),
    ("zero stride", dict(strides=[1, 0]), OpParameterError, "strides=[1, 0]"),
    ("strides length", dict(strides=[1, 1, 1]), ParameterShapeError, "strides"),
    ("unknown pad_type", dict(pad_type="full"), UnsupportedOpError, "'full'"),
    ("kernel too large", dict(x=(1, 4, 2, 2)), ShapeError, "kernel extent 3"),
    ("bias length", dict(bias=(5,)), ParameterShapeError, "bias"),
]


@pytest.mark.parametrize("case, changes, error, match", BAD_CONV, ids=[c[0] for c in BAD_CONV])
def test_conv_rejects_invalid_parameters(case, changes, error, match):
    rng = np.random.default_rng(10)
    arguments = dict(x=(1, 4, 6, 6), weight=(4, 2, 3, 3), groups=2)
    arguments.update(changes)
    for name in ("x", "weight", "bias"):
        if name in arguments:
            arguments[name] = _random(rng, arguments[name])
    with pytest.raises(error, match=match.replace("[", r"\[").replace("]", r"\]")):
        conv(**arguments)


BAD_TRANSPOSE = [
    ("same_lower", dict(pad_type="same_lower"), UnsupportedOpError, "same_lower"),
    ("output_shape channels", dict(output_shape=[1, 5, 8, 8]), ShapeError, "output_shape"),
    ("output_shape length", dict(output_shape=[1, 4, 8]), ParameterShapeError, "output_shape"),
    ("weight dim 0", dict(weight=(3, 2, 3, 3)), ShapeError, "Cin = 4"),
    ("crop leaves nothing", dict(pad_type="custom", pad=[4, 4, 0, 0]), ShapeError, "crop"),
]


@pytest.mark.parametrize(
    "case, changes, error, match", BAD_TRANSPOSE, ids=[c[0] for c in BAD_TRANSPOSE]
)
def test_conv_transpose_rejects_invalid_parameters(case, changes, error, match):
    rng = np.random.default_rng(11)
    arguments = dict(x=(1, 4, 3, 3), weight=(4, 2, 3, 3), groups=2)
    arguments.update(changes)
    for name in ("x", "weight"):
        arguments[name] = _random(rng, arguments[name])
    with pytest.raises(error, match=match):
        conv_transpose(**arguments)
