"""max_pool, avg_pool and l2_pool against onnx.reference, a per-window loop and PyTorch."""

from __future__ import annotations

import itertools

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
from sparseblob.runtime.ops.pool import avg_pool, l2_pool, max_pool
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node

AUTO_PAD = {"same": "SAME_UPPER", "same_lower": "SAME_LOWER"}


def _random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def _onnx_padding(pad_type, pad, spatial):
    if pad_type in AUTO_PAD:
        return {"auto_pad": AUTO_PAD[pad_type]}
    if pad_type == "custom":
        return {"pads": list(pad[0::2]) + list(pad[1::2])}
    return {"pads": [0] * (2 * spatial)}


def _explicit_pads(pad_type, pad, sizes, kernel, strides):
    """ONNX ``pads`` for MIL padding; same/same_lower are computed here from their definition."""
    if pad_type == "custom":
        return list(pad[0::2]) + list(pad[1::2])
    if pad_type == "valid":
        return [0] * (2 * len(sizes))
    totals = [max(0, (-(-d // s) - 1) * s + k - d) for d, k, s in zip(sizes, kernel, strides)]
    small = [t // 2 for t in totals]
    large = [t - t // 2 for t in totals]
    return small + large if pad_type == "same" else large + small


def _window_loop(x, kernel, strides, pads, out_sizes, kind, exclude=False):
    """Pool by visiting every window, PyTorch's way: a window is clipped to the padded input
    (avg divisor) and to the real input (values, and the divisor with ``exclude``)."""
    spatial = len(kernel)
    out = np.empty(x.shape[:2] + tuple(out_sizes), dtype=np.float64)
    for position in itertools.product(*(range(o) for o in out_sizes)):
        starts = [p * s - before for p, s, (before, _) in zip(position, strides, pads)]
        ends = [b + k for b, k in zip(starts, kernel)]
        padded = [
            (max(b, -before), min(e, d + after))
            for b, e, (before, after), d in zip(starts, ends, pads, x.shape[2:])
        ]
        real = [(max(b, 0), min(e, d)) for b, e, d in zip(starts, ends, x.shape[2:])]
        block = x[(slice(None), slice(None)) + tuple(slice(b, e) for b, e in real)]
        axes = tuple(range(2, 2 + spatial))
        if kind == "max":
            value = block.max(axis=axes)
        else:
            bounds = real if exclude else padded
            count = np.prod([e - b for b, e in bounds])
            value = block.sum(axis=axes) / count
        out[(slice(None), slice(None)) + position] = value
    return out.astype(x.dtype)


# (x shape, kernel, strides, pad_type, pad)
POOL_CASES = [
    ((1, 3, 9, 8), (3, 3), (2, 2), "custom", (1, 1, 1, 1)),
    ((2, 2, 10, 7), (2, 3), (2, 1), "valid", None),
    ((1, 2, 11, 9), (4, 2), (3, 2), "same", None),
    ((1, 2, 11, 9), (4, 2), (3, 2), "same_lower", None),
    ((1, 4, 12), (3,), (2,), "custom", (1, 1)),
    ((1, 4, 13), (2,), (2,), "valid", None),
    ((1, 2, 5, 6, 7), (2, 3, 2), (2, 2, 1), "custom", (0, 1, 1, 1, 1, 0)),
    ((1, 2, 5, 6, 7), (2, 2, 3), (1, 2, 3), "same", None),
]


@pytest.mark.parametrize("x_shape, kernel, strides, pad_type, pad", POOL_CASES)
def test_max_pool_matches_onnx(x_shape, kernel, strides, pad_type, pad):
    x = _random(np.random.default_rng(0), x_shape)
    actual = max_pool(x, kernel, pad_type, strides=strides, pad=pad)
    # onnx.reference's MaxPool computes a wrong output size for SAME_LOWER, so the padding is
    # spelled out.
    pads = _explicit_pads(pad_type, pad, x_shape[2:], kernel, strides)
    expected = run_onnx_node(
        "MaxPool", [x], kernel_shape=list(kernel), strides=list(strides), pads=pads
    )[0]
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("x_shape, kernel, strides, pad_type, pad", POOL_CASES)
def test_avg_pool_matches_onnx(x_shape, kernel, strides, pad_type, pad, exclude):
    x = _random(np.random.default_rng(1), x_shape)
    actual = avg_pool(
        x, kernel, pad_type, strides=strides, pad=pad, exclude_padding_from_average=exclude
    )
    expected = run_onnx_node(
        "AveragePool", [x], kernel_shape=list(kernel), strides=list(strides),
        count_include_pad=int(not exclude), **_onnx_padding(pad_type, pad, len(kernel)),
    )[0]
    assert_close(actual, expected, name="avg_pool")


def test_avg_pool_exclude_padding_example():
    x = np.array([[[1, 2, 3]]], np.float32)
    included = avg_pool(x, [2], "custom", pad=[1, 1], strides=[2])
    excluded = avg_pool(
        x, [2], "custom", pad=[1, 1], strides=[2], exclude_padding_from_average=True
    )
    np.testing.assert_array_equal(included, [[[0.5, 2.5]]])
    np.testing.assert_array_equal(excluded, [[[1.0, 2.5]]])


# (size, kernel, stride, pad, expected output size); the output size coremltools declares.
CEIL_SIZES = [
    (8, 3, 2, 1, 5),  # the last window overhangs the padded input by one element
    (9, 3, 2, 1, 5),
    (5, 2, 2, 1, 3),  # (o - 1) * s >= D + P/2 removes the fourth window
    (7, 2, 2, 0, 4),
    (10, 3, 3, 0, 4),
    (6, 3, 2, 1, 4),
]


@pytest.mark.parametrize("size, kernel, stride, pad, out", CEIL_SIZES)
@pytest.mark.parametrize("exclude", [False, True])
def test_avg_pool_ceil_mode_matches_window_loop(size, kernel, stride, pad, out, exclude):
    x = _random(np.random.default_rng(2), (1, 2, size, size + 1))
    actual = avg_pool(
        x, [kernel, kernel], "custom", strides=[stride, stride], pad=[pad] * 4,
        exclude_padding_from_average=exclude, ceil_mode=True,
    )
    out_w = actual.shape[-1]
    expected = _window_loop(
        x, (kernel, kernel), (stride, stride), ((pad, pad), (pad, pad)), (out, out_w), "avg",
        exclude,
    )
    assert actual.shape[-2] == out
    assert_close(actual, expected, name="avg_pool")


@pytest.mark.parametrize("size, kernel, stride, pad, out", CEIL_SIZES)
def test_max_pool_ceil_mode_matches_window_loop(size, kernel, stride, pad, out):
    x = _random(np.random.default_rng(3), (1, 2, size))
    actual = max_pool(x, [kernel], "custom", strides=[stride], pad=[pad, pad], ceil_mode=True)
    expected = _window_loop(x, (kernel,), (stride,), ((pad, pad),), (out,), "max")
    np.testing.assert_array_equal(actual, expected)


def test_ceil_mode_matches_torch():
    torch = pytest.importorskip("torch")
    x = _random(np.random.default_rng(4), (1, 3, 8, 11))
    t = torch.from_numpy(x)
    for exclude in (False, True):
        actual = avg_pool(
            x, [3, 3], "custom", strides=[2, 2], pad=[1, 1, 1, 1],
            exclude_padding_from_average=exclude, ceil_mode=True,
        )
        expected = torch.nn.functional.avg_pool2d(
            t, 3, 2, 1, ceil_mode=True, count_include_pad=not exclude
        ).numpy()
        assert_close(actual, expected)
    actual = max_pool(x, [2, 2], "valid", strides=[2, 2], ceil_mode=True)
    expected = torch.nn.functional.max_pool2d(t, 2, 2, ceil_mode=True).numpy()
    np.testing.assert_array_equal(actual, expected)


def test_ceil_mode_window_past_input_is_rejected():
    # coremltools declares 3 outputs for D=5, k=1, s=3 without padding; the third window
    # starts at 6, past the input, and PyTorch would output 2 elements instead.
    x = np.zeros((1, 1, 5), np.float32)
    with pytest.raises(UnsupportedOpError, match="starts past the padded input"):
        max_pool(x, [1], "valid", strides=[3], ceil_mode=True)


@given(
    st.integers(1, 2),
    st.lists(st.integers(1, 4), min_size=2, max_size=2),
    st.lists(st.integers(1, 3), min_size=2, max_size=2),
    st.lists(st.integers(0, 2), min_size=2, max_size=2),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_avg_pool_random_geometry_matches_window_loop(
    spatial, kernel, strides, pads, exclude, seed
):
    kernel, strides, pads = kernel[:spatial], strides[:spatial], pads[:spatial]
    pads = [min(p, k - 1) for p, k in zip(pads, kernel)]
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(k, k + 6)) for k in kernel]
    x = _random(rng, (1, 2, *sizes))
    actual = avg_pool(
        x, kernel, "custom", strides=strides, pad=[p for p in pads for _ in (0, 1)],
        exclude_padding_from_average=exclude,
    )
    out_sizes = [(d + 2 * p - k) // s + 1 for d, p, k, s in zip(sizes, pads, kernel, strides)]
    expected = _window_loop(x, kernel, strides, [(p, p) for p in pads], out_sizes, "avg", exclude)
    assert_close(actual, expected, name="avg_pool")


def test_l2_pool_matches_onnx_lp_pool():
    x = _random(np.random.default_rng(5), (1, 3, 7, 8))
    actual = l2_pool(x, [2, 3], "custom", strides=[2, 2], pad=[1, 0, 1, 1])
    expected = run_onnx_node(
        "LpPool", [x], kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 0, 1], p=2
    )[0]
    assert_close(actual, expected, name="l2_pool")


BAD_POOL = [
    ("rank 2", dict(x=(4, 4)), ShapeError, "rank 2"),
    ("kernel length", dict(kernel_sizes=[2]), ParameterShapeError, "kernel_sizes"),
    ("zero kernel", dict(kernel_sizes=[0, 2]), OpParameterError, "kernel_sizes"),
    ("unknown pad_type", dict(pad_type="full"), UnsupportedOpError, "'full'"),
    ("ceil with same", dict(pad_type="same", ceil_mode=True), UnsupportedOpError, "ceil_mode"),
    (
        "ceil asymmetric",
        dict(pad_type="custom", pad=[1, 0, 1, 1], ceil_mode=True),
        OpParameterError,
        "symmetric",
    ),
    (
        "ceil 3-D",
        dict(x=(1, 1, 4, 4, 4), kernel_sizes=[2, 2, 2], ceil_mode=True),
        UnsupportedOpError,
        "1-D and 2-D",
    ),
    ("kernel too large", dict(kernel_sizes=[7, 2]), ShapeError, "kernel extent 7"),
]


@pytest.mark.parametrize("case, changes, error, match", BAD_POOL, ids=[c[0] for c in BAD_POOL])
@pytest.mark.parametrize("function", [max_pool, avg_pool])
def test_pool_rejects_invalid_parameters(function, case, changes, error, match):
    arguments = dict(x=(1, 2, 6, 6), kernel_sizes=[2, 2], pad_type="valid")
    arguments.update(changes)
    arguments["x"] = np.zeros(arguments["x"], np.float32)
    with pytest.raises(error, match=match):
        function(**arguments)
