"""Evaluation of ``const`` and ``constexpr_*`` ops, the weights Core ML materializes at load time.

Compressed weights are chains of ``constexpr_*`` ops, evaluated in program order. An op's
parameters are MIL parameter names mapped to values:

* iOS16/iOS17 forms (opsets CoreML5 to CoreML7) keep every parameter in ``attributes``;
* iOS18 forms (CoreML8 and later) keep them in ``inputs``, each one binding that is either a
  literal value or the name of an earlier ``const`` or ``constexpr_*`` output.

Both places are read, so a parameter is found wherever the producer wrote it. Each op is
decoded by ``sparseblob.runtime.decode.registry.decode_op``; every output it returns is then
checked against the op's declared output type.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import PackageError, ShapeError, UnknownDtypeError
from .package import Function, Operation
from .values import TensorType, ValueType

__all__ = [
    "evaluate_constexpr",
    "constexpr_params",
    "constexpr_param_dtypes",
    "constexpr_outputs",
    "weight_names",
    "check_output",
]

logger = logging.getLogger(__name__)


def evaluate_constexpr(function: Function, *, max_elements: int) -> dict[str, np.ndarray]:
    """Evaluate the ``const`` and ``constexpr_*`` ops of a function's top-level block.

    Args:
        function: the function.
        max_elements: largest element count any decoder may produce.

    Returns:
        Every ``constexpr_*`` output name mapped to its value, in program order. ``const``
        outputs are evaluated only as parameters and are not returned.

    Raises:
        PackageError: a parameter is bound to a variable that is not constant, is given twice,
            or the decoder returns the wrong number of outputs.
        ShapeError, UnknownDtypeError: a decoded output differs from its declared type.
        SparseblobError: any error the decoder raises for invalid parameters.
    """
    from .decode.registry import decode_op

    constants: dict[str, object] = {}
    declared: dict[str, ValueType] = {}
    results: dict[str, np.ndarray] = {}
    for op in function.operations:
        if op.type == "const":
            if "val" not in op.attributes or len(op.outputs) != 1:
                raise PackageError(
                    f"op {op.name!r} (const): expected a 'val' attribute and one output, got "
                    f"attributes {sorted(op.attributes)} and {len(op.outputs)} outputs"
                )
            constants[op.outputs[0].name] = op.attributes["val"].read()
            declared[op.outputs[0].name] = op.outputs[0].type
            continue
        if not op.is_constexpr:
            continue

        params = constexpr_params(op, constants)
        outputs = decode_op(
            op.type,
            function.opset,
            params,
            name=op.name,
            max_elements=max_elements,
            dtypes=constexpr_param_dtypes(op, declared),
        )
        if len(outputs) != len(op.outputs):
            raise PackageError(
                f"op {op.name!r} ({op.type}): decoding gave {len(outputs)} outputs; the op declares "
                f"{len(op.outputs)}"
            )
        for output, array in zip(op.outputs, outputs):
            check_output(op, output.name, output.type, array)
            constants[output.name] = array
            declared[output.name] = output.type
            results[output.name] = array
        logger.debug("evaluated %s %r: %s", op.type, op.name, [out.name for out in op.outputs])
    return results


def constexpr_params(op: Operation, constants: dict[str, object]) -> dict[str, object]:
    """Collect a constexpr op's parameters from its attributes and inputs.

    Args:
        op: the ``constexpr_*`` op.
        constants: values of earlier ``const`` and ``constexpr_*`` outputs by name.

    Returns:
        MIL parameter name to value; the ``name`` attribute is not included.

    Raises:
        PackageError: a parameter appears both as attribute and input, has several bindings,
            or is bound to a variable that is not an earlier constant.
    """
    label = f"op {op.name!r} ({op.type})"
    params: dict[str, object] = {key: value.read() for key, value in op.attributes.items()}

    for key, argument in op.inputs.items():
        if key in params:
            raise PackageError(f"{label}: parameter {key!r} is given both as attribute and as input")
        if len(argument.bindings) != 1:
            raise PackageError(
                f"{label} input {key!r}: has {len(argument.bindings)} bindings; a constexpr "
                "parameter takes exactly one"
            )
        binding = argument.bindings[0]
        if binding.value is not None:
            params[key] = binding.value.read()
        elif binding.name in constants:
            params[key] = constants[binding.name]
        else:
            raise PackageError(
                f"{label} input {key!r}: bound to {binding.name!r}, which is not the output of an "
                "earlier const or constexpr op"
            )
    return params


def constexpr_param_dtypes(op: Operation, declared: dict[str, ValueType]) -> dict[str, str]:
    """Return the logical MIL dtype name of each tensor parameter of a constexpr op.

    The unpacked containers cannot tell uint4 indices from uint8 ones or int4 data from int8,
    so the decoders take the declared dtypes to check LUT sizes and offset types.

    Args:
        op: the ``constexpr_*`` op.
        declared: declared types of earlier ``const`` and ``constexpr_*`` outputs by name.
    """
    types: dict[str, ValueType] = {key: value.type for key, value in op.attributes.items()}
    for key, argument in op.inputs.items():
        if len(argument.bindings) != 1:
            continue
        binding = argument.bindings[0]
        if binding.value is not None:
            types[key] = binding.value.type
        elif binding.name in declared:
            types[key] = declared[binding.name]
    return {key: value.dtype.name for key, value in types.items() if isinstance(value, TensorType)}


def constexpr_outputs(function: Function) -> list[str]:
    """Return the output names of the ``constexpr_*`` ops of a function's block, in program order."""
    return [out.name for op in function.operations if op.is_constexpr for out in op.outputs]


def weight_names(function: Function) -> list[str]:
    """Return the constexpr outputs that are weights: consumed by a non-constexpr op or returned.

    Outputs consumed only by other ``constexpr_*`` ops (masks, LUTs and values inside a chain)
    are intermediate and left out. Names are in program order.
    """
    produced = constexpr_outputs(function)
    used = set(function.outputs)
    _collect_non_constexpr_uses(function.operations, used)
    return [name for name in produced if name in used]


def _collect_non_constexpr_uses(operations, used: set[str]) -> None:
    for op in operations:
        if not op.is_constexpr:
            for argument in op.inputs.values():
                used.update(binding.name for binding in argument.bindings if binding.name is not None)
        for block in op.blocks:
            used.update(block.outputs)
            _collect_non_constexpr_uses(block.operations, used)


def check_output(op: Operation, name: str, declared: ValueType, array: np.ndarray) -> None:
    """Check one decoded output against its declared tensor type.

    Raises:
        UnknownDtypeError: the array's dtype is not the container of the declared dtype.
        ShapeError: the rank or a known dimension differs, or the output is not a tensor.
    """
    label = f"op {op.name!r} ({op.type}) output {name!r}"
    if not isinstance(declared, TensorType):
        raise ShapeError(f"{label}: declared type is {type(declared).__name__}; expected a tensor type")
    if not isinstance(array, np.ndarray):
        raise ShapeError(f"{label}: decoding gave {type(array).__name__}; expected a numpy array")

    if array.dtype != declared.dtype.numpy_dtype:
        raise UnknownDtypeError(
            f"{label}: decoded dtype is {array.dtype}, but the output is declared {declared} "
            f"(numpy {declared.dtype.numpy_dtype})"
        )
    if array.ndim != declared.rank or any(
        dim is not None and dim != size for dim, size in zip(declared.shape, array.shape)
    ):
        raise ShapeError(f"{label}: decoded shape is {list(array.shape)}, but the output is declared {declared}")
