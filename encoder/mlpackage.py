"""Compress the weights of a dense ``.mlpackage`` into Core ML constexpr op chains.

:func:`compress_package` reads a package with the strict reader, picks the ``const`` weights of
``linear``, ``matmul``, ``conv`` and ``conv_transpose`` ops that a :class:`CompressionConfig`
selects, and replaces each one by the constexpr ops of the package's target:

* iOS16 and iOS17 (opsets CoreML6 and CoreML7): parameters in ``attributes``;
  ``constexpr_sparse_to_dense`` (mask packed into uint8, explicit uint32 shape),
  ``constexpr_lut_to_dense`` (packed indices, one LUT) and ``constexpr_affine_dequantize``.
* iOS18 and later (opset CoreML8 and later): parameters in ``inputs``;
  ``constexpr_sparse_to_dense`` (uint1 mask), ``constexpr_lut_to_dense`` (uintN indices, LUT
  per group or vector), ``constexpr_blockwise_shift_scale``, and the joint chains
  ``constexpr_lut_to_sparse`` or ``constexpr_sparse_blockwise_shift_scale`` followed by
  ``constexpr_sparse_to_dense``, whose two inputs are bound by name to the first op's outputs.

Values are stored as coremltools 9.0 stores them. A tensor of at least 10 elements goes to
``weight.bin`` when its container is fp16, fp32, uint8 or int8 (sub-byte types live in uint8
or int8 containers), or, from specification version 9 (iOS18), int16, uint16, int32 or uint32.
Every other tensor is immediate, sub-byte types packed LSB-first into ``bytes``.

Names follow coremltools: the ops are named ``<weight>_sparsified``, ``<weight>_palettized``
or ``<weight>_quantized`` after the const op they replace, and two-output ops name their
outputs ``<op>_0`` (mask) and ``<op>_1`` (values). The last op of a chain outputs the const's
own output name and type, so the consumers are not changed.

Everything else is kept: every other op, attribute, description and metadata entry, and every
other file of the package. The new ``weight.bin`` contains the blobs that the program still
references, copied value for value in program order, and the new ones. The dense weights that
were replaced are left out, so the ``BlobFileValue.offset`` of a kept value changes.

A weight that the encoder declines (a group size that does not divide the output channels, a
block larger than its axis, a non-finite value, ...) keeps its const op and its bytes, and the
report says why. A request that the package's target cannot express (3-bit, grouped or vector
LUTs, 4-bit or per-block quantization and joint chains before iOS18) raises
:class:`EncodingError` before anything is written.

The package is built in a temporary directory beside the output and renamed into place, so a
failure leaves no partial package and leaves an existing output untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparseblob.runtime import load
from sparseblob.runtime.bitpack import pack_bits, packed_size
from sparseblob.runtime.blobfile import BlobWriter
from sparseblob.runtime.dtypes import ElementType, by_name
from sparseblob.runtime.errors import (
    EncodingError,
    NonFiniteError,
    OutputExistsError,
    PackageError,
    PackagePathError,
    ShapeError,
)
from sparseblob.runtime.package import MODEL_PATH_PREFIX, Binding, Function, Operation, Package
from sparseblob.runtime.values import TensorType

from ._files import current_umask
from .config import CompressionConfig, WeightConfig
from .masks import apply_mask, block_mask, magnitude_mask, n_m_mask, threshold_mask
from .palettize import palettize_nonzero, palettize_scaled, palettize_weight
from .params import (
    LutParams,
    LutToSparseParams,
    QuantParams,
    ScaledLutParams,
    SparseParams,
    SparseShiftScaleParams,
)
from .quantize import quantize_nonzero, quantize_weight
from .sparse import encode_sparse

__all__ = [
    "WEIGHT_FILE_NAME",
    "CompressedWeight",
    "SkippedWeight",
    "CompressionReport",
    "compress_package",
]

logger = logging.getLogger(__name__)

# The blob file that coremltools writes and that every new value references.
WEIGHT_FILE_NAME = MODEL_PATH_PREFIX + "weights/weight.bin"

# Inputs of each consumer op type that carry a weight.
_WEIGHT_INPUTS = {
    "linear": ("weight",),
    "conv": ("weight",),
    "conv_transpose": ("weight",),
    "matmul": ("x", "y"),
}
_FLOAT_DTYPES = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32"}
# MILSpec.DataType STRING, for the ``name`` attribute.
_PROTO_STRING = 2
# Containers that coremltools 9.0 writes to weight.bin (``should_use_weight_file``).
_BLOB_CONTAINERS = {np.dtype(t) for t in (np.float16, np.float32, np.uint8, np.int8)}
_BLOB_CONTAINERS_IOS18 = _BLOB_CONTAINERS | {np.dtype(t) for t in (np.int16, np.uint16, np.int32, np.uint32)}
_BLOB_MIN_ELEMENTS = 10
_IOS18_SPECIFICATION_VERSION = 9


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class CompressedWeight:
    """A weight that was replaced by a constexpr op chain.

    Attributes:
        function: the function that contains it.
        name: the const's output name, which the consumers bind and the chain now outputs.
        consumers: the consumer ops, as ``"<type> '<name>'"``.
        shape: the weight shape.
        dtype: the weight dtype (fp16 or fp32).
        chain: the op types written, in program order.
        settings: the config layers that gave the settings, e.g. ``"[global] + [op_type.conv]"``.
        dense_bytes: bytes of the dense weight.
        stored_bytes: bytes of the new parameters, sub-byte types packed.
    """

    function: str
    name: str
    consumers: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chain: tuple[str, ...]
    settings: str
    dense_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class SkippedWeight:
    """A weight that was selected but left dense, bit for bit, with the reason."""

    function: str
    name: str
    consumers: tuple[str, ...]
    reason: str


@dataclass
class CompressionReport:
    """The result of :func:`compress_package`: the weights it compressed and the ones it skipped.

    Attributes:
        input_path: the dense package read.
        output_path: the package written.
        specification_version: the model's specification version (7 is iOS16, 9 is iOS18).
        compressed: the weights replaced, in program order.
        skipped: the weights left dense although the config asked to compress them.
        below_limit: the weights the config selected but left dense because they have rank
            below 2 or at most ``min_elements`` elements, as coremltools' ``weight_threshold``
            does.
        input_weight_bytes: size of the input ``weight.bin`` (0 when there is none).
        output_weight_bytes: size of the written ``weight.bin``.
    """

    input_path: Path
    output_path: Path
    specification_version: int
    compressed: list[CompressedWeight] = field(default_factory=list)
    skipped: list[SkippedWeight] = field(default_factory=list)
    below_limit: list[SkippedWeight] = field(default_factory=list)
    input_weight_bytes: int = 0
    output_weight_bytes: int = 0

    def to_dict(self) -> dict[str, object]:
        """Return the report as plain data for JSON."""
        return {
            "input_path": str(self.input_path),
            "output_path": str(self.output_path),
            "specification_version": self.specification_version,
            "input_weight_bytes": self.input_weight_bytes,
            "output_weight_bytes": self.output_weight_bytes,
            "compressed": [dict(entry.__dict__) for entry in self.compressed],
            "skipped": [dict(entry.__dict__) for entry in self.skipped],
            "below_limit": [dict(entry.__dict__) for entry in self.below_limit],
        }


# ---------------------------------------------------------------------------------------------
# Entry point


def compress_package(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    config: CompressionConfig,
    *,
    overwrite: bool = False,
) -> CompressionReport:
    """Write a copy of a dense ``.mlpackage`` with its selected weights compressed.

    Args:
        in_path: the dense package.
        out_path: the package to write. It may equal ``in_path`` when ``overwrite`` is set.
        config: which weights to compress, and how.
        overwrite: replace an existing ``out_path``. The old one is removed only after the
            new package is complete.

    Returns:
        A :class:`CompressionReport` listing every weight compressed or skipped.

    Raises:
        OutputExistsError: ``out_path`` exists and ``overwrite`` is not set.
        PackagePathError: one path lies inside the other.
        PackageError: the input is not a valid package, or the output directory is missing.
        EncodingError: the target cannot express a requested format, or the config settings
            of a weight contradict each other. Nothing is written then.
    """
    if not isinstance(config, CompressionConfig):
        raise EncodingError(f"config must be a CompressionConfig, got {type(config).__name__}")
    in_path = Path(in_path)
    out_path = Path(out_path)
    _check_output(in_path, out_path, overwrite)

    package = load(in_path)
    try:
        plans = _plan_package(package, config)
        report = CompressionReport(in_path, out_path, package.specification_version)
        temp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
        # mkdtemp creates the directory with mode 0700; the package gets the usual umask mode.
        temp.chmod(0o777 & ~current_umask())
        try:
            _write_package(package, plans, temp, report)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    finally:
        package.close()

    _install(temp, out_path)
    logger.info(
        "%s: compressed %d weights, skipped %d; weight.bin %d -> %d bytes",
        out_path, len(report.compressed), len(report.skipped),
        report.input_weight_bytes, report.output_weight_bytes,
    )
    return report


def _check_output(in_path: Path, out_path: Path, overwrite: bool) -> None:
    if not out_path.parent.is_dir():
        raise PackageError(f"{out_path}: the output directory {out_path.parent} does not exist")
    if out_path.exists() or out_path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{out_path}: the output already exists; pass overwrite=True to replace it")
    real_in = in_path.resolve()
    real_out = out_path.resolve()
    if real_in != real_out and (real_out.is_relative_to(real_in) or real_in.is_relative_to(real_out)):
        raise PackagePathError(
            f"{out_path}: the output and the input {in_path} contain one another; choose a path outside the input"
        )


def _install(temp: Path, out_path: Path) -> None:
    """Rename the finished package to ``out_path``; an existing one is removed only after that.

    Replacing an existing output takes two renames, so for a moment ``out_path`` does not
    exist. A failure of the second rename puts the old output back. ``temp`` is removed on any
    failure.
    """
    try:
        if not (out_path.exists() or out_path.is_symlink()):
            os.replace(temp, out_path)
            return

        backup = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".old", dir=out_path.parent))
        old = backup / "package"
        os.replace(out_path, old)
        try:
            os.replace(temp, out_path)
        except BaseException:
            os.replace(old, out_path)
            backup.rmdir()
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Selection


@dataclass(frozen=True)
class _Use:
    """One use of a variable: an op input, or a block output (``op`` None)."""

    op: Operation | None
    param: str


@dataclass(frozen=True)
class _Axes:
    """Output- and input-channel axes of a weight for its consumer, normalized to ``[0, rank)``."""

    output: int
    input: int


@dataclass
class _Plan:
    """A const op to replace, with its resolved settings."""

    op: Operation
    settings: WeightConfig
    source: str
    axes: _Axes
    consumers: tuple[str, ...]
    ios18: bool


def _describe(op: Operation | None, param: str) -> str:
    if op is None:
        return param
    return f"{op.type} {op.name!r}"


def _collect_uses(operations, outputs, uses: dict[str, list[_Use]], *, where: str) -> None:
    for op in operations:
        for param, argument in op.inputs.items():
            for binding in argument:
                if binding.name is not None:
                    uses.setdefault(binding.name, []).append(_Use(op, param))
        for block in op.blocks:
            _collect_uses(block.operations, block.outputs, uses, where=f"a block of {op.type} {op.name!r}")
    for name in outputs:
        uses.setdefault(name, []).append(_Use(None, f"the output of {where}"))


def _uses_of(function: Function) -> dict[str, list[_Use]]:
    uses: dict[str, list[_Use]] = {}
    _collect_uses(function.operations, function.outputs, uses, where=f"function {function.name!r}")
    return uses


def _is_ios18(function: Function) -> bool:
    """True for opsets CoreML8 and later (iOS18 forms); raise for opsets before CoreML6."""
    version = None
    if function.opset.startswith("CoreML"):
        try:
            version = int(function.opset.removeprefix("CoreML"))
        except ValueError:
            version = None
    if version is None or version < 6:
        raise EncodingError(
            f"function {function.name!r}: opset {function.opset!r} has no constexpr ops; "
            "compressed weights need opset CoreML6 (iOS16) or later"
        )
    return version >= 8


def _flag(op: Operation, param: str, constants: dict[str, object]) -> bool | None:
    """Return a bool input such as ``transpose_y``: False when absent, None when not constant."""
    if param not in op.inputs:
        return False
    binding: Binding = op.inputs[param].bindings[0]
    if binding.value is not None:
        value = binding.value.read()
    elif binding.name in constants:
        value = constants[binding.name]
    else:
        return None
    return bool(np.asarray(value).reshape(-1)[0])


def _channel_axes(use: _Use, rank: int, constants: dict[str, object]) -> _Axes | None:
    """Return the consumer's output- and input-channel axes of the weight, as coremltools picks them."""
    op = use.op
    if op.type == "conv_transpose":
        return _Axes(1, 0)
    if op.type == "matmul":
        name = "transpose_y" if use.param == "y" else "transpose_x"
        transposed = _flag(op, name, constants)
        if transposed is None:
            return None
        if use.param == "y":
            output, inner = (-2, -1) if transposed else (-1, -2)
        else:
            output, inner = (-1, -2) if transposed else (-2, -1)
        return _Axes(output % rank, inner % rank)
    return _Axes(0, 1)


def _target_problem(settings: WeightConfig) -> str | None:
    """Return why iOS16/iOS17 ops cannot express ``settings``, or None when they can."""
    values = settings.values
    if settings.pattern != "none" and values in ("palettize", "quantize"):
        return f"pattern={settings.pattern!r} with values={values!r} needs a joint op chain, which starts with iOS18"
    if values == "palettize":
        if settings.nbits == 3:
            return "3-bit LUTs start with iOS18 (iOS16 LUTs have 2, 4, 16, 64 or 256 entries)"
        if settings.palettize_granularity == "per_grouped_channel":
            return "grouped LUTs (palettize_granularity='per_grouped_channel') start with iOS18"
        if settings.cluster_dim > 1:
            return f"vector LUTs (cluster_dim={settings.cluster_dim}) start with iOS18"
        if settings.per_channel_scale:
            return "per_channel_scale needs a two-op chain, which starts with iOS18"
    if values == "quantize":
        if settings.quantize_dtype in ("int4", "uint4"):
            return f"quantize_dtype={settings.quantize_dtype!r} starts with iOS18; use int8 or uint8"
        if settings.quantize_granularity == "per_block":
            return "per-block quantization starts with iOS18; use per_tensor or per_channel"
    return None


def _plan_package(package: Package, config: CompressionConfig) -> dict[str, _FunctionPlan]:
    """Choose the const ops to replace in every function, keyed by function name.

    Returns:
        Per function: the plans keyed by the const op's position in the block, the weights
        left dense with their reasons, and the weights below the size limit.

    Raises:
        EncodingError: a request that the function's target cannot express, before anything
            is written.
    """
    return {name: _plan_function(package.functions[name], config) for name in sorted(package.functions)}


class _LimitReason(str):
    """Reason that marks a weight left dense by the rank or size limit rather than skipped."""


@dataclass
class _FunctionPlan:
    plans: dict[int, _Plan]
    skipped: list[SkippedWeight]
    below_limit: list[SkippedWeight]


def _plan_function(function: Function, config: CompressionConfig) -> _FunctionPlan:
    uses = _uses_of(function)
    constants = {}
    for op in function.operations:
        if op.type == "const" and "val" in op.attributes and not op.attributes["val"].is_blob:
            constants[op.outputs[0].name] = op.attributes["val"].read()

    plans: dict[int, _Plan] = {}
    skipped: list[SkippedWeight] = []
    below_limit: list[SkippedWeight] = []
    for index, op in enumerate(function.operations):
        if op.type != "const" or len(op.outputs) != 1 or "val" not in op.attributes:
            continue
        output = op.outputs[0]
        all_uses = uses.get(output.name, [])
        weight_uses = [
            use for use in all_uses if use.op is not None and use.param in _WEIGHT_INPUTS.get(use.op.type, ())
        ]
        if not weight_uses or not isinstance(output.type, TensorType):
            continue

        consumers = tuple(_describe(use.op, use.param) for use in all_uses)
        plan, reason = _plan_weight(function, op, all_uses, weight_uses, consumers, config, constants)
        if plan is not None:
            plans[index] = plan
        elif isinstance(reason, _LimitReason):
            below_limit.append(SkippedWeight(function.name, output.name, consumers, reason))
        elif reason is not None:
            skipped.append(SkippedWeight(function.name, output.name, consumers, reason))
            logger.info("%s: skipped %s, left dense: %s", function.name, output.name, reason)
    return _FunctionPlan(plans, skipped, below_limit)


def _plan_weight(function, op, all_uses, weight_uses, consumers, config, constants) -> tuple[_Plan | None, str | None]:
    """Return the plan of one const, or None and the reason to report (None when not reported)."""
    output = op.outputs[0]
    ttype = output.type
    rank = len(ttype.shape)
    count = int(np.prod(ttype.shape, dtype=np.int64)) if ttype.is_static else 0

    selected = [use for use in weight_uses if use.op.type in config.op_types]
    if not selected:
        return None, None
    requests = []
    for use in selected:
        settings, source = config.settings_for(use.op.type, [use.op.name, op.name, output.name])
        requests.append((use, settings, source))
    if not any(settings.compresses for _, settings, _ in requests):
        return None, None

    # Rank and size limits leave a weight dense without a skip, as coremltools' weight_threshold
    # does. The report lists these weights apart.
    min_elements = min(settings.min_elements for _, settings, _ in requests)
    if rank < 2 or not ttype.is_static or count <= min_elements:
        reason = _LimitReason(
            f"{count} elements of rank {rank}; only weights of rank 2 or more with more than "
            f"{min_elements} elements are compressed"
        )
        logger.debug("%s: %s left dense: %s", function.name, output.name, reason)
        return None, reason

    others = [use for use in all_uses if not any(use is chosen for chosen in selected)]
    if others:
        names = ", ".join(
            _describe(use.op, use.param) + (f" (input {use.param!r})" if use.op is not None else "") for use in others
        )
        return None, f"it also feeds {names}, which is not compressed, so the shared weight stays dense"

    first_use, settings, source = requests[0]
    for use, other, other_source in requests[1:]:
        if other != settings:
            return None, (
                f"its consumers {_describe(first_use.op, '')} and {_describe(use.op, '')} get different "
                f"settings ({source} versus {other_source})"
            )
    if not settings.compresses:
        return None, None

    axes = {_channel_axes(use, rank, constants) for use in selected}
    if None in axes or len(axes) != 1:
        return None, "its consumers do not agree on one output-channel axis, or a transpose flag is not constant"
    (channel_axes,) = axes

    dtype = _FLOAT_DTYPES.get(np.dtype(ttype.dtype.numpy_dtype))
    if dtype is None:
        return None, f"its dtype is {ttype.dtype}; only fp16 and fp32 weights are compressed"
    if settings.values in ("fp16", "fp32") and settings.values != dtype:
        return None, (
            f"values={settings.values!r} would change the {dtype} weight that {consumers[0]} reads to "
            f"{settings.values}; use the weight's own dtype"
        )

    ios18 = _is_ios18(function)
    if not ios18:
        problem = _target_problem(settings)
        if problem is not None:
            raise EncodingError(
                f"{output.name} (weight of {', '.join(consumers)}) in function {function.name!r}: "
                f"{problem}, but the function's opset is {function.opset} (iOS16/iOS17); "
                f"convert the model for iOS18 or change the settings from {source}"
            )
    return _Plan(op, settings, source, channel_axes, consumers, ios18), None


# ---------------------------------------------------------------------------------------------
# Encoding one weight into op specifications


@dataclass(frozen=True)
class _Tensor:
    """A constant parameter: the array (sub-byte types unpacked) and its MIL element type."""

    array: np.ndarray
    dtype: str


@dataclass(frozen=True)
class _Ref:
    """A parameter bound by name to an earlier op's output."""

    name: str


@dataclass
class _OpSpec:
    """One op to write: type, name, parameters in input order and outputs (name, dtype, shape)."""

    op_type: str
    name: str
    params: list[tuple[str, _Tensor | _Ref]]
    outputs: list[tuple[str, str, tuple[int, ...]]]


def _pattern_mask(weight: np.ndarray, settings: WeightConfig, axes: _Axes, name: str) -> np.ndarray:
    """Return the keep mask of the configured pattern; raise EncodingError to decline."""
    pattern = settings.pattern
    if pattern == "unstructured":
        return magnitude_mask(weight, settings.sparsity, name=name)
    if pattern == "threshold":
        return threshold_mask(weight, settings.threshold, name=name)

    axis = settings.pattern_axis
    if axis is None:
        axis = axes.input if pattern == "n_m" else axes.output
    if not -weight.ndim <= axis < weight.ndim:
        raise EncodingError(f"{name}: pattern_axis={axis} is out of range for a weight of rank {weight.ndim}")
    axis %= weight.ndim
    length = weight.shape[axis]
    if pattern == "n_m":
        n, m = settings.n_m
        if m > length:
            raise EncodingError(f"{name}: m={m} of n_m is larger than axis {axis} of length {length}")
        return n_m_mask(weight, n, m, axis=axis, name=name)
    if settings.pattern_block_size > length:
        raise EncodingError(
            f"{name}: pattern_block_size={settings.pattern_block_size} is larger than axis {axis} of length {length}"
        )
    return block_mask(weight, settings.sparsity, settings.pattern_block_size, axis=axis, name=name)


def _encode(weight: np.ndarray, settings: WeightConfig, axes: _Axes, ios18: bool, name: str):
    """Return the parameter bundle of ``weight``; EncodingError and the like mean "declined"."""
    mask = None
    if settings.pattern != "none":
        mask = _pattern_mask(weight, settings, axes, name)
    pruned = weight if mask is None else apply_mask(weight, mask, name=name)

    if settings.values == "palettize":
        grouped = settings.palettize_granularity == "per_grouped_channel"
        options = {
            "mode": settings.palettize_mode,
            "group_size": settings.group_size if grouped else None,
            "channel_axis": axes.output,
            "cluster_dim": settings.cluster_dim,
            "name": name,
        }
        if mask is not None:
            return palettize_nonzero(pruned, settings.nbits, **options)
        if settings.per_channel_scale:
            return palettize_scaled(weight, settings.nbits, **options)
        palettized = palettize_weight(weight, settings.nbits, **options)
        if not ios18 and settings.nbits is None and palettized.nbits == 3:
            # unique mode chose 3 bits, which iOS16 LUTs lack; 4 bits is the next width.
            palettized = palettize_weight(weight, 4, **options)
        return palettized

    if settings.values == "quantize":
        per_block = settings.quantize_granularity == "per_block"
        options = {
            "mode": settings.quantize_mode,
            "granularity": settings.quantize_granularity,
            "channel_axis": axes.output,
            "block_size": settings.quantize_block_size if per_block else None,
            "block_axis": axes.input,
            "name": name,
        }
        if mask is not None:
            return quantize_nonzero(pruned, settings.quantize_dtype, **options)
        return quantize_weight(weight, settings.quantize_dtype, **options)

    return encode_sparse(pruned, name=name)


class _Names:
    """Hands out variable and op names that are unused in a function."""

    def __init__(self, function: Function):
        self.used: set[str] = {item.name for item in function.inputs}
        self._add_block(function.block)

    def _add_block(self, block) -> None:
        self.used.update(item.name for item in block.inputs)
        for op in block.operations:
            self.used.add(op.name)
            self.used.update(out.name for out in op.outputs)
            for inner in op.blocks:
                self._add_block(inner)

    def new(self, candidate: str) -> str:
        name = candidate
        suffix = 0
        while name in self.used:
            suffix += 1
            name = f"{candidate}_{suffix}"
        self.used.add(name)
        return name


def _bundle_params(bundle) -> list[tuple[str, _Tensor]]:
    dtypes = bundle.dtypes()
    return [(param, _Tensor(np.asarray(array), dtypes[param])) for param, array in bundle.inputs().items()]


def _op_specs(bundle, plan: _Plan, names: _Names, dtype: str) -> list[_OpSpec]:
    """Lay out the ops that decode ``bundle`` to the weight, the last one output under its name."""
    base = plan.op.name
    output = plan.op.outputs[0]
    shape = tuple(output.type.shape)
    final = (output.name, dtype, shape)

    if isinstance(bundle, (LutToSparseParams, SparseShiftScaleParams)):
        suffix = "_palettized" if isinstance(bundle, LutToSparseParams) else "_quantized"
        first = names.new(base + suffix)
        mask_name, values_name = names.new(first + "_0"), names.new(first + "_1")
        value_dtype = bundle.dtypes()["lut" if isinstance(bundle, LutToSparseParams) else "scale"]
        count = _nonzero_count(bundle, shape)
        return [
            _OpSpec(bundle.op_type, first, _bundle_params(bundle), [(mask_name, "uint1", shape), (values_name, value_dtype, (count,))]),
            _OpSpec(
                "constexpr_sparse_to_dense",
                names.new(base + "_sparsified"),
                [("nonzero_data", _Ref(values_name)), ("mask", _Ref(mask_name))],
                [final],
            ),
        ]

    if isinstance(bundle, ScaledLutParams):
        # A single-output op's output shares the op's name, as in coremltools.
        first = names.new(base + "_palettized")
        return [
            _OpSpec(bundle.palettized.op_type, first, _bundle_params(bundle.palettized), [(first, dtype, shape)]),
            _OpSpec(
                "constexpr_blockwise_shift_scale",
                names.new(base + "_palettized_pcs"),
                [("data", _Ref(first)), ("scale", _Tensor(np.asarray(bundle.scale), dtype))],
                [final],
            ),
        ]

    suffix = {"constexpr_sparse_to_dense": "_sparsified", "constexpr_lut_to_dense": "_palettized"}.get(
        bundle.op_type, "_quantized"
    )
    return [_OpSpec(bundle.op_type, names.new(base + suffix), _bundle_params(bundle), [final])]


def _nonzero_count(bundle, shape: tuple[int, ...]) -> int:
    """Return the length of the values output of a two-output op."""
    if isinstance(bundle, SparseShiftScaleParams):
        return int(bundle.nonzero_data.shape[0])
    vector = 1 if bundle.vector_axis is None else int(np.prod(shape)) // int(bundle.indices_mask.size)
    return int(bundle.indices_nonzero_data.shape[0]) * vector


# ---------------------------------------------------------------------------------------------
# Protobuf values


def _tensor_type(proto_type, element: ElementType, shape) -> None:
    proto_type.tensorType.dataType = element.proto_code
    proto_type.tensorType.rank = len(shape)
    for dim in shape:
        proto_type.tensorType.dimensions.add().constant.size = int(dim)


def _string_value(text: str):
    from coremltools.proto import MIL_pb2

    value = MIL_pb2.Value()
    value.type.tensorType.dataType = _PROTO_STRING
    value.immediateValue.tensor.strings.values.append(text)
    return value


def _fill_immediate(tensor, array: np.ndarray, element: ElementType) -> None:
    """Write ``array`` into a ``TensorValue`` in the field that coremltools uses for its type."""
    flat = array.reshape(-1)
    name = element.name
    if name == "fp32":
        target = tensor.floats
        target.values.extend(flat.astype(np.float32).tolist())
    elif name in ("int16", "uint16", "int32"):
        target = tensor.ints
        target.values.extend(int(item) for item in flat)
    elif name in ("int64", "uint64"):
        target = tensor.longInts
        target.values.extend(int(item) for item in flat)
    elif name == "bool":
        target = tensor.bools
        target.values.extend(bool(item) for item in flat)
    else:
        target = tensor.bytes
        if element.is_sub_byte:
            target.values = pack_bits(flat, element.bits, signed=element.signed, name=name).tobytes()
        else:
            target.values = flat.astype(element.numpy_dtype.newbyteorder("<")).tobytes()
    # An empty tensor still sets its field, as coremltools does.
    target.SetInParent()


class _ValueWriter:
    """Turns arrays into ``MILSpec.Value`` messages, writing large ones to the blob file."""

    def __init__(self, writer: BlobWriter, specification_version: int):
        self.writer = writer
        self.containers = (
            _BLOB_CONTAINERS_IOS18 if specification_version >= _IOS18_SPECIFICATION_VERSION else _BLOB_CONTAINERS
        )
        self.stored_bytes = 0

    def value(self, array: np.ndarray, dtype: str, *, name: str):
        from coremltools.proto import MIL_pb2

        element = by_name(dtype)
        array = np.asarray(array)
        if array.dtype != element.numpy_dtype:
            raise EncodingError(f"{name}: a {dtype} tensor must be held in {element.numpy_dtype}, got {array.dtype}")
        value = MIL_pb2.Value()
        _tensor_type(value.type, element, array.shape)
        if array.size >= _BLOB_MIN_ELEMENTS and array.dtype in self.containers:
            value.blobFileValue.fileName = WEIGHT_FILE_NAME
            value.blobFileValue.offset = self.writer.write(array, element, name=name)
        else:
            _fill_immediate(value.immediateValue.tensor, array, element)
        if element.is_sub_byte:
            self.stored_bytes += packed_size(array.size, element.bits)
        else:
            self.stored_bytes += array.size * element.numpy_dtype.itemsize
        return value


def _operation(spec: _OpSpec, values: _ValueWriter, ios18: bool):
    """Build the ``MILSpec.Operation`` of one op specification."""
    from coremltools.proto import MIL_pb2

    op = MIL_pb2.Operation(type=spec.op_type)
    op.attributes["name"].CopyFrom(_string_value(spec.name))
    for param, item in spec.params:
        label = f"{spec.name} {param}"
        if isinstance(item, _Ref):
            op.inputs[param].arguments.add().name = item.name
        elif ios18:
            op.inputs[param].arguments.add().value.CopyFrom(values.value(item.array, item.dtype, name=label))
        else:
            op.attributes[param].CopyFrom(values.value(item.array, item.dtype, name=label))

    for name, dtype, shape in spec.outputs:
        output = op.outputs.add()
        output.name = name
        _tensor_type(output.type, by_name(dtype), shape)
    return op


# ---------------------------------------------------------------------------------------------
# Copying kept blobs


class _BlobCopier:
    """Copies the blobs that kept values reference into the new weight file, each once."""

    def __init__(self, package: Package, weight_file: Path | None, writer: BlobWriter):
        self.package = package
        self.weight_file = weight_file
        self.writer = writer
        self.offsets: dict[int, int] = {}

    def refers_to_weight_file(self, file_name: str) -> bool:
        if self.weight_file is None or not file_name.startswith(MODEL_PATH_PREFIX):
            return False
        path = self.package.model_file.parent / file_name[len(MODEL_PATH_PREFIX):]
        return path.resolve() == self.weight_file

    def copy(self, offset: int) -> int:
        if offset not in self.offsets:
            blob_file = self.package.blob_files[self.weight_file]
            record = blob_file.record(offset)
            values = blob_file.read(offset)
            self.offsets[offset] = self.writer.write(values, record.dtype, name=f"blob at offset {offset}")
        return self.offsets[offset]

    def remap(self, message) -> None:
        """Point every blob reference inside ``message`` at its copy in the new weight file."""
        from google.protobuf.descriptor import FieldDescriptor

        if message.DESCRIPTOR.full_name == "CoreML.Specification.MILSpec.Value" and message.HasField("blobFileValue"):
            blob = message.blobFileValue
            if self.refers_to_weight_file(blob.fileName):
                blob.offset = self.copy(blob.offset)
                blob.fileName = WEIGHT_FILE_NAME
            return

        for descriptor, value in message.ListFields():
            if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if descriptor.message_type.GetOptions().map_entry:
                entry_value = descriptor.message_type.fields_by_name["value"]
                if entry_value.type == FieldDescriptor.TYPE_MESSAGE:
                    for key in sorted(value):
                        self.remap(value[key])
            elif _is_repeated(descriptor):
                for item in value:
                    self.remap(item)
            else:
                self.remap(value)


def _is_repeated(descriptor) -> bool:
    # protobuf 7 replaced FieldDescriptor.label by is_repeated.
    if hasattr(descriptor, "is_repeated"):
        return bool(descriptor.is_repeated)
    return descriptor.label == descriptor.LABEL_REPEATED


# ---------------------------------------------------------------------------------------------
# Writing the package


def _model_relative(package: Package) -> Path:
    return package.model_file.relative_to(package.path)


def _copy_tree(package: Package, temp: Path, skip: set[Path]) -> None:
    """Copy every file of the package into ``temp`` except the resolved paths in ``skip``."""

    def ignore(directory, entries):
        base = Path(directory)
        return [entry for entry in entries if (base / entry).resolve() in skip]

    shutil.copytree(package.path, temp, ignore=ignore, dirs_exist_ok=True)


def _write_package(package: Package, plans, temp: Path, report: CompressionReport) -> None:
    """Write the new package into the empty directory ``temp``."""
    from coremltools.proto import Model_pb2

    model_relative = _model_relative(package)
    weight_path = (package.model_file.parent / "weights" / "weight.bin").resolve()
    input_weight_file = weight_path if weight_path in package.blob_files else None
    if weight_path.is_file():
        report.input_weight_bytes = weight_path.stat().st_size

    _copy_tree(package, temp, {package.model_file.resolve(), weight_path})
    out_weight = temp / model_relative.parent / "weights" / "weight.bin"
    out_weight.parent.mkdir(parents=True, exist_ok=True)

    spec = Model_pb2.Model()
    spec.CopyFrom(package.spec)
    with BlobWriter(out_weight) as writer:
        copier = _BlobCopier(package, input_weight_file, writer)
        values = _ValueWriter(writer, package.specification_version)
        for name in sorted(spec.mlProgram.functions):
            function_plan = plans[name]
            report.skipped.extend(function_plan.skipped)
            report.below_limit.extend(function_plan.below_limit)
            _rewrite_function(
                package.functions[name], spec.mlProgram.functions[name], function_plan.plans, copier, values, report
            )
        for key in sorted(spec.mlProgram.attributes):
            copier.remap(spec.mlProgram.attributes[key])

    with open(temp / model_relative, "wb") as file:
        file.write(spec.SerializeToString(deterministic=True))
        file.flush()
        os.fsync(file.fileno())
    report.output_weight_bytes = out_weight.stat().st_size


def _rewrite_function(function: Function, proto, plans: dict[int, _Plan], copier, values, report) -> None:
    """Replace the planned const ops of one function and re-point every other blob reference."""
    names = _Names(function)
    block = proto.block_specializations[proto.opset]

    operations = []
    for index, op_proto in enumerate(block.operations):
        plan = plans.get(index)
        replacement = None
        if plan is not None:
            replacement = _replace_weight(function, plan, op_proto.outputs[0].type, names, values, report)
        if replacement is not None:
            operations.extend(replacement)
            continue
        copier.remap(op_proto)
        copy = type(op_proto)()
        copy.CopyFrom(op_proto)
        operations.append(copy)
    del block.operations[:]
    block.operations.extend(operations)

    for opset in sorted(proto.block_specializations):
        if opset != proto.opset:
            copier.remap(proto.block_specializations[opset])


def _replace_weight(function: Function, plan: _Plan, final_type, names: _Names, values: _ValueWriter, report):
    """Return the ops that replace ``plan.op``, or None when the encoder declines the weight.

    A declined weight is reported and logged. Its const op is kept as it is.
    """
    output = plan.op.outputs[0]
    weight = plan.op.attributes["val"].read()
    dtype = _FLOAT_DTYPES[np.dtype(weight.dtype)]
    try:
        bundle = _encode(weight, plan.settings, plan.axes, plan.ios18, output.name)
    except (EncodingError, NonFiniteError, ShapeError) as err:
        reason = f"the encoder declined it: {err}"
        report.skipped.append(SkippedWeight(function.name, output.name, plan.consumers, reason))
        logger.info("%s: skipped %s, left dense: %s", function.name, output.name, reason)
        return None

    # Raised, not declined: planning has already rejected what the iOS16 forms cannot hold.
    if not plan.ios18 and isinstance(bundle, (SparseParams, LutParams, QuantParams)):
        bundle = bundle.to_ios16()
    specs = _op_specs(bundle, plan, names, dtype)

    before = values.stored_bytes
    operations = [_operation(spec, values, plan.ios18) for spec in specs]
    # The last output keeps the const's declared type exactly.
    operations[-1].outputs[-1].type.CopyFrom(final_type)
    stored = values.stored_bytes - before

    report.compressed.append(
        CompressedWeight(
            function=function.name,
            name=output.name,
            consumers=plan.consumers,
            shape=tuple(output.type.shape),
            dtype=dtype,
            chain=tuple(spec.op_type for spec in specs),
            settings=plan.source,
            dense_bytes=int(weight.nbytes),
            stored_bytes=stored,
        )
    )
    logger.info(
        "%s: %s -> %s, %d -> %d bytes",
        function.name, output.name, " -> ".join(spec.op_type for spec in specs), weight.nbytes, stored,
    )
    return operations
