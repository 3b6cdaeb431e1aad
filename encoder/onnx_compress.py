"""Compress the weights of an ONNX model into Core ML constexpr ops of the ``sparseblob`` domain.

:func:`compress_model` prunes the weights of ``Conv``, ``ConvTranspose``, ``Gemm`` and
``MatMul``, read from initializers or ``Constant`` nodes. It encodes the kept values as fp16,
fp32, palettized or quantized nonzeros, and replaces each weight by the chain of
``sparseblob`` nodes that decodes it (:mod:`sparseblob.runtime.onnx_run` describes the
format). The chain's last output keeps the weight's name, so every
consumer, and every other node, initializer and attribute, stays as it was. The model gains a
``sparseblob`` opset import, the function bodies of the op types it uses
(:mod:`.onnx_functions`), and IR version 8 or later (model-local functions need it).
:func:`compress_onnx` does the same and writes the file atomically, with large tensors in
ONNX external data.

**Axes.** Patterns and granularities name the weight's axes by role, as Core ML's pruning
``dim`` does: 0 is the output-channel axis and 1 the input-channel (reduction) axis. Each
op maps the roles to its stored layout:

=============================== ====================== ======== =======
op and operand                  stored layout          output   input
=============================== ====================== ======== =======
Conv ``W``                      ``[Cout, Cin/g, *K]``  0        1
ConvTranspose ``W``             ``[Cin, Cout/g, *K]``  1        0
Gemm ``B``, ``transB=1``        ``[N, K]``             0        1
Gemm ``B``, ``transB=0``        ``[K, N]``             1        0
Gemm ``A``, ``transA=0``        ``[M, K]``             0        1
MatMul ``B`` (right operand)    ``[K, N]``             1        0
MatMul ``A`` (left operand)     ``[M, K]``             0        1
=============================== ====================== ======== =======

A rank-2 weight read through ``Transpose(perm=[1, 0])`` swaps the two. n:m groups run along
the input axis by default and blocks along the output axis, as in Core ML.

**What is skipped, and why** (the weight is left untouched and the report says why): a dtype
other than fp16/fp32, rank below 2, fewer than ``min_elements`` elements, a reader that is not
a selected weight operand (another op, a graph output, a subgraph), readers that disagree on
the axes, an n:m group ``m`` or block longer than half the pruned axis (as Core ML's pruner
skips), and any encoding the weight cannot take (a group size that does not divide the
channels, an fp16 overflow). Pruning follows :mod:`.masks`; n:m ratios use Core ML's
convention, ``n`` zeros in every ``m``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from sparseblob.runtime.bitpack import pack_bits
from sparseblob.runtime.errors import EncodingError, SparseblobError
from sparseblob.runtime.onnx_run import (
    BLOCKWISE_SHIFT_SCALE,
    DOMAIN,
    DOMAIN_VERSION,
    LUT_TO_DENSE,
    LUT_TO_SPARSE,
    MIN_OPSET,
    SPARSE_BLOCKWISE_SHIFT_SCALE,
    SPARSE_TO_DENSE,
    default_opset,
    load_model,
    set_repeated,
    subgraph_reads,
)

from ._files import current_umask
from ._validate import check_choice, check_fraction, check_int
from .masks import apply_mask, block_mask, magnitude_mask, n_m_mask
from .onnx_functions import CASTLIKE_OPSET, make_function
from .palettize import NBITS, PALETTIZE_MODES, palettize_nonzero, palettize_weight
from .params import LutParams, LutToSparseParams, QuantParams, SparseParams, SparseShiftScaleParams
from .quantize import MODES, QUANT_DTYPES, quantize_nonzero, quantize_weight
from .sparse import encode_sparse

__all__ = [
    "OP_TYPES",
    "VALUE_FORMATS",
    "CompressOptions",
    "CompressedWeightReport",
    "SkippedWeight",
    "OnnxCompressReport",
    "compress_model",
    "compress_onnx",
    "save_model_atomic",
]

logger = logging.getLogger(__name__)

OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")
VALUE_FORMATS = ("fp16", "fp32", "palettize", "quantize")
PALETTIZE_GRANULARITIES = ("per_tensor", "per_grouped_channel")
QUANTIZE_GRANULARITIES = ("per_tensor", "per_channel", "per_block")
# Model-local functions (FunctionProto in ModelProto.functions) need IR version 8.
MIN_IR_VERSION = 8

_FLOAT_TYPES = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.FLOAT16: np.dtype(np.float16)}
_DATA_DTYPE_CODES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int4": TensorProto.INT4, "uint4": TensorProto.UINT4}
_FP16_MAX = float(np.finfo(np.float16).max)


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class CompressOptions:
    """Options of :func:`compress_model`: the pruning pattern, the value format and the weight selection.

    Attributes:
        sparsity: fraction of elements (or of blocks, with ``block``) to prune, in [0, 1].
        n_m: ``(n, m)``: ``n`` zeros in every ``m`` consecutive elements.
        block: block length for block sparsity (needs ``sparsity``).
        axis: axis role of the pattern, 0 (output) or 1 (input); by default 1 for n:m and 0
            for blocks. Unstructured sparsity has no axis.
        values: ``fp16``, ``fp32``, ``palettize`` or ``quantize``.
        nbits: palettization index width: 1, 2, 3, 4, 6 or 8.
        palettize_mode: ``kmeans``, ``uniform`` or ``unique``.
        group_size: output channels per LUT for ``per_grouped_channel``.
        quantize_dtype: ``int8``, ``uint8``, ``int4`` or ``uint4``.
        quantize_mode: ``symmetric`` or ``affine``.
        granularity: palettization ``per_tensor`` (default) or ``per_grouped_channel``;
            quantization ``per_tensor``, ``per_channel`` (default) or ``per_block``.
        block_size: input channels per scale for ``per_block`` quantization.
        op_types: op types whose weights are compressed.
        node_names: ``fnmatch`` patterns; when given, only weights whose readers all match
            (by node name or weight name) are compressed.
        min_elements: smallest element count of a compressed weight.
    """

    sparsity: float | None = None
    n_m: tuple[int, int] | None = None
    block: int | None = None
    axis: int | None = None
    values: str = "fp16"
    nbits: int = 4
    palettize_mode: str = "kmeans"
    group_size: int | None = None
    quantize_dtype: str = "int8"
    quantize_mode: str = "symmetric"
    granularity: str | None = None
    block_size: int | None = None
    op_types: tuple[str, ...] = OP_TYPES
    node_names: tuple[str, ...] | None = None
    min_elements: int = 2048

    def __post_init__(self) -> None:
        self._check_pattern()
        self._check_values()
        self._check_selection()

    def _check_pattern(self) -> None:
        if self.n_m is not None:
            object.__setattr__(self, "n_m", _parse_n_m(self.n_m))
        if self.sparsity is not None:
            check_fraction(self.sparsity, "sparsity")
        if self.block is not None:
            check_int(self.block, "block", minimum=2)
            if self.sparsity is None:
                raise EncodingError("block needs sparsity: the fraction of blocks to prune")
        if self.n_m is not None and self.sparsity is not None:
            raise EncodingError("give either sparsity (with an optional block) or n_m, not both")
        if self.axis is not None:
            check_choice(self.axis, "axis", (0, 1))
            if self.n_m is None and self.block is None:
                raise EncodingError("axis applies to n_m and block patterns only")

    def _check_values(self) -> None:
        check_choice(self.values, "values", VALUE_FORMATS)
        if self.values in ("fp16", "fp32") and not self.prunes:
            raise EncodingError(f"values={self.values!r} needs a pruning pattern: give sparsity or n_m")

        if self.values == "palettize":
            check_choice(self.nbits, "nbits", NBITS)
            check_choice(self.palettize_mode, "palettize_mode", PALETTIZE_MODES)
            check_choice(self.granularity or "per_tensor", "granularity", PALETTIZE_GRANULARITIES)
            if self.granularity == "per_grouped_channel":
                if self.group_size is None:
                    raise EncodingError("granularity='per_grouped_channel' needs group_size")
                check_int(self.group_size, "group_size", minimum=1)

        if self.values == "quantize":
            check_choice(self.quantize_dtype, "quantize_dtype", QUANT_DTYPES)
            check_choice(self.quantize_mode, "quantize_mode", MODES)
            check_choice(self.granularity or "per_channel", "granularity", QUANTIZE_GRANULARITIES)
            if self.granularity == "per_block":
                if self.block_size is None:
                    raise EncodingError("granularity='per_block' needs block_size")
                check_int(self.block_size, "block_size", minimum=1)

    def _check_selection(self) -> None:
        unknown = sorted(set(self.op_types) - set(OP_TYPES))
        if unknown:
            raise EncodingError(f"op_types {unknown} are not supported; expected a subset of {list(OP_TYPES)}")
        check_int(self.min_elements, "min_elements", minimum=0)
        object.__setattr__(self, "op_types", tuple(self.op_types))
        if self.node_names is not None:
            object.__setattr__(self, "node_names", tuple(self.node_names))

    @property
    def prunes(self) -> bool:
        """True when the options prune (a sparsity or an n:m pattern is set)."""
        return self.sparsity is not None or self.n_m is not None

    def pattern_text(self) -> str:
        """Describe the pruning pattern, e.g. ``2:4 along input`` or ``50% unstructured``."""
        if self.n_m is not None:
            return f"{self.n_m[0]}:{self.n_m[1]} along {_ROLE_NAMES[self._axis(1)]}"
        if self.block is not None:
            return f"{self.sparsity:.0%} in blocks of {self.block} along {_ROLE_NAMES[self._axis(0)]}"
        if self.sparsity is not None:
            return f"{self.sparsity:.0%} unstructured"
        return "dense"

    def values_text(self) -> str:
        """Describe the value format, e.g. ``lut4 kmeans per_tensor`` or ``int8 symmetric per_channel``."""
        if self.values == "palettize":
            return f"lut{self.nbits} {self.palettize_mode} {self.granularity or 'per_tensor'}"
        if self.values == "quantize":
            return f"{self.quantize_dtype} {self.quantize_mode} {self.granularity or 'per_channel'}"
        return self.values

    def _axis(self, default: int) -> int:
        return default if self.axis is None else self.axis

    def to_dict(self) -> dict:
        """Return the options as JSON-ready values."""
        return {
            "pattern": self.pattern_text(),
            "values": self.values_text(),
            "op_types": list(self.op_types),
            "node_names": None if self.node_names is None else list(self.node_names),
            "min_elements": self.min_elements,
        }


_ROLE_NAMES = {0: "output channels", 1: "input channels"}


def _parse_n_m(value) -> tuple[int, int]:
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise EncodingError(f"n_m={value!r} is not of the form 'n:m', e.g. '2:4'")
        n, m = (int(part) for part in parts)
    else:
        try:
            n, m = value
        except (TypeError, ValueError):
            raise EncodingError(f"n_m={value!r} is not 'n:m' or a pair (n, m)") from None
    m = check_int(m, "m", minimum=1)
    n = check_int(n, "n", minimum=0)
    if n > m:
        raise EncodingError(f"n_m=({n}, {m}): n zeros cannot exceed the group length m")
    return n, m


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class CompressedWeightReport:
    """One weight that was compressed.

    Attributes:
        name: the weight tensor (the chain's output keeps this name).
        readers: ``op_type name`` of each node that reads it.
        shape: the stored ONNX shape.
        dtype: the weight's dtype, which the chain decodes to.
        chain: op types of the nodes that replaced it, in order.
        pattern: the pruning pattern, with the stored axis.
        values: the value format.
        nonzeros: kept elements (mask bits set).
        dense_bytes: bytes of the original weight.
        stored_bytes: bytes of the chain's parameters (packed mask, values, LUT, scales, shape).
    """

    name: str
    readers: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chain: tuple[str, ...]
    pattern: str
    values: str
    nonzeros: int
    dense_bytes: int
    stored_bytes: int

    @property
    def density(self) -> float:
        """Fraction of elements kept."""
        size = int(np.prod(self.shape))
        return self.nonzeros / size if size else 1.0

    def to_dict(self) -> dict:
        """Return the entry as JSON-ready values."""
        return {
            "name": self.name,
            "readers": list(self.readers),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "chain": list(self.chain),
            "pattern": self.pattern,
            "values": self.values,
            "nonzeros": self.nonzeros,
            "density": self.density,
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
        }


@dataclass(frozen=True)
class SkippedWeight:
    """A weight candidate that was left untouched, and why."""

    name: str
    readers: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict:
        """Return the entry as JSON-ready values."""
        return {"name": self.name, "readers": list(self.readers), "reason": self.reason}


@dataclass
class OnnxCompressReport:
    """Result of :func:`compress_model` or :func:`compress_onnx`: the compressed and the skipped weights.

    Attributes:
        options: the options used.
        weights: the compressed weights, in graph order.
        skipped: the weights left untouched, with the reason.
        source: the input path, or ``"<model>"``.
        out_path: the written model file, or None for :func:`compress_model`.
        data_path: the external data file, or None when no tensor went to external data.
    """

    options: CompressOptions
    weights: list[CompressedWeightReport] = field(default_factory=list)
    skipped: list[SkippedWeight] = field(default_factory=list)
    source: str = "<model>"
    out_path: str | None = None
    data_path: str | None = None

    @property
    def dense_bytes(self) -> int:
        """Bytes of the compressed weights before compression."""
        return sum(weight.dense_bytes for weight in self.weights)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the compressed weights' parameters."""
        return sum(weight.stored_bytes for weight in self.weights)

    def to_dict(self) -> dict:
        """Return the report as JSON-ready values."""
        return {
            "source": self.source,
            "out_path": self.out_path,
            "data_path": self.data_path,
            "options": self.options.to_dict(),
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
            "weights": [weight.to_dict() for weight in self.weights],
            "skipped": [weight.to_dict() for weight in self.skipped],
        }


# ---------------------------------------------------------------------------------------------
# Finding weights


@dataclass(frozen=True)
class _Use:
    """A node that reads a weight as its weight operand, and the roles of the stored axes."""

    node: onnx.NodeProto
    output_axis: int
    input_axis: int


@dataclass
class _Candidate:
    name: str
    array: np.ndarray
    constant_node: onnx.NodeProto | None
    uses: list[_Use] = field(default_factory=list)
    # Nodes that read the weight other than as a weight operand (or a transpose of it).
    other_readers: list[str] = field(default_factory=list)

    @property
    def readers(self) -> tuple[str, ...]:
        return tuple(_node_label(use.node) for use in self.uses) + tuple(self.other_readers)


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name}".strip()


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _operand_roles(node: onnx.NodeProto, slot: int) -> tuple[int, int] | None:
    """Return ``(output axis, input axis)`` of the stored weight in ``slot`` of ``node``, or None."""
    if node.op_type == "Conv" and slot == 1:
        return 0, 1
    if node.op_type == "ConvTranspose" and slot == 1:
        return 1, 0
    if node.op_type == "Gemm" and slot in (0, 1):
        transposed = bool(_attribute(node, "transB" if slot == 1 else "transA", 0))
        if slot == 1:
            return (0, 1) if transposed else (1, 0)
        return (1, 0) if transposed else (0, 1)
    if node.op_type == "MatMul" and slot in (0, 1):
        return (1, 0) if slot == 1 else (0, 1)
    return None


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attribute = node.attribute[0]
    if attribute.name != "value" or attribute.type != onnx.AttributeProto.TENSOR:
        return None
    return numpy_helper.to_array(attribute.t)


def _is_transpose_2d(node: onnx.NodeProto, rank: int) -> bool:
    """True for a ``Transpose`` that swaps the two axes of a rank-2 tensor."""
    if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or rank != 2:
        return False
    # Without perm, Transpose reverses the axes, which for rank 2 is [1, 0].
    return list(_attribute(node, "perm", [1, 0])) == [1, 0]


def _find_candidates(graph: onnx.GraphProto, protected: set[str]) -> list[_Candidate]:
    """Return every constant that a Conv, ConvTranspose, Gemm or MatMul reads as its weight.

    ``protected`` names graph outputs and values read inside subgraphs; a ``Transpose`` whose
    output is one of them counts as another reader.
    """
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((node, slot))
    constants: dict[str, onnx.NodeProto | None] = {init.name: None for init in graph.initializer}
    ranks = {init.name: len(init.dims) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            constants[node.output[0]] = node
            ranks[node.output[0]] = len(node.attribute[0].t.dims) if node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR else 0
    initializers = {init.name: init for init in graph.initializer}

    candidates: list[_Candidate] = []
    for name, constant_node in constants.items():
        uses: list[_Use] = []
        others: list[str] = []
        for node, slot in readers.get(name, []):
            if _is_transpose_2d(node, ranks[name]) and node.output[0] not in protected:
                inner = [(reader, _operand_roles(reader, index)) for reader, index in readers.get(node.output[0], [])]
                if inner and all(roles is not None for _, roles in inner):
                    # The stored weight is the transpose of the operand, so the axes swap.
                    uses.extend(_Use(reader, roles[1], roles[0]) for reader, roles in inner)
                    continue
            roles = _operand_roles(node, slot)
            if roles is None:
                others.append(_node_label(node))
            else:
                uses.append(_Use(node, *roles))
        if not uses:
            continue
        array = numpy_helper.to_array(initializers[name]) if constant_node is None else _constant_value(constant_node)
        if array is None:
            continue
        candidates.append(_Candidate(name, array, constant_node, uses, others))
    return candidates


def _skip_reason(candidate: _Candidate, options: CompressOptions, protected: set[str]) -> str | None:
    array = candidate.array
    if candidate.name in protected:
        return "a graph output or a subgraph reads it"
    if candidate.other_readers:
        return f"it is also read by {', '.join(candidate.other_readers)}, which is not a weight operand"
    op_types = {use.node.op_type for use in candidate.uses}
    if not op_types <= set(options.op_types):
        return f"it is read by {sorted(op_types - set(options.op_types))}, which options.op_types excludes"
    if options.node_names is not None:
        unmatched = [
            _node_label(use.node)
            for use in candidate.uses
            if not any(fnmatch.fnmatchcase(use.node.name, p) or fnmatch.fnmatchcase(candidate.name, p) for p in options.node_names)
        ]
        if unmatched:
            return f"reader {unmatched[0]} matches none of node_names {list(options.node_names)}"
    if array.dtype not in (np.float16, np.float32):
        return f"dtype {array.dtype} is not fp16 or fp32"
    if array.ndim < 2:
        return f"rank {array.ndim} is below 2"
    if any(use.node.op_type in ("Gemm", "MatMul") for use in candidate.uses) and array.ndim != 2:
        return f"a {array.ndim}-D operand of Gemm or MatMul is not a weight matrix"
    if array.size < options.min_elements:
        return f"{array.size} elements are fewer than min_elements={options.min_elements}"
    roles = {(use.output_axis, use.input_axis) for use in candidate.uses}
    if len(roles) > 1:
        return f"its readers disagree on the output and input axes: {sorted(roles)}"
    return None


# ---------------------------------------------------------------------------------------------
# Encoding one weight


def _prune(array: np.ndarray, options: CompressOptions, output_axis: int, input_axis: int, name: str) -> np.ndarray | str:
    """Return the pruned weight, or the reason the pattern does not apply."""
    stored = {0: output_axis, 1: input_axis}
    if options.n_m is not None:
        n, m = options.n_m
        axis = stored[options._axis(1)]
        if 2 * m > array.shape[axis]:
            return f"n:m group length {m} is more than half of axis {axis} (length {array.shape[axis]})"
        keep = n_m_mask(array, n, m, axis=axis, name=name)
    elif options.block is not None:
        axis = stored[options._axis(0)]
        if 2 * options.block > array.shape[axis]:
            return f"block {options.block} is more than half of axis {axis} (length {array.shape[axis]})"
        keep = block_mask(array, options.sparsity, options.block, axis=axis, name=name)
    elif options.sparsity is not None:
        keep = magnitude_mask(array, options.sparsity, name=name)
    else:
        return array
    return apply_mask(array, keep, name=name)


def _encode(array: np.ndarray, options: CompressOptions, output_axis: int, input_axis: int, opset: int, name: str):
    """Return the constexpr parameters of a pruned weight."""
    if options.values in ("fp16", "fp32"):
        target = np.float16 if options.values == "fp16" else np.float32
        if target == np.float16 and array.size and float(np.abs(array).max()) > _FP16_MAX:
            raise EncodingError(f"{name}: a value exceeds the fp16 range ({_FP16_MAX}); store fp32 values")
        return encode_sparse(array.astype(target), name=name)

    if options.values == "palettize":
        kwargs = {"mode": options.palettize_mode, "channel_axis": output_axis, "name": name}
        if options.granularity == "per_grouped_channel":
            kwargs["group_size"] = options.group_size
        if options.prunes:
            return palettize_nonzero(array, options.nbits, **kwargs)
        return palettize_weight(array, options.nbits, **kwargs)

    # fp16 scales need CastLike in the function body; below its opset the scales are fp32.
    scale_dtype = "fp16" if array.dtype == np.float16 and opset >= CASTLIKE_OPSET else "fp32"
    kwargs = {
        "mode": options.quantize_mode,
        "granularity": options.granularity or "per_channel",
        "channel_axis": output_axis,
        "block_size": options.block_size,
        "block_axis": input_axis,
        "scale_dtype": scale_dtype,
        "name": name,
    }
    if options.prunes:
        return quantize_nonzero(array, options.quantize_dtype, **kwargs)
    return quantize_weight(array, options.quantize_dtype, **kwargs)


class _Names:
    """Hands out tensor and node names that the graph does not use yet."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {init.name for init in graph.initializer}
        self.used.update(value.name for value in (*graph.input, *graph.output, *graph.value_info))
        for node in graph.node:
            self.used.update(node.output)
            self.used.update(node.input)
            self.used.add(node.name)

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.used:
            index += 1
            name = f"{base}.{index}"
        self.used.add(name)
        return name


@dataclass
class _Chain:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    op_types: tuple[str, ...]
    nonzeros: int


def _data_storage(values: np.ndarray, dtype_name: str, name: str) -> np.ndarray:
    """Store int8/uint8 values as they are, and 4-bit values packed two per byte."""
    if dtype_name in ("int4", "uint4"):
        return pack_bits(values.reshape(-1), 4, signed=dtype_name == "int4", name=name)
    return np.ascontiguousarray(values)


def _build_chain(weight: str, encoded, dtype: np.dtype, names: _Names) -> _Chain:
    """Return the nodes and initializers that decode ``encoded`` into tensor ``weight``."""
    initializers: list[onnx.TensorProto] = []

    def constant(param: str, value: np.ndarray) -> str:
        tensor_name = names.fresh(f"{weight}.sparseblob.{param}")
        initializers.append(numpy_helper.from_array(np.asarray(value), tensor_name))
        return tensor_name

    def node(op_type: str, inputs: list[str], outputs: list[str], **attributes) -> onnx.NodeProto:
        return helper.make_node(op_type, inputs, outputs, name=names.fresh(f"{weight}/{op_type}"), domain=DOMAIN, **attributes)

    if isinstance(encoded, (LutParams, QuantParams)):
        shape_source = encoded.indices if isinstance(encoded, LutParams) else encoded.data
    elif isinstance(encoded, LutToSparseParams):
        shape_source = encoded.indices_mask
    elif isinstance(encoded, SparseShiftScaleParams):
        shape_source = encoded.data_mask
    else:
        shape_source = encoded.mask
    shape = constant("shape", np.array(shape_source.shape, dtype=np.int64))

    decoded_dtype = _decoded_dtype(encoded)
    final = weight if decoded_dtype == dtype else names.fresh(f"{weight}.sparseblob.decoded")
    nodes: list[onnx.NodeProto] = []
    if isinstance(encoded, SparseParams):
        mask = constant("mask", pack_bits(encoded.mask.reshape(-1), 1, name=f"{weight} mask"))
        values = constant("nonzero_data", encoded.nonzero_data)
        nodes.append(node(SPARSE_TO_DENSE, [values, mask, shape], [final]))
        nonzeros = int(encoded.nonzero_data.size)
    elif isinstance(encoded, LutToSparseParams):
        mask = constant("indices_mask", pack_bits(encoded.indices_mask.reshape(-1), 1, name=f"{weight} indices_mask"))
        indices = constant(
            "indices_nonzero_data", pack_bits(encoded.indices_nonzero_data, encoded.nbits, name=f"{weight} indices")
        )
        lut = constant("lut", encoded.lut)
        mask_out, values_out = names.fresh(f"{weight}.sparseblob.mask_out"), names.fresh(f"{weight}.sparseblob.values")
        nodes.append(node(LUT_TO_SPARSE, [mask, indices, lut, shape], [mask_out, values_out]))
        nodes.append(node(SPARSE_TO_DENSE, [values_out, mask_out, shape], [final]))
        nonzeros = int(encoded.indices_nonzero_data.size)
    elif isinstance(encoded, SparseShiftScaleParams):
        code = _DATA_DTYPE_CODES[encoded.data_dtype]
        mask = constant("data_mask", pack_bits(encoded.data_mask.reshape(-1), 1, name=f"{weight} data_mask"))
        data = constant("nonzero_data", _data_storage(encoded.nonzero_data, encoded.data_dtype, f"{weight} nonzero_data"))
        scale = constant("scale", encoded.scale)
        offset = constant("offset", _offset_storage(encoded.offset, encoded.data_dtype, weight))
        mask_out, values_out = names.fresh(f"{weight}.sparseblob.mask_out"), names.fresh(f"{weight}.sparseblob.values")
        nodes.append(node(SPARSE_BLOCKWISE_SHIFT_SCALE, [mask, data, scale, offset, shape], [mask_out, values_out], data_dtype=code))
        nodes.append(node(SPARSE_TO_DENSE, [values_out, mask_out, shape], [final]))
        nonzeros = int(encoded.nonzero_data.size)
    elif isinstance(encoded, LutParams):
        indices = constant("indices", pack_bits(encoded.indices.reshape(-1), encoded.nbits, name=f"{weight} indices"))
        lut = constant("lut", encoded.lut)
        nodes.append(node(LUT_TO_DENSE, [indices, lut, shape], [final]))
        nonzeros = int(encoded.indices.size)
    else:
        code = _DATA_DTYPE_CODES[encoded.data_dtype]
        data = constant("data", _data_storage(encoded.data, encoded.data_dtype, f"{weight} data"))
        scale = constant("scale", encoded.scale)
        offset = constant("offset", _offset_storage(encoded.offset, encoded.data_dtype, weight))
        nodes.append(node(BLOCKWISE_SHIFT_SCALE, [data, scale, offset, shape], [final], data_dtype=code))
        nonzeros = int(encoded.data.size)

    if final != weight:
        cast = helper.make_node(
            "Cast", [final], [weight], name=names.fresh(f"{weight}/Cast"), to=helper.np_dtype_to_tensor_dtype(dtype)
        )
        nodes.append(cast)
    return _Chain(nodes, initializers, tuple(n.op_type for n in nodes), nonzeros)


def _offset_storage(offset: np.ndarray | None, dtype_name: str, weight: str) -> np.ndarray:
    """Return the stored offset; an empty tensor stands for Core ML's absent offset."""
    if offset is None:
        return np.zeros(0, dtype=np.int8 if dtype_name == "int8" else np.uint8)
    return _data_storage(offset, dtype_name, f"{weight} offset")


def _decoded_dtype(encoded) -> np.dtype:
    if isinstance(encoded, SparseParams):
        return encoded.nonzero_data.dtype
    if isinstance(encoded, (LutParams, LutToSparseParams)):
        return encoded.lut.dtype
    return encoded.scale.dtype


# ---------------------------------------------------------------------------------------------
# The model


def _model_with_functions(model: onnx.ModelProto, op_types: set[str], opset: int) -> None:
    existing = {(f.domain, f.name): f for f in model.functions}
    for op_type in sorted(op_types):
        function = make_function(op_type, opset)
        present = existing.get((DOMAIN, op_type))
        if present is None:
            model.functions.append(function)
        elif present.SerializeToString() != function.SerializeToString():
            raise EncodingError(
                f"the model already contains a function {DOMAIN}.{op_type} that differs from the one this "
                "version of sparseblob writes"
            )
    imported = {entry.domain: entry.version for entry in model.opset_import}
    if DOMAIN not in imported:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    elif imported[DOMAIN] != DOMAIN_VERSION:
        raise EncodingError(f"the model imports {DOMAIN} version {imported[DOMAIN]}; expected {DOMAIN_VERSION}")
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)


def _compress_graph(model: onnx.ModelProto, options: CompressOptions, report: OnnxCompressReport) -> None:
    graph = model.graph
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise EncodingError(
            f"the model uses opset {opset}; the sparseblob function bodies need opset {MIN_OPSET} or later. "
            f"Convert it first: onnx.version_converter.convert_version(model, {MIN_OPSET})"
        )
    protected = {output.name for output in graph.output} | subgraph_reads(graph)
    names = _Names(graph)
    new_nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    constant_names: set[str] = set()
    used_ops: set[str] = set()

    for candidate in _find_candidates(graph, protected):
        reason = _skip_reason(candidate, options, protected)
        encoded = None
        if reason is None:
            use = candidate.uses[0]
            try:
                pruned = _prune(candidate.array, options, use.output_axis, use.input_axis, candidate.name)
                if isinstance(pruned, str):
                    reason = pruned
                else:
                    encoded = _encode(pruned, options, use.output_axis, use.input_axis, opset, candidate.name)
            except SparseblobError as error:
                reason = str(error)
        if reason is not None:
            logger.info("skipped weight %r: %s", candidate.name, reason)
            report.skipped.append(SkippedWeight(candidate.name, candidate.readers, reason))
            continue

        chain = _build_chain(candidate.name, encoded, candidate.array.dtype, names)
        new_nodes.extend(chain.nodes)
        graph.initializer.extend(chain.initializers)
        used_ops.update(op for op in chain.op_types if op != "Cast")
        replaced.add(candidate.name)
        if candidate.constant_node is not None:
            constant_names.add(candidate.name)
        report.weights.append(
            CompressedWeightReport(
                name=candidate.name,
                readers=candidate.readers,
                shape=tuple(int(d) for d in candidate.array.shape),
                dtype=str(candidate.array.dtype),
                chain=chain.op_types,
                pattern=_pattern_text(options, candidate.uses[0]),
                values=options.values_text(),
                nonzeros=chain.nonzeros,
                dense_bytes=int(candidate.array.nbytes),
                stored_bytes=int(sum(numpy_helper.to_array(t).nbytes for t in chain.initializers)),
            )
        )
        logger.info("compressed weight %r %s: %s", candidate.name, list(candidate.array.shape), " -> ".join(chain.op_types))

    if not replaced:
        return
    # The chains read only initializers, so they go first, before every reader.
    constant_outputs = {name for name in replaced if name in constant_names}
    kept_nodes = [node for node in graph.node if not (node.op_type == "Constant" and node.output[0] in constant_outputs)]
    set_repeated(graph.node, new_nodes + kept_nodes)
    set_repeated(graph.initializer, [init for init in graph.initializer if init.name not in replaced])
    # An initializer listed as a graph input (IR < 4 style) is produced by its chain now.
    set_repeated(graph.input, [value for value in graph.input if value.name not in replaced])
    _model_with_functions(model, used_ops, opset)


def _pattern_text(options: CompressOptions, use: _Use) -> str:
    text = options.pattern_text()
    if options.n_m is not None or options.block is not None:
        role = options._axis(1 if options.n_m is not None else 0)
        stored = use.output_axis if role == 0 else use.input_axis
        text += f" (stored axis {stored})"
    return text


def compress_model(
    model_or_path: str | os.PathLike | onnx.ModelProto, options: CompressOptions | None = None, **kwargs
) -> tuple[onnx.ModelProto, OnnxCompressReport]:
    """Return a compressed copy of an ONNX model and the report; the input is not modified.

    Args:
        model_or_path: an ``.onnx`` path (external data is loaded) or a ``ModelProto``.
        options: a :class:`CompressOptions`, or None to build one from ``kwargs``.
        **kwargs: the fields of :class:`CompressOptions` (``sparsity=0.5``, ``n_m="2:4"``,
            ``block=4``, ``values="palettize"``, ``nbits=4``, ...).

    Raises:
        EncodingError: invalid options, or a model opset below 11.
        PackageError: the file is not an ONNX model.
    """
    if options is None:
        options = CompressOptions(**kwargs)
    elif kwargs:
        raise EncodingError(f"give options or keyword arguments, not both: {sorted(kwargs)}")
    source = load_model(model_or_path)
    model = onnx.ModelProto()
    model.CopyFrom(source)
    report = OnnxCompressReport(options=options)
    if not isinstance(model_or_path, onnx.ModelProto):
        report.source = os.fspath(model_or_path)
    _compress_graph(model, options, report)
    return model, report


def save_model_atomic(model: onnx.ModelProto, out_path: str | os.PathLike, *, size_threshold: int = 1024) -> str | None:
    """Write ``model`` to ``out_path`` with tensors of ``size_threshold`` bytes or more in external data.

    The ``shape`` inputs of ``sparseblob`` nodes and attribute tensors always stay inline. The model and its data file (``<name>.data`` next to it) are written in a temporary
    directory beside ``out_path`` and then renamed into place, the data file first. If any
    step fails, neither file is left behind (an older file of the same name is kept only when
    the failure comes before the renames).

    Returns:
        The path of the external data file, or None when no tensor reached the threshold.

    Raises:
        OSError: writing or renaming failed; the temporary files are removed first.
    """
    out_path = Path(out_path)
    data_name = f"{out_path.name}.data"
    model = _copy(model)
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location=data_name, size_threshold=size_threshold, convert_attribute=False
    )
    # onnxruntime infers the shapes inside a function body from the constant `shape` inputs
    # and cannot read them from external data, so they stay inline. Attribute tensors stay
    # inline too (convert_attribute=False): Constant nodes in function bodies cannot read
    # external data either.
    inline = _shape_inputs(model)
    for init in model.graph.initializer:
        if init.name in inline:
            init.data_location = TensorProto.DEFAULT
            del init.external_data[:]

    work = Path(tempfile.mkdtemp(prefix=".sparseblob-", dir=out_path.parent))
    placed: Path | None = None
    try:
        onnx.save_model(model, os.fspath(work / out_path.name))
        # Files written inside the private temporary directory get the usual umask mode.
        mode = 0o666 & ~current_umask()
        for written in work.iterdir():
            written.chmod(mode)
        data_file = work / data_name
        if data_file.exists():
            placed = out_path.parent / data_name
            os.replace(data_file, placed)
        os.replace(work / out_path.name, out_path)
        return os.fspath(placed) if placed is not None else None
    except BaseException:
        if placed is not None and placed.exists():
            placed.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shape_inputs(model: onnx.ModelProto) -> set[str]:
    """Return the names that ``sparseblob`` nodes read as their ``shape`` input (the last input)."""
    return {node.input[-1] for node in model.graph.node if node.domain == DOMAIN and node.input}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def compress_onnx(
    model_or_path: str | os.PathLike | onnx.ModelProto,
    out_path: str | os.PathLike,
    *,
    size_threshold: int = 1024,
    options: CompressOptions | None = None,
    **kwargs,
) -> OnnxCompressReport:
    """Compress an ONNX model's weights and write the result to ``out_path`` atomically.

    Args:
        model_or_path: an ``.onnx`` path or a ``ModelProto``; it is not modified.
        out_path: the ``.onnx`` file to write; tensors of ``size_threshold`` bytes or more go to
            ``<out_path name>.data`` beside it.
        size_threshold: smallest tensor, in bytes, stored as external data.
        options: a :class:`CompressOptions`, or None to build one from ``kwargs``.
        **kwargs: the fields of :class:`CompressOptions`.

    Returns:
        The report: every compressed weight with its chain, pattern, density and bytes, and
        every skipped weight with the reason.

    Example:
        ``compress_onnx("model.onnx", "model.sparse.onnx", n_m="2:4", values="quantize",
        quantize_dtype="int8")``
    """
    model, report = compress_model(model_or_path, options, **kwargs)
    report.data_path = save_model_atomic(model, out_path, size_threshold=size_threshold)
    report.out_path = os.fspath(out_path)
    return report
