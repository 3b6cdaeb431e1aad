"""Cost accounting of one weight layer: MACs, activation bytes and compressed weight bytes.

Nothing here runs a model. :func:`layer_cost` turns an op kind, its shapes and dtypes and the
parameters of its compressed weight into a :class:`LayerCost`, the per-layer input of the
latency model. Weight bytes follow the Core ML storage of each constexpr parameter:

* ``nonzero_data`` or ``data``: ``ceil(count * bits / 8)``, where count is the number of stored
  values (the mask popcount for a sparse weight, every element otherwise).
* ``mask``: one bit per weight element, ``ceil(N / 8)``.
* ``indices``: ``ceil(count * nbits / 8)``, bit-packed like ``data``.
* ``lut``: ``prod(lut_shape) * bits / 8``; a LUT of shape ``[*G, 2^nbits, V]`` is ``prod(G)`` tables.
* ``scale`` and ``offset``: ``prod(shape) * bits / 8`` each.

Example: a linear weight ``[64, 128]`` (8192 elements) pruned to 4096 fp16 non-zeros stores
8192 bytes of ``nonzero_data`` and 1024 bytes of ``mask``. Palettized to 4 bits with one fp16 LUT
``[1, 1, 16, 1]`` it stores 4096 bytes of ``indices`` and 32 bytes of ``lut``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from ..dtypes import by_name
from ..errors import ParameterShapeError, ShapeError, UnsupportedOpError
from ..limits import element_count
from .masks import MaskStats, mask_stats

__all__ = [
    "OP_KINDS",
    "WeightBytes",
    "LayerCost",
    "layer_cost",
    "weight_axes",
]

OP_KINDS: tuple[str, ...] = ("linear", "matmul", "conv", "conv_transpose")


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of one weight's stored components, by MIL parameter role."""

    values: int = 0
    mask: int = 0
    indices: int = 0
    lut: int = 0
    scales: int = 0
    offsets: int = 0

    @property
    def total(self) -> int:
        """Sum of every component."""
        return self.values + self.mask + self.indices + self.lut + self.scales + self.offsets

    def to_dict(self) -> dict:
        """Return the components as a dict of ints."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LayerCost:
    """Work and bytes of one linear, matmul, conv or conv_transpose layer.

    Attributes:
        name: layer (op output) name.
        op: MIL op type, one of :data:`OP_KINDS`.
        weight_shape: shape of the weight tensor, ``[Cout, Cin/groups, *K]`` for conv.
        input_shape: shape of the activation input ``x``.
        output_shape: shape of the activation output.
        groups: conv groups (1 for linear and matmul).
        activation_dtype: dtype of the activations (``"fp16"``, ``"int8"``, ...).
        macs: dense multiply-accumulates of one prediction.
        input_bytes: bytes of the activation input (both operands for a matmul without a const weight).
        output_bytes: bytes of the activation output.
        format: ``"dense"``, or the compression forms joined by ``+`` in the order
            ``sparse``, ``palettized``, ``affine`` (``"sparse+palettized"``).
        weight_dtype: dtype of the stored values: fp16 for a dense weight, the ``data`` dtype of an
            affine weight, the ``indices`` dtype of a palettized one.
        elements: weight elements N.
        nonzeros: stored values (N unless sparse).
        weight_bytes: stored bytes by component.
        expanded_bytes: bytes of the weight expanded to dense fp16 (2 N), what a runtime that
            decompresses before dispatch reads.
        n_luts: number of lookup tables.
        lut_entries: entries per table (2^nbits), 0 when not palettized.
        n_scales: number of scale values.
        mask: zero structure of a sparse weight, None for a weight without a mask.
    """

    name: str
    op: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    groups: int
    activation_dtype: str
    macs: int
    input_bytes: int
    output_bytes: int
    format: str
    weight_dtype: str
    elements: int
    nonzeros: int
    weight_bytes: WeightBytes
    expanded_bytes: int
    n_luts: int = 0
    lut_entries: int = 0
    n_scales: int = 0
    mask: MaskStats | None = field(default=None, compare=False)

    @property
    def nbits(self) -> int:
        """Bits per stored value (index bits of a palettized weight)."""
        return by_name(self.weight_dtype).bits

    @property
    def sparsity(self) -> float:
        """Fraction of weight elements not stored."""
        return 1.0 - self.nonzeros / self.elements if self.elements else 0.0

    @property
    def rate_class(self) -> str:
        """Compute-rate class: ``"depthwise"``, ``"conv"`` or ``"linear"``."""
        if self.op in ("linear", "matmul"):
            return "linear"
        per_group = self.weight_shape[1] if self.op == "conv" else self.weight_shape[0] // max(self.groups, 1)
        if self.groups > 1 and per_group == 1:
            return "depthwise"
        return "conv"

    @property
    def compression_ratio(self) -> float:
        """Dense fp16 bytes over stored bytes."""
        return self.expanded_bytes / self.weight_bytes.total if self.weight_bytes.total else 1.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict; :meth:`from_dict` reverses it."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("weight_bytes", "mask")}
        for key in ("weight_shape", "input_shape", "output_shape"):
            data[key] = list(data[key])
        data["weight_bytes"] = self.weight_bytes.to_dict()
        data["mask"] = self.mask.to_dict() if self.mask is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LayerCost:
        """Build from the dict written by :meth:`to_dict`."""
        values = dict(data)
        for key in ("weight_shape", "input_shape", "output_shape"):
            values[key] = tuple(int(d) for d in values[key])
        values["weight_bytes"] = WeightBytes(**values["weight_bytes"])
        values["mask"] = MaskStats.from_dict(values["mask"]) if values.get("mask") else None
        return cls(**values)


def weight_axes(op: str, *, transpose_y: bool = False) -> tuple[int, int]:
    """Return ``(input_axis, output_axis)`` of the weight of ``op``.

    linear ``[Dout, Din]`` and conv ``[Cout, Cin/groups, *K]`` reduce over axis 1;
    conv_transpose ``[Cin, Cout/groups, *K]`` over axis 0; a matmul const ``y`` of shape
    ``[*B, K, N]`` over axis -2 (axis -1 when ``transpose_y``).
    """
    if op in ("linear", "conv"):
        return 1, 0
    if op == "conv_transpose":
        return 0, 1
    if op == "matmul":
        return (-1, -2) if transpose_y else (-2, -1)
    raise UnsupportedOpError(f"op {op!r} has no weight cost model; expected one of {OP_KINDS}")


def _bytes_of(count: int, dtype: str) -> int:
    return (count * by_name(dtype).bits + 7) // 8


def _macs(
    op: str,
    weight_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    transpose_y: bool,
    name: str,
) -> int:
    if op == "linear":
        return math.prod(output_shape) * weight_shape[1]
    if op == "conv":
        # Each output element reduces over Cin/groups * prod(K) weights.
        return math.prod(output_shape) * math.prod(weight_shape[1:])
    if op == "conv_transpose":
        # Each input element scatters into Cout/groups * prod(K) outputs.
        return math.prod(input_shape) * math.prod(weight_shape[1:])
    # matmul: the reduced dimension is K of y [.., K, N] (y is [.., N, K] when transposed).
    if len(weight_shape) < 2:
        raise ShapeError(f"{name}: matmul operand y has rank {len(weight_shape)}; expected rank 2 or more")
    reduced = weight_shape[-1] if transpose_y else weight_shape[-2]
    return math.prod(output_shape) * reduced


def _check_shapes(
    op: str,
    weight_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    groups: int,
    name: str,
) -> None:
    if op == "linear":
        if len(weight_shape) != 2:
            raise ShapeError(f"{name}: linear weight has shape {list(weight_shape)}; expected [Dout, Din]")
        if input_shape[-1:] != weight_shape[1:] or output_shape[-1:] != weight_shape[:1]:
            raise ShapeError(
                f"{name}: linear x {list(input_shape)} and output {list(output_shape)} do not match "
                f"weight [Dout, Din] = {list(weight_shape)}"
            )
    if op in ("conv", "conv_transpose"):
        if len(weight_shape) < 3 or len(input_shape) != len(weight_shape) or len(output_shape) != len(weight_shape):
            raise ShapeError(
                f"{name}: {op} weight {list(weight_shape)}, x {list(input_shape)} and output "
                f"{list(output_shape)} must have the same rank, 3 or more"
            )
        if groups < 1:
            raise ShapeError(f"{name}: groups={groups}; expected 1 or more")
        if op == "conv":
            in_ok = input_shape[1] == weight_shape[1] * groups
            out_ok = output_shape[1] == weight_shape[0]
        else:
            in_ok = input_shape[1] == weight_shape[0]
            out_ok = output_shape[1] == weight_shape[1] * groups
        if not (in_ok and out_ok):
            raise ShapeError(
                f"{name}: {op} channels of x {list(input_shape)} and output {list(output_shape)} do not "
                f"match weight {list(weight_shape)} with groups={groups}"
            )


def layer_cost(
    op: str,
    weight_shape: Sequence[int],
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    *,
    name: str = "",
    groups: int = 1,
    activation_dtype: str = "fp16",
    weight_dtype: str = "fp16",
    mask: np.ndarray | MaskStats | None = None,
    lut_shape: Sequence[int] | None = None,
    lut_dtype: str = "fp16",
    scale_shape: Sequence[int] | None = None,
    scale_dtype: str = "fp16",
    offset_shape: Sequence[int] | None = None,
    offset_dtype: str | None = None,
    const_weight: bool = True,
    transpose_y: bool = False,
) -> LayerCost:
    """Compute the :class:`LayerCost` of one layer from its shapes and weight parameters.

    The compression form follows from the parameters given: a ``mask`` makes the weight sparse, a
    ``lut_shape`` palettized, a ``scale_shape`` affine. When both a LUT and a scale are given, the
    scale quantizes the LUT entries (palettize then quantize), as in coremltools' joint forms.

    Args:
        op: ``"linear"``, ``"matmul"``, ``"conv"`` or ``"conv_transpose"``.
        weight_shape: weight shape (matmul: the shape of ``y``).
        input_shape: shape of ``x``.
        output_shape: shape of the output.
        name: layer name used in results and messages.
        groups: conv groups.
        activation_dtype: dtype of x and the output.
        weight_dtype: dtype of the stored values: ``nonzero_data`` or ``data`` (fp16, int8, uint4 ...),
            or ``indices`` (uint1 ... uint8) for a palettized weight.
        mask: ``tensor<bool, weight_shape>`` (True where stored), or its :class:`MaskStats` when only
            statistics are known.
        lut_shape: ``[*G, 2^nbits, V]``.
        lut_dtype: dtype of the LUT entries.
        scale_shape: shape of ``scale``.
        scale_dtype: dtype of ``scale``.
        offset_shape: shape of ``offset``; None when absent.
        offset_dtype: dtype of ``offset``; defaults to ``weight_dtype`` (the LUT dtype for a
            quantized LUT), as coremltools writes it.
        const_weight: False for a matmul whose ``y`` is an activation: it then has no weight bytes,
            and its bytes count as input activation.
        transpose_y: matmul ``transpose_y``.

    Raises:
        UnsupportedOpError: op is not one of :data:`OP_KINDS`.
        ShapeError: the shapes do not fit the op, or the mask shape differs from the weight.
        ParameterShapeError: a LUT does not match the index width, or a scale does not tile the weight.
        UnknownDtypeError: a dtype name is unknown.
    """
    if op not in OP_KINDS:
        raise UnsupportedOpError(f"{name or 'layer'}: op {op!r} has no cost model; expected one of {OP_KINDS}")
    name = name or op
    weight_shape = tuple(int(d) for d in weight_shape)
    input_shape = tuple(int(d) for d in input_shape)
    output_shape = tuple(int(d) for d in output_shape)
    _check_shapes(op, weight_shape, input_shape, output_shape, groups, name)
    elements = element_count(weight_shape, name=f"{name} weight")
    activation_bits = by_name(activation_dtype)
    macs = _macs(op, weight_shape, input_shape, output_shape, transpose_y, name)

    input_bytes = _bytes_of(math.prod(input_shape), activation_bits.name)
    output_bytes = _bytes_of(math.prod(output_shape), activation_bits.name)
    if not const_weight:
        input_bytes += _bytes_of(elements, activation_bits.name)
        return LayerCost(
            name, op, weight_shape, input_shape, output_shape, groups, activation_dtype, macs,
            input_bytes, output_bytes, "dense", activation_dtype, elements, elements,
            WeightBytes(), 0,
        )

    # Sparse: the stored values are the mask popcount.
    input_axis, output_axis = weight_axes(op, transpose_y=transpose_y)
    stats = None
    if mask is not None:
        if isinstance(mask, MaskStats):
            stats = mask
        else:
            array = np.asarray(mask)
            if array.shape != weight_shape:
                raise ShapeError(
                    f"{name}: mask shape {list(array.shape)} differs from weight shape {list(weight_shape)}"
                )
            stats = mask_stats(array, input_axis=input_axis, output_axis=output_axis, name=f"{name} mask")
        if stats.elements != elements:
            raise ShapeError(
                f"{name}: mask statistics cover {stats.elements} elements; the weight has {elements}"
            )
    stored = stats.nonzeros if stats is not None else elements
    forms = ["sparse"] if stats is not None else []

    # Palettized: packed indices plus the tables.
    values = indices = lut = n_luts = lut_entries = 0
    if lut_shape is not None:
        lut_shape = tuple(int(d) for d in lut_shape)
        nbits = by_name(weight_dtype).bits
        if len(lut_shape) < 2 or lut_shape[-2] != 2**nbits:
            raise ParameterShapeError(
                f"{name}: lut shape {list(lut_shape)} does not fit {weight_dtype} indices; expected "
                f"[*G, {2**nbits}, V]"
            )
        n_luts = math.prod(lut_shape[:-2])
        lut_entries = lut_shape[-2]
        vector = lut_shape[-1]
        if vector < 1 or stored % vector:
            raise ParameterShapeError(f"{name}: vector size {vector} does not divide {stored} stored values")
        indices = _bytes_of(stored // vector, weight_dtype)
        lut = _bytes_of(math.prod(lut_shape), lut_dtype)
        forms.append("palettized")
    else:
        values = _bytes_of(stored, weight_dtype)

    # Affine: scale (and offset) per block, or per LUT entry block when the LUT is quantized.
    scales = offsets = n_scales = 0
    if scale_shape is not None:
        scale_shape = tuple(int(d) for d in scale_shape)
        target = lut_shape if lut_shape is not None else weight_shape
        if len(scale_shape) != len(target) or any(s < 1 or t % s for s, t in zip(scale_shape, target)):
            raise ParameterShapeError(
                f"{name}: scale shape {list(scale_shape)} does not tile {list(target)}; expected the "
                "same rank with each dimension dividing it"
            )
        n_scales = math.prod(scale_shape)
        scales = _bytes_of(n_scales, scale_dtype)
        if offset_shape is not None:
            offset_shape = tuple(int(d) for d in offset_shape)
            if offset_shape != scale_shape:
                raise ParameterShapeError(
                    f"{name}: offset shape {list(offset_shape)} differs from scale shape {list(scale_shape)}"
                )
            default = lut_dtype if lut_shape is not None else weight_dtype
            offsets = _bytes_of(n_scales, offset_dtype or default)
        forms.append("affine")

    weight_format = "+".join(forms) if forms else "dense"
    return LayerCost(
        name=name,
        op=op,
        weight_shape=weight_shape,
        input_shape=input_shape,
        output_shape=output_shape,
        groups=groups,
        activation_dtype=activation_dtype,
        macs=macs,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        format=weight_format,
        weight_dtype=weight_dtype,
        elements=elements,
        nonzeros=stored,
        weight_bytes=WeightBytes(values=values, mask=(elements + 7) // 8 if stats else 0, indices=indices,
                                 lut=lut, scales=scales, offsets=offsets),
        expanded_bytes=2 * elements,
        n_luts=n_luts,
        lut_entries=lut_entries,
        n_scales=n_scales,
        mask=stats,
    )
