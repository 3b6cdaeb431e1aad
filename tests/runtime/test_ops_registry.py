"""run_op's contract: lookup, parameter checks, compute dtype, output dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime.errors import (
    OpParameterError,
    ShapeError,
    SparseblobError,
    UnsupportedOpError,
)
from sparseblob.runtime.ops.registry import REGISTRY, SUPPORTED_OPS, get_op, run_op
from sparseblob.verify.compare import assert_bits_equal

RNG = np.random.default_rng(0)
F16 = RNG.uniform(0.1, 0.9, (1, 2, 4, 4)).astype(np.float16)
VEC = RNG.uniform(0.1, 0.9, (2, 3)).astype(np.float16)
I32 = np.array([[1, 2, 3], [4, 5, 6]], np.int32)


def _i(value):
    return np.array(value, np.int32)


# One small, valid call per supported op, as the interpreter would make it.
OP_INPUTS = {
    "abs": {"x": VEC},
    "acos": {"x": VEC},
    "add": {"x": VEC, "y": VEC},
    "asin": {"x": VEC},
    "atan": {"x": VEC},
    "atanh": {"x": VEC},
    "avg_pool": {"x": F16, "kernel_sizes": _i([2, 2]), "pad_type": "valid"},
    "batch_norm": {"x": F16, "mean": VEC[0, :2], "variance": VEC[1, :2]},
    "cast": {"x": VEC, "dtype": "int32"},
    "ceil": {"x": VEC},
    "clip": {"x": VEC, "alpha": np.float16(0.2), "beta": np.float16(0.5)},
    "concat": {"values": [VEC, VEC], "axis": _i(0), "interleave": np.array(False)},
    "conv": {"x": F16, "weight": F16[:, :, :2, :2], "pad_type": "same"},
    "conv_transpose": {"x": F16, "weight": F16[0][:, None, :2, :2]},
    "cos": {"x": VEC},
    "cosh": {"x": VEC},
    "crop": {"x": F16, "crop_height": _i([1, 0]), "crop_width": _i([0, 1])},
    "elu": {"x": VEC, "alpha": np.float16(1.0)},
    "equal": {"x": VEC, "y": VEC},
    "erf": {"x": VEC},
    "exp": {"x": VEC},
    "exp2": {"x": VEC},
    "expand_dims": {"x": VEC, "axes": _i([0])},
    "floor": {"x": VEC},
    "floor_div": {"x": I32, "y": _i(2)},
    "gather": {"x": VEC, "indices": _i([1, 0]), "axis": _i(0), "batch_dims": _i(0)},
    "gather_along_axis": {"x": VEC, "indices": _i([[0, 1, 0]]), "axis": _i(0)},
    "gelu": {"x": VEC, "mode": "TANH_APPROXIMATION"},
    "greater": {"x": VEC, "y": np.float16(0.5)},
    "greater_equal": {"x": VEC, "y": np.float16(0.5)},
    "identity": {"x": VEC},
    "instance_norm": {"x": F16},
    "inverse": {"x": VEC},
    "l2_norm": {"x": F16},
    "l2_pool": {"x": F16, "kernel_sizes": _i([2, 2]), "pad_type": "valid"},
    "layer_norm": {"x": VEC, "axes": _i([-1])},
    "leaky_relu": {"x": VEC, "alpha": np.float32(0.1)},
    "less": {"x": VEC, "y": np.float16(0.5)},
    "less_equal": {"x": VEC, "y": np.float16(0.5)},
    "linear": {"x": VEC, "weight": VEC},
    "log": {"x": VEC},
    "logical_and": {"x": I32 > 2, "y": I32 < 5},
    "logical_not": {"x": I32 > 2},
    "logical_or": {"x": I32 > 2, "y": I32 < 5},
    "logical_xor": {"x": I32 > 2, "y": I32 < 5},
    "matmul": {"x": VEC, "y": VEC, "transpose_y": np.array(True)},
    "max_pool": {"x": F16, "kernel_sizes": _i([3, 3]), "pad_type": "same"},
    "maximum": {"x": VEC, "y": VEC[::-1]},
    "minimum": {"x": VEC, "y": VEC[::-1]},
    "mod": {"x": I32, "y": _i(4)},
    "mul": {"x": VEC, "y": np.float16(2.0)},
    "not_equal": {"x": VEC, "y": VEC[::-1]},
    "pad": {"x": VEC, "pad": _i([1, 1]), "mode": "reflect"},
    "pow": {"x": VEC, "y": np.float16(2.0)},
    "prelu": {"x": F16, "alpha": VEC[0, :2]},
    "real_div": {"x": VEC, "y": VEC[::-1]},
    "reduce_argmax": {"x": VEC, "axis": _i(-1)},
    "reduce_argmin": {"x": VEC, "axis": _i(-1)},
    "reduce_l1_norm": {"x": VEC, "axes": _i([-1])},
    "reduce_l2_norm": {"x": VEC, "axes": _i([-1])},
    "reduce_log_sum": {"x": VEC},
    "reduce_log_sum_exp": {"x": VEC},
    "reduce_max": {"x": VEC, "axes": _i([0]), "keep_dims": np.array(True)},
    "reduce_mean": {"x": F16, "axes": _i([-2, -1]), "keep_dims": np.array(True)},
    "reduce_min": {"x": VEC},
    "reduce_prod": {"x": VEC},
    "reduce_sum": {"x": VEC},
    "reduce_sum_square": {"x": VEC},
    "relu": {"x": VEC},
    "relu6": {"x": VEC},
    "reshape": {"x": VEC, "shape": _i([3, -1])},
    "rsqrt": {"x": VEC, "epsilon": np.float32(1e-6)},
    "scaled_dot_product_attention": {"query": F16, "key": F16, "value": F16},
    "select": {"cond": I32 > 3, "a": VEC, "b": np.float16(0.0)},
    "shape": {"x": F16},
    "sigmoid": {"x": VEC},
    "sigmoid_hard": {"x": VEC, "alpha": np.float32(1 / 6), "beta": np.float32(0.5)},
    "sign": {"x": VEC},
    "silu": {"x": VEC},
    "sin": {"x": VEC},
    "sinh": {"x": VEC},
    "slice_by_index": {"x": VEC, "begin": _i([0, 1]), "end": _i([1, 3])},
    "slice_by_size": {"x": VEC, "begin": _i([0, 1]), "size": _i([-1, 2])},
    "softmax": {"x": VEC, "axis": _i(-1)},
    "softplus": {"x": VEC},
    "softsign": {"x": VEC},
    "split": {"x": VEC, "axis": _i(-1), "num_splits": _i(3)},
    "sqrt": {"x": VEC},
    "square": {"x": VEC},
    "squeeze": {"x": F16[:1, :1]},
    "stack": {"values": [VEC, VEC], "axis": _i(1)},
    "sub": {"x": VEC, "y": VEC},
    "tan": {"x": VEC},
    "tanh": {"x": VEC},
    "threshold": {"x": VEC, "alpha": np.float16(0.5)},
    "thresholded_relu": {"x": VEC, "alpha": np.float32(0.5)},
    "tile": {"x": VEC, "reps": _i([2, 1])},
    "transpose": {"x": F16, "perm": _i([0, 2, -3, -1])},
    "upsample_bilinear": {"x": F16, "scale_factor_height": np.float32(1.5)},
    "upsample_nearest_neighbor": {"x": F16, "scale_factor_width": _i(2)},
}

# The op types the runtime must support, from the MIL ops seen in converted models.
REQUIRED = {
    "linear", "matmul", "conv", "conv_transpose", "max_pool", "avg_pool", "relu", "relu6",
    "clip", "leaky_relu", "sigmoid", "sigmoid_hard", "tanh", "silu", "gelu", "softmax",
    "layer_norm", "batch_norm", "instance_norm", "add", "sub", "mul", "real_div", "pow",
    "sqrt", "rsqrt", "exp", "abs", "square", "reduce_mean", "reduce_sum", "reduce_max",
    "reduce_argmax", "reshape", "transpose", "squeeze", "expand_dims", "concat", "split",
    "slice_by_index", "gather", "pad", "tile", "cast", "scaled_dot_product_attention",
    "upsample_nearest_neighbor", "upsample_bilinear", "crop", "select", "greater",
    "greater_equal", "less", "equal", "thresholded_relu",
}  # fmt: skip


def test_supported_ops_is_sorted_registry():
    assert SUPPORTED_OPS == tuple(sorted(REGISTRY))
    assert isinstance(SUPPORTED_OPS, tuple)


def test_supported_ops_cover_ops_of_converted_models():
    assert REQUIRED - set(SUPPORTED_OPS) == set()


def test_every_supported_op_has_a_registry_call():
    assert set(OP_INPUTS) == set(SUPPORTED_OPS)


def _widen(value):
    """fp16 arrays (and lists of them) as fp32, which is what run_op passes to the function."""
    if isinstance(value, list):
        return [_widen(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float16:
        return np.asarray(value, np.float32)
    return value


@pytest.mark.parametrize("op_type", sorted(OP_INPUTS))
def test_run_op_calls_the_registered_function(op_type):
    inputs = OP_INPUTS[op_type]
    outputs = run_op(op_type, inputs, name=f"{op_type}_0")
    spec = get_op(op_type)

    direct = spec.function(**{key: _widen(value) for key, value in inputs.items()})
    direct = direct if isinstance(direct, tuple) else (direct,)

    assert len(outputs) == len(direct)
    for output, reference in zip(outputs, direct):
        reference = np.asarray(reference)
        if reference.dtype == np.float32:
            reference = reference.astype(np.float16)  # fp16 program: rounded once at the end
        assert_bits_equal(output, reference, op_type)


def test_unknown_op_type_names_op_and_supported_set():
    with pytest.raises(UnsupportedOpError) as info:
        run_op("einsum", {"x": VEC}, name="einsum_3")
    message = str(info.value)
    assert "'einsum'" in message
    assert "'einsum_3'" in message
    assert "conv_transpose" in message


def test_unknown_parameter_is_rejected():
    with pytest.raises(UnsupportedOpError, match=r"unknown parameter\(s\) \['beta'\]"):
        run_op("relu", {"x": VEC, "beta": np.float16(1)}, name="relu_1")


def test_missing_required_parameter_is_rejected():
    with pytest.raises(OpParameterError, match=r"missing required parameter\(s\) \['weight'\]"):
        run_op("conv", {"x": F16}, name="conv_2")


def test_none_input_takes_the_default():
    (y,) = run_op("softmax", {"x": VEC, "axis": None}, name="softmax_0")
    (expected,) = run_op("softmax", {"x": VEC, "axis": _i(-1)}, name="softmax_1")
    assert_bits_equal(y, expected)


def test_op_errors_carry_the_op_name():
    with pytest.raises(ShapeError, match=r"^op 'conv_9': conv: groups=3"):
        run_op("conv", {"x": F16, "weight": F16, "groups": _i(3)}, name="conv_9")


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        run_op("transpose", {"x": VEC, "perm": _i([0, 0])}, name="transpose_0")
    assert issubclass(UnsupportedOpError, SparseblobError)


def test_fp16_inputs_are_accumulated_in_fp32():
    # In fp16, 2048 + 1 rounds back to 2048; in fp32 the sum 2050 is exact and fits fp16.
    x = np.array([[2048, 1, 1]], np.float16)
    weight = np.ones((1, 3), np.float16)
    (y,) = run_op("linear", {"x": x, "weight": weight}, name="linear_0")
    assert y.dtype == np.float16
    assert y[0, 0] == 2050


def test_compute_dtype_fp64_is_a_reference_mode():
    x = np.full(3, 1 / 3, np.float64)
    (y,) = run_op(
        "reduce_sum", {"x": x}, name="sum_0", compute_dtype=np.float64,
        output_dtypes=[np.float64],
    )
    assert y.dtype == np.float64
    assert y == 1 / 3 + 1 / 3 + 1 / 3
    (y32,) = run_op("reduce_sum", {"x": x}, name="sum_1", output_dtypes=[np.float64])
    assert y32 == np.float64(np.float32(1 / 3) * 3)


def test_output_dtypes_convert_each_output():
    outputs = run_op(
        "split",
        {"x": VEC, "axis": _i(0), "num_splits": _i(2)},
        name="split_0",
        output_dtypes=[np.float32, np.int32],
    )
    assert outputs[0].dtype == np.float32
    assert outputs[1].dtype == np.int32


def test_output_count_must_match_declared_dtypes():
    with pytest.raises(ShapeError, match=r"produced 2 output\(s\) but 3"):
        run_op(
            "split",
            {"x": VEC, "axis": _i(0), "num_splits": _i(2)},
            name="split_1",
            output_dtypes=[np.float16] * 3,
        )


def test_int_compute_dtype_is_rejected():
    with pytest.raises(OpParameterError, match="not a float dtype"):
        run_op("relu", {"x": VEC}, name="relu_2", compute_dtype=np.int32)


def test_run_op_leaves_inputs_unchanged():
    x = VEC.copy()
    run_op("relu", {"x": x}, name="relu_3")
    run_op("pad", {"x": x, "pad": _i([1, 1])}, name="pad_0")
    assert_bits_equal(x, VEC)


def test_integer_outputs_keep_their_dtype():
    (mask,) = run_op("greater", {"x": VEC, "y": np.float16(0.5)}, name="greater_0")
    (count,) = run_op("add", {"x": I32, "y": _i(50)}, name="add_0")
    assert mask.dtype == np.bool_
    assert count.dtype == np.int32
