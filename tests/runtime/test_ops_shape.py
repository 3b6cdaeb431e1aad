"""Shape and indexing ops against onnx.reference, compared bit for bit."""

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
from sparseblob.runtime.ops import shape as ops
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_bits_equal
from tests.runtime.onnx_node import run_onnx_node

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _data(shape, seed=0) -> np.ndarray:
    """fp16 data with -0.0 and a NaN, so a bit-for-bit comparison checks sign and payload."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float16)
    flat = values.reshape(-1)
    if flat.size > 2:
        flat[0] = np.float16(-0.0)
        flat[1] = np.uint16(0x7E01).view(np.float16)
    return values


def _i64(values) -> np.ndarray:
    return np.array(values, np.int64)


# ---- reshape ----

# (x shape, MIL shape, ONNX shape with the same meaning)
RESHAPES = [
    ((1, 16, 64), [1, 16, 4, 16], [1, 16, 4, 16]),
    ((1, 64, 1, 1), [1, -1], [1, -1]),
    ((2, 3, 4), [-1, 0, 0], [-1, 0, 0]),
    ((2, 3, 4), [0, -1, 0], [0, -1, 0]),
]


@pytest.mark.parametrize("x_shape, target, onnx_target", RESHAPES)
def test_reshape_matches_onnx(x_shape, target, onnx_target):
    x = _data(x_shape)
    actual = ops.reshape(x, np.array(target, np.int32))
    expected = run_onnx_node("Reshape", [x, _i64(onnx_target)])[0]
    assert_bits_equal(actual, expected, "reshape")


def test_reshape_zeros_align_from_the_right():
    # With len(shape) != rank(x) (invalid before iOS17), a zero copies the dim of x at the same
    # distance from the end, and a zero without one becomes 1.
    assert ops.reshape(_data((2, 50)), [1, 0, -1, 0]).shape == (1, 1, 2, 50)
    assert ops.reshape(_data((2, 50)), [1, 0, 0]).shape == (1, 2, 50)
    assert ops.reshape(_data((2, 3, 4)), [0, -1]).shape == (3, 8)


@pytest.mark.parametrize(
    "target, error, match",
    [
        ([-1, -1], OpParameterError, "more than one -1"),
        ([5, 5], ShapeError, "25 elements"),
        ([-2, 12], OpParameterError, "below -1"),
        ([5, -1], ShapeError, "cannot infer"),
    ],
)
def test_reshape_rejects_invalid_shape(target, error, match):
    with pytest.raises(error, match=match):
        ops.reshape(_data((3, 4)), target)


# ---- transpose ----

# (rank, MIL perm, the same perm written without negatives)
PERMS = [
    (4, [0, 2, -3, -1], [0, 2, 1, 3]),
    (4, [0, 2, -1, -3], [0, 2, 3, 1]),
    (5, [-2, 1, 2, 0, 4], [3, 1, 2, 0, 4]),
    (3, [2, 1, 0], [2, 1, 0]),
    (1, [-1], [0]),
]


@pytest.mark.parametrize("rank, perm, positive", PERMS)
def test_transpose_with_negative_perm_matches_onnx(rank, perm, positive):
    x = _data(tuple(range(2, 2 + rank)))
    actual = ops.transpose(x, np.array(perm, np.int32))
    expected = run_onnx_node("Transpose", [x], perm=positive)[0]
    assert_bits_equal(actual, expected, "transpose")


@pytest.mark.parametrize(
    "perm, error, match",
    [
        ([0, 1], ParameterShapeError, "2 entries"),
        ([0, 1, -3], OpParameterError, "twice"),
        ([0, 1, 3], OpParameterError, "perm=3"),
    ],
)
def test_transpose_rejects_invalid_perm(perm, error, match):
    with pytest.raises(error, match=match):
        ops.transpose(_data((2, 3, 4)), perm)


# ---- squeeze, expand_dims ----


@pytest.mark.parametrize("axes", [[0], [-1], [0, 3], None])
def test_squeeze_matches_onnx(axes):
    x = _data((1, 3, 4, 1))
    actual = ops.squeeze(x, axes)
    onnx_axes = None if axes is None else _i64(axes)
    assert_bits_equal(actual, run_onnx_node("Squeeze", [x, onnx_axes])[0], "squeeze")


def test_squeeze_ignores_listed_axis_of_size_above_1():
    assert ops.squeeze(_data((1, 3, 1)), [0, 1]).shape == (3, 1)


def test_squeeze_of_all_ones_gives_rank_0():
    assert ops.squeeze(np.ones((1, 1), np.float32)).shape == ()


@pytest.mark.parametrize("axes", [[0], [-1], [0, -1], [1, 3], [-4, -2]])
def test_expand_dims_matches_onnx_unsqueeze(axes):
    x = _data((2, 3))
    actual = ops.expand_dims(x, np.array(axes, np.int32))
    assert_bits_equal(actual, run_onnx_node("Unsqueeze", [x, _i64(axes)])[0], "expand_dims")


def test_expand_dims_rejects_axis_out_of_output_range():
    with pytest.raises(OpParameterError, match="axes=3"):
        ops.expand_dims(_data((2,)), [3])


# ---- concat, split, stack ----


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_matches_onnx(axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    values = [_data(s, seed) for seed, s in enumerate(shapes)]
    actual = ops.concat(values, axis=np.array(axis, np.int32))
    expected = run_onnx_node("Concat", values, axis=axis)[0]
    assert_bits_equal(actual, expected, "concat")


def test_concat_interleave_alternates_inputs():
    a = np.array([[1, 2], [3, 4]], np.int32)
    b = np.array([[5, 6], [7, 8]], np.int32)
    expected_rows = np.array([[1, 2], [5, 6], [3, 4], [7, 8]], np.int32)
    expected_cols = np.array([[1, 5, 2, 6], [3, 7, 4, 8]], np.int32)
    assert_bits_equal(ops.concat([a, b], axis=0, interleave=True), expected_rows)
    assert_bits_equal(ops.concat([a, b], axis=-1, interleave=True), expected_cols)


@pytest.mark.parametrize(
    "values, interleave, match",
    [
        ([(2, 3), (3, 3)], False, "differ outside axis 1"),
        ([(2, 3), (2, 3, 1)], False, "different ranks"),
        ([(2, 3), (2, 4)], True, "equal shapes"),
        ([], False, "empty"),
    ],
)
def test_concat_rejects_mismatched_values(values, interleave, match):
    error = OpParameterError if not values else ShapeError
    with pytest.raises(error, match=match):
        ops.concat([np.zeros(s) for s in values], axis=1, interleave=interleave)


@pytest.mark.parametrize(
    "kwargs, onnx_split, onnx_attributes",
    [
        ({"split_sizes": [64, 64, 64]}, [64, 64, 64], {}),
        ({"split_sizes": [10, 0, 182]}, [10, 0, 182], {}),
        ({"num_splits": 4}, None, {"num_outputs": 4}),
    ],
)
def test_split_matches_onnx(kwargs, onnx_split, onnx_attributes):
    x = _data((1, 3, 192))
    actual = ops.split(x, axis=-1, **kwargs)
    split = None if onnx_split is None else _i64(onnx_split)
    expected = run_onnx_node(
        "Split", [x, split], outputs=len(actual), axis=-1, **onnx_attributes
    )
    assert len(actual) == len(expected)
    for piece, reference in zip(actual, expected):
        assert_bits_equal(piece, reference, "split")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_splits": 5}, ShapeError, "does not divide"),
        ({"split_sizes": [1, 2]}, ShapeError, "add up to 3"),
        ({}, OpParameterError, "exactly one"),
        ({"num_splits": 2, "split_sizes": [2, 2]}, OpParameterError, "exactly one"),
    ],
)
def test_split_rejects_invalid_sizes(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.split(_data((4, 4)), axis=0, **kwargs)


def test_split_through_run_op_returns_every_piece():
    x = _data((1, 16, 192))
    outputs = run_op(
        "split",
        {"x": x, "axis": np.array(-1, np.int32), "split_sizes": np.array([64] * 3, np.int32)},
        name="split_0",
        output_dtypes=[np.float16] * 3,
    )
    assert [o.shape for o in outputs] == [(1, 16, 64)] * 3
    assert_bits_equal(outputs[1], x[..., 64:128], "split")


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_stack_places_new_axis(axis):
    values = [_data((3, 4), seed) for seed in range(3)]
    actual = ops.stack(values, axis=axis)
    position = axis % 3
    for i, value in enumerate(values):
        index = (slice(None),) * position + (i,)
        assert_bits_equal(actual[index], value, f"stack slice {i}")


# ---- slice_by_index, slice_by_size ----


def _onnx_slice_by_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask):
    """The same slice via ONNX Slice + Squeeze, with masks spelled as extreme indices."""
    starts, ends = [], []
    for axis in range(x.ndim):
        step = stride[axis]
        if squeeze_mask[axis]:
            start = 0 if begin_mask[axis] else begin[axis] % x.shape[axis]
            starts.append(start)
            ends.append(start + 1)
            continue
        # ONNX clamps out-of-range starts and ends, so extreme values mean "from the edge".
        first, last = (0, INT64_MAX) if step > 0 else (INT64_MAX, INT64_MIN)
        starts.append(first if begin_mask[axis] else begin[axis])
        ends.append(last if end_mask[axis] else end[axis])
    steps = [1 if squeeze_mask[a] else stride[a] for a in range(x.ndim)]
    out = run_onnx_node(
        "Slice", [x, _i64(starts), _i64(ends), _i64(range(x.ndim)), _i64(steps)]
    )[0]
    squeezed = [a for a in range(x.ndim) if squeeze_mask[a]]
    if squeezed:
        out = run_onnx_node("Squeeze", [out, _i64(squeezed)])[0]
    return out


def test_slice_by_index_unbind_pattern():
    # torch unbind/select in an exported TransformerEncoderLayer.
    x = _data((3, 16, 1, 64))
    actual = ops.slice_by_index(
        x,
        begin=np.array([1, 0, 0, 0], np.int32),
        end=np.array([2, 16, 1, 64], np.int32),
        end_mask=np.array([False, True, True, True]),
        squeeze_mask=np.array([True, False, False, False]),
    )
    assert_bits_equal(actual, x[1], "slice_by_index")


def test_slice_by_index_squeeze_all_axes():
    x = _data((3, 4))
    actual = ops.slice_by_index(x, [-1, 2], [0, 0], squeeze_mask=[True, True])
    assert actual.shape == ()
    assert_bits_equal(actual, x[2, 2], "slice_by_index")


@st.composite
def slice_problems(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    begin = [draw(st.integers(-d - 2, d + 2)) for d in shape]
    end = [draw(st.integers(-d - 2, d + 2)) for d in shape]
    stride = [draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in shape]
    begin_mask = [draw(st.booleans()) for _ in shape]
    end_mask = [draw(st.booleans()) for _ in shape]
    squeeze_mask = [draw(st.booleans()) for _ in shape]
    for axis, d in enumerate(shape):
        if squeeze_mask[axis] and not begin_mask[axis]:
            begin[axis] = draw(st.integers(-d, d - 1))
    return shape, begin, end, stride, begin_mask, end_mask, squeeze_mask


@given(slice_problems())
def test_slice_by_index_matches_onnx_slice(problem):
    shape, begin, end, stride, begin_mask, end_mask, squeeze_mask = problem
    x = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    actual = ops.slice_by_index(
        x, begin, end, stride=stride, begin_mask=begin_mask, end_mask=end_mask,
        squeeze_mask=squeeze_mask,
    )
    expected = _onnx_slice_by_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    assert_bits_equal(actual, expected, "slice_by_index")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"stride": [1, 0]}, OpParameterError, "stride"),
        ({"squeeze_mask": [True, False], "begin": [3, 0]}, OpParameterError, "squeezed index 3"),
        ({"begin": [0]}, ParameterShapeError, "begin"),
        ({"end_mask": [True]}, ParameterShapeError, "end_mask"),
    ],
)
def test_slice_by_index_rejects_invalid_parameters(kwargs, error, match):
    arguments = {"begin": [0, 0], "end": [2, 2]}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        ops.slice_by_index(_data((3, 4)), **arguments)


@pytest.mark.parametrize("begin, size", [([0, 1], [2, -1]), ([-2, 0], [1, 4]), ([1, 3], [-1, 1])])
def test_slice_by_size_matches_onnx(begin, size):
    x = _data((3, 4))
    starts = [b % d for b, d in zip(begin, x.shape)]
    ends = [d if s == -1 else b + s for b, s, d in zip(starts, size, x.shape)]
    expected = run_onnx_node("Slice", [x, _i64(starts), _i64(ends)])[0]
    assert_bits_equal(ops.slice_by_size(x, begin, size), expected, "slice_by_size")


def test_slice_by_size_rejects_size_past_end():
    with pytest.raises(OpParameterError, match="passes the end"):
        ops.slice_by_size(_data((3, 4)), [2, 0], [2, 4])


# ---- gather, gather_along_axis ----


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("indices_shape", [(), (4,), (2, 3)])
def test_gather_with_negative_indices_matches_onnx(axis, indices_shape):
    x = _data((5, 6, 7))
    size = x.shape[axis]
    indices = np.random.default_rng(1).integers(-size, size, indices_shape).astype(np.int32)
    actual = ops.gather(x, indices, axis=axis)
    expected = run_onnx_node("Gather", [x, indices], axis=axis)[0]
    assert_bits_equal(actual, expected, "gather")


# (x shape, indices shape, axis, batch_dims)
BATCHED_GATHERS = [
    ((2, 3, 4, 5), (2, 3, 6), 2, 2),
    ((2, 3, 4, 5), (2, 6, 7), 2, 1),
    ((2, 3, 4, 5), (2, 6), 3, 1),
    ((2, 3, 4), (2, 3), 1, 1),
]


@pytest.mark.parametrize("x_shape, indices_shape, axis, batch_dims", BATCHED_GATHERS)
def test_gather_with_batch_dims_matches_loop(x_shape, indices_shape, axis, batch_dims):
    x = _data(x_shape)
    rng = np.random.default_rng(2)
    indices = rng.integers(-x_shape[axis], x_shape[axis], indices_shape).astype(np.int32)
    actual = ops.gather(x, indices, axis=axis, batch_dims=batch_dims)

    # One plain gather per batch position.
    expected_shape = x_shape[:axis] + indices_shape[batch_dims:] + x_shape[axis + 1 :]
    expected = np.empty(expected_shape, x.dtype)
    for batch in itertools.product(*(range(d) for d in x_shape[:batch_dims])):
        expected[batch] = run_onnx_node(
            "Gather", [x[batch], indices[batch]], axis=axis - batch_dims
        )[0]
    assert_bits_equal(actual, expected, "gather")


def test_gather_embedding_lookup_with_int16_indices():
    table = _data((50, 8))
    indices = np.array([[3, 49, 0]], np.int16)
    assert_bits_equal(ops.gather(table, indices), table[[[3, 49, 0]]], "gather")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"indices": np.array([5], np.int32)}, OpParameterError, "index 5 is out of range"),
        ({"indices": np.array([-6], np.int32)}, OpParameterError, "index -6"),
        ({"indices": np.array([0.0])}, OpParameterError, "integers"),
        ({"axis": 2}, OpParameterError, "axis=2"),
        ({"batch_dims": 1}, ShapeError, "batch_dims=1"),
    ],
)
def test_gather_rejects_invalid_indices(kwargs, error, match):
    arguments = {"x": _data((5, 2)), "indices": np.array([0], np.int32)}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        ops.gather(**arguments)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_along_axis_matches_onnx_gather_elements(axis):
    x = _data((3, 4, 5))
    shape = list(x.shape)
    shape[axis] = 6
    indices = np.random.default_rng(3).integers(-x.shape[axis], x.shape[axis], shape)
    indices = indices.astype(np.int32)
    actual = ops.gather_along_axis(x, indices, axis=axis)
    # onnx.reference's GatherElements mishandles a negative axis.
    expected = run_onnx_node("GatherElements", [x, indices], axis=axis % x.ndim)[0]
    assert_bits_equal(actual, expected, "gather_along_axis")


def test_gather_along_axis_rejects_mismatched_shape():
    with pytest.raises(ShapeError, match="except on axis 0"):
        ops.gather_along_axis(_data((3, 4)), np.zeros((2, 3), np.int32), axis=0)


# ---- pad, tile, crop, shape ----

PAD_MODES = [("constant", "constant"), ("reflect", "reflect"), ("replicate", "edge")]


@pytest.mark.parametrize("mode, onnx_mode", PAD_MODES)
@pytest.mark.parametrize("amounts", [[1, 2], [0, 2, 3, 1], [1, 0, 2, 2, 0, 1]])
def test_pad_matches_onnx(mode, onnx_mode, amounts):
    x = _data((2, 4, 5))
    count = len(amounts) // 2
    begins = [0] * (3 - count) + amounts[0::2]
    ends = [0] * (3 - count) + amounts[1::2]
    constant = np.array(1.5, np.float16)
    actual = ops.pad(x, np.array(amounts, np.int32), mode=mode, constant_val=constant)
    onnx_constant = constant if mode == "constant" else None
    expected = run_onnx_node("Pad", [x, _i64(begins + ends), onnx_constant], mode=onnx_mode)[0]
    assert_bits_equal(actual, expected, "pad")


def test_pad_examples():
    x = np.array([1, 2, 3], np.int32)
    assert_bits_equal(ops.pad(x, [2, 1], mode="reflect"), np.array([3, 2, 1, 2, 3, 2], np.int32))
    assert_bits_equal(
        ops.pad(x, [2, 1], mode="replicate"), np.array([1, 1, 1, 2, 3, 3], np.int32)
    )


@pytest.mark.parametrize(
    "amounts, mode, error, match",
    [
        ([1, 2, 3], "constant", ParameterShapeError, "even number"),
        ([0] * 8, "constant", ParameterShapeError, "at most"),
        ([1, -1], "constant", OpParameterError, "negative"),
        ([3, 0], "reflect", OpParameterError, "exceeds 2"),
        ([4, 0], "replicate", OpParameterError, "exceeds 3"),
        ([1, 1], "wrap", UnsupportedOpError, "'wrap'"),
    ],
)
def test_pad_rejects_invalid_amounts(amounts, mode, error, match):
    with pytest.raises(error, match=match):
        ops.pad(_data((2, 3)), amounts, mode=mode)


@pytest.mark.parametrize("reps", [[1, 1], [2, 3], [3, 1], [1, 0]])
def test_tile_matches_onnx(reps):
    x = _data((2, 3))
    actual = ops.tile(x, np.array(reps, np.int32))
    assert_bits_equal(actual, run_onnx_node("Tile", [x, _i64(reps)])[0], "tile")


def test_tile_rejects_reps_of_wrong_length():
    with pytest.raises(ParameterShapeError, match="reps"):
        ops.tile(_data((2, 3)), [2])


def test_crop_matches_onnx_slice():
    x = _data((1, 2, 7, 9))
    actual = ops.crop(x, np.array([1, 0], np.int32), np.array([2, 3], np.int32))
    expected = run_onnx_node("Slice", [x, _i64([1, 2]), _i64([7, 6]), _i64([2, 3])])[0]
    assert_bits_equal(actual, expected, "crop")


@pytest.mark.parametrize(
    "crop_height, crop_width, error, match",
    [
        ([4, 3], [0, 0], OpParameterError, "leave nothing"),
        ([1], [0, 0], ParameterShapeError, "crop_height"),
        ([-1, 0], [0, 0], OpParameterError, "below 0"),
    ],
)
def test_crop_rejects_invalid_amounts(crop_height, crop_width, error, match):
    with pytest.raises(error, match=match):
        ops.crop(_data((1, 7, 9)), crop_height, crop_width)


def test_shape_matches_onnx():
    x = _data((2, 1, 5))
    actual = ops.shape_(x)
    assert actual.dtype == np.int32
    np.testing.assert_array_equal(actual, run_onnx_node("Shape", [x])[0])
