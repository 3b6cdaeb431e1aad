"""Hypothesis strategies for property tests of Core ML compressed weights and packages.

Converter authors can draw weights with a sparsity pattern, masks, LUTs, quantization
parameters and whole compressed packages, and state properties of their own code::

    from hypothesis import given
    from sparseblob.verify import strategies as sbst
    from sparseblob.verify.patterns import min_zeros_per_run

    @given(sbst.weights(pattern="n:m", n=2, m=4, axis=1))
    def test_converter_keeps_2_4(weight):
        converted = my_converter(weight)            # the code under test
        assert min_zeros_per_run(converted != 0, 4, 1) >= 2

    @given(sbst.luts(nbits=4, granularity="per_grouped_channel"))
    def test_converter_reads_grouped_luts(params):
        # params.indices, params.lut and params.vector_axis are the inputs of iOS18
        # constexpr_lut_to_dense; params.inputs() and params.dtypes() feed decode_op.
        ...

Strategies:

- :func:`masks`: bool masks, True where a weight is kept, unstructured, n:m or block.
- :func:`weights`: fp16 or fp32 weights whose zeros follow such a mask.
- :func:`luts`: :class:`~sparseblob.encoder.params.LutParams` (indices, LUT, vector axis)
  for an index width and a granularity.
- :func:`quantization_params`: :class:`~sparseblob.encoder.params.QuantParams` (data,
  scale, offset) for a dtype, a granularity and a block size.
- :func:`packages`: a small dense ``.mlpackage`` and a copy compressed by sparseblob's
  encoder, as a :class:`GeneratedPackage`.

The module needs Hypothesis, which sparseblob's ``test`` extra installs. Arguments are
keyword-only. Bounds come in ``min_``/``max_`` pairs. Invalid arguments raise
``hypothesis.errors.InvalidArgument`` when the strategy is built. Bulk values are drawn with
numpy from a seed that Hypothesis draws, so a failing example reproduces, and shrinking
reduces the shape and the seed rather than single elements.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from sparseblob.encoder.params import LutParams, QuantParams
from sparseblob.encoder.quantize import GRANULARITIES, QUANT_DTYPES, quant_range

__all__ = [
    "MASK_PATTERNS",
    "NBITS",
    "LUT_GRANULARITIES",
    "PACKAGE_OPTIONS",
    "GeneratedPackage",
    "masks",
    "weights",
    "luts",
    "quantization_params",
    "packages",
]

MASK_PATTERNS = ("unstructured", "n:m", "block")
NBITS = (1, 2, 3, 4, 6, 8)
LUT_GRANULARITIES = ("per_tensor", "per_grouped_channel")

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_int(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgument(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def _check_choice(value, name: str, choices: Sequence) -> None:
    if value not in choices:
        raise InvalidArgument(f"{name}={value!r}; expected one of {list(choices)}")


def _check_order(low, high, low_name: str, high_name: str) -> None:
    if low > high:
        raise InvalidArgument(f"{low_name}={low!r} is greater than {high_name}={high!r}")


def _check_fraction(value, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"{name}={value!r}; expected a fraction in [0, 1]")
    return float(value)


def _check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise InvalidArgument(f"{name}={dtype}; expected float16 or float32")
    return dtype


def _shapes(shape, min_dims: int, max_dims: int, min_side: int, max_side: int) -> st.SearchStrategy:
    """Return a strategy of shapes: the given one, or any within the bounds."""
    if shape is not None:
        shape = tuple(_check_int(dim, "shape", minimum=1) for dim in shape)
        return st.just(shape)
    min_dims = _check_int(min_dims, "min_dims", minimum=1)
    max_dims = _check_int(max_dims, "max_dims", minimum=1)
    min_side = _check_int(min_side, "min_side", minimum=1)
    max_side = _check_int(max_side, "max_side", minimum=1)
    _check_order(min_dims, max_dims, "min_dims", "max_dims")
    _check_order(min_side, max_side, "min_side", "max_side")
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def _min_rank(shape, min_dims: int) -> int:
    return len(shape) if shape is not None else min_dims


# ---------------------------------------------------------------------------------------------
# Masks and weights


def _unstructured(rng, shape, min_sparsity: float, max_sparsity: float, draw) -> np.ndarray:
    size = math.prod(shape)
    low, high = math.ceil(min_sparsity * size - 1e-9), math.floor(max_sparsity * size + 1e-9)
    assume(low <= high)
    zeros = draw(st.integers(low, high))
    keep = np.ones(size, dtype=bool)
    keep[rng.permutation(size)[:zeros]] = False
    return keep.reshape(shape)


def _n_m(rng, shape, n: int, m: int, axis: int, exact: bool) -> np.ndarray:
    moved = list(shape)
    length = moved.pop(axis)
    runs = -(-length // m)
    keys = rng.random((*moved, runs, m))
    # Padding past the end of the axis counts as zeros, as coremltools pads a trailing run.
    position = np.arange(runs * m).reshape(runs, m)
    padding = position >= length
    keys[..., padding] = -1.0
    zeros = np.full((*moved, runs, 1), n)
    if not exact:
        zeros = rng.integers(n, m + 1, (*moved, runs, 1))
    ranks = keys.argsort(axis=-1).argsort(axis=-1)
    keep = (ranks >= zeros).reshape(*moved, runs * m)[..., :length]
    return np.moveaxis(keep, -1, axis)


def _blocks(rng, shape, block_size: int, axis: int, min_sparsity: float, max_sparsity: float, draw) -> np.ndarray:
    moved = list(shape)
    length = moved.pop(axis)
    runs = -(-length // block_size)
    count = math.prod(moved) * runs
    low, high = math.ceil(min_sparsity * count - 1e-9), math.floor(max_sparsity * count + 1e-9)
    assume(low <= high)
    zero_blocks = draw(st.integers(low, high))
    block_keep = np.ones(count, dtype=bool)
    block_keep[rng.permutation(count)[:zero_blocks]] = False
    keep = np.repeat(block_keep.reshape(*moved, runs), block_size, axis=-1)[..., :length]
    return np.moveaxis(keep, -1, axis)


def _mask_arguments(pattern, n, m, block_size, axis, min_sparsity, max_sparsity, shape, min_dims) -> int:
    """Validate the pattern arguments and return the axis to use."""
    _check_choice(pattern, "pattern", MASK_PATTERNS)
    _check_fraction(min_sparsity, "min_sparsity")
    _check_fraction(max_sparsity, "max_sparsity")
    _check_order(min_sparsity, max_sparsity, "min_sparsity", "max_sparsity")
    rank = _min_rank(shape, min_dims)
    if pattern == "n:m":
        m = _check_int(m, "m", minimum=1)
        n = _check_int(n, "n", minimum=0)
        _check_order(n, m, "n", "m")
    if pattern == "block":
        _check_int(block_size, "block_size", minimum=1)
    if axis is None:
        axis = 1 if pattern == "n:m" and rank >= 2 else 0
    if not isinstance(axis, (int, np.integer)) or not -rank <= axis < rank:
        raise InvalidArgument(f"axis={axis!r}; expected an axis in [{-rank}, {rank}) of the smallest rank drawn")
    return int(axis)


@st.composite
def _masks(draw, shapes, pattern, n, m, block_size, axis, min_sparsity, max_sparsity, exact):
    shape = draw(shapes)
    rng = np.random.default_rng(draw(_SEEDS))
    axis = axis % len(shape)
    if pattern == "unstructured":
        return _unstructured(rng, shape, min_sparsity, max_sparsity, draw)
    if pattern == "n:m":
        return _n_m(rng, shape, n, m, axis, exact)
    return _blocks(rng, shape, block_size, axis, min_sparsity, max_sparsity, draw)


def masks(
    *,
    pattern: str = "unstructured",
    shape: Sequence[int] | None = None,
    n: int = 2,
    m: int = 4,
    block_size: int = 4,
    axis: int | None = None,
    min_sparsity: float = 0.0,
    max_sparsity: float = 1.0,
    exact: bool = True,
    min_dims: int = 2,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 16,
) -> st.SearchStrategy[np.ndarray]:
    """Bool masks, True where a weight is kept.

    Args:
        pattern: ``unstructured``, ``n:m`` or ``block``. An ``n:m`` mask has at least ``n``
            zeros in every run of ``m`` along ``axis``, and a trailing shorter run counts as
            padded with zeros, as in Core ML. A ``block`` mask has runs of ``block_size``
            along ``axis`` that are all zero or all kept.
        shape: a fixed shape; otherwise drawn from ``min_dims``..``max_dims`` dimensions of
            ``min_side``..``max_side`` elements.
        n, m: the n:m ratio.
        block_size: elements per block.
        axis: the axis of n:m runs or blocks; by default 1 for n:m (0 for rank 1) and 0 for
            blocks, as coremltools prunes.
        min_sparsity, max_sparsity: bounds of the fraction of zeros (``unstructured``) or of
            zero blocks (``block``); not used by ``n:m``.
        exact: n:m masks have exactly ``n`` zeros in every full run; False allows ``n`` to
            ``m`` zeros per run.
        min_dims, max_dims, min_side, max_side: shape bounds when ``shape`` is None.

    Returns:
        A strategy of ``tensor<bool, shape>``.
    """
    axis = _mask_arguments(pattern, n, m, block_size, axis, min_sparsity, max_sparsity, shape, min_dims)
    shapes = _shapes(shape, min_dims, max_dims, min_side, max_side)
    return _masks(shapes, pattern, n, m, block_size, axis, min_sparsity, max_sparsity, bool(exact))


@st.composite
def _weights(draw, mask_strategy, dtype, min_magnitude, max_magnitude):
    mask = draw(mask_strategy)
    rng = np.random.default_rng(draw(_SEEDS))
    magnitude = np.exp(rng.uniform(np.log(min_magnitude), np.log(max_magnitude), mask.shape))
    sign = np.where(rng.random(mask.shape) < 0.5, -1.0, 1.0)
    values = np.clip((sign * magnitude).astype(dtype), -max_magnitude, max_magnitude)
    return np.where(mask, values, np.zeros((), dtype=dtype)).astype(dtype)


def weights(
    *,
    pattern: str = "unstructured",
    dtype: np.dtype | type = np.float16,
    shape: Sequence[int] | None = None,
    n: int = 2,
    m: int = 4,
    block_size: int = 4,
    axis: int | None = None,
    min_sparsity: float = 0.0,
    max_sparsity: float = 1.0,
    exact: bool = True,
    min_magnitude: float = 2.0**-6,
    max_magnitude: float = 4.0,
    min_dims: int = 2,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 16,
) -> st.SearchStrategy[np.ndarray]:
    """Float weights whose zeros (+0.0) are exactly the zeros of a mask from :func:`masks`.

    Kept values are nonzero, with magnitudes log-uniform in ``[min_magnitude, max_magnitude]``
    and a random sign, so pruning and n:m checks can tell them from the zeros.

    Args:
        pattern, shape, n, m, block_size, axis, min_sparsity, max_sparsity, exact, min_dims,
            max_dims, min_side, max_side: as in :func:`masks`.
        dtype: float16 or float32.
        min_magnitude, max_magnitude: bounds of the kept magnitudes; ``min_magnitude`` must
            be a normal number of ``dtype``.

    Returns:
        A strategy of ``tensor<dtype, shape>``.
    """
    dtype = _check_float_dtype(dtype)
    smallest = float(np.finfo(dtype).tiny)
    if not (isinstance(min_magnitude, (int, float)) and isinstance(max_magnitude, (int, float))):
        raise InvalidArgument(f"min_magnitude={min_magnitude!r}, max_magnitude={max_magnitude!r}; expected numbers")
    if not smallest <= min_magnitude <= max_magnitude <= float(np.finfo(dtype).max):
        raise InvalidArgument(
            f"min_magnitude={min_magnitude!r}, max_magnitude={max_magnitude!r}; expected "
            f"{smallest:g} <= min_magnitude <= max_magnitude <= {float(np.finfo(dtype).max):g} for {dtype}"
        )
    mask_strategy = masks(
        pattern=pattern, shape=shape, n=n, m=m, block_size=block_size, axis=axis, min_sparsity=min_sparsity,
        max_sparsity=max_sparsity, exact=exact, min_dims=min_dims, max_dims=max_dims, min_side=min_side,
        max_side=max_side,
    )
    return _weights(mask_strategy, dtype, float(min_magnitude), float(max_magnitude))


# ---------------------------------------------------------------------------------------------
# LUTs and quantization parameters


def _divisors(value: int) -> list[int]:
    return [d for d in range(1, value + 1) if value % d == 0]


@st.composite
def _luts(draw, nbits, dtype, shapes, granularity, group_size, channel_axis, vector_size, vector_axis, min_entry, max_entry):
    nbits = draw(st.sampled_from(NBITS)) if nbits is None else nbits
    granularity = draw(st.sampled_from(LUT_GRANULARITIES)) if granularity is None else granularity
    shape = list(draw(shapes))
    rank = len(shape)
    channel_axis %= rank
    rng = np.random.default_rng(draw(_SEEDS))

    groups = [1] * rank
    if granularity == "per_grouped_channel":
        channels = shape[channel_axis]
        if group_size is None:
            size = draw(st.sampled_from(_divisors(channels)))
        else:
            size = group_size
            shape[channel_axis] = group_size * -(-channels // group_size)
        groups[channel_axis] = shape[channel_axis] // size

    entries = 2**nbits
    lut = rng.uniform(min_entry, max_entry, (*groups, entries, vector_size)).astype(dtype)
    indices = rng.integers(0, entries, shape).astype(np.uint8)
    return LutParams(indices=indices, lut=lut, vector_axis=(vector_axis % rank) if vector_size > 1 else None)


def luts(
    *,
    nbits: int | None = None,
    granularity: str | None = None,
    dtype: np.dtype | type = np.float16,
    shape: Sequence[int] | None = None,
    group_size: int | None = None,
    channel_axis: int = 0,
    vector_size: int = 1,
    vector_axis: int = 0,
    min_entry: float = -4.0,
    max_entry: float = 4.0,
    min_dims: int = 2,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 16,
) -> st.SearchStrategy[LutParams]:
    """Parameters of iOS18 ``constexpr_lut_to_dense``: indices, a LUT and the vector axis.

    Args:
        nbits: index width, one of 1, 2, 3, 4, 6, 8; drawn when None.
        granularity: ``per_tensor`` (one LUT) or ``per_grouped_channel`` (one LUT per
            ``group_size`` consecutive channels along ``channel_axis``); drawn when None.
        dtype: the LUT dtype, float16 or float32.
        shape: the indices shape; drawn when None. With a ``group_size`` that does not divide
            the channel axis, that axis is rounded up to a multiple of it.
        group_size: channels per LUT; drawn from the divisors of the channel axis when None.
        channel_axis: the axis of the LUT groups.
        vector_size: elements per LUT entry (vector palettization when above 1).
        vector_axis: the axis along which each index expands into ``vector_size`` elements.
        min_entry, max_entry: bounds of the LUT entries.
        min_dims, max_dims, min_side, max_side: shape bounds when ``shape`` is None.

    Returns:
        A strategy of :class:`~sparseblob.encoder.params.LutParams` with ``indices``
        ``tensor<uint8, shape>`` below ``2**nbits`` and ``lut``
        ``tensor<dtype, [G0, ..., 2**nbits, vector_size]>``.
    """
    if nbits is not None:
        _check_choice(nbits, "nbits", NBITS)
    if granularity is not None:
        _check_choice(granularity, "granularity", LUT_GRANULARITIES)
    dtype = _check_float_dtype(dtype)
    if group_size is not None:
        _check_int(group_size, "group_size", minimum=1)
    _check_int(vector_size, "vector_size", minimum=1)
    _check_order(min_entry, max_entry, "min_entry", "max_entry")
    rank = _min_rank(shape, min_dims)
    for name, value in (("channel_axis", channel_axis), ("vector_axis", vector_axis)):
        if not isinstance(value, (int, np.integer)) or not -rank <= value < rank:
            raise InvalidArgument(f"{name}={value!r}; expected an axis in [{-rank}, {rank}) of the smallest rank drawn")
    shapes = _shapes(shape, min_dims, max_dims, min_side, max_side)
    return _luts(nbits, dtype, shapes, granularity, group_size, int(channel_axis), int(vector_size), int(vector_axis),
                 float(min_entry), float(max_entry))


@st.composite
def _quantization_params(draw, dtype, granularity, block_size, shapes, scale_dtype, offset, min_scale, max_scale):
    dtype = draw(st.sampled_from(QUANT_DTYPES)) if dtype is None else dtype
    granularity = draw(st.sampled_from(GRANULARITIES)) if granularity is None else granularity
    shape = list(draw(shapes))
    rank = len(shape)
    rng = np.random.default_rng(draw(_SEEDS))

    scale_shape = [1] * rank
    if granularity in ("per_channel", "per_block"):
        scale_shape[0] = shape[0]
    if granularity == "per_block":
        if block_size is None:
            size = draw(st.sampled_from(_divisors(shape[1])))
        else:
            size = block_size
            shape[1] = block_size * -(-shape[1] // block_size)
        scale_shape[1] = shape[1] // size

    low, high = quant_range(dtype, "affine")
    container = np.int8 if dtype.startswith("int") else np.uint8
    data = rng.integers(low, high + 1, shape).astype(container)
    scale = np.exp(rng.uniform(np.log(min_scale), np.log(max_scale), scale_shape)).astype(scale_dtype)
    scale = np.clip(scale, np.asarray(min_scale, scale_dtype), np.asarray(max_scale, scale_dtype))
    with_offset = draw(st.booleans()) if offset is None else offset
    with_offset = with_offset or dtype.startswith("uint")
    offsets = rng.integers(low, high + 1, scale_shape).astype(container) if with_offset else None
    return QuantParams(data=data, scale=scale, offset=offsets, data_dtype=dtype)


def quantization_params(
    *,
    dtype: str | None = None,
    granularity: str | None = None,
    block_size: int | None = None,
    scale_dtype: np.dtype | type = np.float16,
    offset: bool | None = None,
    shape: Sequence[int] | None = None,
    min_scale: float = 2.0**-10,
    max_scale: float = 1.0,
    min_dims: int = 2,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 16,
) -> st.SearchStrategy[QuantParams]:
    """Parameters of iOS18 ``constexpr_blockwise_shift_scale``: data, scale and offset.

    Args:
        dtype: int8, uint8, int4 or uint4; drawn when None.
        granularity: ``per_tensor``, ``per_channel`` (axis 0) or ``per_block`` (axis 0, and
            runs of ``block_size`` along axis 1); drawn when None.
        block_size: the run length along axis 1; drawn from the divisors of axis 1 when None.
            A block size that does not divide axis 1 rounds that axis up to a multiple of it.
        scale_dtype: float16 or float32.
        offset: True for an offset, False for none, None to draw. Unsigned data always gets
            an offset.
        shape: the data shape (rank 2 or more); drawn when None.
        min_scale, max_scale: bounds of the scales, both positive and finite in ``scale_dtype``.
        min_dims, max_dims, min_side, max_side: shape bounds when ``shape`` is None.

    Returns:
        A strategy of :class:`~sparseblob.encoder.params.QuantParams` whose data and offsets
        lie in the range of ``dtype`` and whose scales are positive and finite.
    """
    if dtype is not None:
        _check_choice(dtype, "dtype", QUANT_DTYPES)
    if granularity is not None:
        _check_choice(granularity, "granularity", GRANULARITIES)
    if block_size is not None:
        _check_int(block_size, "block_size", minimum=1)
    scale_dtype = _check_float_dtype(scale_dtype, "scale_dtype")
    if offset not in (None, True, False):
        raise InvalidArgument(f"offset={offset!r}; expected True, False or None")
    tiny = float(np.finfo(scale_dtype).tiny)
    if not tiny <= min_scale <= max_scale <= float(np.finfo(scale_dtype).max):
        raise InvalidArgument(
            f"min_scale={min_scale!r}, max_scale={max_scale!r}; expected {tiny:g} <= min_scale <= max_scale, "
            f"finite in {scale_dtype}"
        )
    if _min_rank(shape, min_dims) < 2:
        raise InvalidArgument("quantization parameters need rank 2 or more; set min_dims or shape")
    shapes = _shapes(shape, min_dims, max_dims, min_side, max_side)
    return _quantization_params(dtype, granularity, block_size, shapes, scale_dtype, offset, float(min_scale), float(max_scale))


# ---------------------------------------------------------------------------------------------
# Packages

PACKAGE_OPTIONS: dict[str, dict] = {
    "unstructured50": {"pattern": "unstructured", "sparsity": 0.5},
    "n_m_2_4": {"pattern": "n_m", "n_m": "2:4"},
    "block4": {"pattern": "block", "sparsity": 0.5, "pattern_block_size": 4},
    "palettize4": {"values": "palettize", "nbits": 4, "palettize_mode": "kmeans"},
    "palettize2_uniform": {"values": "palettize", "nbits": 2, "palettize_mode": "uniform"},
    "int8": {"values": "quantize", "quantize_dtype": "int8"},
    "uint8_affine": {"values": "quantize", "quantize_dtype": "uint8", "quantize_mode": "affine"},
    "int4_block": {"values": "quantize", "quantize_dtype": "int4", "quantize_granularity": "per_block", "quantize_block_size": 4},
    "n_m_2_4_int8": {"pattern": "n_m", "n_m": "2:4", "values": "quantize", "quantize_dtype": "int8"},
    "unstructured50_palettize4": {"pattern": "unstructured", "sparsity": 0.5, "values": "palettize", "nbits": 4},
}
"""Compression options (of ``CompressionConfig.from_options``) that :func:`packages` draws from, by name."""

# Options that iOS16 cannot express: 4-bit quantization, per-block scales, joint chains.
_IOS18_ONLY = {"int4_block", "n_m_2_4_int8", "unstructured50_palettize4"}


@dataclass(frozen=True)
class GeneratedPackage:
    """A dense package and its compressed copy, drawn by :func:`packages`.

    Attributes:
        dense: the dense ``.mlpackage`` (an MLP, see :func:`sparseblob.verify.builders.build_mlp_package`).
        compressed: the compressed ``.mlpackage``.
        target: the deployment target of both.
        sizes: the MLP's layer sizes.
        option_name: the key of :data:`PACKAGE_OPTIONS` used.
        options: the compression options used.
    """

    dense: Path
    compressed: Path
    target: str
    sizes: tuple[int, ...]
    option_name: str
    options: dict = field(hash=False)


@st.composite
def _packages(draw, directory, targets, option_names, min_layers, max_layers, min_features, max_features):
    from sparseblob.encoder.config import CompressionConfig
    from sparseblob.encoder.mlpackage import compress_package

    from .builders import build_mlp_package

    target = draw(st.sampled_from(targets))
    allowed = [name for name in option_names if target == "iOS18" or name not in _IOS18_ONLY]
    assume(allowed)
    option_name = draw(st.sampled_from(allowed))
    layers = draw(st.integers(min_layers, max_layers))
    # Multiples of 4 let n:m runs of 4 and blocks of 4 cover every axis.
    features = st.integers(-(-min_features // 4), max_features // 4).map(lambda quarter: 4 * quarter)
    sizes = tuple(draw(st.lists(features, min_size=layers + 1, max_size=layers + 1)))
    seed = draw(st.integers(0, 2**16))

    root = Path(tempfile.mkdtemp(prefix="package-", dir=directory))
    dense = build_mlp_package(root / "dense.mlpackage", sizes=sizes, batch=1, target=target, seed=seed)
    compressed = root / "compressed.mlpackage"
    options = PACKAGE_OPTIONS[option_name]
    compress_package(dense, compressed, CompressionConfig.from_options(min_elements=0, **options))
    return GeneratedPackage(dense, compressed, target, sizes, option_name, dict(options))


def packages(
    *,
    directory: str | os.PathLike | None = None,
    targets: Sequence[str] = ("iOS16", "iOS18"),
    options: Sequence[str] | None = None,
    min_layers: int = 1,
    max_layers: int = 2,
    min_features: int = 8,
    max_features: int = 32,
) -> st.SearchStrategy[GeneratedPackage]:
    """Small dense MLP packages and copies compressed by sparseblob's encoder.

    Each example writes two packages into a new directory under ``directory``; nothing is
    removed afterwards, so pass a temporary directory (pytest's ``tmp_path_factory``). Each
    example converts a program with coremltools and takes a fraction of a second, so use few
    examples.

    Args:
        directory: where the packages go; the system's temporary directory when None.
        targets: deployment targets to draw from, ``iOS16``, ``iOS17`` or ``iOS18``.
        options: keys of :data:`PACKAGE_OPTIONS` to draw from; all when None. iOS16 and iOS17
            draw only those they can express.
        min_layers, max_layers: bounds of the number of linear layers.
        min_features, max_features: bounds of each layer size, rounded to multiples of 4
            (at least 4).

    Returns:
        A strategy of :class:`GeneratedPackage`.
    """
    from .builders import TARGETS

    targets = tuple(targets)
    if not targets:
        raise InvalidArgument("targets is empty; expected at least one of " + ", ".join(TARGETS))
    for target in targets:
        _check_choice(target, "targets", TARGETS)
    option_names = tuple(PACKAGE_OPTIONS) if options is None else tuple(options)
    if not option_names:
        raise InvalidArgument(f"options is empty; expected keys of PACKAGE_OPTIONS: {list(PACKAGE_OPTIONS)}")
    for name in option_names:
        _check_choice(name, "options", tuple(PACKAGE_OPTIONS))
    min_layers = _check_int(min_layers, "min_layers", minimum=1)
    max_layers = _check_int(max_layers, "max_layers", minimum=1)
    _check_order(min_layers, max_layers, "min_layers", "max_layers")
    min_features = _check_int(min_features, "min_features", minimum=4)
    max_features = _check_int(max_features, "max_features", minimum=4)
    _check_order(min_features, max_features, "min_features", "max_features")
    if max_features // 4 < -(-min_features // 4):
        raise InvalidArgument(f"no multiple of 4 in [{min_features}, {max_features}]")
    if directory is not None and not Path(directory).is_dir():
        raise InvalidArgument(f"directory={directory!r} is not an existing directory")
    return _packages(
        None if directory is None else str(directory), targets, option_names, min_layers, max_layers, min_features, max_features
    )
