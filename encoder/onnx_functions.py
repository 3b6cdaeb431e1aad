"""ONNX function bodies of the ``sparseblob`` ops, in standard ONNX operators only.

A compressed ONNX file contains one ``FunctionProto`` per ``sparseblob`` op type it uses, so that
onnxruntime, or any runtime that expands model-local functions, runs the file without
sparseblob. The op signatures are those of :data:`sparseblob.runtime.onnx_run.SIGNATURES`.

Each body imports the model's own default-domain opset (11 or later; the ONNX checker rejects a
function that imports another version) and uses only operators whose form is the same from
opset 11 on, with two version-dependent steps:

- ``data_dtype`` becomes a tensor through ``Constant(value_int=@data_dtype)`` from opset 12; at
  opset 11, which has no ``value_int``, through ``EyeLike(k=@data_dtype)`` on a ``[1, 32]`` zero
  matrix followed by ``ArgMax``: row 0 has its one at column ``k``.
- The shift-scale ops compute ``(data - offset) * scale`` in fp32 and round once to the scale's
  dtype with ``CastLike`` from opset 15. Before opset 15 the encoder writes fp32 scales only,
  and the fp32 result is the output.

How the bodies decode:

- Bits: every byte is shifted right by 0..7 (``BitShift``) and reduced ``Mod 2``, giving the
  LSB-first bit stream; ``Slice`` keeps the first ``count * nbits`` bits.
- Values of N bits: the ``[count, N]`` bit matrix, in fp32, times ``[1, 2, 4, ...]``
  (``MatMul``); signed types then subtract ``2**N`` where the top bit is set.
- Scatter (``sparse_to_dense``): ``CumSum`` of the mask gives each set position its 1-based
  index into ``nonzero_data``; ``Gather`` reads a copy of ``nonzero_data`` with a zero
  prepended (``Pad``), so unset positions read the zero.
- Groups and blocks (LUT groups, scale and offset blocks): ``Resize`` in ``nearest`` mode with
  ``asymmetric`` coordinates and ``floor`` rounding repeats each group over its block of
  ``shape / groups`` positions on every axis, for any rank.
- Sparse positions: ``TopK`` of the mask weighted by reversed position (see
  :func:`_positions`).
- onnxruntime folds the decoding into constants when it loads a file, except where a step has
  no CPU kernel for the dtype: with fp16 ``nonzero_data`` the ``Pad`` of the scatter stays,
  so fp16 weights are scattered at every run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparseblob.runtime.errors import EncodingError
from sparseblob.runtime.onnx_run import (
    BLOCKWISE_SHIFT_SCALE,
    CASTLIKE_OPSET,
    DOMAIN,
    LUT_TO_DENSE,
    LUT_TO_SPARSE,
    MIN_OPSET,
    SIGNATURES,
    SPARSE_BLOCKWISE_SHIFT_SCALE,
    SPARSE_TO_DENSE,
)

__all__ = ["make_function", "CASTLIKE_OPSET"]

# Bits per element and signedness, indexed by the ONNX TensorProto code in data_dtype.
_TABLE_SIZE = 32
_NBITS_BY_CODE = np.zeros(_TABLE_SIZE, dtype=np.int64)
_SIGNED_BY_CODE = np.zeros(_TABLE_SIZE, dtype=np.int64)
for _code, _bits, _signed in (
    (TensorProto.INT8, 8, 1),
    (TensorProto.UINT8, 8, 0),
    (TensorProto.INT4, 4, 1),
    (TensorProto.UINT4, 4, 0),
):
    _NBITS_BY_CODE[_code] = _bits
    _SIGNED_BY_CODE[_code] = _signed


class _Body:
    """Collects the nodes of one function body and names their outputs."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes) -> str | list[str]:
        names = [self._name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def const(self, value) -> str:
        name = self._name("const")
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        return name

    def output(self, op_type: str, inputs: list[str], name: str, **attributes) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, [name], **attributes))

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"_{hint.lower()}{self._count}"


def _attribute_tensor(body: _Body, attribute: str) -> str:
    """Return a ``tensor<int64, [1]>`` with the value of the INT attribute ``attribute`` of the call."""
    if body.opset >= 12:
        node = helper.make_node("Constant", [], [body._name("attr")])
        node.attribute.append(
            onnx.AttributeProto(name="value_int", ref_attr_name=attribute, type=onnx.AttributeProto.INT)
        )
        body.nodes.append(node)
        return body.op("Reshape", node.output[0], body.const(np.array([1], np.int64)))
    zeros = body.op("ConstantOfShape", body.const(np.array([1, _TABLE_SIZE], np.int64)))
    eye = helper.make_node("EyeLike", [zeros], [body._name("eye")])
    eye.attribute.append(onnx.AttributeProto(name="k", ref_attr_name=attribute, type=onnx.AttributeProto.INT))
    body.nodes.append(eye)
    return body.op("ArgMax", eye.output[0], axis=1, keepdims=0)


def _count(body: _Body, shape: str) -> str:
    """Return ``tensor<int64, [1]>``, the element count of ``shape``.

    ``ReduceProd(Shape(x))`` stands for ``Size(x)`` because onnxruntime has no ``Size``
    kernel for int8 inputs when it folds constants, and would then decode at every run.
    """
    return body.op("ReduceProd", shape, keepdims=1)


def _bits(body: _Body, packed: str, count: str) -> str:
    """Return the first ``count`` bits of the LSB-first stream ``packed``: ``tensor<uint8, [count]>``."""
    column = body.op("Reshape", packed, body.const(np.array([-1, 1], np.int64)))
    shifted = body.op("BitShift", column, body.const(np.arange(8, dtype=np.uint8)), direction="RIGHT")
    bits = body.op("Mod", shifted, body.const(np.array([2], np.uint8)))
    stream = body.op("Reshape", bits, body.const(np.array([-1], np.int64)))
    return body.op("Slice", stream, body.const(np.array([0], np.int64)), count)


def _values(body: _Body, packed: str, count: str, nbits: str, signed: str | None) -> str:
    """Return ``count`` elements of ``nbits`` bits from ``packed`` as ``tensor<fp32, [count]>``."""
    total = body.op("Mul", count, nbits)
    bits = _bits(body, packed, total)
    matrix = body.op("Reshape", bits, body.op("Concat", count, nbits, axis=0))
    matrix_f = body.op("Cast", matrix, to=TensorProto.FLOAT)
    powers = body.const(np.array([1, 2, 4, 8, 16, 32, 64, 128, 256], np.float32))
    weights = body.op("Slice", powers, body.const(np.array([0], np.int64)), nbits)
    column = body.op("Reshape", weights, body.const(np.array([-1, 1], np.int64)))
    unsigned = body.op("Reshape", body.op("MatMul", matrix_f, column), body.const(np.array([-1], np.int64)))
    if signed is None:
        return unsigned

    # Two's complement: subtract 2**nbits where the top bit is set and the type is signed.
    top_start = body.op("Sub", nbits, body.const(np.array([1], np.int64)))
    top = body.op("Slice", matrix_f, top_start, nbits, body.const(np.array([1], np.int64)))
    top = body.op("Reshape", top, body.const(np.array([-1], np.int64)))
    span = body.op("Gather", powers, nbits)
    sign = body.op("Mul", body.op("Cast", signed, to=TensorProto.FLOAT), span)
    return body.op("Sub", unsigned, body.op("Mul", top, sign))


def _as_bytes(body: _Body, data: str) -> str:
    """Return int8 or uint8 ``data`` as its two's-complement bytes, flat ``tensor<uint8, [n]>``."""
    flat = body.op("Reshape", data, body.const(np.array([-1], np.int64)))
    wide = body.op("Cast", flat, to=TensorProto.INT32)
    wrapped = body.op("Mod", wide, body.const(np.array([256], np.int32)))
    return body.op("Cast", wrapped, to=TensorProto.UINT8)


def _expand_blocks(body: _Body, params: str, shape: str) -> str:
    """Repeat each block parameter over its block: ``tensor<fp32, [prod(shape)]>``, C order."""
    params_f = body.op("Cast", params, to=TensorProto.FLOAT)
    if body.opset >= 13:
        resized = body.op(
            "Resize", params_f, "", "", shape,
            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )
    else:
        empty = body.const(np.zeros(0, np.float32))
        resized = body.op(
            "Resize", params_f, empty, empty, shape,
            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        )
    return body.op("Reshape", resized, body.const(np.array([-1], np.int64)))


def _positions(body: _Body, bits: str, count: str, popcount: str) -> str:
    """Return the flat positions of the set bits in increasing order, ``tensor<int64, [D]>``.

    ``TopK`` of ``bits * (count - position)`` with ``k = popcount`` selects exactly the set
    bits, earliest first. onnxruntime folds ``TopK`` into a constant when it loads the file,
    but not ``NonZero``, which would leave the whole decoding to every run.
    """
    positions = body.op(
        "Range", body.const(np.array(0, np.int64)), body.op("Reshape", count, body.const(np.zeros(0, np.int64))), body.const(np.array(1, np.int64))
    )
    keys = body.op("Mul", body.op("Cast", bits, to=TensorProto.INT64), body.op("Sub", count, positions))
    _, indices = body.op("TopK", keys, popcount, outputs=2, axis=0, largest=1, sorted=1)
    return indices


def _popcount(body: _Body, bits: str) -> str:
    return body.op("ReduceSum", body.op("Cast", bits, to=TensorProto.INT64), keepdims=1)


def _lut_table(body: _Body, lut: str, shape: str) -> tuple[str, str, str]:
    """Return ``(flat LUT, entries per table [1], nbits [1])`` of ``lut [*G, 2**nbits, 1]``."""
    lut_shape = body.op("Shape", lut)
    entries = body.op("Gather", lut_shape, body.const(np.array([-2], np.int64)))
    # nbits = log2(entries): the number of powers 2**k, k = 0..7, below the entry count.
    powers = body.const(np.array([1, 2, 4, 8, 16, 32, 64, 128], np.int64))
    below = body.op("Cast", body.op("Less", powers, entries), to=TensorProto.INT64)
    nbits = body.op("ReduceSum", below, keepdims=1)
    flat = body.op("Reshape", lut, body.const(np.array([-1], np.int64)))
    return flat, entries, nbits


def _lut_groups(body: _Body, lut: str, shape: str) -> str:
    """Return the LUT group of every dense position, ``tensor<int64, [prod(shape)]>``."""
    lut_shape = body.op("Shape", lut)
    grid = body.op(
        "Slice", lut_shape, body.const(np.array([0], np.int64)), body.const(np.array([-2], np.int64))
    )
    groups = body.op("ReduceProd", grid, keepdims=1)
    limit = body.op("Cast", body.op("Reshape", groups, body.const(np.zeros(0, np.int64))), to=TensorProto.FLOAT)
    ids = body.op("Range", body.const(np.array(0, np.float32)), limit, body.const(np.array(1, np.float32)))
    grid_ids = body.op("Reshape", ids, grid)
    return body.op("Cast", _expand_blocks(body, grid_ids, shape), to=TensorProto.INT64)


def _lookup(body: _Body, flat_lut: str, entries: str, groups: str, indices: str) -> str:
    """Return ``lut[group, index]`` for each (group, index) pair."""
    index = body.op("Add", body.op("Mul", groups, entries), body.op("Cast", indices, to=TensorProto.INT64))
    return body.op("Gather", flat_lut, index)


def _quantized(body: _Body, data: str, count: str, data_dtype: str) -> str:
    """Return ``count`` quantized values of ``data`` (int8/uint8, or packed 4-bit) in fp32."""
    nbits = body.op("Gather", body.const(_NBITS_BY_CODE), data_dtype)
    signed = body.op("Gather", body.const(_SIGNED_BY_CODE), data_dtype)
    return _values(body, _as_bytes(body, data), count, nbits, signed)


def _offsets(body: _Body, offset: str, scale: str, shape: str, data_dtype: str) -> str:
    """Return the offset of every dense position in fp32; an empty ``offset`` means zeros."""
    scale_count = _count(body, body.op("Shape", scale))
    present = body.op(
        "Cast",
        body.op("Greater", _count(body, body.op("Shape", offset)), body.const(np.array([0], np.int64))),
        to=TensorProto.INT64,
    )
    count = body.op("Mul", scale_count, present)
    values = _quantized(body, offset, count, data_dtype)
    zeros = body.op("ConstantOfShape", scale_count)
    padded = body.op("Concat", values, zeros, axis=0)
    offsets = body.op("Slice", padded, body.const(np.array([0], np.int64)), scale_count)
    grid = body.op("Reshape", offsets, body.op("Shape", scale))
    return _expand_blocks(body, grid, shape)


def _round_to_scale(body: _Body, values: str, scale: str, name: str) -> None:
    if body.opset >= CASTLIKE_OPSET:
        body.output("CastLike", [values, scale], name)
    else:
        body.output("Identity", [values], name)


def _sparse_to_dense(body: _Body) -> None:
    count = _count(body, "shape")
    bits = _bits(body, "mask", count)
    bits64 = body.op("Cast", bits, to=TensorProto.INT64)
    running = body.op("CumSum", bits64, body.const(np.array(0, np.int64)))
    index = body.op("Mul", running, bits64)
    padded = body.op("Pad", "nonzero_data", body.const(np.array([1, 0], np.int64)))
    body.output("Reshape", [body.op("Gather", padded, index), "shape"], "output")


def _lut_to_dense(body: _Body) -> None:
    count = _count(body, "shape")
    flat, entries, nbits = _lut_table(body, "lut", "shape")
    indices = _values(body, "indices", count, nbits, None)
    values = _lookup(body, flat, entries, _lut_groups(body, "lut", "shape"), indices)
    body.output("Reshape", [values, "shape"], "output")


def _lut_to_sparse(body: _Body) -> None:
    count = _count(body, "shape")
    bits = _bits(body, "indices_mask", count)
    popcount = _popcount(body, bits)
    positions = _positions(body, bits, count, popcount)
    flat, entries, nbits = _lut_table(body, "lut", "shape")
    indices = _values(body, "indices_nonzero_data", popcount, nbits, None)
    groups = body.op("Gather", _lut_groups(body, "lut", "shape"), positions)
    body.output("Identity", ["indices_mask"], "mask")
    body.output("Identity", [_lookup(body, flat, entries, groups, indices)], "values")


def _blockwise_shift_scale(body: _Body) -> None:
    count = _count(body, "shape")
    data_dtype = _attribute_tensor(body, "data_dtype")
    data = _quantized(body, "data", count, data_dtype)
    scales = _expand_blocks(body, "scale", "shape")
    offsets = _offsets(body, "offset", "scale", "shape", data_dtype)
    values = body.op("Mul", body.op("Sub", data, offsets), scales)
    _round_to_scale(body, body.op("Reshape", values, "shape"), "scale", "output")


def _sparse_blockwise_shift_scale(body: _Body) -> None:
    count = _count(body, "shape")
    bits = _bits(body, "data_mask", count)
    popcount = _popcount(body, bits)
    positions = _positions(body, bits, count, popcount)
    data_dtype = _attribute_tensor(body, "data_dtype")
    data = _quantized(body, "nonzero_data", popcount, data_dtype)
    scales = body.op("Gather", _expand_blocks(body, "scale", "shape"), positions)
    offsets = body.op("Gather", _offsets(body, "offset", "scale", "shape", data_dtype), positions)
    values = body.op("Mul", body.op("Sub", data, offsets), scales)
    body.output("Identity", ["data_mask"], "mask")
    _round_to_scale(body, values, "scale", "values")


_BUILDERS = {
    SPARSE_TO_DENSE: _sparse_to_dense,
    LUT_TO_DENSE: _lut_to_dense,
    LUT_TO_SPARSE: _lut_to_sparse,
    BLOCKWISE_SHIFT_SCALE: _blockwise_shift_scale,
    SPARSE_BLOCKWISE_SHIFT_SCALE: _sparse_blockwise_shift_scale,
}


def make_function(op_type: str, opset: int) -> onnx.FunctionProto:
    """Return the ``FunctionProto`` of ``sparseblob`` op ``op_type`` for a model at ``opset``.

    Args:
        op_type: a key of :data:`sparseblob.runtime.onnx_run.SIGNATURES`.
        opset: the model's default-domain opset version; the body imports exactly it.

    Raises:
        EncodingError: the op type is unknown or ``opset`` is below 11.
    """
    if op_type not in _BUILDERS:
        raise EncodingError(f"op type {op_type!r} is not a {DOMAIN} op; expected one of {sorted(_BUILDERS)}")
    if opset < MIN_OPSET:
        raise EncodingError(
            f"opset {opset} is below {MIN_OPSET}: the function bodies need BitShift and CumSum; convert "
            f"the model first, e.g. onnx.version_converter.convert_version(model, {MIN_OPSET})"
        )
    body = _Body(opset)
    _BUILDERS[op_type](body)
    signature = SIGNATURES[op_type]
    return helper.make_function(
        DOMAIN,
        op_type,
        list(signature.inputs),
        list(signature.outputs),
        body.nodes,
        [helper.make_opsetid("", opset)],
        attributes=list(signature.attributes),
        doc_string=f"Core ML iOS18 {op_type}, decoded with standard ONNX operators (opset {opset}).",
    )
