"""Run ONNX models whose weights are stored as Core ML constexpr ops of the ``sparseblob`` domain.

**The ONNX form of a compressed weight.** The encoder (``sparseblob.encoder.onnx_compress``)
replaces a weight initializer or ``Constant`` by nodes of the ``sparseblob`` domain (version
1), one op type per Core ML iOS18 constexpr op. A node's inputs are that op's parameters in
Core ML order, followed by ``shape``:

======================================== ================================================ ==============
op type                                  inputs                                           outputs
======================================== ================================================ ==============
constexpr_sparse_to_dense                nonzero_data, mask, shape                        output
constexpr_lut_to_dense                   indices, lut, shape                              output
constexpr_lut_to_sparse                  indices_mask, indices_nonzero_data, lut, shape   mask, values
constexpr_blockwise_shift_scale          data, scale, offset, shape                       output
constexpr_sparse_blockwise_shift_scale   data_mask, nonzero_data, scale, offset, shape    mask, values
======================================== ================================================ ==============

- ``shape``: ``tensor<int64, [K]>``, the dense shape of the op's mask, indices or data.
- ``mask`` and ``values`` of the two-output ops feed ``mask`` and ``nonzero_data`` of
  ``constexpr_sparse_to_dense``.
- Masks (uint1) and LUT indices (uintN, N = log2 of ``lut.shape[-2]``) are packed LSB-first
  into ``tensor<uint8, [ceil(count * N / 8)]>`` exactly as Core ML packs them; padding bits
  are 0. A mask output is packed the same way.
- ``nonzero_data`` of ``constexpr_sparse_to_dense`` and ``lut`` are fp16, fp32, int8 or uint8
  tensors as in Core ML. LUTs are scalar (``lut.shape[-1] == 1``): the ONNX form has no
  ``vector_axis``.
- The shift-scale ops carry the INT attribute ``data_dtype``. It is the ONNX ``TensorProto``
  code of the Core ML element type of ``data``/``nonzero_data`` and ``offset``. INT8 and
  UINT8 values are ONNX int8 and uint8 tensors. INT4 and UINT4 values are packed two per
  byte into uint8, the first element in the low nibble. ``offset`` is an empty tensor where Core ML has none, because
  an ONNX function body cannot test whether an optional input is present.
- A chain may end with a standard ``Cast`` to the dtype the consumers expect, and a rank-2
  weight may pass through a standard ``Transpose`` with ``perm=[1, 0]``.

The model also holds one ONNX function per op type (``model.functions``), written in
standard ONNX ops, so any ONNX runtime runs the file unchanged.

**Execution.** :class:`OnnxRunner` runs a model with ``onnx.reference.ReferenceEvaluator``.
The ``sparseblob`` ops run sparseblob's own decoders (``runtime.decode``), once per runner:
their inputs are constants, so the decoded tensors are cached. With ``weights="sparse"`` the
runner rewrites the graph in memory when it loads it: every ``Conv``, ``ConvTranspose``,
``Gemm`` and ``MatMul`` whose weight is a compressed chain of constants becomes a node of the
private domain ``sparseblob.runtime`` that multiplies with the sparse kernels
(``runtime.kernels``) on a :class:`~sparseblob.runtime.kernels.formats.CompressedWeight` built
once from the chain's parameters, and the chain is dropped when nothing else reads it.
A grouped ``ConvTranspose`` keeps its standard node and reads the decoded weight. With ``weights="dense"`` no node is rewritten.

The runner also replaces three operators of onnx 1.23.2's reference evaluator that fail on
real models: ``GlobalMaxPool`` reduces the wrong axes when the input rank is not 4,
``BatchNormalization`` before opset 14 uses the batch statistics whenever a ``momentum``
attribute is present, and ``ConvTranspose`` raises when ``output_shape`` asks for padding.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from google.protobuf.message import DecodeError
from onnx.reference.op_run import OpRun

from .bitpack import pack_bits, packed_size, padding_bits_set, unpack_bits
from .decode.registry import decode_op
from .errors import (
    MaskError,
    OpParameterError,
    PackageError,
    PaddingError,
    ParameterShapeError,
    ShapeError,
    UnknownDtypeError,
    UnsupportedOpError,
)
from .limits import DEFAULT_MAX_ELEMENTS, element_count

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "MIN_OPSET",
    "SIGNATURES",
    "DATA_DTYPES",
    "OpSignature",
    "default_opset",
    "check_model",
    "node_params",
    "CompressedTensor",
    "find_compressed_tensors",
    "OnnxRunner",
    "run_onnx",
    "WeightSummary",
    "OnnxSummary",
    "inspect_onnx",
    "densify_onnx",
    "decode_node",
    "load_model",
    "set_repeated",
    "subgraph_reads",
]

logger = logging.getLogger(__name__)

DOMAIN = "sparseblob"
DOMAIN_VERSION = 1
# The in-memory domain of the kernel nodes that the runner writes; never saved to a file.
RUNTIME_DOMAIN = "sparseblob.runtime"
# BitShift and CumSum, which the function bodies use, exist from opset 11.
MIN_OPSET = 11
# Core ML opset whose op definitions (iOS18) the ONNX ops follow.
COREML_OPSET = "CoreML8"
# CastLike, which rounds the shift-scale result to an fp16 scale's dtype, exists from opset 15.
CASTLIKE_OPSET = 15

SPARSE_TO_DENSE = "constexpr_sparse_to_dense"
LUT_TO_DENSE = "constexpr_lut_to_dense"
LUT_TO_SPARSE = "constexpr_lut_to_sparse"
BLOCKWISE_SHIFT_SCALE = "constexpr_blockwise_shift_scale"
SPARSE_BLOCKWISE_SHIFT_SCALE = "constexpr_sparse_blockwise_shift_scale"

# Ops whose first output is the dense weight, where a chain ends.
_DENSE_OPS = (SPARSE_TO_DENSE, LUT_TO_DENSE, BLOCKWISE_SHIFT_SCALE)
# Ops whose outputs are (mask, nonzero_data) and feed constexpr_sparse_to_dense.
_SPARSE_VALUE_OPS = (LUT_TO_SPARSE, SPARSE_BLOCKWISE_SHIFT_SCALE)

_KERNEL_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class OpSignature:
    """Inputs, outputs and attributes of one ``sparseblob`` op, in ONNX order."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[str, ...] = ()


SIGNATURES: dict[str, OpSignature] = {
    SPARSE_TO_DENSE: OpSignature(("nonzero_data", "mask", "shape"), ("output",)),
    LUT_TO_DENSE: OpSignature(("indices", "lut", "shape"), ("output",)),
    LUT_TO_SPARSE: OpSignature(
        ("indices_mask", "indices_nonzero_data", "lut", "shape"), ("mask", "values")
    ),
    BLOCKWISE_SHIFT_SCALE: OpSignature(("data", "scale", "offset", "shape"), ("output",), ("data_dtype",)),
    SPARSE_BLOCKWISE_SHIFT_SCALE: OpSignature(
        ("data_mask", "nonzero_data", "scale", "offset", "shape"), ("mask", "values"), ("data_dtype",)
    ),
}

DATA_DTYPES: dict[int, str] = {
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
}
"""Values of the ``data_dtype`` attribute and the Core ML element type each one names."""

_VALUE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.uint8))
_SCALE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_LUT_BITS = {2: 1, 4: 2, 8: 3, 16: 4, 64: 6, 256: 8}


def default_opset(model: onnx.ModelProto) -> int:
    """Return the model's opset version of the default ONNX domain.

    Raises:
        PackageError: the model imports no default-domain opset.
    """
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise PackageError("the model imports no opset of the default ONNX domain ('' or 'ai.onnx')")


def check_model(model: onnx.ModelProto) -> None:
    """Check the rules of the ONNX form that no single node shows.

    Raises:
        PackageError: the model imports a ``sparseblob`` version other than 1.
        UnsupportedOpError: a ``sparseblob`` node has an unknown op type, the default opset is
            below 11 while ``sparseblob`` nodes are present, or a shift-scale op has an fp16
            scale below opset 15 (its function body would return fp32).
    """
    nodes = [node for node in model.graph.node if node.domain == DOMAIN]
    if not nodes:
        return
    versions = {entry.domain: entry.version for entry in model.opset_import}
    if versions.get(DOMAIN) != DOMAIN_VERSION:
        raise PackageError(f"the model imports {DOMAIN} version {versions.get(DOMAIN)}; expected {DOMAIN_VERSION}")
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise UnsupportedOpError(f"the model uses opset {opset}; {DOMAIN} nodes need opset {MIN_OPSET} or later")
    fp16 = {init.name for init in model.graph.initializer if init.data_type == TensorProto.FLOAT16}
    for node in nodes:
        if node.op_type not in SIGNATURES:
            raise UnsupportedOpError(
                f"{_describe(node.op_type, node.name)}: op type {node.op_type!r} is not a {DOMAIN} op; "
                f"expected one of {sorted(SIGNATURES)}"
            )
        shift_scale = node.op_type in (BLOCKWISE_SHIFT_SCALE, SPARSE_BLOCKWISE_SHIFT_SCALE)
        scale = node.input[SIGNATURES[node.op_type].inputs.index("scale")] if shift_scale and len(node.input) > 2 else None
        if scale in fp16 and opset < CASTLIKE_OPSET:
            raise UnsupportedOpError(
                f"{_describe(node.op_type, node.name)}: scale {scale!r} is fp16, but the model uses opset {opset}; "
                f"fp16 scales need opset {CASTLIKE_OPSET} (CastLike), so store fp32 scales"
            )


# ---------------------------------------------------------------------------------------------
# Reading the parameters of one node


def _describe(op_type: str, name: str) -> str:
    return f"{op_type} {name!r}" if name else op_type


def _dense_shape(shape: np.ndarray, where: str, max_elements: int) -> tuple[int, ...]:
    shape = np.asarray(shape)
    if shape.dtype != np.int64 or shape.ndim != 1 or shape.size == 0:
        raise ShapeError(
            f"{where}: shape is tensor<{shape.dtype}, {list(shape.shape)}>; expected a non-empty "
            "tensor<int64, [K]>"
        )
    dims = tuple(int(d) for d in shape)
    if min(dims) < 0:
        raise ShapeError(f"{where}: shape {list(dims)} has a negative dimension")
    element_count(dims, name=f"{where}: shape", max_elements=max_elements)
    return dims


def _unpack_checked(packed: np.ndarray, nbits: int, count: int, *, signed: bool, param: str, where: str) -> np.ndarray:
    """Unpack ``count`` elements of ``nbits`` bits after checking the byte count and padding."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise UnknownDtypeError(
            f"{where}: {param} is tensor<{packed.dtype}, {list(packed.shape)}>; expected packed "
            f"tensor<uint8, [{packed_size(count, nbits)}]>"
        )
    if packed.size != packed_size(count, nbits):
        raise ShapeError(
            f"{where}: {param} has {packed.size} bytes; {count} elements of {nbits} bits need "
            f"{packed_size(count, nbits)}"
        )
    if padding_bits_set(packed, nbits, count):
        raise PaddingError(f"{where}: {param} has set padding bits after element {count}; padding bits must be 0")
    return unpack_bits(packed, nbits, count, signed=signed, name=f"{where}: {param}")


def _mask_bits(packed: np.ndarray, shape: tuple[int, ...], param: str, where: str) -> np.ndarray:
    count = math.prod(shape)
    return _unpack_checked(packed, 1, count, signed=False, param=param, where=where).reshape(shape)


def _lut_bits(lut: np.ndarray, where: str) -> int:
    lut = np.asarray(lut)
    if lut.dtype not in _VALUE_DTYPES:
        raise UnknownDtypeError(f"{where}: lut has dtype {lut.dtype}; expected fp16, fp32, int8 or uint8")
    if lut.ndim < 3:
        raise ParameterShapeError(f"{where}: lut has shape {list(lut.shape)}; expected [*groups, 2**nbits, 1]")
    if lut.shape[-1] != 1:
        raise UnsupportedOpError(
            f"{where}: lut has vectors of {lut.shape[-1]} values; the ONNX form has no vector_axis, "
            "so the LUT must have shape [*groups, 2**nbits, 1]"
        )
    nbits = _LUT_BITS.get(int(lut.shape[-2]))
    if nbits is None:
        raise ParameterShapeError(
            f"{where}: lut has {lut.shape[-2]} entries per table; expected 2, 4, 8, 16, 64 or 256"
        )
    return nbits


def _data_dtype(code: object, where: str) -> str:
    name = DATA_DTYPES.get(int(code)) if isinstance(code, (int, np.integer)) else None
    if name is None:
        expected = ", ".join(f"{value} ({TensorProto.DataType.Name(value)})" for value in DATA_DTYPES)
        raise UnknownDtypeError(f"{where}: data_dtype is {code!r}; expected one of {expected}")
    return name


def _quantized(array: np.ndarray, dtype_name: str, count: int, param: str, where: str) -> np.ndarray:
    """Return quantized data or offset values, unpacked, as a flat int8 or uint8 array."""
    array = np.asarray(array)
    if dtype_name in ("int4", "uint4"):
        return _unpack_checked(array.reshape(-1), 4, count, signed=dtype_name == "int4", param=param, where=where)
    expected = np.dtype(dtype_name)
    if array.dtype != expected:
        raise UnknownDtypeError(f"{where}: {param} has dtype {array.dtype}, but data_dtype is {dtype_name}")
    if array.size != count:
        raise ShapeError(f"{where}: {param} has {array.size} elements; expected {count}")
    return array.reshape(-1)


def _scale(scale: np.ndarray, rank: int, where: str) -> np.ndarray:
    scale = np.asarray(scale)
    if scale.dtype not in _SCALE_DTYPES:
        raise UnknownDtypeError(f"{where}: scale has dtype {scale.dtype}; expected fp16 or fp32")
    if scale.ndim != rank:
        raise ParameterShapeError(f"{where}: scale has shape {list(scale.shape)}; expected rank {rank}")
    return scale


def _offset(offset: np.ndarray, scale: np.ndarray, dtype_name: str, where: str) -> np.ndarray | None:
    offset = np.asarray(offset)
    if offset.size == 0:
        return None
    values = _quantized(offset, dtype_name, scale.size, "offset", where)
    return values.reshape(scale.shape)


def _split_inputs(op_type: str, inputs: Sequence[np.ndarray], where: str) -> dict[str, np.ndarray]:
    signature = SIGNATURES.get(op_type)
    if signature is None:
        raise UnsupportedOpError(f"{where}: op type {op_type!r} is not a {DOMAIN} op; expected one of {sorted(SIGNATURES)}")
    if len(inputs) != len(signature.inputs) or any(value is None for value in inputs):
        raise PackageError(
            f"{where}: has {sum(value is not None for value in inputs)} inputs; expected "
            f"{len(signature.inputs)}: {list(signature.inputs)}"
        )
    return dict(zip(signature.inputs, inputs))


def node_params(
    op_type: str,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, object] | None = None,
    *,
    name: str = "",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Unpack the ONNX inputs of one ``sparseblob`` node into the Core ML op's parameters.

    Args:
        op_type: the node's op type, a key of :data:`SIGNATURES`.
        inputs: the node's input values, in ONNX order.
        attributes: the node's attributes (``data_dtype`` for the shift-scale ops).
        name: the node name, for error messages.
        max_elements: largest element count of a dense shape.

    Returns:
        ``(params, dtypes)``: MIL parameter name to numpy array, with sub-byte types unpacked
        into uint8 or int8 containers, and the MIL element type of each packed parameter.
        This is what :func:`sparseblob.runtime.decode.decode_op` takes.

    Raises:
        SparseblobError: a missing input, a wrong dtype or byte count, set padding bits, or an
            unknown ``data_dtype``.
    """
    where = _describe(op_type, name)
    values = _split_inputs(op_type, inputs, where)
    attributes = attributes or {}
    shape = _dense_shape(values["shape"], where, max_elements)

    if op_type == SPARSE_TO_DENSE:
        nonzero = np.asarray(values["nonzero_data"])
        if nonzero.dtype not in _VALUE_DTYPES:
            raise UnknownDtypeError(
                f"{where}: nonzero_data has dtype {nonzero.dtype}; expected fp16, fp32, int8 or uint8"
            )
        mask = _mask_bits(values["mask"], shape, "mask", where)
        return {"nonzero_data": nonzero, "mask": mask}, {"mask": "uint1"}

    if op_type == LUT_TO_DENSE:
        nbits = _lut_bits(values["lut"], where)
        indices = _unpack_checked(values["indices"], nbits, math.prod(shape), signed=False, param="indices", where=where)
        params = {"indices": indices.reshape(shape), "lut": np.asarray(values["lut"])}
        return params, {"indices": f"uint{nbits}"}

    if op_type == LUT_TO_SPARSE:
        nbits = _lut_bits(values["lut"], where)
        mask = _mask_bits(values["indices_mask"], shape, "indices_mask", where)
        count = int(np.count_nonzero(mask))
        indices = _unpack_checked(
            values["indices_nonzero_data"], nbits, count, signed=False, param="indices_nonzero_data", where=where
        )
        params = {"indices_mask": mask, "indices_nonzero_data": indices, "lut": np.asarray(values["lut"])}
        return params, {"indices_mask": "uint1", "indices_nonzero_data": f"uint{nbits}"}

    dtype_name = _data_dtype(attributes.get("data_dtype"), where)
    scale = _scale(values["scale"], len(shape), where)
    offset = _offset(values["offset"], scale, dtype_name, where)
    dtypes = {"offset": dtype_name} if offset is not None else {}

    if op_type == BLOCKWISE_SHIFT_SCALE:
        data = _quantized(values["data"], dtype_name, math.prod(shape), "data", where).reshape(shape)
        params = {"data": data, "scale": scale}
        dtypes["data"] = dtype_name
    else:
        mask = _mask_bits(values["data_mask"], shape, "data_mask", where)
        count = int(np.count_nonzero(mask))
        nonzero = _quantized(values["nonzero_data"], dtype_name, count, "nonzero_data", where)
        params = {"data_mask": mask, "nonzero_data": nonzero, "scale": scale}
        dtypes.update(data_mask="uint1", nonzero_data=dtype_name)
    if offset is not None:
        params["offset"] = offset
    return params, dtypes


def decode_node(
    op_type: str,
    inputs: Sequence[np.ndarray],
    attributes: Mapping[str, object] | None = None,
    *,
    name: str = "",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[np.ndarray, ...]:
    """Decode one ``sparseblob`` node with sparseblob's decoders and return its ONNX outputs.

    A mask output is packed back into uint8 bytes, as the ONNX form stores masks.
    """
    params, dtypes = node_params(op_type, inputs, attributes, name=name, max_elements=max_elements)
    outputs = decode_op(op_type, COREML_OPSET, params, name=name or op_type, max_elements=max_elements, dtypes=dtypes)
    if op_type in _SPARSE_VALUE_OPS:
        mask, values = outputs
        return pack_bits(np.asarray(mask).reshape(-1), 1, name=f"{name}: mask"), values
    return outputs


# ---------------------------------------------------------------------------------------------
# Operators for the reference evaluator


class _ConstexprOp(OpRun):
    """Decode a ``sparseblob`` node; the result is cached for as long as the inputs are the same arrays."""

    op_domain = DOMAIN
    max_elements = DEFAULT_MAX_ELEMENTS

    def _run(self, *inputs, **attributes):
        key = tuple(id(value) for value in inputs)
        cached = getattr(self, "_cached", None)
        if cached is not None and cached[0] == key:
            return cached[2]
        outputs = decode_node(
            self.onnx_node.op_type,
            inputs,
            attributes,
            name=self.onnx_node.name,
            max_elements=self.max_elements,
        )
        # The inputs are kept alive with the key so that their ids cannot be reused.
        self._cached = (key, inputs, outputs)
        return outputs


def _constexpr_ops(max_elements: int) -> list[type[OpRun]]:
    return [
        type(op_type, (_ConstexprOp,), {"max_elements": max_elements, "op_domain": DOMAIN})
        for op_type in SIGNATURES
    ]


class GlobalMaxPool(OpRun):
    """``GlobalMaxPool`` over every axis after the first two, for inputs of any rank."""

    op_domain = ""

    def _run(self, x):
        return (np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True),)


class BatchNormalization(OpRun):
    """``BatchNormalization`` in inference mode: ``(x - mean) / sqrt(var + epsilon) * scale + B``."""

    op_domain = ""

    def _run(self, x, scale, bias, mean, var, epsilon=1e-5, momentum=None, training_mode=0, is_test=None, spatial=None):
        if training_mode:
            raise UnsupportedOpError(
                f"BatchNormalization {self.onnx_node.name!r}: training_mode=1 is not supported; "
                "the runner evaluates models for inference"
            )
        shape = (-1,) + (1,) * (x.ndim - 2)
        dtype = x.dtype
        normalized = (x - mean.reshape(shape).astype(dtype)) / np.sqrt(var.reshape(shape).astype(dtype) + dtype.type(epsilon))
        y = normalized * scale.reshape(shape).astype(dtype) + bias.reshape(shape).astype(dtype)
        return (y.astype(dtype, copy=False),)


# ---------------------------------------------------------------------------------------------
# Compressed weights in a graph


@dataclass
class CompressedTensor:
    """A tensor that a chain of ``sparseblob`` nodes decodes from constant initializers.

    Attributes:
        name: the decoded tensor, as its consumers read it.
        nodes: the chain, in graph order: ``sparseblob`` nodes, then at most one ``Cast``.
        final: the ``sparseblob`` node that produces the dense weight.
        params: MIL parameter name to the initializer that stores it, over the whole chain
            (``mask``, ``nonzero_data``, ``lut``, ``scale``, ...), for the inspector.
    """

    name: str
    nodes: list[onnx.NodeProto]
    final: onnx.NodeProto
    params: dict[str, str] = field(default_factory=dict)

    @property
    def chain(self) -> tuple[str, ...]:
        """Op types of the chain, in order."""
        return tuple(node.op_type for node in self.nodes)


def _producers(graph: onnx.GraphProto) -> dict[str, tuple[onnx.NodeProto, int]]:
    return {output: (node, index) for node in graph.node for index, output in enumerate(node.output) if output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                found.setdefault(name, []).append(node)
    return found


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _chain_of(node: onnx.NodeProto, producers, constants: set[str]) -> tuple[list[onnx.NodeProto], dict[str, str]] | None:
    """Return the chain that ends at the dense-producing ``node``, or None if a leaf is not constant.

    ``constexpr_sparse_to_dense`` may read ``nonzero_data`` from output 1 of
    ``constexpr_lut_to_sparse`` or ``constexpr_sparse_blockwise_shift_scale``. Its mask must
    then be that op's output 0 or the same initializer as that op's mask.
    """
    inputs = dict(zip(SIGNATURES[node.op_type].inputs, node.input))
    if node.op_type != SPARSE_TO_DENSE or inputs.get("nonzero_data") in constants:
        if all(name in constants for name in node.input):
            return [node], inputs
        return None

    producer = producers.get(inputs.get("nonzero_data", ""))
    if producer is None:
        return None
    first, index = producer
    if first.domain != DOMAIN or first.op_type not in _SPARSE_VALUE_OPS or index != 1:
        return None
    first_inputs = dict(zip(SIGNATURES[first.op_type].inputs, first.input))
    if not all(name in constants for name in first.input) or inputs.get("shape") not in constants:
        return None
    mask_param = "indices_mask" if first.op_type == LUT_TO_SPARSE else "data_mask"
    if inputs.get("mask") not in (first.output[0], first_inputs.get(mask_param)):
        return None
    params = dict(first_inputs)
    params[f"{SPARSE_TO_DENSE}.shape"] = inputs["shape"]
    return [first, node], params


def find_compressed_tensors(graph: onnx.GraphProto) -> dict[str, CompressedTensor]:
    """Find every tensor of the top-level graph that a ``sparseblob`` chain decodes from constants.

    A chain ends at ``constexpr_sparse_to_dense``, ``constexpr_lut_to_dense`` or
    ``constexpr_blockwise_shift_scale``; ``constexpr_sparse_to_dense`` may read the outputs of
    ``constexpr_lut_to_sparse`` or ``constexpr_sparse_blockwise_shift_scale``. When the
    dense output's only consumer is a ``Cast``, the ``Cast`` belongs to the chain and its output
    is the decoded tensor. Chains that read a value computed at run time are not listed.

    Returns:
        Decoded tensor name to :class:`CompressedTensor`.
    """
    constants = {init.name for init in graph.initializer}
    producers = _producers(graph)
    consumers = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    found: dict[str, CompressedTensor] = {}
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type not in _DENSE_OPS:
            continue
        chain = _chain_of(node, producers, constants)
        if chain is None:
            continue
        nodes, params = chain
        name = node.output[0]
        readers = consumers.get(name, [])
        if len(readers) == 1 and readers[0].op_type == "Cast" and readers[0].domain in ("", "ai.onnx") and name not in graph_outputs:
            nodes.append(readers[0])
            name = readers[0].output[0]
        found[name] = CompressedTensor(name=name, nodes=nodes, final=node, params=params)
    return found


# ---------------------------------------------------------------------------------------------
# Compressed weights for the kernels


def _kernels() -> SimpleNamespace:
    """Return the kernel functions, imported on first use because numba compiles on import."""
    from .kernels.conv import conv
    from .kernels.formats import from_lut, from_lut_to_sparse, from_shift_scale, from_sparse, from_sparse_shift_scale
    from .kernels.linear import matmul

    return SimpleNamespace(
        conv=conv,
        matmul=matmul,
        from_sparse=from_sparse,
        from_lut=from_lut,
        from_lut_to_sparse=from_lut_to_sparse,
        from_shift_scale=from_shift_scale,
        from_sparse_shift_scale=from_sparse_shift_scale,
    )


def _regroup_2d(param: np.ndarray, rank: int, where: str) -> np.ndarray | None:
    """Reshape a LUT or scale grid ``[G0, G1, 1, ..., 1, *tail]`` to ``[G0, G1, *tail]``.

    Merging axes 1.. of a weight into one axis keeps every group a contiguous run only when
    the groups split at most axis 1 of the merged axes. Returns None otherwise.
    """
    grid = param.shape[:rank]
    if any(dim != 1 for dim in grid[2:]):
        logger.debug("%s: groups split kernel axes %s; no 2-D kernel view", where, list(grid))
        return None
    return param.reshape((grid[0], grid[1], *param.shape[rank:]))


def _weight_from_params(op_type: str, params: dict[str, np.ndarray], name: str, *, as_matrix: bool):
    """Build a CompressedWeight from the decoded parameters of the chain's first sparseblob op.

    ``as_matrix`` views a weight ``[d0, d1, ...]`` as ``[d0, d1 * ...]`` (for ConvTranspose).
    Returns None when that view cannot keep the LUT or scale groups.
    """
    kernels = _kernels()

    def view(array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0], -1) if as_matrix else array

    def grid(array: np.ndarray | None, rank: int) -> np.ndarray | None:
        if array is None or not as_matrix:
            return array
        return _regroup_2d(array, rank, name)

    if op_type == SPARSE_TO_DENSE:
        return kernels.from_sparse(view(params["mask"]), params["nonzero_data"], name=name, pattern="auto")
    if op_type in (LUT_TO_SPARSE, LUT_TO_DENSE):
        mask_param = "indices_mask" if op_type == LUT_TO_SPARSE else None
        rank = (params[mask_param] if mask_param else params["indices"]).ndim
        lut = grid(params["lut"], rank)
        if lut is None:
            return None
        if op_type == LUT_TO_DENSE:
            return kernels.from_lut(view(params["indices"]), lut, name=name)
        return kernels.from_lut_to_sparse(
            view(params["indices_mask"]), params["indices_nonzero_data"], lut, name=name, pattern="auto"
        )
    mask_param = "data_mask" if op_type == SPARSE_BLOCKWISE_SHIFT_SCALE else "data"
    rank = params[mask_param].ndim
    scale = grid(params["scale"], rank)
    offset = grid(params.get("offset"), rank)
    if scale is None or (params.get("offset") is not None and offset is None):
        return None
    if op_type == BLOCKWISE_SHIFT_SCALE:
        return kernels.from_shift_scale(view(params["data"]), scale, offset, name=name)
    return kernels.from_sparse_shift_scale(
        view(params["data_mask"]), params["nonzero_data"], scale, offset, name=name, pattern="auto"
    )


def _chain_params(tensor: CompressedTensor, values: Mapping[str, np.ndarray], max_elements: int):
    """Return ``(op_type, params)`` of the chain's first op, which carries every parameter.

    Raises:
        ShapeError: a ``constexpr_sparse_to_dense`` after the first op declares another shape.
    """
    first = tensor.nodes[0]
    if first is not tensor.final and not np.array_equal(values[first.input[-1]], values[tensor.final.input[-1]]):
        raise ShapeError(
            f"{_describe(tensor.final.op_type, tensor.final.name)}: shape {values[tensor.final.input[-1]].tolist()} "
            f"differs from shape {values[first.input[-1]].tolist()} of {_describe(first.op_type, first.name)}"
        )
    params, _ = node_params(
        first.op_type,
        [values[name] for name in first.input],
        {a.name: helper.get_attribute_value(a) for a in first.attribute},
        name=first.name,
        max_elements=max_elements,
    )
    return first.op_type, params


def _params_shape(params: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    for name in ("mask", "indices_mask", "data_mask", "indices", "data"):
        if name in params:
            return tuple(params[name].shape)
    raise PackageError(f"no mask, indices or data among parameters {sorted(params)}")


# ---------------------------------------------------------------------------------------------
# Kernel nodes


def _spatial_ints(node_attrs: Mapping[str, object], name: str, count: int, default: int) -> tuple[int, ...]:
    value = node_attrs.get(name)
    if value is None:
        return (default,) * count
    values = tuple(int(v) for v in value)
    if len(values) != count:
        raise OpParameterError(f"{name}={list(values)} has {len(values)} entries; expected {count}")
    return values


def _conv_pads(attrs: Mapping[str, object], sizes, extents, strides) -> list[tuple[int, int]]:
    """Return ``(before, after)`` padding per spatial axis from ONNX ``auto_pad`` and ``pads``."""
    count = len(sizes)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, extent, stride in zip(sizes, extents, strides):
            total = max(0, (-(-size // stride) - 1) * stride + extent - size)
            small, large = total // 2, total - total // 2
            pads.append((large, small) if auto_pad == "SAME_LOWER" else (small, large))
        return pads
    if auto_pad == "VALID":
        return [(0, 0)] * count
    if auto_pad != "NOTSET":
        raise OpParameterError(f"auto_pad={auto_pad!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    values = _spatial_ints(attrs, "pads", 2 * count, 0)
    if min(values) < 0:
        raise OpParameterError(f"pads={list(values)} has a negative entry")
    return [(values[i], values[i + count]) for i in range(count)]


def conv_compressed(x: np.ndarray, weight, bias: np.ndarray | None, attrs: Mapping[str, object], *, strategy: str | None = None) -> np.ndarray:
    """ONNX ``Conv`` on a compressed weight, through ``runtime.kernels.conv``.

    Maps the ONNX attributes (``auto_pad``, ``pads``, ``strides``, ``dilations``, ``group``) to
    the kernel's resolved padding.

    Shapes:
        x: ``tensor<T, [N, Cin, *D]>``; weight ``[Cout, Cin/group, *K]``; bias ``[Cout]`` ->
        ``tensor<T, [N, Cout, *D_out]>``.
    """
    kernels = _kernels()
    spatial = x.ndim - 2
    kernel = tuple(weight.shape[2:])
    strides = _spatial_ints(attrs, "strides", spatial, 1)
    dilations = _spatial_ints(attrs, "dilations", spatial, 1)
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    pads = _conv_pads(attrs, x.shape[2:], extents, strides)
    y = kernels.conv(
        x, weight, bias, strides=strides, dilations=dilations, pads=pads, groups=int(attrs.get("group", 1)), strategy=strategy
    )
    return y.astype(x.dtype, copy=False)


def _auto_pad(attrs: Mapping[str, object]) -> str:
    value = attrs.get("auto_pad", "NOTSET")
    return value.decode() if isinstance(value, bytes) else str(value)


def conv_transpose_geometry(
    sizes: Sequence[int], kernel: Sequence[int], attrs: Mapping[str, object]
) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]], tuple[int, ...]]:
    """Return ``(strides, dilations, pads, output sizes)`` of an ONNX ``ConvTranspose``.

    With ``output_shape``, or ``auto_pad`` SAME (which requests ``input * stride``), the total
    padding is ``s * (D - 1) + output_padding + (K - 1) * d + 1 - output``. SAME_UPPER puts
    the odd element at the end and every other mode at the start, as the ONNX operator
    definition specifies. Otherwise the pads come from ``pads`` (zeros for VALID).

    Raises:
        UnsupportedOpError: the requested output is larger than the full output, which would
            need negative padding.
    """
    spatial = len(sizes)
    strides = _spatial_ints(attrs, "strides", spatial, 1)
    dilations = _spatial_ints(attrs, "dilations", spatial, 1)
    output_padding = _spatial_ints(attrs, "output_padding", spatial, 0)
    full = tuple(s * (d_in - 1) + op + (k - 1) * d + 1 for s, d_in, op, k, d in zip(strides, sizes, output_padding, kernel, dilations))
    auto_pad = _auto_pad(attrs)
    requested = attrs.get("output_shape")
    if requested is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if requested is not None:
            out_sizes = tuple(int(v) for v in requested)[-spatial:]
        else:
            out_sizes = tuple(d_in * s for d_in, s in zip(sizes, strides))
        pads = []
        for total_size, out in zip(full, out_sizes):
            total = total_size - out
            if total < 0:
                raise UnsupportedOpError(
                    f"ConvTranspose: output size {out} exceeds the full output {total_size}; negative padding is not supported"
                )
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return strides, dilations, pads, out_sizes
    if auto_pad == "VALID":
        pads = [(0, 0)] * spatial
    else:
        pads = _conv_pads({**attrs, "auto_pad": "NOTSET"}, sizes, (1,) * spatial, (1,) * spatial)
    out_sizes = tuple(f - before - after for f, (before, after) in zip(full, pads))
    if min(out_sizes) < 1:
        raise ShapeError(f"ConvTranspose: output sizes {list(out_sizes)} are not positive")
    return strides, dilations, pads, out_sizes


def _col2im(products: np.ndarray, sizes, strides, dilations, pads, out_sizes) -> np.ndarray:
    """Add the tap products ``[N, Cout, *D, *K]`` into the strided output and crop it by ``pads``."""
    spatial = len(sizes)
    kernel = products.shape[2 + spatial :]
    batch, cout = products.shape[:2]
    full = tuple(
        max(s * (d_in - 1) + (k - 1) * d + 1, before + out)
        for s, d_in, k, d, (before, _), out in zip(strides, sizes, kernel, dilations, pads, out_sizes)
    )
    element_count((batch, cout, *full), name="ConvTranspose: output")
    buffer = np.zeros((batch, cout, *full), dtype=np.float32)
    for tap in np.ndindex(*kernel):
        target = tuple(slice(k * d, k * d + (d_in - 1) * s + 1, s) for k, d, d_in, s in zip(tap, dilations, sizes, strides))
        buffer[(slice(None), slice(None), *target)] += products[(Ellipsis, *tap)]
    return buffer[(slice(None), slice(None), *(slice(before, before + out) for (before, _), out in zip(pads, out_sizes)))]


def _add_bias(y: np.ndarray, bias: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float32).reshape((-1,) + (1,) * (y.ndim - 2))
    return np.ascontiguousarray(y).astype(dtype, copy=False)


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, attrs: Mapping[str, object]) -> np.ndarray:
    """ONNX ``ConvTranspose`` on a dense weight, in fp32, for any ``group``.

    One matrix product per group gives every kernel tap's contribution,
    ``x [N * prod(D), Cin/g] @ W [Cin/g, Cout/g * prod(K)]``, and :func:`_col2im` adds them
    into the strided output.

    Shapes:
        x: ``tensor<T, [N, Cin, *D]>``; weight ``[Cin, Cout/group, *K]``; bias ``[Cout]`` ->
        ``tensor<T, [N, Cout, *D_out]>``.
    """
    spatial = x.ndim - 2
    groups = int(attrs.get("group", 1))
    batch, channels = x.shape[:2]
    kernel = tuple(weight.shape[2:])
    if weight.shape[0] != channels or channels % groups or len(kernel) != spatial:
        raise ShapeError(f"ConvTranspose: x has shape {list(x.shape)} but the weight has shape {list(weight.shape)} (group={groups})")
    sizes = x.shape[2:]
    strides, dilations, pads, out_sizes = conv_transpose_geometry(sizes, kernel, attrs)
    cin, cout = channels // groups, weight.shape[1]
    rows = np.moveaxis(x, 1, -1).reshape(-1, channels).astype(np.float32)
    matrix = weight.astype(np.float32).reshape(channels, -1)
    parts = [rows[:, g * cin : (g + 1) * cin] @ matrix[g * cin : (g + 1) * cin] for g in range(groups)]
    products = np.concatenate(parts, axis=1).reshape(batch, *sizes, groups * cout, *kernel)
    products = np.moveaxis(products, 1 + spatial, 1)
    y = _col2im(products, sizes, strides, dilations, pads, out_sizes)
    return _add_bias(y, bias, x.dtype)


def conv_transpose_compressed(
    x: np.ndarray, weight, kernel: tuple[int, ...], bias: np.ndarray | None, attrs: Mapping[str, object], *, strategy: str | None = None
) -> np.ndarray:
    """ONNX ``ConvTranspose`` with ``group=1`` on a compressed weight, through the sparse kernels.

    ``weight`` is the compressed weight viewed as ``[Cin, Cout * prod(K)]``; the product
    ``x [N * prod(D), Cin] @ weight`` runs on ``runtime.kernels.matmul``.

    Shapes:
        as :func:`conv_transpose`.
    """
    kernels = _kernels()
    spatial = x.ndim - 2
    batch, channels = x.shape[:2]
    taps = math.prod(kernel)
    if len(kernel) != spatial or channels != weight.rows or weight.columns % taps:
        raise ShapeError(f"ConvTranspose: x has shape {list(x.shape)} but weight {weight.name!r} has shape {list(weight.shape)}")
    sizes = x.shape[2:]
    strides, dilations, pads, out_sizes = conv_transpose_geometry(sizes, kernel, attrs)
    rows = np.moveaxis(x, 1, -1).reshape(-1, channels).astype(np.float32)
    products = kernels.matmul(rows, weight, strategy=strategy).reshape(batch, *sizes, weight.columns // taps, *kernel)
    y = _col2im(np.moveaxis(products, 1 + spatial, 1), sizes, strides, dilations, pads, out_sizes)
    return _add_bias(y, bias, x.dtype)


class ConvTranspose(OpRun):
    """ONNX ``ConvTranspose``, including ``output_shape`` and ``auto_pad``, through :func:`conv_transpose`."""

    op_domain = ""

    def _run(self, x, w, b=None, **attrs):
        return (conv_transpose(x, w, b, attrs),)


@dataclass
class _KernelWeight:
    """A compressed weight prepared for one kernel node."""

    weight: object
    transposed: bool
    # ConvTranspose: the kernel's spatial shape, since the weight is viewed as a matrix.
    kernel: tuple[int, ...] = ()


class _KernelOp(OpRun):
    """A Conv, ConvTranspose, Gemm or MatMul whose weight is a compressed weight of the registry.

    The node keeps the original inputs, with the weight's slot left empty, plus the attributes
    ``sparseblob_weight`` (registry key) and ``sparseblob_slot`` (the weight's input index).
    """

    op_domain = RUNTIME_DOMAIN
    registry: dict[str, _KernelWeight] = {}
    strategy: str | None = None

    def _run(self, *inputs, sparseblob_weight=None, sparseblob_slot=None, **attrs):
        entry = self.registry[sparseblob_weight]
        op_type = self.onnx_node.op_type
        if op_type == "Conv":
            return (conv_compressed(inputs[0], entry.weight, _optional(inputs, 2), attrs, strategy=self.strategy),)
        if op_type == "ConvTranspose":
            return (conv_transpose_compressed(inputs[0], entry.weight, entry.kernel, _optional(inputs, 2), attrs, strategy=self.strategy),)
        if op_type == "MatMul":
            return (_matmul(inputs, sparseblob_slot, entry, self.strategy),)
        return (_gemm(inputs, sparseblob_slot, entry, attrs, self.strategy),)


def _optional(inputs: Sequence, index: int):
    return inputs[index] if len(inputs) > index else None


def _matmul(inputs, slot: int, entry: _KernelWeight, strategy: str | None) -> np.ndarray:
    kernels = _kernels()
    other = inputs[1 - slot]
    if slot == 1:
        y = kernels.matmul(other, entry.weight, transpose_y=entry.transposed, strategy=strategy)
    else:
        y = kernels.matmul(entry.weight, other, transpose_x=entry.transposed, strategy=strategy)
    return y.astype(other.dtype, copy=False)


def _gemm(inputs, slot: int, entry: _KernelWeight, attrs: Mapping[str, object], strategy: str | None) -> np.ndarray:
    kernels = _kernels()
    other = inputs[1 - slot]
    trans_a, trans_b = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    if slot == 1:
        a = other.T if trans_a else other
        y = kernels.matmul(a, entry.weight, transpose_y=trans_b != entry.transposed, strategy=strategy)
    else:
        b = other.T if trans_b else other
        y = kernels.matmul(entry.weight, b, transpose_x=trans_a != entry.transposed, strategy=strategy)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        y = y * np.float32(alpha)
    c = _optional(inputs, 2)
    if c is not None:
        y = y + np.float32(beta) * c.astype(np.float32)
    return y.astype(other.dtype, copy=False)


def _kernel_classes(registry: dict[str, _KernelWeight], strategy: str | None) -> list[type[OpRun]]:
    namespace = {"registry": registry, "strategy": strategy, "op_domain": RUNTIME_DOMAIN}
    return [type(op_type, (_KernelOp,), dict(namespace)) for op_type in _KERNEL_OPS]


def _weight_slot(node: onnx.NodeProto, weights: Mapping[str, tuple[CompressedTensor, bool]]) -> int | None:
    """Return the input index that reads a compressed weight, or None."""
    if node.op_type in ("Conv", "ConvTranspose"):
        slots = (1,)
    elif node.op_type in ("Gemm", "MatMul"):
        slots = (1, 0)
    else:
        return None
    for slot in slots:
        if len(node.input) > slot and node.input[slot] in weights:
            if node.op_type in ("Gemm", "MatMul") and node.input[1 - slot] in weights:
                return None
            return slot
    return None


def _transposed_views(
    graph: onnx.GraphProto, tensors: Mapping[str, CompressedTensor]
) -> dict[str, tuple[CompressedTensor, bool, onnx.NodeProto | None]]:
    """Map each name that reads a compressed weight directly, or through a rank-2 ``Transpose``."""
    views: dict[str, tuple[CompressedTensor, bool, onnx.NodeProto | None]] = {
        name: (tensor, False, None) for name, tensor in tensors.items()
    }
    shapes = {init.name: len(init.dims) and int(init.dims[0]) for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or not node.input or node.input[0] not in tensors:
            continue
        tensor = tensors[node.input[0]]
        rank = shapes.get(tensor.final.input[-1])
        # Without perm, Transpose reverses the axes, which for rank 2 is [1, 0].
        if rank == 2 and list(_attribute(node, "perm", [1, 0])) == [1, 0]:
            views[node.output[0]] = (tensor, True, node)
    return views


def _kernel_entry(node, tensor, transposed, values, max_elements) -> _KernelWeight | None:
    """Build the kernel weight for one consumer, or None when the consumer keeps its standard node."""
    last = tensor.nodes[-1]
    if last.op_type == "Cast" and int(_attribute(last, "to", 0)) != TensorProto.FLOAT:
        # The kernels compute in fp32; a Cast to another dtype would round the weight first.
        return None
    if transposed and node.op_type in ("Conv", "ConvTranspose"):
        return None
    op_type, params = _chain_params(tensor, values, max_elements)
    shape = _params_shape(params)
    name = tensor.name
    if node.op_type == "Conv":
        if not 3 <= len(shape) <= 5:
            return None
        return _KernelWeight(_weight_from_params(op_type, params, name, as_matrix=False), False)
    if node.op_type == "ConvTranspose":
        if int(_attribute(node, "group", 1)) != 1 or len(shape) < 3:
            return None
        weight = _weight_from_params(op_type, params, name, as_matrix=True)
        return None if weight is None else _KernelWeight(weight, False, tuple(shape[2:]))
    if len(shape) != 2:
        return None
    return _KernelWeight(_weight_from_params(op_type, params, name, as_matrix=False), transposed)


def _rewrite_for_kernels(model: onnx.ModelProto, strategy: str | None, max_elements: int) -> tuple[onnx.ModelProto, dict[str, _KernelWeight]]:
    """Return a copy of ``model`` whose weight-reading nodes use the kernels, and the registry."""
    graph = model.graph
    tensors = find_compressed_tensors(graph)
    if not tensors:
        return model, {}
    views = _transposed_views(graph, tensors)
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    registry: dict[str, _KernelWeight] = {}

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    new_nodes = []
    for node in graph.node:
        slot = _weight_slot(node, views) if node.domain in ("", "ai.onnx") else None
        if slot is None:
            new_nodes.append(node)
            continue
        tensor, transposed, _ = views[node.input[slot]]
        entry = _kernel_entry(node, tensor, transposed, values, max_elements)
        if entry is None or entry.weight is None:
            logger.info("%s %r keeps its standard node and reads the decoded weight %r", node.op_type, node.name, tensor.name)
            new_nodes.append(node)
            continue
        key = f"{node.name or node.op_type}:{len(registry)}"
        registry[key] = entry
        inputs = list(node.input)
        inputs[slot] = ""
        kernel_node = helper.make_node(node.op_type, inputs, list(node.output), name=node.name, domain=RUNTIME_DOMAIN)
        kernel_node.attribute.extend(node.attribute)
        kernel_node.attribute.extend(
            [helper.make_attribute("sparseblob_weight", key), helper.make_attribute("sparseblob_slot", slot)]
        )
        new_nodes.append(kernel_node)

    # Drop the chains (and transposes) that no remaining node or graph output reads.
    _drop_unread(new_nodes, graph, views)
    set_repeated(rewritten.graph.node, new_nodes)
    rewritten.opset_import.append(helper.make_opsetid(RUNTIME_DOMAIN, 1))
    logger.info("rewrote %d nodes to use the sparse kernels", len(registry))
    return rewritten, registry


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Return every name that a node inside a subgraph (If, Loop, Scan bodies) reads."""
    names: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for subgraph in graphs:
                names.update(name for inner in subgraph.node for name in inner.input)
                names.update(subgraph_reads(subgraph))
    return names


def _drop_unread(nodes: list[onnx.NodeProto], graph: onnx.GraphProto, views) -> None:
    """Remove chain nodes (sparseblob ops, their Cast and Transpose) whose outputs nothing reads."""
    outputs = {output.name for output in graph.output} | subgraph_reads(graph)
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        dead = [
            node
            for node in nodes
            if (node.domain == DOMAIN or node.output[0] in views)
            and not any(output in read for output in node.output)
        ]
        if not dead:
            return
        for node in dead:
            nodes.remove(node)


# ---------------------------------------------------------------------------------------------
# Runner


def load_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Return ``model`` loaded with its external data; a ``ModelProto`` is returned as is.

    Raises:
        PackageError: the file cannot be read or is not an ONNX model.
    """
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(os.fspath(model))
    except OSError as error:
        raise PackageError(f"cannot read ONNX model {os.fspath(model)!r}: {error}") from error
    except DecodeError as error:
        raise PackageError(f"{os.fspath(model)!r} is not an ONNX model: {error}") from error


WEIGHT_MODES = ("sparse", "dense")


class OnnxRunner:
    """Load an ONNX model once and run it with the reference evaluator.

    Args:
        model: a path to an ``.onnx`` file (external data is loaded too) or a ``ModelProto``.
        weights: ``"sparse"`` multiplies compressed weights with the sparse kernels;
            ``"dense"`` decodes them and runs the standard operators.
        strategy: kernel strategy passed to ``runtime.kernels.matmul`` and ``conv`` (``"sparse"``,
            ``"tiled"``, ``"dense"``), or None to let the kernels choose.
        max_elements: largest element count that a decoder may allocate for one tensor.

    Raises:
        PackageError: the file is not an ONNX model.
        SparseblobError: a compressed weight is malformed (checked when the weights are
            ``"sparse"``; otherwise at the first run).
    """

    def __init__(
        self,
        model: str | os.PathLike | onnx.ModelProto,
        *,
        weights: str = "sparse",
        strategy: str | None = None,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> None:
        if weights not in WEIGHT_MODES:
            raise OpParameterError(f"weights={weights!r} is not one of {list(WEIGHT_MODES)}")
        self.model = load_model(model)
        check_model(self.model)
        self.weights = weights
        registry: dict[str, _KernelWeight] = {}
        runnable = self.model
        if weights == "sparse":
            runnable, registry = _rewrite_for_kernels(self.model, strategy, max_elements)
        self.kernel_nodes = len(registry)
        new_ops = [*_constexpr_ops(max_elements), GlobalMaxPool, BatchNormalization, ConvTranspose, *_kernel_classes(registry, strategy)]
        self._evaluator = ReferenceEvaluator(runnable, new_ops=new_ops)
        initializers = {init.name for init in self.model.graph.initializer}
        self.input_names = [i.name for i in self.model.graph.input if i.name not in initializers]
        self.output_names = [o.name for o in self.model.graph.output]

    def run(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model and return the requested outputs (all by default) by name.

        Raises:
            OpParameterError: an input is missing or not a graph input.
        """
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise OpParameterError(f"missing model input(s) {missing}; the model takes {self.input_names}")
        known = {i.name for i in self.model.graph.input}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise OpParameterError(f"unknown model input(s) {unknown}; the model takes {self.input_names}")
        names = list(output_names) if output_names is not None else self.output_names
        results = self._evaluator.run(names, {name: np.asarray(value) for name, value in inputs.items()})
        return dict(zip(names, results))


def run_onnx(
    path: str | os.PathLike | onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    *,
    weights: str = "sparse",
    strategy: str | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Run an ONNX model once and return its outputs by name; see :class:`OnnxRunner`.

    Example: ``run_onnx("model.sparse.onnx", {"x": x})["y"]``.
    """
    return OnnxRunner(path, weights=weights, strategy=strategy, max_elements=max_elements).run(inputs)


# ---------------------------------------------------------------------------------------------
# Inspection and densification


@dataclass(frozen=True)
class WeightSummary:
    """One compressed weight of an ONNX model.

    Attributes:
        name: the decoded tensor, as its consumers read it.
        chain: op types of the chain, in order.
        shape: the dense shape.
        dtype: the decoded dtype (after a trailing ``Cast``).
        value_format: ``fp16``, ``fp32``, ``int8``, ``uint8``, ``lut<N>``, ``int4`` ...
        stored_bytes: bytes of the chain's parameter initializers.
        dense_bytes: bytes of the dense weight in ``dtype``.
        density: fraction of mask bits set (1.0 without a mask).
        consumers: ``op_type name`` of each node that reads the weight.
    """

    name: str
    chain: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    value_format: str
    stored_bytes: int
    dense_bytes: int
    density: float
    consumers: tuple[str, ...]

    def to_dict(self) -> dict:
        """Return the summary as JSON-ready values."""
        return {
            "name": self.name,
            "chain": list(self.chain),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "value_format": self.value_format,
            "stored_bytes": self.stored_bytes,
            "dense_bytes": self.dense_bytes,
            "density": self.density,
            "consumers": list(self.consumers),
        }


@dataclass(frozen=True)
class OnnxSummary:
    """Summary of the compressed weights of one ONNX model, from :func:`inspect_onnx`."""

    path: str
    ir_version: int
    opsets: dict[str, int]
    functions: tuple[str, ...]
    weights: tuple[WeightSummary, ...]

    @property
    def stored_bytes(self) -> int:
        """Bytes of all compressed weights' parameters."""
        return sum(weight.stored_bytes for weight in self.weights)

    @property
    def dense_bytes(self) -> int:
        """Bytes the compressed weights would take dense."""
        return sum(weight.dense_bytes for weight in self.weights)

    def to_dict(self) -> dict:
        """Return the summary as JSON-ready values."""
        return {
            "path": self.path,
            "ir_version": self.ir_version,
            "opsets": self.opsets,
            "functions": list(self.functions),
            "stored_bytes": self.stored_bytes,
            "dense_bytes": self.dense_bytes,
            "weights": [weight.to_dict() for weight in self.weights],
        }


def _value_format(tensor: CompressedTensor, values: Mapping[str, np.ndarray]) -> str:
    first = tensor.nodes[0]
    if first.op_type in (LUT_TO_SPARSE, LUT_TO_DENSE):
        lut = values[first.input[2 if first.op_type == LUT_TO_SPARSE else 1]]
        return f"lut{_LUT_BITS.get(int(lut.shape[-2]), '?')}<{_dtype_name(lut.dtype)}>"
    if first.op_type in (BLOCKWISE_SHIFT_SCALE, SPARSE_BLOCKWISE_SHIFT_SCALE):
        return DATA_DTYPES.get(int(_attribute(first, "data_dtype", -1)), "?")
    return _dtype_name(values[first.input[0]].dtype)


def _dtype_name(dtype: np.dtype) -> str:
    return {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32", np.dtype(np.float64): "fp64"}.get(np.dtype(dtype), str(dtype))


def _density(tensor: CompressedTensor, values: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> float:
    """Return the fraction of set mask bits, after checking the mask's byte count and padding."""
    first = tensor.nodes[0]
    if first.op_type in (LUT_TO_DENSE, BLOCKWISE_SHIFT_SCALE):
        return 1.0
    param = "mask" if first.op_type == SPARSE_TO_DENSE else SIGNATURES[first.op_type].inputs[0]
    mask = values[first.input[SIGNATURES[first.op_type].inputs.index(param)]]
    bits = _mask_bits(mask, shape, param, _describe(first.op_type, first.name))
    return float(np.count_nonzero(bits)) / bits.size if bits.size else 1.0


def inspect_onnx(path: str | os.PathLike | onnx.ModelProto) -> OnnxSummary:
    """List the compressed weights of an ONNX model: op chain, shape, stored bytes, density.

    Raises:
        PackageError: the file is not an ONNX model.
        SparseblobError: a mask has the wrong byte count or set padding bits.
    """
    model = load_model(path)
    check_model(model)
    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers = _consumers(graph)
    summaries = []
    for name, tensor in find_compressed_tensors(graph).items():
        shape_name = tensor.final.input[-1]
        shape = tuple(int(d) for d in values[shape_name])
        if tensor.nodes[-1].op_type == "Cast":
            dtype = helper.tensor_dtype_to_np_dtype(int(_attribute(tensor.nodes[-1], "to")))
        else:
            dtype = _final_dtype(tensor, values)
        stored = sum(values[source].nbytes for source in set(tensor.params.values()))
        readers = tuple(f"{node.op_type} {node.name}".strip() for node in consumers.get(name, []))
        summaries.append(
            WeightSummary(
                name=name,
                chain=tensor.chain,
                shape=shape,
                dtype=_dtype_name(dtype),
                value_format=_value_format(tensor, values),
                stored_bytes=int(stored),
                dense_bytes=int(math.prod(shape) * np.dtype(dtype).itemsize),
                density=_density(tensor, values, shape),
                consumers=readers,
            )
        )
    return OnnxSummary(
        path=os.fspath(path) if not isinstance(path, onnx.ModelProto) else "<model>",
        ir_version=int(model.ir_version),
        opsets={entry.domain or "ai.onnx": int(entry.version) for entry in model.opset_import},
        functions=tuple(f"{f.domain}.{f.name}" for f in model.functions),
        weights=tuple(summaries),
    )


def _final_dtype(tensor: CompressedTensor, values: Mapping[str, np.ndarray]) -> np.dtype:
    first = tensor.nodes[0]
    if first.op_type in (LUT_TO_SPARSE, LUT_TO_DENSE):
        return values[first.input[2 if first.op_type == LUT_TO_SPARSE else 1]].dtype
    if first.op_type in (BLOCKWISE_SHIFT_SCALE, SPARSE_BLOCKWISE_SHIFT_SCALE):
        return values[first.input[2 if first.op_type == SPARSE_BLOCKWISE_SHIFT_SCALE else 1]].dtype
    return values[first.input[0]].dtype


def densify_onnx(
    model: str | os.PathLike | onnx.ModelProto, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> onnx.ModelProto:
    """Return a copy of the model with every ``sparseblob`` node decoded into an initializer.

    Each ``sparseblob`` output that a standard node or a graph output reads becomes an
    initializer of the values that sparseblob's decoders give, cast as the ``Cast`` that ends
    its chain casts them. The ``sparseblob`` nodes, those ``Cast`` nodes, the parameter
    initializers, the ``sparseblob`` functions and the opset import are removed.
    The result is a plain ONNX model that any runtime runs, with the same (pruned) weights.

    Raises:
        PackageError: a ``sparseblob`` node reads a value computed at run time.
        SparseblobError: a compressed weight is malformed.
    """
    source = load_model(model)
    check_model(source)
    result = onnx.ModelProto()
    result.CopyFrom(source)
    graph = result.graph
    values: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}

    # A Cast that ends a chain is folded into the decoded initializer too.
    chain_casts = {
        tensor.nodes[-1].output[0] for tensor in find_compressed_tensors(graph).values() if tensor.nodes[-1].op_type == "Cast"
    }
    decoded: dict[str, np.ndarray] = {}
    kept_nodes = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output and node.output[0] in chain_casts and node.input[0] in decoded:
            target = helper.tensor_dtype_to_np_dtype(int(_attribute(node, "to")))
            decoded[node.output[0]] = decoded[node.input[0]].astype(target)
            continue
        if node.domain != DOMAIN:
            kept_nodes.append(node)
            continue
        missing = [name for name in node.input if name not in values and name not in decoded]
        if missing:
            raise PackageError(
                f"{_describe(node.op_type, node.name)} reads {missing}, which are not constants; "
                "only constant chains can be densified"
            )
        inputs = [decoded[name] if name in decoded else values[name] for name in node.input]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        outputs = decode_node(node.op_type, inputs, attributes, name=node.name, max_elements=max_elements)
        decoded.update(zip(node.output, outputs))

    read = {name for node in kept_nodes for name in node.input} | {output.name for output in graph.output}
    parameters = {name for node in source.graph.node if node.domain == DOMAIN for name in node.input}
    remaining = [init for init in graph.initializer if init.name not in parameters or init.name in read]
    remaining += [numpy_helper.from_array(np.asarray(value), name) for name, value in decoded.items() if name in read]
    set_repeated(graph.node, kept_nodes)
    set_repeated(graph.initializer, remaining)
    set_repeated(result.functions, [f for f in result.functions if f.domain != DOMAIN])
    set_repeated(result.opset_import, [entry for entry in result.opset_import if entry.domain != DOMAIN])
    return result


def set_repeated(container, items) -> None:
    """Replace a repeated protobuf field by copies of ``items``.

    The copies are taken first because clearing a repeated field can invalidate the Python
    references to its old elements.
    """
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del container[:]
    container.extend(copies)
