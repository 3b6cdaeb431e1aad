"""``linear`` and ``matmul`` with a compressed constant weight.

Three strategies compute ``y = x W^T`` for the kernel view ``W [rows, columns]`` of a
:class:`.formats.CompressedWeight` and ``x [tokens, columns]``:

- ``"sparse"``: streaming kernels that read the mask and the stored values once per token (or
  per 4 tokens) and decode them on the fly. They need AVX-512; elsewhere this strategy runs
  as ``"tiled"``.
- ``"tiled"``: decode tiles of about 16 MiB of rows to fp32 and multiply each with BLAS, so
  the dense weight is never held in full.
- ``"dense"``: decode the whole weight once (cached on the weight) and multiply with BLAS. This
  is the reference path.

``strategy=None`` lets :func:`.choose.choose_strategy` pick from the format, density and token
count. Results are fp32. ``compute_dtype=np.float64`` computes on the dense path in fp64, for
reference values.

Note: the sparse strategy skips zero weights, so where the dense product would give NaN from
``0 * inf`` in an input, it may return a finite value.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from . import _numba, _simd
from .formats import (
    AFFINE_UINT8,
    FLOAT16,
    LANES,
    LUT,
    LUT16,
    BitmaskWeight,
    ColumnBlockWeight,
    CompressedWeight,
    Payload,
    RowBlockWeight,
    transposed,
)

logger = logging.getLogger(__name__)

__all__ = ["STRATEGIES", "linear", "matmul", "apply_weight", "sparse_supported"]

STRATEGIES = ("sparse", "tiled", "dense")

# At or below this density the streaming kernel walks the stored values with their column
# indices instead of expanding the mask 16 columns at a time. The crossover for one token on an
# AMD EPYC (Zen 4) core, 4096x4096 and 4096x11008 weights, is 0.2 for fp16 values and 0.2 to
# 0.22 for 4-bit LUT values. The mask kernels take 0.37 to 0.47 of dense BLAS at densities 0.1
# to 0.5, and the indexed one 0.19 to 0.22 at density 0.1 and 0.35 to 0.44 at 0.2.
INDEXED_DENSITY = 0.2

# The indexed kernel runs once per token, while the mask-expanding kernel decodes once per 4
# tokens. The indexed one stays faster while tokens * density is at most this value (same
# machine, 2048x4096 weight, 1 to 8 tokens).
INDEXED_TOKENS_TIMES_DENSITY = 0.6

# The indexed kernel walks the columns in panels of this width: 4096 fp32 inputs take 16 KiB,
# half of a 32 KiB first-level data cache. On the benchmark machine a 4096x11008 layer at 10 %
# density took 0.33 to 0.35 of dense BLAS without panels and 0.18 to 0.23 with them. In short
# runs, panels of 2048 to 8192 columns took 0.16 to 0.26.
PANEL_COLUMNS = 4096

# Up to this many tokens the BLAS calls multiply weight @ x^T, above it x @ weight^T.
ROW_MAJOR_TOKENS = 64

# Rows per tile are chosen so that one decoded tile takes about this many bytes. A tile stays
# in the 32 MiB last-level cache of the benchmark machine while BLAS reads it. Large tiles also
# keep the number of BLAS calls low. Each call synchronises BLAS's threads, which costs up to a
# scheduler time slice when other processes share the cores.
TILE_BYTES = 16 << 20


# ---------------------------------------------------------------------------------------------
# Per-weight kernel arguments


@dataclass(frozen=True, eq=False)
class _KernelArgs:
    """Arguments of the compiled kernels for one weight, built once and cached on it."""

    values: tuple
    streaming: bool
    indexed: bool
    simd_decode: bool
    chunk_group: np.ndarray
    block_group: np.ndarray
    lane_scale: np.ndarray
    lane_offset: np.ndarray


def _values(p: Payload) -> tuple:
    return (p.mode, p.data16, p.data32, p.codes, p.table, p.width, p.scale, p.offset, p.rounding)


def _row_block_lanes(weight: RowBlockWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per-row-block LUT group and per-lane scale and offset; also whether the LUT is shared."""
    block, rows = weight.block, weight.rows
    n_blocks = weight.n_row_blocks
    row = np.minimum(np.arange(n_blocks * block).reshape(n_blocks, block), rows - 1)
    group = weight.groups.row_group[row]
    shared = bool((group == group[:, :1]).all())
    block_group = np.ascontiguousarray(group[:, 0]).astype(np.int32)
    lane_scale = np.zeros((n_blocks, LANES), np.float32)
    lane_offset = np.zeros((n_blocks, LANES), np.float32)
    if weight.payload.mode >= AFFINE_UINT8:
        lanes = np.tile(group, (1, LANES // block))
        lane_scale = weight.payload.scale[lanes]
        lane_offset = weight.payload.offset[lanes]
    return block_group, np.ascontiguousarray(lane_scale.ravel()), np.ascontiguousarray(lane_offset.ravel()), shared


def _kernel_args(weight: CompressedWeight) -> _KernelArgs:
    # Keyed by the AVX-512 switch, which tests turn off to run the portable kernels.
    cache = weight.__dict__.setdefault("_kernel_args", {})
    if _simd.AVAILABLE in cache:
        return cache[_simd.AVAILABLE]
    grouped = weight.payload.grouped
    groups = weight.groups
    empty_int = np.zeros(LANES, np.int32)
    empty_float = np.zeros(LANES, np.float32)
    chunk_group = groups.chunk_group if groups.chunk_group is not None else np.zeros(weight.columns_padded // LANES + 1, np.int32)
    block_group, lane_scale, lane_offset = empty_int, empty_float, empty_float
    streaming = simd_decode = indexed = False

    if isinstance(weight, BitmaskWeight):
        aligned = not grouped or groups.chunk_group is not None
        streaming = simd_decode = _simd.AVAILABLE and aligned
        indexed = _simd.AVAILABLE and weight.density <= INDEXED_DENSITY and (not grouped or groups.uniform_columns)
    elif isinstance(weight, RowBlockWeight) and weight.rows:
        block_group, lane_scale, lane_offset, shared = _row_block_lanes(weight)
        supported = not grouped or (groups.uniform_columns and (shared or weight.payload.mode > LUT))
        streaming = _simd.AVAILABLE and weight.block in _numba.BLOCK_WIDTHS and supported
    elif isinstance(weight, ColumnBlockWeight):
        supported = not grouped or groups.uniform_columns
        streaming = _simd.AVAILABLE and weight.block in _numba.BLOCK_WIDTHS and supported

    args = _KernelArgs(
        values=_values(weight.payload),
        streaming=streaming or indexed,
        indexed=indexed,
        simd_decode=simd_decode,
        chunk_group=np.ascontiguousarray(chunk_group, dtype=np.int32),
        block_group=block_group,
        lane_scale=lane_scale,
        lane_offset=lane_offset,
    )
    cache[_simd.AVAILABLE] = args
    return args


def sparse_supported(weight: CompressedWeight) -> bool:
    """Return True when the streaming kernels can run ``weight`` on this host."""
    return _kernel_args(weight).streaming


# ---------------------------------------------------------------------------------------------
# Strategies


def _padded_input(x2: np.ndarray, columns_padded: int) -> np.ndarray:
    """Copy ``x [tokens, columns]`` into a zeroed fp32 buffer with 16 spare columns."""
    tokens, columns = x2.shape
    buffer = np.zeros((tokens, columns_padded + LANES), dtype=np.float32)
    buffer[:, :columns] = x2
    return buffer


def _sparse(weight: CompressedWeight, args: _KernelArgs, x2: np.ndarray) -> np.ndarray:
    tokens = x2.shape[0]
    groups = weight.groups
    indexed = args.indexed and tokens * weight.density <= INDEXED_TOKENS_TIMES_DENSITY
    if isinstance(weight, BitmaskWeight) and not indexed and tokens > 1:
        padding = np.zeros((-tokens % 4, x2.shape[1]), np.float32)
        xp = _padded_input(np.concatenate([x2, padding]), weight.columns_padded)
        out = np.empty((xp.shape[0], weight.rows), dtype=np.float32)
        _numba.bitmask_gemm4(
            weight.chunk_masks, weight.row_start, weight.n_chunks, groups.row_group, args.chunk_group,
            *args.values, xp.reshape(-1), out.reshape(-1),
        )  # fmt: skip
        return out[:tokens]

    xp = _padded_input(x2, weight.columns_padded)
    x_stride = xp.shape[1]
    padded_rows = weight.n_row_blocks * weight.block if isinstance(weight, RowBlockWeight) else weight.rows
    out = np.empty((tokens, padded_rows), dtype=np.float32)
    if isinstance(weight, BitmaskWeight) and indexed:
        panels = weight.column_panels(PANEL_COLUMNS)
        out[:] = 0.0
        _numba.indexed_gemm(
            panels.start, panels.n_panels, panels.columns, groups.row_group, *_values(panels.payload),
            xp.reshape(-1), x_stride, out.reshape(-1), padded_rows,
        )  # fmt: skip
    elif isinstance(weight, BitmaskWeight) and weight.payload.mode == FLOAT16 and _simd.VBMI2:
        _numba.bitmask_gemv_fp16(weight.chunk_masks, weight.row_start, weight.n_chunks, weight.payload.data16, xp[0], out[0])
    elif isinstance(weight, BitmaskWeight) and weight.payload.mode == LUT16 and groups.uniform_columns and _simd.VBMI2:
        _numba.bitmask_gemv_lut16(
            weight.chunk_masks, weight.row_start, weight.n_chunks, groups.row_group,
            weight.payload.codes, weight.payload.table, xp[0], out[0],
        )  # fmt: skip
    elif isinstance(weight, BitmaskWeight):
        _numba.bitmask_gemv(
            weight.chunk_masks, weight.row_start, weight.n_chunks, groups.row_group, args.chunk_group,
            *args.values, xp[0], out[0],
        )  # fmt: skip
    elif isinstance(weight, RowBlockWeight):
        _numba.row_blocks_gemm(weight.block)(
            weight.kept_columns, weight.block_start, args.block_group, args.lane_scale, args.lane_offset,
            *args.values, xp.reshape(-1), x_stride, out.reshape(-1), padded_rows,
        )  # fmt: skip
    else:
        _numba.column_blocks_gemm(weight.block)(
            weight.block_columns, weight.row_start, groups.row_group, *args.values,
            xp.reshape(-1), x_stride, out.reshape(-1), padded_rows,
        )  # fmt: skip
    return out[:, : weight.rows]


def _decode_tile(weight: CompressedWeight, args: _KernelArgs, first_row: int, tile: np.ndarray) -> None:
    """Write decoded rows ``first_row : first_row + len(tile)`` of the kernel view to ``tile``.

    ``tile`` is a C-contiguous ``[n, columns_padded + 16]`` buffer; columns past
    ``columns_padded`` may receive filler values.
    """
    groups = weight.groups
    stride = tile.shape[1]
    flat = tile.reshape(-1)
    view = tile[:, : weight.columns_padded]
    if isinstance(weight, BitmaskWeight):
        if args.simd_decode:
            _numba.bitmask_decode_simd(
                weight.chunk_masks, weight.row_start, weight.n_chunks, groups.row_group, args.chunk_group,
                *args.values, first_row, stride, flat,
            )  # fmt: skip
        else:
            _numba.bitmask_decode_scalar(
                weight.chunk_masks, weight.row_start, weight.n_chunks, groups.row_group, groups.column_group,
                *args.values, first_row, view,
            )  # fmt: skip
    elif isinstance(weight, RowBlockWeight) and args.streaming:
        _numba.row_blocks_decode(weight.block)(
            weight.kept_columns, weight.block_start, args.block_group, args.lane_scale, args.lane_offset,
            *args.values, first_row // weight.block, stride, flat,
        )  # fmt: skip
    elif isinstance(weight, RowBlockWeight):
        _numba.row_blocks_decode_scalar(
            weight.block, weight.kept_columns, weight.block_start, weight.rows, groups.row_group,
            groups.column_group, *args.values, first_row // weight.block, view,
        )  # fmt: skip
    elif args.streaming:
        _numba.column_blocks_decode(weight.block)(
            weight.block_columns, weight.row_start, groups.row_group, *args.values, first_row, stride, flat
        )
    else:
        _numba.column_blocks_decode_scalar(
            weight.block, weight.block_columns, weight.row_start, weight.columns, groups.row_group,
            groups.column_group, *args.values, first_row, view,
        )  # fmt: skip


def tile_rows(weight: CompressedWeight) -> int:
    """Rows per decoded tile: about :data:`TILE_BYTES`, a multiple of the row block."""
    step = weight.block if isinstance(weight, RowBlockWeight) else 1
    rows = max(1, TILE_BYTES // (4 * (weight.columns_padded + LANES)))
    return max(step, rows // step * step)


@contextlib.contextmanager
def _single_thread():
    """Run numba parallel loops on the calling thread only.

    The tiled strategy alternates decoding and BLAS calls. Waking numba's worker threads
    between BLAS calls makes the two thread pools compete for the cores. On the 2-core
    benchmark VM, shared with other jobs, a tiled call took several times longer that way.
    """
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


_scratch = threading.local()


def _tile_buffer(rows: int, columns: int) -> np.ndarray:
    """Return a ``[rows, columns]`` fp32 buffer, reused by later calls on the same thread.

    Allocating a fresh 16 MiB tile per call costs page faults that were measured at up to
    half the time of a 4096x4096 product.
    """
    size = rows * columns
    buffer = getattr(_scratch, "tile", None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=np.float32)
        _scratch.tile = buffer
    return buffer[:size].reshape(rows, columns)


def _tiled(weight: CompressedWeight, args: _KernelArgs, x2: np.ndarray) -> np.ndarray:
    with _single_thread():
        return _tiled_products(weight, args, x2)


def _tiled_products(weight: CompressedWeight, args: _KernelArgs, x2: np.ndarray) -> np.ndarray:
    tokens = x2.shape[0]
    columns = weight.columns
    step = tile_rows(weight)
    block = weight.block if isinstance(weight, RowBlockWeight) else 1
    padded_rows = -(-weight.rows // block) * block
    tile = _tile_buffer(min(step, padded_rows), weight.columns_padded + LANES)

    # Few tokens: tile @ x^T, the faster order for OpenBLAS there (see _dense). Many tokens
    # (convolutions): x @ tile^T, which needs no transposed copy of the large input.
    if tokens <= ROW_MAJOR_TOKENS:
        x_columns = np.ascontiguousarray(x2.T)
        out = np.empty((padded_rows, tokens), dtype=np.float32)
        for first in range(0, padded_rows, step):
            n = min(step, padded_rows - first)
            _decode_tile(weight, args, first, tile[:n])
            np.matmul(tile[:n, :columns], x_columns, out=out[first : first + n])
        return out[: weight.rows].T
    out = np.empty((tokens, padded_rows), dtype=np.float32)
    for first in range(0, padded_rows, step):
        n = min(step, padded_rows - first)
        _decode_tile(weight, args, first, tile[:n])
        np.matmul(x2, tile[:n, :columns].T, out=out[:, first : first + n])
    return out[:, : weight.rows]


def _dense(weight: CompressedWeight, x2: np.ndarray, compute_dtype) -> np.ndarray:
    matrix = weight.dense_matrix()
    if compute_dtype == np.float64:
        return x2.astype(np.float64) @ matrix.astype(np.float64).T
    # OpenBLAS 0.3.31 runs W @ x^T faster than x @ W^T for 8 to 64 tokens, measured on
    # 4096-row weights. Both orders compute the same products.
    if x2.shape[0] <= ROW_MAJOR_TOKENS:
        return (matrix @ x2.T).T
    return x2 @ matrix.T


def apply_weight(x2: np.ndarray, weight: CompressedWeight, *, strategy: str | None = None, compute_dtype=np.float32) -> np.ndarray:
    """Return ``x2 @ W^T`` for the kernel view ``W [rows, columns]``.

    Shapes:
        ``x2``: ``tensor<fp32, [tokens, columns]>`` (kernel column order) ->
        ``tensor<fp32, [tokens, rows]>`` (fp64 with ``compute_dtype=np.float64``).

    Args:
        strategy: "sparse", "tiled", "dense", or None to let :func:`.choose.choose_strategy` pick.
        compute_dtype: np.float32, or np.float64 for the dense reference in fp64.
    """
    compute_dtype = np.dtype(compute_dtype)
    if compute_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UnsupportedOpError(f"{weight.name}: compute_dtype {compute_dtype} is not supported; use float32 or float64")
    if x2.shape[1] != weight.columns:
        raise ShapeError(
            f"{weight.name}: input has {x2.shape[1]} features; expected {weight.columns} to match the weight shape {list(weight.shape)}"
        )
    tokens = x2.shape[0]
    if compute_dtype == np.float64:
        return _dense(weight, x2, compute_dtype)
    if strategy is None:
        from .choose import choose_strategy

        strategy = choose_strategy(weight, tokens)
    if strategy not in STRATEGIES:
        raise UnsupportedOpError(f"{weight.name}: strategy {strategy!r} is unknown; expected one of {', '.join(STRATEGIES)}")
    x2 = np.asarray(x2, dtype=np.float32)
    if tokens == 0 or weight.rows == 0:
        return np.zeros((tokens, weight.rows), dtype=np.float32)
    if strategy == "dense":
        return _dense(weight, x2, compute_dtype)
    args = _kernel_args(weight)
    if strategy == "sparse" and args.streaming:
        return _sparse(weight, args, x2)
    return _tiled(weight, args, x2)


def _as_array(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ShapeError(f"{name}: input has dtype {x.dtype}; expected a numeric tensor")
    return x


def linear(x, weight: CompressedWeight, bias=None, *, strategy: str | None = None, compute_dtype=np.float32) -> np.ndarray:
    """MIL ``linear``: ``y = x W^T + b`` with a compressed weight.

    Shapes:
        x: ``tensor<T, [*D, in]>``, rank 1 or more; weight ``[out, in]``; bias
        ``tensor<T, [out]>`` -> ``tensor<fp32, [*D, out]>``.

    Args:
        strategy: "sparse", "tiled", "dense", or None to choose by measured crossover.
        compute_dtype: np.float32, or np.float64 for a reference computed on the dense path.

    Raises:
        ShapeError: the weight is not rank 2, or x or bias do not match it.

    Example: ``linear(np.ones((2, 3)), from_sparse(np.eye(3, dtype=np.uint8),
    np.array([1, 2, 3], np.float16)))`` returns ``[[1, 2, 3], [1, 2, 3]]``.
    """
    x = _as_array(x, weight.name)
    if len(weight.shape) != 2:
        raise ShapeError(f"{weight.name}: linear needs a weight of rank 2 [out, in]; shape is {list(weight.shape)}")
    if x.ndim < 1 or x.shape[-1] != weight.columns:
        raise ShapeError(
            f"{weight.name}: x has shape {list(x.shape)}; expected the last dimension to be {weight.columns} "
            f"(weight shape {list(weight.shape)})"
        )
    leading = x.shape[:-1]
    x2 = x.reshape(-1, weight.columns)
    y = apply_weight(x2, weight, strategy=strategy, compute_dtype=compute_dtype)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (weight.rows,):
            raise ShapeError(f"{weight.name}: bias has shape {list(bias.shape)}; expected [{weight.rows}]")
        y = y + bias.astype(y.dtype)
    return y.reshape(*leading, weight.rows)


def _transposed(weight: CompressedWeight) -> CompressedWeight:
    cached = weight.__dict__.get("_transposed")
    if cached is None:
        cached = transposed(weight)
        weight.__dict__["_transposed"] = cached
    return cached


def matmul(
    x,
    y,
    *,
    transpose_x: bool = False,
    transpose_y: bool = False,
    strategy: str | None = None,
    compute_dtype=np.float32,
) -> np.ndarray:
    """MIL ``matmul`` where exactly one operand is a rank-2 compressed weight.

    numpy ``matmul`` semantics after the optional transposes of the last two axes: a rank-1
    operand is promoted to a matrix and the added axis is removed from the result.

    Shapes:
        ``x @ W``: x ``[*D, M, K]`` (or ``[K]``), W ``[K, N]`` (``[N, K]`` with transpose_y)
        -> ``[*D, M, N]``; ``W @ y``: W ``[M, K]`` (``[K, M]`` with transpose_x), y
        ``[*D, K, N]`` (or ``[K]``) -> ``[*D, M, N]``. Results are fp32.

    Raises:
        ShapeError: ranks or inner dimensions do not match, or a transpose flag is set on a
            rank-1 operand.
        UnsupportedOpError: both or neither operand is a compressed weight.
    """
    x_compressed = isinstance(x, CompressedWeight)
    y_compressed = isinstance(y, CompressedWeight)
    if x_compressed == y_compressed:
        raise UnsupportedOpError("matmul: exactly one operand must be a CompressedWeight")
    weight = x if x_compressed else y
    if len(weight.shape) != 2:
        raise ShapeError(f"{weight.name}: matmul needs a weight of rank 2; shape is {list(weight.shape)}")

    if y_compressed:
        a = _as_array(x, weight.name)
        if a.ndim == 1 and transpose_x:
            raise ShapeError(f"{weight.name}: transpose_x is set on a rank-1 x")
        vector = a.ndim == 1
        a = a[None, :] if vector else (np.swapaxes(a, -1, -2) if transpose_x else a)
        rows_weight = weight if transpose_y else _transposed(weight)
        result = linear(a, rows_weight, strategy=strategy, compute_dtype=compute_dtype)
        return result[..., 0, :] if vector else result

    b = _as_array(y, weight.name)
    if b.ndim == 1 and transpose_y:
        raise ShapeError(f"{weight.name}: transpose_y is set on a rank-1 y")
    vector = b.ndim == 1
    b = b[:, None] if vector else (np.swapaxes(b, -1, -2) if transpose_y else b)
    rows_weight = _transposed(weight) if transpose_x else weight
    # W @ b == (b^T @ W^T)^T: the columns of b are the tokens.
    result = np.swapaxes(linear(np.swapaxes(b, -1, -2), rows_weight, strategy=strategy, compute_dtype=compute_dtype), -1, -2)
    return result[..., 0] if vector else result
