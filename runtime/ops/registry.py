"""The table of supported MIL ops and :func:`run_op`, the entry point of the interpreter.

Every op is a pure numpy function whose parameters carry MIL's names. :func:`run_op` is the thin
shell around them that checks the op contract once for every op:

1. look up the op type (UnsupportedOpError lists the supported set);
2. reject parameters the op does not have and report missing required ones;
3. convert float inputs to ``compute_dtype`` (fp32 by default, fp64 for a reference run), so
   fp16 programs are computed in fp32 and mixed fp16/fp32 parameters become one dtype;
4. call the function, prefixing any SparseblobError with the op's name;
5. convert each output to its declared dtype: ``output_dtypes`` when given, else the original
   float dtype of the op's type-defining input (x for most ops), which rounds fp32 results of an
   fp16 program back to fp16.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..errors import OpParameterError, ShapeError, SparseblobError, UnsupportedOpError
from . import activation, attention, conv, elementwise, linear, norm, pool, reduce, resize, shape
from ._numeric import convert
from ._params import is_float

__all__ = ["OpSpec", "REGISTRY", "SUPPORTED_OPS", "get_op", "run_op"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpSpec:
    """One supported op type.

    Attributes:
        op_type: the MIL op type, e.g. ``"conv"``.
        function: the numpy implementation; returns one array or a tuple (``split``).
        type_param: the parameter whose dtype is the op's T, so the default output dtype; None
            when the function alone decides (``cast``, ``shape``).
        parameters: every parameter name the function accepts.
        required: the parameters without a default.
    """

    op_type: str
    function: Callable[..., np.ndarray | tuple[np.ndarray, ...]]
    type_param: str | None
    parameters: tuple[str, ...]
    required: tuple[str, ...]


def _spec(op_type: str, function: Callable, type_param: str | None = "x") -> OpSpec:
    signature = inspect.signature(function)
    parameters = tuple(signature.parameters)
    required = tuple(
        p.name for p in signature.parameters.values() if p.default is inspect.Parameter.empty
    )
    return OpSpec(op_type, function, type_param, parameters, required)


_SPECS = (
    # Activations.
    _spec("relu", activation.relu),
    _spec("relu6", activation.relu6),
    _spec("clip", activation.clip),
    _spec("leaky_relu", activation.leaky_relu),
    _spec("thresholded_relu", activation.thresholded_relu),
    _spec("elu", activation.elu),
    _spec("prelu", activation.prelu),
    _spec("sigmoid", activation.sigmoid),
    _spec("sigmoid_hard", activation.sigmoid_hard),
    _spec("silu", activation.silu),
    _spec("softplus", activation.softplus),
    _spec("softsign", activation.softsign),
    _spec("gelu", activation.gelu),
    _spec("softmax", activation.softmax),
    # Unary math.
    _spec("abs", elementwise.abs_),
    _spec("acos", elementwise.acos),
    _spec("asin", elementwise.asin),
    _spec("atan", elementwise.atan),
    _spec("atanh", elementwise.atanh),
    _spec("ceil", elementwise.ceil),
    _spec("cos", elementwise.cos),
    _spec("cosh", elementwise.cosh),
    _spec("erf", elementwise.erf),
    _spec("exp", elementwise.exp),
    _spec("exp2", elementwise.exp2),
    _spec("floor", elementwise.floor),
    _spec("inverse", elementwise.inverse),
    _spec("log", elementwise.log),
    _spec("rsqrt", elementwise.rsqrt),
    _spec("sign", elementwise.sign),
    _spec("sin", elementwise.sin),
    _spec("sinh", elementwise.sinh),
    _spec("sqrt", elementwise.sqrt),
    _spec("square", elementwise.square),
    _spec("tan", elementwise.tan),
    _spec("tanh", elementwise.tanh),
    _spec("threshold", elementwise.threshold),
    _spec("identity", elementwise.identity),
    # Binary arithmetic, comparisons and logic.
    _spec("add", elementwise.add),
    _spec("sub", elementwise.sub),
    _spec("mul", elementwise.mul),
    _spec("real_div", elementwise.real_div),
    _spec("floor_div", elementwise.floor_div),
    _spec("mod", elementwise.mod),
    _spec("pow", elementwise.pow_),
    _spec("maximum", elementwise.maximum),
    _spec("minimum", elementwise.minimum),
    _spec("equal", elementwise.equal),
    _spec("not_equal", elementwise.not_equal),
    _spec("greater", elementwise.greater),
    _spec("greater_equal", elementwise.greater_equal),
    _spec("less", elementwise.less),
    _spec("less_equal", elementwise.less_equal),
    _spec("logical_and", elementwise.logical_and),
    _spec("logical_or", elementwise.logical_or),
    _spec("logical_xor", elementwise.logical_xor),
    _spec("logical_not", elementwise.logical_not),
    _spec("select", elementwise.select, "a"),
    _spec("cast", elementwise.cast, None),
    # Reductions.
    _spec("reduce_mean", reduce.reduce_mean),
    _spec("reduce_sum", reduce.reduce_sum),
    _spec("reduce_max", reduce.reduce_max),
    _spec("reduce_min", reduce.reduce_min),
    _spec("reduce_prod", reduce.reduce_prod),
    _spec("reduce_sum_square", reduce.reduce_sum_square),
    _spec("reduce_l1_norm", reduce.reduce_l1_norm),
    _spec("reduce_l2_norm", reduce.reduce_l2_norm),
    _spec("reduce_log_sum", reduce.reduce_log_sum),
    _spec("reduce_log_sum_exp", reduce.reduce_log_sum_exp),
    _spec("reduce_argmax", reduce.reduce_argmax),
    _spec("reduce_argmin", reduce.reduce_argmin),
    # Shape and indexing.
    _spec("reshape", shape.reshape),
    _spec("transpose", shape.transpose),
    _spec("squeeze", shape.squeeze),
    _spec("expand_dims", shape.expand_dims),
    _spec("concat", shape.concat, "values"),
    _spec("split", shape.split),
    _spec("stack", shape.stack, "values"),
    _spec("slice_by_index", shape.slice_by_index),
    _spec("slice_by_size", shape.slice_by_size),
    _spec("gather", shape.gather),
    _spec("gather_along_axis", shape.gather_along_axis),
    _spec("pad", shape.pad),
    _spec("tile", shape.tile),
    _spec("crop", shape.crop),
    _spec("shape", shape.shape_, None),
    # Linear algebra, convolution and pooling.
    _spec("linear", linear.linear),
    _spec("matmul", linear.matmul),
    _spec("conv", conv.conv),
    _spec("conv_transpose", conv.conv_transpose),
    _spec("max_pool", pool.max_pool),
    _spec("avg_pool", pool.avg_pool),
    _spec("l2_pool", pool.l2_pool),
    # Normalization, attention and resizing.
    _spec("layer_norm", norm.layer_norm),
    _spec("batch_norm", norm.batch_norm),
    _spec("instance_norm", norm.instance_norm),
    _spec("l2_norm", norm.l2_norm),
    _spec("scaled_dot_product_attention", attention.scaled_dot_product_attention, "query"),
    _spec("upsample_nearest_neighbor", resize.upsample_nearest_neighbor),
    _spec("upsample_bilinear", resize.upsample_bilinear),
)

REGISTRY: Mapping[str, OpSpec] = MappingProxyType({spec.op_type: spec for spec in _SPECS})

SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(REGISTRY))


def get_op(op_type: str, *, name: str = "") -> OpSpec:
    """Return the spec of ``op_type``.

    Raises:
        UnsupportedOpError: the op type is not in :data:`SUPPORTED_OPS`; the message names the
            op type, the op's ``name`` and the supported set.
    """
    try:
        return REGISTRY[op_type]
    except KeyError:
        raise UnsupportedOpError(
            f"op {name!r}: op type {op_type!r} is not supported; supported op types: "
            f"{', '.join(SUPPORTED_OPS)}"
        ) from None


def _to_compute(value: object, dtype: np.dtype) -> object:
    """Convert a float array (or each float array of a tuple parameter) to ``dtype``."""
    if isinstance(value, (list, tuple)):
        return [_to_compute(v, dtype) for v in value]
    if is_float(value):
        return np.asarray(value).astype(dtype, copy=False)
    return value


def _original_dtype(value: object) -> np.dtype | None:
    if isinstance(value, (list, tuple)):
        return _original_dtype(value[0]) if value else None
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype
    return None


def run_op(
    op_type: str,
    inputs: Mapping[str, object],
    *,
    name: str,
    output_dtypes: Sequence[np.dtype] | None = None,
    compute_dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, ...]:
    """Run one MIL op on numpy inputs and return its outputs in order.

    Args:
        op_type: the MIL op type, e.g. ``"conv"``.
        inputs: MIL parameter name to value: numpy arrays (scalars as rank-0 arrays), ``str``
            for string parameters, lists of arrays for tuple parameters (``concat.values``).
            A None value means "not given": the op's default applies.
        name: the op's name in the program, for error messages.
        output_dtypes: the declared dtype of each output; each result is converted to it
            (float rounding, saturating float-to-int). None keeps float results in the original
            dtype of the op's type-defining input and other results as computed.
        compute_dtype: the float dtype that every float input is converted to before the op
            runs: fp32 (default) or fp64 for a reference run.

    Returns:
        One array per output; ``split`` has several. Shape ops (reshape, transpose, slicing,
        split) may return views that share memory with their inputs, so callers must treat
        outputs as read-only.

    Raises:
        UnsupportedOpError: unknown op type or parameter, or an unsupported mode of a known op.
        OpParameterError: a missing required parameter or an invalid parameter value.
        ShapeError, ParameterShapeError: inputs with inconsistent shapes, or a number of
            outputs other than ``len(output_dtypes)``.

    Example:
        ``run_op("relu", {"x": np.array([-1, 2], np.float16)}, name="relu_0")`` returns
        ``(array([0., 2.], dtype=float16),)``.
    """
    spec = get_op(op_type, name=name)
    provided = {key: value for key, value in inputs.items() if value is not None}

    unknown = sorted(set(provided) - set(spec.parameters))
    if unknown:
        raise UnsupportedOpError(
            f"op {name!r} ({op_type}): unknown parameter(s) {unknown}; {op_type} accepts "
            f"{list(spec.parameters)}"
        )
    missing = [param for param in spec.required if param not in provided]
    if missing:
        raise OpParameterError(
            f"op {name!r} ({op_type}): missing required parameter(s) {missing}"
        )

    compute = np.dtype(compute_dtype)
    if not np.issubdtype(compute, np.floating):
        raise OpParameterError(
            f"op {name!r} ({op_type}): compute_dtype {compute} is not a float dtype"
        )
    original = _original_dtype(provided.get(spec.type_param)) if spec.type_param else None
    arguments = {key: _to_compute(value, compute) for key, value in provided.items()}

    try:
        result = spec.function(**arguments)
    except SparseblobError as error:
        raise type(error)(f"op {name!r}: {error}") from error
    results = tuple(np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)))

    if output_dtypes is not None:
        if len(output_dtypes) != len(results):
            raise ShapeError(
                f"op {name!r} ({op_type}): produced {len(results)} output(s) but "
                f"{len(output_dtypes)} output dtype(s) are declared"
            )
        results = tuple(convert(r, dtype) for r, dtype in zip(results, output_dtypes))
    elif original is not None and np.issubdtype(original, np.floating):
        results = tuple(
            convert(r, original) if np.issubdtype(r.dtype, np.floating) else r for r in results
        )

    if logger.isEnabledFor(logging.DEBUG):
        summary = ", ".join(f"{r.dtype}:{list(r.shape)}" for r in results)
        logger.debug("%s %r -> %s", op_type, name, summary)
    return results
