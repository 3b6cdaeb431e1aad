"""Structure checks of every compressed weight: masks, LUTs, scales, finiteness and patterns.

A compressed weight is the output of a chain of ``constexpr_*`` ops that a compute op (linear,
conv, matmul, ...) consumes. :func:`decode_function` evaluates each constexpr op on its own,
so that one bad op fails only the weights whose chains contain it, and keeps every op's
parameters. :func:`check_weights` then reads those parameters and reports, per weight, one row
for each kind of check that applies:

- ``decode``: sparseblob's decoder accepted every op of the chain.
- ``mask``: uint1 masks hold only 0 and 1, iOS16 packed masks have the byte count of their
  shape and clear padding bits, and the number of set bits equals the number of stored values.
- ``lut``: the LUT has rank ``K + 2`` (iOS18) or 2, 4, 16, 64 or 256 entries (iOS16), its
  groups divide the indices, it has ``2**nbits`` entries for ``uint{nbits}`` indices, a vector
  LUT has a ``vector_axis``, entries are finite and every index is below the entry count.
  Set padding bits of iOS16 packed indices give a warning, because Core ML ignores them.
- ``scale``: scale, offset and zero point shapes fit the data; offsets and zero points are
  finite; every scale is finite and positive. A scale that is 0, negative or non-finite fails
  when a stored value uses it. It only warns in a block of a sparse op whose mask bits are all
  0, which has no stored value: coremltools 9.0 writes scale 0 (and offset 0) for such fully
  pruned blocks, and they decode to zeros.
- ``finite``: stored float values and the decoded weight contain no NaN or infinity.
- ``pattern``: the pattern of the stored mask (:func:`sparseblob.verify.patterns.detect_pattern`),
  failing when an expectation does not hold.

Negative scales fail everywhere: the quantizers of coremltools and sparseblob write positive
scales, and the sign of a value belongs to its quantized data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from sparseblob.runtime import bitpack
from sparseblob.runtime.constexpr import check_output, constexpr_params, weight_names
from sparseblob.runtime.decode.registry import decode_op, opset_family
from sparseblob.runtime.errors import SparseblobError
from sparseblob.runtime.package import Function, Operation, Package
from sparseblob.runtime.values import TensorType

from .patterns import Expectation, check_expectations, detect_pattern
from .report import CheckResult, Status, worst

__all__ = ["DecodedWeight", "DecodedFunction", "decode_function", "check_weights", "subject_name"]

logger = logging.getLogger(__name__)

SPARSE_TO_DENSE = "constexpr_sparse_to_dense"
LUT_TO_DENSE = "constexpr_lut_to_dense"
LUT_TO_SPARSE = "constexpr_lut_to_sparse"
AFFINE_DEQUANTIZE = "constexpr_affine_dequantize"
BLOCKWISE_SHIFT_SCALE = "constexpr_blockwise_shift_scale"
SPARSE_BLOCKWISE_SHIFT_SCALE = "constexpr_sparse_blockwise_shift_scale"

# Entry counts that an iOS16 LUT may have: 1, 2, 4, 6 or 8-bit indices.
_IOS16_LUT_SIZES = {2: 1, 4: 2, 16: 4, 64: 6, 256: 8}
# Entry counts of iOS18 LUTs: 1, 2, 3, 4, 6 or 8-bit indices.
_IOS18_LUT_SIZES = {2: 1, 4: 2, 8: 3, 16: 4, 64: 6, 256: 8}


@dataclass
class DecodedWeight:
    """One compressed weight and what decoding it gave.

    Attributes:
        function: the function name.
        name: the output name of the last constexpr op, which compute ops bind.
        subject: the name used in report rows (``function:name`` when the package has several
            functions).
        chain: the constexpr ops that produce the weight, in program order.
        consumers: ``(op name, input name)`` of every compute op that binds the weight.
        value: the decoded dense weight, or None when an op of the chain failed.
        mask: ``tensor<bool, shape>``, the stored mask of the chain's last
            ``constexpr_sparse_to_dense``, or None when the chain has none or it is unreadable.
    """

    function: str
    name: str
    subject: str
    chain: tuple[Operation, ...]
    consumers: tuple[tuple[str, str], ...]
    value: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class DecodedFunction:
    """The constexpr ops of one function, each evaluated on its own.

    Attributes:
        function: the function.
        values: every constexpr output that decoded, by name.
        params: each constexpr op's parameters by op name, when they could be collected.
        dtypes: each constexpr op's logical parameter dtypes (``{"indices": "uint4"}``).
        errors: op name to the error that its decoding raised.
        weights: the compressed weights, in program order.
    """

    function: Function
    values: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, dict[str, object]] = field(default_factory=dict)
    dtypes: dict[str, dict[str, str]] = field(default_factory=dict)
    errors: dict[str, SparseblobError] = field(default_factory=dict)
    weights: list[DecodedWeight] = field(default_factory=list)

    @property
    def ios16(self) -> bool:
        """True when the function uses the iOS16 op definitions (opsets CoreML5 to CoreML7)."""
        return opset_family(self.function.opset) == "iOS16"


def subject_name(package: Package, function: str, name: str) -> str:
    """Return the name of a weight or output in report rows: prefixed by the function when there are several."""
    return name if len(package.functions) == 1 else f"{function}:{name}"


# ---------------------------------------------------------------------------------------------
# Decoding op by op


def _declared_dtype_names(function: Function) -> dict[str, str]:
    """Return the MIL dtype name of every op output and function input of tensor type."""
    names = {}
    for item in function.inputs:
        if isinstance(item.type, TensorType):
            names[item.name] = item.type.dtype.name
    for op in function.operations:
        for out in op.outputs:
            if isinstance(out.type, TensorType):
                names[out.name] = out.type.dtype.name
    return names


def _param_dtypes(op: Operation, declared: Mapping[str, str]) -> dict[str, str]:
    """Return the logical MIL dtype of each parameter of a constexpr op, where it is known."""
    dtypes = {}
    for key, value in op.attributes.items():
        if isinstance(value.type, TensorType):
            dtypes[key] = value.type.dtype.name
    for key, argument in op.inputs.items():
        if len(argument.bindings) != 1:
            continue
        binding = argument.bindings[0]
        if binding.value is not None and isinstance(binding.value.type, TensorType):
            dtypes[key] = binding.value.type.dtype.name
        elif binding.name is not None and binding.name in declared:
            dtypes[key] = declared[binding.name]
    return dtypes


def _bound_names(op: Operation) -> list[str]:
    return [binding.name for argument in op.inputs.values() for binding in argument if binding.name is not None]


def _chain(last: Operation, producers: Mapping[str, Operation], order: Mapping[int, int]) -> tuple[Operation, ...]:
    """Return the constexpr ops that ``last`` depends on, and ``last``, in program order."""
    found: dict[int, Operation] = {}
    pending = [last]
    while pending:
        op = pending.pop()
        if id(op) in found:
            continue
        found[id(op)] = op
        for name in _bound_names(op):
            producer = producers.get(name)
            if producer is not None and producer.is_constexpr:
                pending.append(producer)
    return tuple(sorted(found.values(), key=lambda op: order[id(op)]))


def _consumers(operations: Iterable[Operation], into: dict[str, list[tuple[str, str]]]) -> None:
    """Record ``(op name, input name)`` for every binding of a non-constexpr op, nested blocks included."""
    for op in operations:
        if not op.is_constexpr:
            for key, argument in op.inputs.items():
                for binding in argument:
                    if binding.name is not None:
                        into.setdefault(binding.name, []).append((op.name, key))
        for block in op.blocks:
            _consumers(block.operations, into)


def decode_function(package: Package, function: str | None = None) -> DecodedFunction:
    """Evaluate every ``const`` and ``constexpr_*`` op of a function, recording errors per op.

    Unlike :meth:`Package.constexpr_values`, an op that fails does not stop the others: its
    error is kept in :attr:`DecodedFunction.errors`, and the ops that read its outputs fail
    with an error that names it.

    Args:
        package: the loaded package.
        function: the function name; the default function when None.

    Returns:
        The decoded values, parameters, errors and weights of the function.
    """
    func = package.function(function)
    decoded = DecodedFunction(func)
    declared = _declared_dtype_names(func)
    constants: dict[str, object] = {}
    failed_outputs: dict[str, str] = {}

    for op in func.operations:
        if op.type == "const":
            _read_const(op, constants, failed_outputs, decoded)
        elif op.is_constexpr:
            _decode_op(op, func, package.max_elements, declared, constants, failed_outputs, decoded)

    producers = {out.name: op for op in func.operations for out in op.outputs}
    order = {id(op): position for position, op in enumerate(func.operations)}
    consumers: dict[str, list[tuple[str, str]]] = {}
    _consumers(func.operations, consumers)
    for name in weight_names(func):
        chain = _chain(producers[name], producers, order)
        weight = DecodedWeight(
            function=func.name,
            name=name,
            subject=subject_name(package, func.name, name),
            chain=chain,
            consumers=tuple(consumers.get(name, ())),
            value=decoded.values.get(name),
        )
        weight.mask = _stored_mask(weight, decoded)
        decoded.weights.append(weight)
    return decoded


def _read_const(op, constants, failed_outputs, decoded) -> None:
    name = op.outputs[0].name if op.outputs else op.name
    try:
        if "val" not in op.attributes:
            raise SparseblobError(f"op {op.name!r} (const) has no 'val' attribute")
        constants[name] = op.attributes["val"].read()
    except SparseblobError as error:
        decoded.errors[op.name] = error
        failed_outputs[name] = op.name


def _decode_op(op, func, max_elements, declared, constants, failed_outputs, decoded) -> None:
    upstream = [failed_outputs[name] for name in _bound_names(op) if name in failed_outputs]
    if upstream:
        decoded.errors[op.name] = SparseblobError(
            f"op {op.name!r} ({op.type}) reads the output of op {upstream[0]!r}, which failed"
        )
        failed_outputs.update({out.name: op.name for out in op.outputs})
        return

    try:
        params = constexpr_params(op, constants)
        decoded.params[op.name] = params
        dtypes = _param_dtypes(op, declared)
        decoded.dtypes[op.name] = dtypes
        outputs = decode_op(op.type, func.opset, params, name=op.name, max_elements=max_elements, dtypes=dtypes)
        if len(outputs) != len(op.outputs):
            raise SparseblobError(
                f"op {op.name!r} ({op.type}): decoding gave {len(outputs)} outputs; the op declares {len(op.outputs)}"
            )
        for out, array in zip(op.outputs, outputs):
            check_output(op, out.name, out.type, array)
    except SparseblobError as error:
        logger.debug("op %r (%s) failed to decode: %s", op.name, op.type, error)
        decoded.errors[op.name] = error
        failed_outputs.update({out.name: op.name for out in op.outputs})
        return

    for out, array in zip(op.outputs, outputs):
        constants[out.name] = array
        decoded.values[out.name] = array


def _stored_mask(weight: DecodedWeight, decoded: DecodedFunction) -> np.ndarray | None:
    """Return the dense bool mask of the last ``constexpr_sparse_to_dense`` of the chain."""
    for op in reversed(weight.chain):
        if op.type != SPARSE_TO_DENSE:
            continue
        params = decoded.params.get(op.name)
        if params is None or "mask" not in params:
            return None
        mask = np.asarray(params["mask"])
        if "shape" not in params:
            return mask != 0
        shape = tuple(int(dim) for dim in np.asarray(params["shape"]).reshape(-1))
        count = int(np.prod(shape, dtype=np.int64))
        if mask.dtype != np.uint8 or mask.ndim != 1 or mask.size * 8 < count:
            return None
        return np.unpackbits(mask, bitorder="little")[:count].astype(bool).reshape(shape)
    return None


# ---------------------------------------------------------------------------------------------
# Findings of one op


@dataclass(frozen=True)
class _Finding:
    check: str
    status: Status
    measured: str = ""
    expected: str = ""
    message: str = ""


def _label(op: Operation) -> str:
    return f"op {op.name!r} ({op.type})"


def _first_index(flags: np.ndarray) -> list[int]:
    return [int(i) for i in np.argwhere(flags)[0]]


def _byte_mask_findings(op, mask, value_count: int, mask_param: str, values_param: str) -> list[_Finding]:
    """Check a uint1 mask held one element per byte against the number of stored values."""
    label = _label(op)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        invalid = mask > 1
        if invalid.any():
            index = _first_index(invalid)
            return [_Finding(
                "mask", Status.FAIL, f"{mask_param}{index} = {int(mask[tuple(index)])}", "0 or 1",
                f"{label}: {mask_param} contains {int(mask[tuple(index)])} at index {index}; a uint1 mask holds only 0 and 1",
            )]
    ones = int(np.count_nonzero(mask))
    measured = f"{ones} set bits, {value_count} values"
    if ones != value_count:
        return [_Finding(
            "mask", Status.FAIL, measured, "one value per set bit",
            f"{label}: {mask_param} has {ones} set bits, but {values_param} has {value_count} values",
        )]
    return [_Finding("mask", Status.PASS, measured, "one value per set bit")]


def _packed_mask_findings(op, mask, shape, value_count: int) -> list[_Finding]:
    """Check an iOS16 packed mask: byte count, padding bits and set bits."""
    label = _label(op)
    mask = np.asarray(mask)
    dims = np.asarray(shape).reshape(-1)
    if mask.dtype != np.uint8 or mask.ndim != 1 or dims.dtype.kind not in "iu":
        return [_Finding(
            "mask", Status.FAIL, f"mask {mask.dtype} {list(mask.shape)}, shape {dims.tolist()}",
            "tensor<uint8, [ceil(N/8)]> and an integer shape",
            f"{label}: mask is {mask.dtype} of shape {list(mask.shape)} and shape is {dims.tolist()}",
        )]
    count = int(np.prod(dims.astype(np.int64), dtype=np.int64))
    expected_bytes = (count + 7) // 8
    if mask.size != expected_bytes:
        return [_Finding(
            "mask", Status.FAIL, f"{mask.size} bytes", f"{expected_bytes} bytes",
            f"{label}: mask has {mask.size} bytes, but shape {dims.tolist()} has {count} elements, which need {expected_bytes}",
        )]

    findings = []
    padding = bitpack.padding_bits_set(mask, 1, count)
    if padding:
        findings.append(_Finding(
            "mask", Status.FAIL, f"{padding} padding bits set", "padding bits 0",
            f"{label}: {padding} of the {8 * expected_bytes - count} padding bits after element {count} are set",
        ))
    ones = int(np.bitwise_count(mask).sum(dtype=np.int64)) - padding
    measured = f"{ones} set bits, {value_count} values"
    if ones != value_count:
        findings.append(_Finding(
            "mask", Status.FAIL, measured, "one value per set bit",
            f"{label}: mask has {ones} set bits, but nonzero_data has {value_count} values",
        ))
    if not findings:
        findings.append(_Finding("mask", Status.PASS, measured, "one value per set bit, padding bits 0"))
    return findings


def _finite_findings(op, array, param: str) -> list[_Finding]:
    """Check that a stored float parameter has no NaN or infinity."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        return []
    bad = ~np.isfinite(array.astype(np.float32))
    if bad.any():
        index = _first_index(bad)
        return [_Finding(
            "finite", Status.FAIL, f"{int(bad.sum())} non-finite", "finite values",
            f"{_label(op)}: {param} contains {array[tuple(index)]!r} at index {index} ({int(bad.sum())} non-finite values)",
        )]
    return [_Finding("finite", Status.PASS, f"{array.size} {param} values finite", "finite values")]


def _lut_findings(op, lut, indices_shape, codes, nbits: int | None, vector_axis, ios16: bool) -> list[_Finding]:
    """Check a LUT against its indices: shape, entry count, vector axis, finite entries, index range."""
    label = _label(op)
    lut = np.asarray(lut)
    problems: list[str] = []
    expected = ""

    if ios16:
        entries = lut.size
        expected = "2, 4, 16, 64 or 256 finite entries"
        if lut.ndim != 1 or entries not in _IOS16_LUT_SIZES:
            problems.append(f"lut has shape {list(lut.shape)}; expected a vector of 2, 4, 16, 64 or 256 entries")
    else:
        rank = len(indices_shape)
        entries = lut.shape[-2] if lut.ndim >= 2 else 0
        expected = (f"{2**nbits} entries" if nbits else "2**nbits entries") + f", groups dividing {list(indices_shape)}"
        if lut.ndim != rank + 2:
            problems.append(f"lut has rank {lut.ndim} (shape {list(lut.shape)}); expected rank {rank + 2}")
        else:
            for axis in range(rank):
                groups = lut.shape[axis]
                if groups < 1 or indices_shape[axis] % groups:
                    problems.append(
                        f"lut has {groups} groups along axis {axis}, which do not divide the indices dimension {indices_shape[axis]}"
                    )
            if nbits is not None and entries != 2**nbits:
                problems.append(f"lut has {entries} entries per group, but the indices are uint{nbits}; expected {2**nbits}")
            elif nbits is None and entries not in _IOS18_LUT_SIZES:
                problems.append(f"lut has {entries} entries per group; expected 2**nbits with nbits in 1, 2, 3, 4, 6, 8")
            vector_size = lut.shape[-1]
            if vector_size < 1:
                problems.append(f"lut has vector size {vector_size}; expected at least 1")
            elif vector_size > 1:
                if vector_axis is None:
                    problems.append(f"lut has vector size {vector_size}, but vector_axis is missing")
                elif not -rank <= int(np.asarray(vector_axis)) < rank:
                    problems.append(f"vector_axis is {int(np.asarray(vector_axis))}; expected a value in [{-rank}, {rank})")

    if lut.dtype.kind == "f" and lut.size:
        bad = ~np.isfinite(lut.astype(np.float32))
        if bad.any():
            index = _first_index(bad)
            problems.append(f"lut contains {lut[tuple(index)]!r} at index {index} ({int(bad.sum())} non-finite entries)")

    codes = np.asarray(codes)
    top = int(codes.max()) if codes.size else -1
    if codes.size and entries and top >= entries:
        index = _first_index(codes >= entries)
        problems.append(f"index {top} at position {index} is not below the {entries} LUT entries")

    measured = f"lut {list(lut.shape)}, largest index {top}"
    if problems:
        return [_Finding("lut", Status.FAIL, measured, expected, f"{label}: " + "; ".join(problems))]
    return [_Finding("lut", Status.PASS, measured, expected)]


def _scale_findings(op, scale, offsets: Mapping[str, object], used: np.ndarray | None) -> list[_Finding]:
    """Check scale values (finite and positive where used) and float offsets (finite).

    Args:
        op: the op, for messages.
        scale: the scale tensor, already checked against the data's shape.
        offsets: parameter name to offset or zero point, each broadcastable to ``scale``.
        used: stored values per block, with the shape of ``scale``; None when every block
            holds stored values.
    """
    label = _label(op)
    scale = np.asarray(scale)
    wide = scale.astype(np.float64)
    non_finite = ~np.isfinite(wide)
    zero = wide == 0
    negative = wide < 0
    bad = non_finite | zero | negative
    in_use = np.ones(scale.shape, dtype=bool) if used is None else np.asarray(used) > 0

    findings = []
    finite_values = wide[~non_finite]
    measured = (
        f"{scale.size} scales in [{finite_values.min():.4g}, {finite_values.max():.4g}]"
        if finite_values.size else f"{scale.size} scales"
    )
    bad_used = bad & in_use
    bad_unused = bad & ~in_use
    if bad_used.any():
        index = _first_index(bad_used)
        findings.append(_Finding(
            "scale", Status.FAIL, measured, "finite and > 0",
            f"{label}: scale has {_describe_bad(zero & in_use, negative & in_use, non_finite & in_use)} in blocks "
            f"that stored values use; first {scale[tuple(index)]!r} at index {index}",
        ))
    elif bad_unused.any():
        findings.append(_Finding(
            "scale", Status.WARN, measured, "finite and > 0",
            f"{label}: scale has {_describe_bad(zero & ~in_use, negative & ~in_use, non_finite & ~in_use)} only "
            f"in blocks whose mask bits are all 0, which hold no stored value and decode to zeros",
        ))

    for param, offset in offsets.items():
        offset = np.asarray(offset)
        if offset.dtype.kind == "f" and offset.size and not np.isfinite(offset.astype(np.float64)).all():
            index = _first_index(~np.isfinite(offset.astype(np.float64)))
            findings.append(_Finding(
                "scale", Status.FAIL, measured, f"finite {param}",
                f"{label}: {param} contains {offset[tuple(index)]!r} at index {index}",
            ))
    if not findings:
        findings.append(_Finding("scale", Status.PASS, measured, "finite and > 0"))
    return findings


def _describe_bad(zero, negative, non_finite) -> str:
    parts = []
    for count, what in ((int(zero.sum()), "equal to 0"), (int(negative.sum()), "negative"), (int(non_finite.sum()), "non-finite")):
        if count:
            parts.append(f"{count} {'value' if count == 1 else 'values'} {what}")
    return ", ".join(parts)


def _block_shape_problems(data_shape, scale, offset, offset_param: str = "offset") -> list[str]:
    """Check iOS18 blockwise parameters: rank of data, divisibility, and offset shape."""
    scale = np.asarray(scale)
    problems = []
    if scale.ndim != len(data_shape):
        return [f"scale has rank {scale.ndim} (shape {list(scale.shape)}); expected the data's rank {len(data_shape)}"]
    for axis, (dim, blocks) in enumerate(zip(data_shape, scale.shape)):
        if blocks < 1 or dim % blocks:
            problems.append(f"scale has {blocks} blocks along axis {axis}, which do not divide the data dimension {dim}")
    if offset is not None and np.asarray(offset).shape != scale.shape:
        problems.append(f"{offset_param} has shape {list(np.asarray(offset).shape)}; expected the scale's shape {list(scale.shape)}")
    return problems


def _blocks_in_use(mask: np.ndarray, scale_shape: tuple[int, ...]) -> np.ndarray:
    """Count set mask bits per block of a blockwise scale: ``tensor<int64, scale_shape>``."""
    split = []
    for dim, blocks in zip(mask.shape, scale_shape):
        split.extend((blocks, dim // blocks))
    counts = (np.asarray(mask) != 0).reshape(split)
    return counts.sum(axis=tuple(range(1, 2 * len(scale_shape), 2)), dtype=np.int64)


def _index_bits(dtype_name: str | None) -> int | None:
    if dtype_name and dtype_name.startswith("uint") and dtype_name[4:].isdigit():
        return int(dtype_name[4:])
    return None


def _op_findings(op: Operation, params: Mapping[str, object], dtypes: Mapping[str, str], ios16: bool) -> list[_Finding]:
    """Return the structure findings of one constexpr op from its parameters."""
    label = _label(op)
    if op.type == SPARSE_TO_DENSE:
        values = np.asarray(params["nonzero_data"])
        if ios16:
            found = _packed_mask_findings(op, params["mask"], params["shape"], values.size)
        else:
            found = _byte_mask_findings(op, params["mask"], values.size, "mask", "nonzero_data")
        return found + _finite_findings(op, values, "nonzero_data")

    if op.type == LUT_TO_DENSE:
        lut, indices = np.asarray(params["lut"]), np.asarray(params["indices"])
        if ios16:
            findings = []
            dims = np.asarray(params["shape"]).reshape(-1).astype(np.int64)
            count = int(np.prod(dims, dtype=np.int64))
            nbits = _IOS16_LUT_SIZES.get(lut.size)
            if nbits is not None:
                expected_bytes = (count * nbits + 7) // 8
                if indices.size != expected_bytes:
                    return [_Finding(
                        "lut", Status.FAIL, f"{indices.size} index bytes", f"{expected_bytes} index bytes",
                        f"{label}: indices has {indices.size} bytes, but {count} indices of {nbits} bits need {expected_bytes}",
                    )]
                padding = bitpack.padding_bits_set(indices, nbits, count)
                if padding:
                    findings.append(_Finding(
                        "lut", Status.WARN, f"{padding} padding bits set", "padding bits 0",
                        f"{label}: {padding} padding bits after the last index are set; Core ML ignores them",
                    ))
            codes = bitpack.unpack_bits(indices, nbits, count) if nbits else np.zeros(0, np.uint8)
            return findings + _lut_findings(op, lut, tuple(dims), codes, nbits, None, ios16=True)
        nbits = _index_bits(dtypes.get("indices"))
        return _lut_findings(op, lut, indices.shape, indices, nbits, params.get("vector_axis"), ios16=False)

    if op.type == LUT_TO_SPARSE:
        mask = np.asarray(params["indices_mask"])
        codes = np.asarray(params["indices_nonzero_data"])
        nbits = _index_bits(dtypes.get("indices_nonzero_data"))
        return _byte_mask_findings(op, mask, codes.size, "indices_mask", "indices_nonzero_data") + _lut_findings(
            op, params["lut"], mask.shape, codes, nbits, params.get("vector_axis"), ios16=False
        )

    if op.type == AFFINE_DEQUANTIZE:
        return _affine_findings(op, params)

    if op.type == BLOCKWISE_SHIFT_SCALE:
        data = np.asarray(params["data"])
        problems = _block_shape_problems(data.shape, params["scale"], params.get("offset"))
        if problems:
            return [_Finding("scale", Status.FAIL, f"scale {list(np.asarray(params['scale']).shape)}",
                             f"blocks dividing {list(data.shape)}", f"{label}: " + "; ".join(problems))]
        offsets = {"offset": params["offset"]} if params.get("offset") is not None else {}
        return _scale_findings(op, params["scale"], offsets, None) + _finite_findings(op, data, "data")

    if op.type == SPARSE_BLOCKWISE_SHIFT_SCALE:
        mask = np.asarray(params["data_mask"])
        values = np.asarray(params["nonzero_data"])
        findings = _byte_mask_findings(op, mask, values.size, "data_mask", "nonzero_data")
        problems = _block_shape_problems(mask.shape, params["scale"], params.get("offset"))
        if problems:
            return findings + [_Finding("scale", Status.FAIL, f"scale {list(np.asarray(params['scale']).shape)}",
                                        f"blocks dividing {list(mask.shape)}", f"{label}: " + "; ".join(problems))]
        used = _blocks_in_use(mask, np.asarray(params["scale"]).shape)
        offsets = {"offset": params["offset"]} if params.get("offset") is not None else {}
        return findings + _scale_findings(op, params["scale"], offsets, used) + _finite_findings(op, values, "nonzero_data")

    return []


def _affine_findings(op: Operation, params: Mapping[str, object]) -> list[_Finding]:
    """Check iOS16 ``constexpr_affine_dequantize``: axis, scale and zero point shapes and values."""
    label = _label(op)
    data = np.asarray(params["quantized_data"])
    scale, zero_point = np.asarray(params["scale"]), np.asarray(params["zero_point"])
    axis_value = np.asarray(params["axis"])
    problems = []
    axis = int(axis_value) if axis_value.ndim == 0 and axis_value.dtype.kind in "iu" else None
    if axis is None or not -data.ndim <= axis < data.ndim:
        problems.append(f"axis is {axis_value.tolist()}; expected an integer in [{-data.ndim}, {data.ndim})")
    else:
        for param, array in (("scale", scale), ("zero_point", zero_point)):
            if array.ndim > 1 or (array.ndim == 1 and array.size != data.shape[axis]):
                problems.append(
                    f"{param} has shape {list(array.shape)}; expected a scalar or a vector of "
                    f"{data.shape[axis]} along axis {axis}"
                )
    if problems:
        return [_Finding("scale", Status.FAIL, f"scale {list(scale.shape)}, zero_point {list(zero_point.shape)}",
                         "scalar or one per channel", f"{label}: " + "; ".join(problems))]
    return _scale_findings(op, scale, {"zero_point": zero_point}, None)


# ---------------------------------------------------------------------------------------------
# Rows per weight


def _merge(check: str, subject: str, findings: list[_Finding]) -> CheckResult:
    """Merge the findings of one check on one weight into a row whose status is the worst."""
    status = worst(finding.status for finding in findings)
    chosen = [finding for finding in findings if finding.status is status]
    return CheckResult(
        check=check,
        subject=subject,
        status=status,
        measured="; ".join(dict.fromkeys(finding.measured for finding in chosen if finding.measured)),
        expected="; ".join(dict.fromkeys(finding.expected for finding in chosen if finding.expected)),
        message="; ".join(finding.message for finding in chosen if finding.message),
    )


def _decode_finding(weight: DecodedWeight, decoded: DecodedFunction) -> _Finding:
    chain = " > ".join(op.type.removeprefix("constexpr_") for op in weight.chain)
    failed = [op for op in weight.chain if op.name in decoded.errors]
    if failed:
        # The first failing op is the cause; later ones fail because they read its outputs.
        return _Finding("decode", Status.FAIL, "failed", chain, str(decoded.errors[failed[0].name]))
    value = weight.value
    return _Finding("decode", Status.PASS, f"{value.dtype} {list(value.shape)}", chain)


def _decoded_finite(weight: DecodedWeight) -> list[_Finding]:
    value = weight.value
    if value is None or value.dtype.kind != "f":
        return []
    bad = ~np.isfinite(value.astype(np.float32))
    if bad.any():
        index = _first_index(bad)
        return [_Finding(
            "finite", Status.FAIL, f"{int(bad.sum())} non-finite", "finite values",
            f"the decoded weight contains {value[tuple(index)]!r} at index {index} ({int(bad.sum())} non-finite values)",
        )]
    return [_Finding("finite", Status.PASS, "decoded weight finite", "finite values")]


def _pattern_row(weight: DecodedWeight, expectations: tuple[Expectation, ...]) -> CheckResult:
    expected = ", ".join(item.text for item in expectations)
    if weight.mask is None:
        if weight.value is None:
            return CheckResult("pattern", weight.subject, Status.SKIP, expected=expected,
                               message="the weight did not decode, so its stored mask is unknown")
        problems = check_expectations(None, weight.value.shape, expectations)
        status = Status.FAIL if problems else Status.PASS
        return CheckResult("pattern", weight.subject, status, "no mask, sparsity 0.000", expected,
                           "; ".join(problems), metrics={"sparsity": 0.0})

    pattern = detect_pattern(weight.mask)
    problems = check_expectations(weight.mask, weight.mask.shape, expectations)
    metrics = {"sparsity": pattern.sparsity}
    if pattern.block is not None:
        metrics.update(block_size=pattern.block[0], block_axis=pattern.block[1])
    if pattern.n_m is not None:
        metrics.update(n=pattern.n_m[0], m=pattern.n_m[1], n_m_axis=pattern.n_m[2])
    return CheckResult(
        "pattern", weight.subject, Status.FAIL if problems else Status.PASS, pattern.describe(), expected,
        "; ".join(problems), metrics=metrics,
    )


def check_weights(decoded: DecodedFunction, *, expectations: tuple[Expectation, ...] = ()) -> list[CheckResult]:
    """Return the structure rows of every compressed weight of a decoded function.

    Args:
        decoded: from :func:`decode_function`.
        expectations: from :func:`sparseblob.verify.patterns.parse_expectations`; they apply to
            every compressed weight (a weight without a mask has sparsity 0).

    Returns:
        Per weight, in program order: ``decode``, then ``mask``, ``lut`` and ``scale`` where
        the chain has them, ``finite``, and ``pattern``.
    """
    rows = []
    for weight in decoded.weights:
        findings: dict[str, list[_Finding]] = {"decode": [_decode_finding(weight, decoded)]}
        for op in weight.chain:
            params = decoded.params.get(op.name)
            if params is None:
                continue
            try:
                op_findings = _op_findings(op, params, decoded.dtypes.get(op.name, {}), decoded.ios16)
            except (KeyError, SparseblobError) as error:
                # A missing parameter or an unreadable one: the decode row already names it.
                logger.debug("structure checks of %s skipped: %s", _label(op), error)
                continue
            for finding in op_findings:
                findings.setdefault(finding.check, []).append(finding)
        for finding in _decoded_finite(weight):
            findings.setdefault("finite", []).append(finding)

        for check in ("decode", "mask", "lut", "scale", "finite"):
            if check in findings:
                rows.append(_merge(check, weight.subject, findings[check]))
        rows.append(_pattern_row(weight, expectations))
    return rows
