"""Routing of linear, matmul and conv ops on compressed sparse weights to the sparse kernels.

:func:`compressed_weights` turns every constexpr chain that ends in
``constexpr_sparse_to_dense`` into a :class:`~sparseblob.runtime.kernels.formats.CompressedWeight`
built from the chain's parameters (mask plus nonzero values, palettized or quantized), so the
kernels read the compressed form and never the dense matrix:

=========================================================  ====================================
chain feeding ``sparse_to_dense``                          kernel weight
=========================================================  ====================================
literal ``nonzero_data`` and ``mask`` (iOS18)              ``from_sparse``
literal packed ``mask`` and ``shape`` (iOS16)              ``from_sparse_ios16``
``lut_to_sparse`` outputs                                  ``from_lut_to_sparse``
``sparse_blockwise_shift_scale`` outputs                   ``from_sparse_shift_scale``
=========================================================  ====================================

A LUT or scale that itself comes from another constexpr op (a quantized LUT) is read as that
op's decoded output. Dense chains (``lut_to_dense``, ``blockwise_shift_scale`` alone) stay on
the dense path.

:func:`run_sparse_op` runs one op with such a weight. Inside the kernels,
:func:`sparseblob.runtime.kernels.choose.choose_strategy` picks how: stream the compressed
weight, decode tiles for BLAS, or decode the dense weight.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from .constexpr import constexpr_params
from .errors import SparseblobError, UnsupportedOpError
from .package import Function, Operation, Package

__all__ = ["SPARSE_OP_TYPES", "compressed_weights", "run_sparse_op"]

logger = logging.getLogger(__name__)

# Op types that have a sparse kernel, and the inputs that may contain their weight.
SPARSE_OP_TYPES = {"linear": ("weight",), "conv": ("weight",), "matmul": ("x", "y")}


def compressed_weights(package: Package, func: Function) -> dict[str, object]:
    """Build the kernel weights of every sparse chain in ``func`` that a kernel op consumes.

    Returns:
        The final ``sparse_to_dense`` output name mapped to its compressed weight.
    """
    from .kernels import formats

    consumed = _kernel_operands(func)
    if not consumed:
        return {}

    values = package.constexpr_values(func.name)
    producers = {out.name: (op, index) for op in func.operations for index, out in enumerate(op.outputs)}
    weights: dict[str, object] = {}
    for op in func.operations:
        if op.type != "constexpr_sparse_to_dense" or op.outputs[0].name not in consumed:
            continue
        name = op.outputs[0].name
        try:
            weights[name] = _build(op, values, producers, formats)
        except SparseblobError as error:
            # A weight the kernels cannot hold (e.g. rank 1) runs on the dense path.
            logger.info("weight %r stays on the dense path: %s", name, error)
    return weights


def _kernel_operands(func: Function) -> set[str]:
    """Names bound to the weight inputs of the ops that have a sparse kernel."""
    names = set()
    for op in func.operations:
        for param in SPARSE_OP_TYPES.get(op.type, ()):
            argument = op.inputs.get(param)
            if argument is not None and len(argument) == 1 and argument.bindings[0].name is not None:
                names.add(argument.bindings[0].name)
    return names


def _build(op: Operation, values, producers, formats):
    """Build the kernel weight of one ``constexpr_sparse_to_dense`` op."""
    name = op.outputs[0].name
    params = constexpr_params(op, values)
    source = _producer(op, "nonzero_data", producers)

    if source is not None and source.type == "constexpr_lut_to_sparse":
        inner = constexpr_params(source, values)
        vector_axis = inner.get("vector_axis")
        return formats.from_lut_to_sparse(
            inner["indices_mask"],
            inner["indices_nonzero_data"],
            inner["lut"],
            vector_axis=None if vector_axis is None else int(np.asarray(vector_axis)),
            name=name,
        )
    if source is not None and source.type == "constexpr_sparse_blockwise_shift_scale":
        inner = constexpr_params(source, values)
        return formats.from_sparse_shift_scale(
            inner["data_mask"], inner["nonzero_data"], inner["scale"], inner.get("offset"), name=name
        )
    if "shape" in params:
        return formats.from_sparse_ios16(params["mask"], params["nonzero_data"], params["shape"], name=name)
    return formats.from_sparse(params["mask"], params["nonzero_data"], name=name)


def _producer(op: Operation, param: str, producers) -> Operation | None:
    argument = op.inputs.get(param)
    if argument is None or len(argument) != 1 or argument.bindings[0].name is None:
        return None
    found = producers.get(argument.bindings[0].name)
    return None if found is None else found[0]


def run_sparse_op(
    op_type: str,
    params: Mapping[str, object],
    weight_param: str,
    weight,
    *,
    name: str,
    output_dtypes: Sequence[np.dtype | None],
    compute_dtype=np.float32,
) -> tuple[np.ndarray, ...]:
    """Run one linear, matmul or conv op whose ``weight_param`` input is a compressed weight.

    Args:
        op_type: ``"linear"``, ``"matmul"`` or ``"conv"``.
        params: the op's other inputs by MIL parameter name.
        weight_param: the input that contains the compressed weight.
        weight: the compressed weight from :func:`compressed_weights`.
        name: the op name, for messages.
        output_dtypes: declared dtype of the single output (``None`` keeps the compute dtype).
        compute_dtype: np.float32, or np.float64 for the reference precision.

    Returns:
        A one-element tuple with the output.
    """
    from .kernels.conv import conv as sparse_conv
    from .kernels.linear import linear as sparse_linear
    from .kernels.linear import matmul as sparse_matmul
    from .ops._spatial import resolve_padding

    def array(key):
        value = params.get(key)
        return None if value is None else np.asarray(value)

    if op_type == "linear":
        result = sparse_linear(array("x"), weight, array("bias"), compute_dtype=compute_dtype)
    elif op_type == "matmul":
        flags = {key: bool(np.asarray(params.get(key, False))) for key in ("transpose_x", "transpose_y")}
        if weight_param == "x":
            result = sparse_matmul(weight, array("y"), **flags, compute_dtype=compute_dtype)
        else:
            result = sparse_matmul(array("x"), weight, **flags, compute_dtype=compute_dtype)
    elif op_type == "conv":
        x = array("x")
        spatial = x.ndim - 2
        strides = _ints(params.get("strides"), spatial)
        dilations = _ints(params.get("dilations"), spatial)
        kernel = weight.shape[2:]
        extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
        pad_type = params.get("pad_type", "valid")
        pad_type = str(np.asarray(pad_type)) if pad_type is not None else "valid"
        pads = resolve_padding("conv", pad_type, params.get("pad"), x.shape[2:], extents, strides)
        groups = int(np.asarray(params.get("groups", 1)))
        result = sparse_conv(
            x, weight, array("bias"), strides=strides, dilations=dilations, pads=pads, groups=groups,
            compute_dtype=compute_dtype,
        )
    else:
        raise UnsupportedOpError(f"op {name!r}: no sparse kernel for {op_type}; expected one of {sorted(SPARSE_OP_TYPES)}")

    dtype = output_dtypes[0] if output_dtypes else None
    return (result if dtype is None else np.asarray(result).astype(dtype),)


def _ints(value, count: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * count
    return tuple(int(v) for v in np.asarray(value).reshape(-1))
