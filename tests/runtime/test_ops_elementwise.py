"""Elementwise ops, select and cast against onnx.reference and Python's math module."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import helper

from sparseblob.runtime.errors import OpParameterError, ShapeError, UnsupportedOpError
from sparseblob.runtime.ops import elementwise
from sparseblob.runtime.ops.registry import run_op
from sparseblob.verify.compare import assert_close
from tests.runtime.onnx_node import run_onnx_node

RNG = np.random.default_rng(0)
X = (RNG.standard_normal((4, 5)) * 3).astype(np.float32)
UNIT = RNG.uniform(-0.99, 0.99, (4, 5)).astype(np.float32)
POSITIVE = RNG.uniform(0.01, 9, (4, 5)).astype(np.float32)

# (MIL op function name, input, ONNX op)
UNARY_ONNX = [
    ("abs_", X, "Abs"),
    ("acos", UNIT, "Acos"),
    ("asin", UNIT, "Asin"),
    ("atan", X, "Atan"),
    ("atanh", UNIT, "Atanh"),
    ("ceil", X, "Ceil"),
    ("cos", X, "Cos"),
    ("cosh", X, "Cosh"),
    ("erf", X, "Erf"),
    ("exp", X, "Exp"),
    ("floor", X, "Floor"),
    ("sign", X, "Sign"),
    ("sin", X, "Sin"),
    ("sinh", X, "Sinh"),
    ("sqrt", POSITIVE, "Sqrt"),
    ("tan", UNIT, "Tan"),
    ("tanh", X, "Tanh"),
    ("identity", X, "Identity"),
]


@pytest.mark.parametrize("op, x, onnx_op", UNARY_ONNX, ids=[c[0] for c in UNARY_ONNX])
def test_unary_matches_onnx(op, x, onnx_op):
    actual = getattr(elementwise, op)(x)
    expected = run_onnx_node(onnx_op, [x])[0]
    assert actual.dtype == x.dtype
    assert_close(actual, expected, name=op)


# (MIL op function name, parameters, input, scalar reference from the math module)
UNARY_MATH = [
    ("erf", {}, X, math.erf),
    ("exp2", {}, X, lambda v: 2.0**v),
    ("square", {}, X, lambda v: v * v),
    ("rsqrt", {}, POSITIVE, lambda v: 1 / math.sqrt(v + 1e-12)),
    ("rsqrt", {"epsilon": 0.5}, POSITIVE, lambda v: 1 / math.sqrt(v + 0.5)),
    ("inverse", {}, POSITIVE, lambda v: 1 / (v + 1e-4)),
    ("inverse", {"epsilon": 2.0}, POSITIVE, lambda v: 1 / (v + 2.0)),
    ("log", {}, POSITIVE, lambda v: math.log(v)),
    ("log", {"epsilon": 1.0}, POSITIVE, lambda v: math.log(v + 1.0)),
    ("threshold", {"alpha": 0.5}, X, lambda v: max(v, 0.5)),
]


@pytest.mark.parametrize("op, params, x, scalar", UNARY_MATH, ids=[c[0] for c in UNARY_MATH])
def test_unary_matches_math_module(op, params, x, scalar):
    expected = np.vectorize(scalar)(x.astype(np.float64)).astype(np.float32)
    assert_close(getattr(elementwise, op)(x, **params), expected, name=op)


def test_rsqrt_fp32_epsilon_on_fp16_x():
    x = np.array([0.0, 4.0, 1e-3], np.float16)
    (y,) = run_op("rsqrt", {"x": x, "epsilon": np.array(1e-6, np.float32)}, name="rsqrt_0")
    expected = (1 / np.sqrt(x.astype(np.float64) + 1e-6)).astype(np.float16)
    assert y.dtype == np.float16
    assert_close(y, expected)


def test_unary_float_edge_cases_give_ieee_results():
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(elementwise.sqrt(np.array([-1.0, 0.0])), [np.nan, 0.0])
        np.testing.assert_array_equal(elementwise.log(np.array([0.0]), epsilon=0.0), [-np.inf])
        np.testing.assert_array_equal(elementwise.rsqrt(np.array([0.0]), epsilon=0.0), [np.inf])


def test_integer_unary_ops_stay_exact():
    x = np.array([-3, 0, 5], np.int32)
    np.testing.assert_array_equal(elementwise.abs_(x), np.array([3, 0, 5], np.int32))
    np.testing.assert_array_equal(elementwise.square(x), np.array([9, 0, 25], np.int32))
    np.testing.assert_array_equal(elementwise.sign(x), np.array([-1, 0, 1], np.int32))
    np.testing.assert_array_equal(
        elementwise.exp2(np.array([0, 3, 10], np.int32)), np.array([1, 8, 1024], np.int32)
    )


# Broadcasting pairs: (x shape, y shape).
SHAPES = [((4, 5), (4, 5)), ((4, 5), (5,)), ((3, 1, 5), (4, 1)), ((4, 5), ())]

# (MIL op, ONNX op, ONNX attributes)
BINARY_ONNX = [
    ("add", "Add", {}),
    ("sub", "Sub", {}),
    ("mul", "Mul", {}),
    ("real_div", "Div", {}),
    ("maximum", "Max", {}),
    ("minimum", "Min", {}),
    ("mod", "Mod", {"fmod": 0}),
    ("equal", "Equal", {}),
    ("greater", "Greater", {}),
    ("greater_equal", "GreaterOrEqual", {}),
    ("less", "Less", {}),
    ("less_equal", "LessOrEqual", {}),
]


@pytest.mark.parametrize("x_shape, y_shape", SHAPES)
@pytest.mark.parametrize("op, onnx_op, attributes", BINARY_ONNX, ids=[c[0] for c in BINARY_ONNX])
def test_binary_matches_onnx(op, onnx_op, attributes, x_shape, y_shape):
    rng = np.random.default_rng(1)
    # Small integers make ties, so comparisons and maximum see equal operands too.
    x = rng.integers(-4, 5, x_shape).astype(np.float32)
    y = rng.integers(1, 5, y_shape).astype(np.float32) * rng.choice([-1, 1], y_shape)
    y = y.astype(np.float32)
    actual = getattr(elementwise, op)(x, y)
    expected = run_onnx_node(onnx_op, [x, y], **attributes)[0]
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert_close(actual, expected, name=op)


def test_pow_matches_onnx():
    x, y = POSITIVE, (X / 3).astype(np.float32)
    assert_close(elementwise.pow_(x, y), run_onnx_node("Pow", [x, y])[0])


def test_not_equal_is_negated_equal():
    x = np.array([1.0, 2.0, np.nan], np.float32)
    y = np.array([1.0, 3.0, np.nan], np.float32)
    np.testing.assert_array_equal(elementwise.not_equal(x, y), [False, True, True])


def test_floor_div_rounds_toward_negative_infinity():
    x = np.array([7, -7, 7, -7], np.int32)
    y = np.array([2, 2, -2, -2], np.int32)
    expected = np.array([a // b for a, b in zip(x.tolist(), y.tolist())], np.int32)
    np.testing.assert_array_equal(elementwise.floor_div(x, y), expected)
    np.testing.assert_array_equal(
        elementwise.floor_div(x.astype(np.float32), y.astype(np.float32)), expected
    )


def test_mod_takes_sign_of_divisor():
    x = np.array([7, -7, 7, -7], np.int32)
    y = np.array([3, 3, -3, -3], np.int32)
    expected = np.array([a % b for a, b in zip(x.tolist(), y.tolist())], np.int32)
    np.testing.assert_array_equal(elementwise.mod(x, y), expected)


def test_int32_arithmetic_is_exact():
    x = np.array([-50, 0, 17], np.int32)
    np.testing.assert_array_equal(
        elementwise.add(x, np.int32(50)), np.array([0, 50, 67], np.int32)
    )
    assert elementwise.add(x, np.int32(50)).dtype == np.int32
    np.testing.assert_array_equal(
        elementwise.real_div(np.array([7, -7], np.int32), np.array([2, 2], np.int32)),
        np.array([3, -3], np.int32),
    )
    np.testing.assert_array_equal(
        elementwise.pow_(np.array([2, 3], np.int32), np.array([10, 3], np.int32)),
        np.array([1024, 27], np.int32),
    )


@pytest.mark.parametrize("op", ["real_div", "floor_div", "mod"])
def test_integer_division_by_zero_is_rejected(op):
    with pytest.raises(OpParameterError, match="division by zero"):
        getattr(elementwise, op)(np.array([1, 2], np.int32), np.array([1, 0], np.int32))


def test_integer_pow_with_negative_exponent_is_rejected():
    with pytest.raises(OpParameterError, match="negative"):
        elementwise.pow_(np.array([2], np.int32), np.array([-1], np.int32))


def test_float_division_by_zero_gives_infinity():
    with np.errstate(all="raise"):
        y = elementwise.real_div(np.array([1.0, -1.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(y, [np.inf, -np.inf, np.nan])


def test_binary_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ShapeError, match=r"x \[2, 3\], y \[4\]"):
        elementwise.add(np.zeros((2, 3)), np.zeros(4))


@pytest.mark.parametrize(
    "op, onnx_op", [("logical_and", "And"), ("logical_or", "Or"), ("logical_xor", "Xor")]
)
def test_logical_matches_onnx(op, onnx_op):
    x = np.array([[True, False], [True, True]])
    y = np.array([True, False])
    expected = run_onnx_node(onnx_op, [x, y])[0]
    np.testing.assert_array_equal(getattr(elementwise, op)(x, y), expected)


def test_logical_not_matches_onnx():
    x = np.array([True, False, True])
    np.testing.assert_array_equal(elementwise.logical_not(x), run_onnx_node("Not", [x])[0])


def test_select_matches_onnx_where_bit_for_bit():
    rng = np.random.default_rng(2)
    cond = rng.random((3, 1, 5)) > 0.5
    a = rng.standard_normal((4, 5)).astype(np.float16)
    b = np.float16(-0.0)
    actual = elementwise.select(cond, a, np.asarray(b))
    expected = run_onnx_node("Where", [cond, a, np.asarray(b)])[0]
    assert actual.dtype == np.float16
    np.testing.assert_array_equal(actual.view(np.uint16), expected.view(np.uint16))


def test_select_fixes_negative_indices():
    # The converter's Embedding pattern: select(idx >= 0, idx, idx + 50).
    idx = np.array([3, -1, 0, -50], np.int32)
    fixed = elementwise.select(elementwise.greater_equal(idx, np.int32(0)), idx, idx + 50)
    np.testing.assert_array_equal(fixed, np.array([3, 49, 0, 0], np.int32))


def test_select_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ShapeError, match="cond"):
        elementwise.select(np.ones(3, bool), np.ones(4), np.ones(4))


# (dtype string, numpy dtype)
CAST_TARGETS = [
    ("fp16", np.float16),
    ("fp32", np.float32),
    ("fp64", np.float64),
    ("int8", np.int8),
    ("uint8", np.uint8),
    ("int16", np.int16),
    ("uint16", np.uint16),
    ("int32", np.int32),
    ("int64", np.int64),
    ("bool", np.bool_),
]


@pytest.mark.parametrize("name, dtype", CAST_TARGETS)
def test_cast_of_exact_values_matches_onnx(name, dtype):
    x = np.array([0.0, 1.0, 2.0, 100.0, 7.0], np.float32)
    actual = elementwise.cast(x, name)
    expected = run_onnx_node("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))[0]
    assert actual.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(actual, expected)


def test_cast_float_to_int_truncates_and_saturates():
    x = np.array([1.7, -1.7, 3e9, -3e9, np.nan, np.inf, -np.inf, 2.5], np.float32)
    expected = np.array(
        [1, -1, 2**31 - 1, -(2**31), 0, 2**31 - 1, -(2**31), 2], np.int32
    )
    np.testing.assert_array_equal(elementwise.cast(x, "int32"), expected)
    np.testing.assert_array_equal(
        elementwise.cast(np.array([-5.0, 300.0, 254.9], np.float32), "uint8"),
        np.array([0, 255, 254], np.uint8),
    )


def test_cast_fp32_to_fp16_rounds_to_nearest_even():
    # 1 + 2**-11 lies halfway between fp16 1.0 and 1.0009765625; ties go to the even 1.0.
    x = np.array([1 + 2**-11, 1 + 3 * 2**-11, 70000.0], np.float32)
    expected = np.array([1.0, 1 + 2**-9, np.inf], np.float16)
    np.testing.assert_array_equal(elementwise.cast(x, "fp16"), expected)


def test_cast_to_bool_is_nonzero():
    x = np.array([0.0, -0.0, 0.5, np.nan], np.float32)
    np.testing.assert_array_equal(elementwise.cast(x, "bool"), [False, False, True, True])


def test_cast_int16_round_trip_is_exact():
    idx = np.array([-7, 0, 32767], np.int32)
    narrowed = elementwise.cast(idx, "int16")
    assert narrowed.dtype == np.int16
    np.testing.assert_array_equal(elementwise.cast(narrowed, "int32"), idx)


def test_cast_through_run_op_keeps_target_dtype():
    (y,) = run_op("cast", {"x": np.array([1.5], np.float32), "dtype": "fp16"}, name="cast_0")
    assert y.dtype == np.float16


def test_cast_rejects_unknown_dtype():
    with pytest.raises(UnsupportedOpError, match="'int4'"):
        elementwise.cast(np.zeros(2), "int4")
