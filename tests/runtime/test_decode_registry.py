"""decode_op: dispatch by op type and opset, parameter checks, and outputs of every op."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.runtime import bitpack, decode
from sparseblob.runtime.decode import SUPPORTED_OPS, decode_op, opset_family
from sparseblob.runtime.errors import (
    PackageError,
    ParameterShapeError,
    SparseblobError,
    UnknownDtypeError,
    UnsupportedOpError,
)
from sparseblob.verify.compare import assert_bits_equal

MASK = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.uint8)
PACKED_MASK = np.packbits(MASK.reshape(-1), bitorder="little")
VALUES = np.array([1.5, -2.0, 3.25, 0.5], dtype=np.float16)
INDICES = np.array([[0, 3, 1], [2, 2, 0]], dtype=np.uint8)
LUT = np.array([0.5, 1.0, 2.0, 4.0], dtype=np.float16)
SCALE = np.array([[0.5], [2.0]], dtype=np.float16)
DATA = np.array([[-8, 7, 1], [0, 3, -2]], dtype=np.int8)

# (op type, opset, params, expected outputs computed by the decoder functions directly).
CASES = [
    (
        "constexpr_sparse_to_dense",
        "CoreML6",
        {"nonzero_data": VALUES, "mask": PACKED_MASK, "shape": np.array([2, 3], np.uint32)},
        (decode.sparse_to_dense_ios16(VALUES, PACKED_MASK, [2, 3]),),
    ),
    (
        "constexpr_sparse_to_dense",
        "CoreML8",
        {"nonzero_data": VALUES, "mask": MASK},
        (decode.sparse_to_dense_ios18(VALUES, MASK),),
    ),
    (
        "constexpr_lut_to_dense",
        "CoreML7",
        {"indices": bitpack.pack_bits(INDICES, 2), "lut": LUT, "shape": np.array([2, 3], np.uint32)},
        (LUT[INDICES],),
    ),
    (
        "constexpr_lut_to_dense",
        "CoreML8",
        {"indices": INDICES, "lut": LUT.reshape(1, 1, 4, 1)},
        (LUT[INDICES],),
    ),
    (
        "constexpr_lut_to_sparse",
        "CoreML9",
        {"indices_mask": MASK, "indices_nonzero_data": np.array([3, 1, 2, 0], np.uint8), "lut": LUT.reshape(1, 1, 4, 1)},
        (MASK, LUT[[3, 1, 2, 0]]),
    ),
    (
        "constexpr_affine_dequantize",
        "CoreML5",
        {"quantized_data": DATA, "zero_point": np.int8(1), "scale": SCALE.reshape(2), "axis": np.int32(0)},
        (decode.affine_dequantize(DATA, np.int8(1), SCALE.reshape(2), 0),),
    ),
    (
        "constexpr_affine_dequantize",
        "CoreML8",
        {"quantized_data": DATA, "zero_point": np.int8(1), "scale": SCALE.reshape(2), "axis": 0},
        (decode.affine_dequantize(DATA, np.int8(1), SCALE.reshape(2), 0),),
    ),
    (
        "constexpr_blockwise_shift_scale",
        "CoreML8",
        {"data": DATA, "scale": SCALE, "offset": np.ones((2, 1), np.int8)},
        ((DATA.astype(np.float16) - 1) * SCALE,),
    ),
    (
        "constexpr_sparse_blockwise_shift_scale",
        "CoreML8",
        {"data_mask": MASK, "nonzero_data": np.array([-8, 1, 3, -2], np.int8), "scale": SCALE},
        (MASK, np.array([-4.0, 0.5, 6.0, -4.0], np.float16)),
    ),
    (
        "constexpr_cast",
        "CoreML6",
        {"source_val": VALUES, "output_dtype": "fp32"},
        (VALUES.astype(np.float32),),
    ),
    (
        "constexpr_cast",
        "CoreML8",
        {"source_val": VALUES, "output_dtype": np.array("fp32")},
        (VALUES.astype(np.float32),),
    ),
]


@pytest.mark.parametrize("op_type, opset, params, expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_decode_op_returns_every_output(op_type, opset, params, expected):
    outputs = decode_op(op_type, opset, params, name="w")

    assert isinstance(outputs, tuple)
    assert len(outputs) == len(expected)
    for index, (output, wanted) in enumerate(zip(outputs, expected)):
        assert_bits_equal(output, wanted, f"output {index}")


@pytest.mark.parametrize(
    "opset, family",
    [("CoreML5", "iOS16"), ("CoreML6", "iOS16"), ("CoreML7", "iOS16"), ("CoreML8", "iOS18"), ("CoreML9", "iOS18"), ("CoreML12", "iOS18")],
)
def test_opset_family(opset, family):
    assert opset_family(opset) == family


def test_supported_ops_by_family():
    ios16 = {"constexpr_affine_dequantize", "constexpr_cast", "constexpr_lut_to_dense", "constexpr_sparse_to_dense"}
    ios18 = ios16 | {
        "constexpr_blockwise_shift_scale",
        "constexpr_lut_to_sparse",
        "constexpr_sparse_blockwise_shift_scale",
    }

    assert set(SUPPORTED_OPS) == {"iOS16", "iOS18"}
    assert SUPPORTED_OPS["iOS16"] == ios16
    assert SUPPORTED_OPS["iOS18"] == ios18


def test_ios18_op_in_ios17_opset_is_rejected():
    with pytest.raises(UnsupportedOpError) as caught:
        decode_op("constexpr_blockwise_shift_scale", "CoreML7", {"data": DATA, "scale": SCALE}, name="w_q")

    message = str(caught.value)
    assert "constexpr_blockwise_shift_scale 'w_q'" in message
    assert "opset CoreML7 (iOS16 definitions)" in message
    assert "'constexpr_sparse_to_dense'" in message


def test_unknown_op_type_is_rejected():
    with pytest.raises(UnsupportedOpError, match="op type 'constexpr_magic' is not supported in opset CoreML8"):
        decode_op("constexpr_magic", "CoreML8", {}, name="w")


@pytest.mark.parametrize("opset", ["CoreML4", "CoreML", "iOS18", ""])
def test_opset_without_constexpr_ops_is_rejected(opset):
    with pytest.raises(UnsupportedOpError, match=f"constexpr_cast 'w': opset {opset!r} has no constexpr"):
        decode_op("constexpr_cast", opset, {"source_val": VALUES, "output_dtype": "fp32"}, name="w")


def test_missing_parameter_is_rejected():
    with pytest.raises(PackageError, match=r"'w': missing parameter\(s\) \['shape'\]"):
        decode_op("constexpr_sparse_to_dense", "CoreML6", {"nonzero_data": VALUES, "mask": PACKED_MASK}, name="w")


def test_unknown_parameter_is_rejected():
    params = {"nonzero_data": VALUES, "mask": MASK, "shape": np.array([2, 3], np.uint32)}

    with pytest.raises(PackageError, match=r"unknown parameter\(s\) \['shape'\] for iOS18"):
        decode_op("constexpr_sparse_to_dense", "CoreML8", params, name="w")


def test_name_attribute_is_ignored():
    params = {"nonzero_data": VALUES, "mask": MASK, "name": "w"}

    (dense,) = decode_op("constexpr_sparse_to_dense", "CoreML8", params, name="w")

    assert_bits_equal(dense, decode.sparse_to_dense_ios18(VALUES, MASK))


def test_index_dtype_enables_palette_check():
    params = {"indices": INDICES, "lut": LUT.reshape(1, 1, 4, 1)}

    with pytest.raises(ParameterShapeError, match="lut.shape\\[-2\\] is 4, but the indices are uint4; expected 16"):
        decode_op("constexpr_lut_to_dense", "CoreML8", params, name="w", dtypes={"indices": "uint4", "lut": "fp16"})


def test_lut_to_sparse_index_dtype_check():
    params = {"indices_mask": MASK, "indices_nonzero_data": np.zeros(4, np.uint8), "lut": LUT.reshape(1, 1, 4, 1)}

    with pytest.raises(ParameterShapeError, match="the indices are uint1; expected 2"):
        decode_op("constexpr_lut_to_sparse", "CoreML8", params, name="w", dtypes={"indices_nonzero_data": "uint1"})


def test_int4_offset_for_int8_data_is_rejected():
    params = {"data": DATA, "scale": SCALE, "offset": np.zeros((2, 1), np.int8)}

    with pytest.raises(UnknownDtypeError, match="offset has dtype int4, but data has dtype int8"):
        decode_op("constexpr_blockwise_shift_scale", "CoreML8", params, name="w", dtypes={"data": "int8", "offset": "int4"})


def test_float_offset_passes_the_dtype_check():
    params = {"data": DATA, "scale": SCALE, "offset": np.zeros((2, 1), np.float16)}

    (decoded,) = decode_op("constexpr_blockwise_shift_scale", "CoreML8", params, name="w", dtypes={"data": "int4", "offset": "fp16"})

    assert_bits_equal(decoded, DATA * SCALE)


def test_max_elements_reaches_the_decoder():
    with pytest.raises(SparseblobError, match="exceeds the limit of 5"):
        decode_op("constexpr_sparse_to_dense", "CoreML8", {"nonzero_data": VALUES, "mask": MASK}, name="w", max_elements=5)


def test_vector_axis_as_python_int():
    lut = np.arange(8, dtype=np.float32).reshape(1, 1, 4, 2)

    (decoded,) = decode_op("constexpr_lut_to_dense", "CoreML8", {"indices": INDICES, "lut": lut, "vector_axis": 1}, name="w")

    assert decoded.shape == (2, 6)
    assert decoded[0].tolist() == [0, 1, 6, 7, 2, 3]
