"""Random compressed weights for the kernel tests, with coremltools' decompressors as reference.

``make_weight`` builds Core ML parameters (mask, nonzero values, LUT or scale) for a value
format and a sparsity layout, builds the :class:`CompressedWeight`, and decodes the same
parameters with coremltools' static ``decompress`` functions. The tests at the end check the
builders themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
from coremltools.converters.mil.mil.ops.defs.iOS18.compression import (
    constexpr_lut_to_sparse,
    constexpr_sparse_blockwise_shift_scale,
    constexpr_sparse_to_dense,
)

from sparseblob.runtime.kernels import formats
from sparseblob.runtime.kernels.patterns import NM, Blocks, holds

logging.getLogger("coremltools").setLevel(logging.ERROR)

# Value formats: (name, description). Each name is handled in make_weight.
VALUE_FORMATS = (
    "fp16",
    "fp32",
    "int8-values",
    "lut4",
    "lut2-grouped-rows",
    "lut4-grouped-columns",
    "lut6",
    "lut8-int8-table",
    "int8-per-channel",
    "uint8-per-block-offset",
    "int4-per-block",
    "uint4-per-block-fp16-offset",
    "int8-fp32-scale-fp16-offset",
    "fp16-data-scaled",
)

# Layouts: "unstructured", ("rows", b), ("columns", b), ("nm", n, m, axis). One block width per
# axis keeps the number of compiled kernels (about a second each) down; test_kernels_linear
# covers the other widths once.
LAYOUTS = ("unstructured", ("rows", 4), ("columns", 2), ("nm", 2, 4, 1), ("nm", 2, 4, 0))


@dataclass
class Built:
    """A compressed weight, its Core ML parameters and the reference dense weight."""

    weight: formats.CompressedWeight
    mask: np.ndarray
    reference: np.ndarray


def shape_multiple(value_format: str) -> tuple[int, int]:
    """Return the multiples that dims 0 and 1 need for the format's group sizes."""
    if value_format == "lut2-grouped-rows":
        return 2, 1
    if value_format in ("lut4-grouped-columns", "uint8-per-block-offset", "int8-fp32-scale-fp16-offset"):
        return 1, 4
    if value_format in ("int4-per-block", "uint4-per-block-fp16-offset"):
        return 1, 8
    return 1, 1


def make_mask(rng: np.random.Generator, shape: tuple[int, ...], density: float, layout) -> tuple[np.ndarray, object]:
    """Return a random bool mask of ``shape`` with ``layout`` and the pattern to declare."""
    if layout == "unstructured":
        return rng.random(shape) < density, None
    kind = layout[0]
    if kind in ("rows", "columns"):
        block = layout[1]
        axis = 0 if kind == "rows" else 1
        runs = -(-shape[axis] // block)
        reduced = list(shape)
        reduced[axis] = runs
        keep = rng.random(reduced) < density
        mask = np.repeat(keep, block, axis=axis)
        mask = np.take(mask, np.arange(shape[axis]), axis=axis)
        return mask, Blocks(block, axis)
    _, n, m, axis = layout
    moved = list(shape)
    moved[axis], moved[-1] = moved[-1], moved[axis]
    groups = -(-moved[-1] // m)
    scores = rng.random((*moved[:-1], groups, m))
    keep_count = round((m - n) * min(1.0, density * 2))
    order = np.argsort(scores, axis=-1)
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :keep_count], True, axis=-1)
    keep = keep.reshape(*moved[:-1], groups * m)[..., : moved[-1]]
    return np.swapaxes(keep, axis, -1), NM(n, m, axis)


def _scale_shape(shape: tuple[int, ...], per_block: int | None) -> tuple[int, ...]:
    scale_shape = [shape[0]] + [1] * (len(shape) - 1)
    if per_block is not None:
        scale_shape[1] = shape[1] // per_block
    return tuple(scale_shape)


def make_weight(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    density: float,
    value_format: str,
    layout="unstructured",
    *,
    mask: np.ndarray | None = None,
    declare: bool = True,
) -> Built:
    """Build a compressed weight of ``value_format`` and its coremltools reference."""
    if mask is None:
        mask, pattern = make_mask(rng, shape, density, layout)
    else:
        pattern = None
    pattern = pattern if declare else None
    mask_u1 = mask.astype(np.uint8)
    count = int(mask.sum())
    rank = len(shape)

    if value_format in ("fp16", "fp32", "int8-values"):
        dtype = {"fp16": np.float16, "fp32": np.float32, "int8-values": np.int8}[value_format]
        values = (rng.standard_normal(count) * 2).astype(dtype) if dtype != np.int8 else rng.integers(-128, 128, count).astype(np.int8)
        weight = formats.from_sparse(mask_u1, values, pattern=pattern)
        reference = constexpr_sparse_to_dense.decompress(values, mask_u1)
        return Built(weight, mask, reference.astype(np.float32))

    if value_format.startswith("lut"):
        lut_shape, bits, dtype = {
            "lut4": ((1,) * rank, 4, np.float16),
            "lut2-grouped-rows": ((shape[0] // 2,) + (1,) * (rank - 1), 2, np.float16),
            "lut4-grouped-columns": ((1, shape[1] // 4) + (1,) * (rank - 2), 4, np.float32),
            "lut6": ((1,) * rank, 6, np.float16),
            "lut8-int8-table": ((1,) * rank, 8, np.int8),
        }[value_format]
        entries = 1 << bits
        if dtype == np.int8:
            lut = rng.integers(-128, 128, (*lut_shape, entries, 1)).astype(np.int8)
        else:
            lut = rng.standard_normal((*lut_shape, entries, 1)).astype(dtype)
        indices = rng.integers(0, entries, count).astype(np.uint8)
        weight = formats.from_lut_to_sparse(mask_u1, indices, lut, pattern=pattern)
        mask_out, values = constexpr_lut_to_sparse.decompress(mask_u1, indices, lut, None)
        reference = constexpr_sparse_to_dense.decompress(values, mask_out)
        return Built(weight, mask, reference.astype(np.float32))

    spec = {
        "int8-per-channel": (np.int8, np.float16, None, None),
        "uint8-per-block-offset": (np.uint8, np.float16, 4, np.uint8),
        "int4-per-block": (np.int8, np.float16, 8, None),
        "uint4-per-block-fp16-offset": (np.uint8, np.float16, 8, np.float16),
        "int8-fp32-scale-fp16-offset": (np.int8, np.float32, 4, np.float16),
        "fp16-data-scaled": (np.float16, np.float16, None, np.float16),
    }[value_format]
    data_dtype, scale_dtype, per_block, offset_dtype = spec
    if data_dtype == np.float16:
        data = rng.standard_normal(count).astype(np.float16)
    elif value_format.startswith(("int4", "uint4")):
        low = -8 if data_dtype == np.int8 else 0
        data = rng.integers(low, low + 16, count).astype(data_dtype)
    else:
        info = np.iinfo(data_dtype)
        data = rng.integers(info.min, info.max + 1, count).astype(data_dtype)
    scale_shape = _scale_shape(shape, per_block)
    scale = (rng.random(scale_shape) * 0.05 + 0.001).astype(scale_dtype)
    offset = None
    if offset_dtype is not None:
        if np.dtype(offset_dtype).kind == "f":
            offset = (rng.standard_normal(scale_shape) * 3).astype(offset_dtype)
        else:
            offset = rng.integers(0, 16, scale_shape).astype(offset_dtype)
    weight = formats.from_sparse_shift_scale(mask_u1, data, scale, offset, pattern=pattern)
    mask_out, values = constexpr_sparse_blockwise_shift_scale.decompress(mask_u1, data, scale, offset)
    reference = constexpr_sparse_to_dense.decompress(values, mask_out)
    return Built(weight, mask, reference.astype(np.float32))


def fit_shape(shape: tuple[int, ...], value_format: str, layout) -> tuple[int, ...]:
    """Round dims 0 and 1 up so the format's groups divide them."""
    row_multiple, column_multiple = shape_multiple(value_format)
    dims = list(shape)
    dims[0] = -(-dims[0] // row_multiple) * row_multiple
    dims[1] = -(-dims[1] // column_multiple) * column_multiple
    return tuple(dims)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_make_mask_has_declared_pattern(layout):
    rng = np.random.default_rng(0)
    mask, pattern = make_mask(rng, (9, 10), 0.5, layout)
    assert mask.shape == (9, 10)
    if pattern is not None:
        assert holds(mask, pattern)


@pytest.mark.parametrize("value_format", VALUE_FORMATS)
def test_make_weight_builds_every_format(value_format):
    rng = np.random.default_rng(1)
    shape = fit_shape((8, 16), value_format, "unstructured")
    built = make_weight(rng, shape, 0.5, value_format)
    assert built.weight.shape == shape
    assert built.reference.shape == shape
    assert built.weight.nnz == int(built.mask.sum())
