"""A summary of a package's compressed weights: which op chain, what it costs on disk, density.

:func:`summarize` reads the program (and the masks of sparse chains) without running the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from sparseblob.runtime.constexpr import constexpr_params, weight_names
from sparseblob.runtime.package import Function, Operation, Package
from sparseblob.runtime.values import BlobValue, TensorType

__all__ = ["WeightSummary", "FunctionSummary", "PackageSummary", "summarize"]

# Constexpr ops that carry a sparsity mask, and the parameter names that hold it.
_SPARSE_OPS = ("constexpr_sparse_to_dense", "constexpr_lut_to_sparse", "constexpr_sparse_blockwise_shift_scale")
_MASK_PARAMS = ("mask", "indices_mask", "data_mask")


@dataclass(frozen=True)
class WeightSummary:
    """One compressed weight: the output a compute op consumes and the chain that makes it.

    Attributes:
        name: the final constexpr output name.
        consumers: ``op_type:op_name`` of the non-constexpr ops that read it.
        chain: the constexpr op types from first to last.
        shape: the dense shape.
        dtype: the dense element type.
        stored_bytes: bytes of every parameter of the chain as stored (blob payloads at their
            packed size, immediate values at their packed size).
        dense_fp16_bytes: the same weight stored dense in fp16.
        density: fraction of mask bits set, or ``None`` when the chain has no mask.
    """

    name: str
    consumers: tuple[str, ...]
    chain: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    stored_bytes: int
    dense_fp16_bytes: int
    density: float | None

    @property
    def compression_ratio(self) -> float:
        """Dense fp16 bytes over stored bytes."""
        return self.dense_fp16_bytes / self.stored_bytes if self.stored_bytes else float("inf")


@dataclass(frozen=True)
class FunctionSummary:
    """One function: opset, inputs, outputs, op counts and compressed weights."""

    name: str
    opset: str
    inputs: dict[str, str]
    outputs: tuple[str, ...]
    op_counts: dict[str, int]
    weights: tuple[WeightSummary, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PackageSummary:
    """The whole package."""

    path: str
    specification_version: int
    functions: tuple[FunctionSummary, ...]

    def to_dict(self) -> dict:
        """Return a JSON-ready dictionary."""
        data = asdict(self)
        for function, summary in zip(data["functions"], self.functions):
            for weight, item in zip(function["weights"], summary.weights):
                weight["compression_ratio"] = item.compression_ratio
        return data


def summarize(package: Package) -> PackageSummary:
    """Summarize every function of ``package``."""
    return PackageSummary(
        path=str(package.path),
        specification_version=package.specification_version,
        functions=tuple(_summarize_function(package, name) for name in sorted(package.functions)),
    )


def _summarize_function(package: Package, name: str) -> FunctionSummary:
    func = package.function(name)
    producers = {out.name: op for op in func.operations for out in op.outputs}
    consumers: dict[str, list[str]] = {}
    for op in func.operations:
        if op.is_constexpr:
            continue
        for argument in op.inputs.values():
            for binding in argument:
                if binding.name is not None:
                    consumers.setdefault(binding.name, []).append(f"{op.type}:{op.name}")

    values = package.constexpr_values(name) if any(op.is_constexpr for op in func.operations) else {}
    weights = []
    for weight in weight_names(func):
        chain = _chain(producers[weight], producers)
        array = values[weight]
        weights.append(
            WeightSummary(
                name=weight,
                consumers=tuple(consumers.get(weight, ())),
                chain=tuple(op.type for op in chain),
                shape=tuple(int(dim) for dim in array.shape),
                dtype=str(array.dtype),
                stored_bytes=sum(_stored_bytes(op) for op in chain),
                dense_fp16_bytes=int(array.size) * 2,
                density=_density(chain, values),
            )
        )

    return FunctionSummary(
        name=func.name,
        opset=func.opset,
        inputs={item.name: str(item.type) for item in func.inputs},
        outputs=tuple(func.outputs),
        op_counts=dict(sorted(Counter(op.type for op in func.operations).items())),
        weights=tuple(weights),
    )


def _chain(last: Operation, producers: dict[str, Operation]) -> list[Operation]:
    """Return the constexpr ops that ``last`` depends on, and ``last``, in program order."""
    seen: dict[int, Operation] = {}
    stack = [last]
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen[id(op)] = op
        for argument in op.inputs.values():
            for binding in argument:
                producer = producers.get(binding.name) if binding.name is not None else None
                if producer is not None and producer.is_constexpr:
                    stack.append(producer)
    order = {id(op): index for index, op in enumerate(producers.values())}
    return sorted(seen.values(), key=lambda op: order.get(id(op), 0))


def _stored_bytes(op: Operation) -> int:
    """Bytes of the literal parameters of one op; a blob shared by two params counts once."""
    total = 0
    seen_blobs = set()
    literals = list(op.attributes.values())
    for argument in op.inputs.values():
        literals.extend(binding.value for binding in argument if binding.value is not None)
    for value in literals:
        if isinstance(value, BlobValue):
            key = (value.path, value.offset)
            if key not in seen_blobs:
                seen_blobs.add(key)
                total += value.record.size_in_bytes
        elif isinstance(value.type, TensorType) and value.type.dtype.bits:
            count = int(np.prod([dim or 0 for dim in value.type.shape], dtype=np.int64))
            total += (count * value.type.dtype.bits + 7) // 8
    return total


def _density(chain: list[Operation], values: dict[str, np.ndarray]) -> float | None:
    """Fraction of set mask bits of the last sparse op of the chain, or ``None``."""
    for op in reversed(chain):
        if op.type not in _SPARSE_OPS:
            continue
        params = constexpr_params(op, values)
        mask = np.asarray(next(params[name] for name in _MASK_PARAMS if name in params))
        if "shape" in params:
            # iOS16 form: the mask is packed, one bit per element of ``shape``.
            count = int(np.prod(np.asarray(params["shape"], dtype=np.int64)))
            set_bits = int(np.unpackbits(mask.astype(np.uint8), bitorder="little")[:count].sum())
        else:
            count = mask.size
            set_bits = int(np.count_nonzero(mask))
        return set_bits / count if count else 0.0
    return None
