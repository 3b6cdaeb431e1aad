"""The sparseblob function bodies decode bit for bit as sparseblob's decoders, in any ONNX runtime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from sparseblob import encoder  # noqa: E402
from sparseblob.encoder.onnx_functions import make_function  # noqa: E402
from sparseblob.runtime import onnx_run  # noqa: E402
from sparseblob.runtime.bitpack import pack_bits  # noqa: E402
from sparseblob.runtime.errors import EncodingError  # noqa: E402
from sparseblob.verify.compare import assert_bits_equal  # noqa: E402

CODES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int4": TensorProto.INT4, "uint4": TensorProto.UINT4}
SHAPE = (6, 8, 3)


def _weight(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(7).standard_normal(SHAPE).astype(dtype)


def _pruned(sparsity=0.5, dtype=np.float32) -> np.ndarray:
    weight = _weight(dtype)
    return encoder.apply_mask(weight, encoder.magnitude_mask(weight, sparsity))


def _store(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("int4", "uint4"):
        return pack_bits(values.reshape(-1), 4, signed=dtype == "int4")
    return values


def _offset(offset, dtype: str) -> np.ndarray:
    if offset is None:
        return np.zeros(0, np.int8 if dtype == "int8" else np.uint8)
    return _store(offset, dtype)


def _single_node_model(op_type, inputs, attributes, expected, opset):
    names = [f"in{k}" for k in range(len(inputs))]
    outputs = [f"out{k}" for k in range(len(expected))]
    node = helper.make_node(op_type, names, outputs, domain=onnx_run.DOMAIN, **attributes)
    graph = helper.make_graph(
        [node],
        "g",
        [],
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
            for name, value in zip(outputs, expected)
        ],
        initializer=[numpy_helper.from_array(np.asarray(value), name) for name, value in zip(names, inputs)],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(onnx_run.DOMAIN, 1)],
        functions=[make_function(op_type, opset)],
        ir_version=8,
    )


def _check_everywhere(op_type, inputs, attributes, opset):
    expected = onnx_run.decode_node(op_type, inputs, attributes)
    model = _single_node_model(op_type, inputs, attributes, expected, opset)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    from_ort = session.run(None, {})
    from_reference = ReferenceEvaluator(model).run(None, {})
    for index, value in enumerate(expected):
        assert_bits_equal(from_ort[index], value, f"onnxruntime output {index}")
        assert_bits_equal(from_reference[index], value, f"reference output {index}")


def _sparse_case(dtype, sparsity):
    pruned = _pruned(sparsity)
    if dtype in (np.int8, np.uint8):
        pruned = np.round(pruned * 20).astype(dtype)
    params = encoder.encode_sparse(pruned.astype(dtype))
    return [params.nonzero_data, pack_bits(params.mask.reshape(-1), 1), np.array(SHAPE, np.int64)], {}


def _lut_dense_case(nbits, group_size):
    params = encoder.palettize_weight(_weight(), nbits, mode="uniform", group_size=group_size)
    return [pack_bits(params.indices.reshape(-1), nbits), params.lut, np.array(SHAPE, np.int64)], {}


def _lut_sparse_case(nbits, group_size):
    params = encoder.palettize_nonzero(_pruned(), nbits, mode="uniform", group_size=group_size)
    inputs = [
        pack_bits(params.indices_mask.reshape(-1), 1),
        pack_bits(params.indices_nonzero_data, nbits),
        params.lut,
        np.array(SHAPE, np.int64),
    ]
    return inputs, {}


def _shift_scale_case(dtype, mode, scale_dtype):
    params = encoder.quantize_weight(
        _weight(), dtype, mode=mode, granularity="per_block", block_size=4, scale_dtype=scale_dtype
    )
    inputs = [_store(params.data, dtype), params.scale, _offset(params.offset, dtype), np.array(SHAPE, np.int64)]
    return inputs, {"data_dtype": CODES[dtype]}


def _sparse_shift_scale_case(dtype, mode, scale_dtype):
    params = encoder.quantize_nonzero(_pruned(), dtype, mode=mode, granularity="per_channel", scale_dtype=scale_dtype)
    inputs = [
        pack_bits(params.data_mask.reshape(-1), 1),
        _store(params.nonzero_data, dtype),
        params.scale,
        _offset(params.offset, dtype),
        np.array(SHAPE, np.int64),
    ]
    return inputs, {"data_dtype": CODES[dtype]}


OPSETS = (11, 15)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int8, np.uint8])
def test_sparse_to_dense_body_matches_decoder(dtype, sparsity, opset):
    inputs, attributes = _sparse_case(dtype, sparsity)
    _check_everywhere(onnx_run.SPARSE_TO_DENSE, inputs, attributes, opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("group_size", [None, 2])
@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_lut_to_dense_body_matches_decoder(nbits, group_size, opset):
    inputs, attributes = _lut_dense_case(nbits, group_size)
    _check_everywhere(onnx_run.LUT_TO_DENSE, inputs, attributes, opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("group_size", [None, 3])
@pytest.mark.parametrize("nbits", [1, 2, 3, 4, 6, 8])
def test_lut_to_sparse_body_matches_decoder(nbits, group_size, opset):
    inputs, attributes = _lut_sparse_case(nbits, group_size)
    _check_everywhere(onnx_run.LUT_TO_SPARSE, inputs, attributes, opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("mode", ["symmetric", "affine"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "uint4"])
def test_shift_scale_body_matches_decoder(dtype, mode, opset):
    inputs, attributes = _shift_scale_case(dtype, mode, "fp32")
    _check_everywhere(onnx_run.BLOCKWISE_SHIFT_SCALE, inputs, attributes, opset)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("mode", ["symmetric", "affine"])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int4", "uint4"])
def test_sparse_shift_scale_body_matches_decoder(dtype, mode, opset):
    inputs, attributes = _sparse_shift_scale_case(dtype, mode, "fp32")
    _check_everywhere(onnx_run.SPARSE_BLOCKWISE_SHIFT_SCALE, inputs, attributes, opset)


@pytest.mark.parametrize("opset", [15, 18])
@pytest.mark.parametrize("dtype", ["int8", "uint4"])
def test_fp16_scales_round_once_with_castlike(dtype, opset):
    inputs, attributes = _shift_scale_case(dtype, "affine", "fp16")
    _check_everywhere(onnx_run.BLOCKWISE_SHIFT_SCALE, inputs, attributes, opset)
    inputs, attributes = _sparse_shift_scale_case(dtype, "symmetric", "fp16")
    _check_everywhere(onnx_run.SPARSE_BLOCKWISE_SHIFT_SCALE, inputs, attributes, opset)


@pytest.mark.parametrize(
    "op_type, case",
    [
        (onnx_run.SPARSE_TO_DENSE, lambda: _sparse_case(np.float32, 0.5)),
        (onnx_run.LUT_TO_SPARSE, lambda: _lut_sparse_case(3, 3)),
        (onnx_run.SPARSE_BLOCKWISE_SHIFT_SCALE, lambda: _sparse_shift_scale_case("int4", "affine", "fp32")),
    ],
)
@pytest.mark.parametrize("opset", [12, 13, 18, 21])
def test_bodies_hold_at_later_opsets(op_type, case, opset):
    inputs, attributes = case()
    _check_everywhere(op_type, inputs, attributes, opset)


@pytest.mark.parametrize("mode, dtype", [("symmetric", "int8"), ("affine", "int8"), ("symmetric", "uint8")])
def test_zero_and_tiny_channels_decode_finite(mode, dtype):
    weight = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float16)
    weight[0] = 0
    weight[1] = np.float16(1e-6) * np.sign(weight[1])
    params = encoder.quantize_weight(weight, dtype, mode=mode, granularity="per_channel")
    inputs = [params.data, params.scale, _offset(params.offset, dtype), np.array(weight.shape, np.int64)]
    _check_everywhere(onnx_run.BLOCKWISE_SHIFT_SCALE, inputs, {"data_dtype": CODES[dtype]}, 15)
    (decoded,) = onnx_run.decode_node(onnx_run.BLOCKWISE_SHIFT_SCALE, inputs, {"data_dtype": CODES[dtype]})
    assert np.isfinite(decoded).all()
    assert not decoded[0].any()
    step = params.scale[1, 0].astype(np.float32)
    assert np.abs(decoded[1].astype(np.float32) - weight[1].astype(np.float32)).max() <= step / 2


def test_function_imports_the_model_opset():
    function = make_function(onnx_run.SPARSE_TO_DENSE, 17)
    assert [(entry.domain, entry.version) for entry in function.opset_import] == [("", 17)]


def test_function_declares_signature():
    function = make_function(onnx_run.SPARSE_BLOCKWISE_SHIFT_SCALE, 15)
    assert list(function.input) == ["data_mask", "nonzero_data", "scale", "offset", "shape"]
    assert list(function.output) == ["mask", "values"]
    assert list(function.attribute) == ["data_dtype"]


def test_opset_below_eleven_is_rejected():
    with pytest.raises(EncodingError, match="opset 10 is below 11"):
        make_function(onnx_run.SPARSE_TO_DENSE, 10)


def test_unknown_op_type_is_rejected():
    with pytest.raises(EncodingError, match="not a sparseblob op"):
        make_function("constexpr_cast", 15)
