"""Cost accounting of a loaded ``.mlpackage``: one :class:`LayerCost` per weight layer.

Reads the program's declared types and the parameters of the ``const`` and ``constexpr_*`` ops
that produce each weight; nothing is executed. Shapes and dtypes come from the declared types of
op inputs and outputs, so every activation shape must be static. The constexpr chain that feeds a
weight decides its format:

==========================================  =====================================================
producer of ``weight`` (or matmul ``y``)    format
==========================================  =====================================================
``const``                                   dense
``constexpr_sparse_to_dense``               sparse (+ palettized or affine when its ``mask`` and
                                            ``nonzero_data`` come from ``constexpr_lut_to_sparse``
                                            or ``constexpr_sparse_blockwise_shift_scale``)
``constexpr_lut_to_dense``                  palettized (+ affine when ``lut`` comes from
                                            ``constexpr_blockwise_shift_scale``)
``constexpr_blockwise_shift_scale``         affine (iOS18)
``constexpr_affine_dequantize``             affine (iOS16/17)
==========================================  =====================================================

Masks are read and unpacked (iOS16 stores them as packed uint8 bytes, iOS18 as uint1), so mask
statistics are exact.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..bitpack import unpack_bits
from ..constexpr import constexpr_params
from ..errors import PackageError, ShapeError, UnsupportedOpError
from ..values import TensorType
from .costs import OP_KINDS, LayerCost, layer_cost

__all__ = ["costs_from_package"]

logger = logging.getLogger(__name__)

_WEIGHT_INPUT = {"linear": "weight", "conv": "weight", "conv_transpose": "weight", "matmul": "y"}


class _Program:
    """Declared types, producers and constant values of one function."""

    def __init__(self, package, function: str | None):
        self.function = package.function(function)
        self.types: dict[str, object] = {inp.name: inp.type for inp in self.function.inputs}
        self.producer: dict[str, tuple[object, int]] = {}
        self.constants: dict[str, object] = {}
        for op in self.function.operations:
            for index, out in enumerate(op.outputs):
                self.types[out.name] = out.type
                self.producer[out.name] = (op, index)
            if op.type == "const" and "val" in op.attributes:
                self.constants[op.outputs[0].name] = op.attributes["val"].read()
        # Outputs of constexpr ops (masks inside chains included), decoded once.
        self.constants.update(package.constexpr_values(self.function.name))

    def tensor_type(self, name: str, where: str) -> TensorType:
        declared = self.types.get(name)
        if not isinstance(declared, TensorType):
            raise PackageError(f"{where}: {name!r} is not a declared tensor")
        if not declared.is_static:
            raise ShapeError(f"{where}: {name!r} has the dynamic shape {declared}; expected a static shape")
        return declared

    def binding(self, op, key: str) -> str | None:
        argument = op.inputs.get(key)
        if argument is None or len(argument.bindings) != 1:
            return None
        return argument.bindings[0].name

    def parameter_type(self, op, key: str) -> TensorType | None:
        """Declared type of a constexpr parameter, wherever the producer wrote it."""
        if key in op.attributes:
            return op.attributes[key].type
        argument = op.inputs.get(key)
        if argument is None:
            return None
        binding = argument.bindings[0]
        if binding.value is not None:
            return binding.value.type
        return self.types.get(binding.name)

    def producer_of(self, op, key: str):
        name = self.binding(op, key)
        return self.producer.get(name, (None, 0)) if name else (None, 0)


def _aligned_shape(shape: tuple[int, ...], rank: int, axis: int) -> tuple[int, ...]:
    """Shape of an iOS16 per-axis vector (or scalar) broadcast to the weight's rank."""
    size = math.prod(shape) if shape else 1
    out = [1] * rank
    if size > 1:
        out[axis % rank] = size
    return tuple(out)


def _weight_parameters(program: _Program, op, weight_shape: tuple[int, ...], where: str) -> dict:
    """Return the :func:`layer_cost` keyword arguments that describe the weight produced by ``op``."""
    if op is None or op.type == "const":
        declared = program.parameter_type(op, "val") if op is not None else None
        return {"weight_dtype": declared.dtype.name if declared is not None else "fp16"}

    params = constexpr_params(op, program.constants)
    kind = op.type
    count = math.prod(weight_shape)

    if kind == "constexpr_sparse_to_dense":
        mask_type = program.parameter_type(op, "mask")
        mask = np.asarray(params["mask"])
        if mask_type is not None and mask_type.dtype.name == "uint8" and mask.ndim == 1 and "shape" in params:
            # iOS16 form: the mask is packed LSB-first into bytes.
            mask = unpack_bits(mask, 1, count, name=f"{where} mask")
        mask = mask.reshape(weight_shape).astype(bool)
        inner, _ = program.producer_of(op, "nonzero_data")
        if inner is not None and inner.type == "constexpr_lut_to_sparse":
            return {"mask": mask, **_lut_parameters(program, inner, "indices_nonzero_data", where)}
        if inner is not None and inner.type == "constexpr_sparse_blockwise_shift_scale":
            return {"mask": mask, **_affine_parameters(program, inner, "nonzero_data", weight_shape, where)}
        values = program.parameter_type(op, "nonzero_data")
        return {"mask": mask, "weight_dtype": values.dtype.name if values is not None else "fp16"}

    if kind == "constexpr_lut_to_dense":
        return _lut_parameters(program, op, "indices", where)

    if kind in ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize"):
        return _affine_parameters(program, op, "data" if kind.endswith("scale") else "quantized_data", weight_shape, where)

    if kind == "constexpr_cast":
        source, _ = program.producer_of(op, "source_val")
        return _weight_parameters(program, source, weight_shape, where)

    raise UnsupportedOpError(f"{where}: weight produced by {kind}, which has no cost model")


def _lut_parameters(program: _Program, op, indices_key: str, where: str) -> dict:
    params = constexpr_params(op, program.constants)
    lut = np.asarray(params["lut"])
    if lut.ndim == 1:
        # iOS16 form: one flat table of 2^nbits entries, indices packed into uint8 bytes.
        nbits = int(round(math.log2(lut.size)))
        lut_shape = (lut.size, 1)
        weight_dtype = "uint8" if nbits == 8 else f"uint{nbits}"
    else:
        lut_shape = lut.shape
        weight_dtype = program.parameter_type(op, indices_key).dtype.name
    result = {"weight_dtype": weight_dtype, "lut_shape": lut_shape}

    lut_producer, _ = program.producer_of(op, "lut")
    if lut_producer is not None and lut_producer.type == "constexpr_blockwise_shift_scale":
        # The LUT itself is quantized: int8 entries with a scale (and offset) per LUT block.
        inner = _affine_parameters(program, lut_producer, "data", lut_shape, where)
        result.update(lut_dtype=inner.pop("weight_dtype"), **inner)
    else:
        lut_type = program.parameter_type(op, "lut")
        result["lut_dtype"] = lut_type.dtype.name if lut_type is not None else "fp16"
    return result


def _affine_parameters(program: _Program, op, data_key: str, target_shape: tuple[int, ...], where: str) -> dict:
    params = constexpr_params(op, program.constants)
    data_type = program.parameter_type(op, data_key)
    scale = np.asarray(params["scale"])
    scale_type = program.parameter_type(op, "scale")
    offset_key = "zero_point" if "zero_point" in params else "offset"
    offset = params.get(offset_key)
    rank = len(target_shape)
    if op.type == "constexpr_affine_dequantize":
        axis = int(np.asarray(params.get("axis", 0)))
        scale_shape = _aligned_shape(scale.shape, rank, axis)
        offset_shape = _aligned_shape(np.asarray(offset).shape, rank, axis) if offset is not None else None
    else:
        scale_shape = scale.shape
        offset_shape = np.asarray(offset).shape if offset is not None else None
    offset_type = program.parameter_type(op, offset_key) if offset is not None else None
    return {
        "weight_dtype": data_type.dtype.name,
        "scale_shape": scale_shape,
        "scale_dtype": scale_type.dtype.name if scale_type is not None else "fp16",
        "offset_shape": offset_shape,
        "offset_dtype": offset_type.dtype.name if offset_type is not None else None,
    }


def _layer(program: _Program, op) -> LayerCost:
    where = f"op {op.name!r} ({op.type})"
    x_name = program.binding(op, "x")
    if x_name is None:
        raise PackageError(f"{where}: input 'x' is missing or has several bindings")
    x_type = program.tensor_type(x_name, where)
    out_type = program.tensor_type(op.outputs[0].name, where)

    weight_name = program.binding(op, _WEIGHT_INPUT[op.type])
    if weight_name is None:
        raise PackageError(f"{where}: input {_WEIGHT_INPUT[op.type]!r} is missing or has several bindings")
    weight_type = program.tensor_type(weight_name, where)
    producer, _ = program.producer.get(weight_name, (None, 0))
    constant = producer is not None and (producer.type == "const" or producer.is_constexpr)

    groups = 1
    if op.type in ("conv", "conv_transpose"):
        groups_name = program.binding(op, "groups")
        if groups_name is not None and groups_name in program.constants:
            groups = int(np.asarray(program.constants[groups_name]))

    transpose_y = False
    if op.type == "matmul":
        flag = program.binding(op, "transpose_y")
        transpose_y = bool(np.asarray(program.constants.get(flag, False))) if flag else False

    common = dict(
        name=op.outputs[0].name,
        groups=groups,
        activation_dtype=x_type.dtype.name,
        transpose_y=transpose_y,
    )
    shapes = (op.type, weight_type.shape, x_type.shape, out_type.shape)
    if not constant:
        return layer_cost(*shapes, const_weight=False, **common)
    return layer_cost(*shapes, **common, **_weight_parameters(program, producer, weight_type.shape, where))


def costs_from_package(package, function: str | None = "main") -> list[LayerCost]:
    """Return the cost of every linear, matmul, conv and conv_transpose op of a package function.

    Args:
        package: a :class:`sparseblob.runtime.package.Package`, or the path of an ``.mlpackage``.
        function: the function name; the package's default function when None.

    Returns:
        One :class:`LayerCost` per op, in program order, named by the op's output.

    Raises:
        PackageError: the function is missing, or an op's input is unbound.
        ShapeError: an activation or weight shape is dynamic or does not fit the op.
        UnsupportedOpError: a weight is produced by a constexpr op with no cost model.
    """
    from ..package import load

    if isinstance(package, (str, os.PathLike)):
        with load(package) as loaded:
            return costs_from_package(loaded, function)
    if function == "main" and "main" not in package.functions:
        function = None
    program = _Program(package, function)
    costs = [_layer(program, op) for op in program.function.operations if op.type in OP_KINDS]
    logger.debug("%s: %d weight layers", package.path, len(costs))
    return costs
