"""Execution of a Core ML program with numpy.

:func:`run` walks the operations of one function in program order, keeping a ``name ->
value`` environment. ``const`` values are read from the package; ``constexpr_*`` ops are
decoded once, before execution, as Core ML does when it loads a model. Every other op goes
through :func:`sparseblob.runtime.ops.registry.run_op`, which computes in fp32 (or fp64 in the
reference precision) and rounds to the op's declared output dtype. After each op the declared
output types are checked, so a kernel that returns a wrong shape or dtype fails at that op.

With ``weights="sparse"``, linear, matmul and conv ops whose weight is a compressed sparse
constexpr chain run on the compressed form through :mod:`sparseblob.runtime.kernels`. With
``weights="dense"``, every weight is decoded to a dense array first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import PackageError, ShapeError, UnknownDtypeError
from .package import Function, Operation, Package
from .values import TensorType

__all__ = ["run", "RunResult", "OpTrace"]

logger = logging.getLogger(__name__)

_PRECISIONS = {"fp32": np.float32, "fp64": np.float64}
_WEIGHT_MODES = ("sparse", "dense")


@dataclass(frozen=True)
class OpTrace:
    """Trace record of one op: name, type, output shapes, dtypes, value ranges and time."""

    name: str
    type: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    seconds: float
    kernel: str


@dataclass
class RunResult:
    """Outputs of one run, by output name, with the per-op trace when it was requested."""

    outputs: dict[str, np.ndarray]
    trace: list[OpTrace] = field(default_factory=list)


def run(
    package: Package,
    inputs: Mapping[str, np.ndarray],
    *,
    function: str | None = None,
    weights: str = "sparse",
    precision: str = "fp32",
    round_to_declared: bool = True,
    trace: bool = False,
) -> dict[str, np.ndarray]:
    """Run one function of a loaded package on numpy inputs.

    Args:
        package: a package from :func:`sparseblob.runtime.load`.
        inputs: input name to array; each must match the declared shape, and is cast to the
            declared dtype.
        function: the function to run; the package's default function when ``None``.
        weights: ``"sparse"`` runs compressed sparse weights with the sparse-aware kernels,
            ``"dense"`` decodes every weight first.
        precision: ``"fp32"`` computes each op in float32, ``"fp64"`` in float64 (reference
            mode).
        round_to_declared: round each op's float results to the declared dtype, as a device
            that stores fp16 activations does. ``False`` keeps every float value in the
            compute precision, which isolates kernel differences from fp16 rounding.
        trace: log each op's name, type, output shape, dtype, min, max and time at INFO level
            on the ``sparseblob.runtime.interpreter`` logger.

    Returns:
        Output name to array, in the function's output order.

    Raises:
        PackageError: an input is missing or unknown, or a binding names no earlier value.
        ShapeError, UnknownDtypeError: an input or an op result does not match its declared type.
        UnsupportedOpError: the program uses an op that the runtime does not implement.
    """
    return run_with_trace(
        package,
        inputs,
        function=function,
        weights=weights,
        precision=precision,
        round_to_declared=round_to_declared,
        trace=trace,
    ).outputs


def run_with_trace(
    package: Package,
    inputs: Mapping[str, np.ndarray],
    *,
    function: str | None = None,
    weights: str = "sparse",
    precision: str = "fp32",
    round_to_declared: bool = True,
    trace: bool = True,
) -> RunResult:
    """Run like :func:`run` and also return the per-op trace."""
    from .ops.registry import run_op

    if weights not in _WEIGHT_MODES:
        raise ValueError(f"weights={weights!r}; expected one of {_WEIGHT_MODES}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {sorted(_PRECISIONS)}")
    compute_dtype = _PRECISIONS[precision]

    func = package.function(function)
    float_dtype = None if round_to_declared else compute_dtype
    env: dict[str, object] = dict(_bind_inputs(func, inputs, float_dtype))
    env.update(package.constexpr_values(func.name))
    sparse_weights = _sparse_weights(package, func) if weights == "sparse" else {}
    records: list[OpTrace] = []

    for op in func.operations:
        if op.is_constexpr:
            continue
        if op.type == "const":
            env[op.outputs[0].name] = _read_const(op)
            continue

        started = time.perf_counter()
        kernel = "dense"
        sparse = _sparse_operand(op, sparse_weights)
        if sparse is not None:
            from .sparse_dispatch import run_sparse_op

            params = _gather_inputs(op, env, skip=sparse[0])
            results = run_sparse_op(
                op.type,
                params,
                sparse[0],
                sparse[1],
                name=op.name,
                output_dtypes=[_declared_dtype(out.type, float_dtype) for out in op.outputs],
                compute_dtype=compute_dtype,
            )
            kernel = "sparse"
        else:
            params = _gather_inputs(op, env)
            results = run_op(
                op.type,
                params,
                name=op.name,
                output_dtypes=[_declared_dtype(out.type, float_dtype) for out in op.outputs],
                compute_dtype=compute_dtype,
            )
        elapsed = time.perf_counter() - started

        if len(results) != len(op.outputs):
            raise ShapeError(
                f"op {op.name!r} ({op.type}) returned {len(results)} outputs; the program "
                f"declares {len(op.outputs)}"
            )
        for out, value in zip(op.outputs, results):
            _check_declared(op, out.name, out.type, value, float_dtype)
            env[out.name] = value

        if trace:
            records.append(_trace_entry(op, results, elapsed, kernel))

    outputs = {}
    for name in func.outputs:
        if name not in env:
            raise PackageError(f"function {func.name!r} returns {name!r}, which no op produces")
        outputs[name] = np.asarray(env[name])
    return RunResult(outputs, records)


def _bind_inputs(
    func: Function, inputs: Mapping[str, np.ndarray], float_dtype: np.dtype | None
) -> dict[str, np.ndarray]:
    """Check the caller's inputs against the declared ones and cast them to the declared dtype.

    Float inputs are cast to ``float_dtype`` instead when it is given.
    """
    declared = {item.name: item.type for item in func.inputs}
    missing = sorted(set(declared) - set(inputs))
    unknown = sorted(set(inputs) - set(declared))
    if missing or unknown:
        raise PackageError(
            f"function {func.name!r} takes inputs {sorted(declared)}; missing {missing}, "
            f"unknown {unknown}"
        )

    bound = {}
    for name, value_type in declared.items():
        array = np.asarray(inputs[name])
        if isinstance(value_type, TensorType):
            if not _shape_matches(value_type.shape, array.shape):
                raise ShapeError(
                    f"input {name!r} has shape {list(array.shape)}; the function declares "
                    f"{_shape_text(value_type.shape)}"
                )
            array = array.astype(_declared_dtype(value_type, float_dtype), copy=False)
        bound[name] = array
    return bound


def _read_const(op: Operation) -> object:
    value = op.attributes.get("val")
    if value is None:
        raise PackageError(f"const op {op.name!r} has no 'val' attribute")
    return value.read()


def _gather_inputs(op: Operation, env: Mapping[str, object], skip: str | None = None) -> dict[str, object]:
    """Resolve each input argument of ``op`` to its value; tuple arguments become lists."""
    params: dict[str, object] = {}
    for param, argument in op.inputs.items():
        if param == skip:
            continue
        values = []
        for binding in argument:
            if binding.name is not None:
                if binding.name not in env:
                    raise PackageError(
                        f"op {op.name!r} ({op.type}) input {param!r} refers to {binding.name!r}, "
                        "which no earlier op or function input produces"
                    )
                values.append(env[binding.name])
            else:
                values.append(binding.value.read())
        params[param] = values[0] if len(values) == 1 and not _is_variadic(op.type, param) else values
    return params


# Inputs that MIL declares as tuples, even when they hold a single tensor.
_VARIADIC = {("concat", "values")}


def _is_variadic(op_type: str, param: str) -> bool:
    return (op_type, param) in _VARIADIC


def _declared_dtype(value_type, float_dtype: np.dtype | None = None) -> np.dtype | None:
    """Return the numpy dtype of a tensor type; ``float_dtype`` replaces float types when given."""
    if not isinstance(value_type, TensorType):
        return None
    if float_dtype is not None and value_type.dtype.is_float:
        return np.dtype(float_dtype)
    return value_type.dtype.numpy_dtype


def _check_declared(
    op: Operation, name: str, value_type, value: object, float_dtype: np.dtype | None = None
) -> None:
    """Compare an op result with its declared tensor type; unknown dimensions match any size."""
    if not isinstance(value_type, TensorType):
        return
    array = np.asarray(value)
    if array.dtype != _declared_dtype(value_type, float_dtype):
        raise UnknownDtypeError(
            f"op {op.name!r} ({op.type}) output {name!r} has dtype {array.dtype}; the program "
            f"declares {value_type.dtype}"
        )
    if not _shape_matches(value_type.shape, array.shape):
        raise ShapeError(
            f"op {op.name!r} ({op.type}) output {name!r} has shape {list(array.shape)}; the "
            f"program declares {_shape_text(value_type.shape)}"
        )


def _shape_matches(declared, actual) -> bool:
    """True when the ranks agree and every known declared dimension equals the actual one."""
    return len(declared) == len(actual) and all(
        dim is None or dim == size for dim, size in zip(declared, actual)
    )


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def _trace_entry(op: Operation, results, elapsed: float, kernel: str) -> OpTrace:
    shapes, dtypes, lows, highs = [], [], [], []
    for value in results:
        array = np.asarray(value)
        shapes.append(tuple(array.shape))
        dtypes.append(str(array.dtype))
        numeric = array.size and np.issubdtype(array.dtype, np.number)
        lows.append(float(np.nanmin(array)) if numeric else float("nan"))
        highs.append(float(np.nanmax(array)) if numeric else float("nan"))
    entry = OpTrace(op.name, op.type, tuple(shapes), tuple(dtypes), tuple(lows), tuple(highs), elapsed, kernel)
    logger.info(
        "%s %s shape=%s dtype=%s min=%s max=%s time=%.3f ms kernel=%s",
        op.name, op.type, list(entry.shapes), list(entry.dtypes),
        [f"{v:.4g}" for v in entry.minimum], [f"{v:.4g}" for v in entry.maximum],
        elapsed * 1e3, kernel,
    )
    return entry


def _sparse_weights(package: Package, func: Function) -> dict:
    """Build the compressed-weight objects for the sparse chains of ``func``."""
    from .sparse_dispatch import compressed_weights

    return compressed_weights(package, func)


def _sparse_operand(op: Operation, sparse_weights: Mapping[str, object]):
    """Return ``(param, compressed weight)`` when ``op`` reads a compressed sparse weight."""
    if not sparse_weights:
        return None
    for param in ("weight", "y", "x"):
        argument = op.inputs.get(param)
        if argument is None or len(argument) != 1:
            continue
        binding = argument.bindings[0]
        if binding.name is not None and binding.name in sparse_weights:
            return param, sparse_weights[binding.name]
    return None
