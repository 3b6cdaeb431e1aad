"""Compressed weights in the layouts that the sparse kernels read.

A :class:`CompressedWeight` stores one Core ML weight ``tensor<T, [Cout, *rest]>`` as a mask
plus its nonzero values, without ever building the dense matrix. Build one from the Core ML
parameters with :func:`from_sparse`, :func:`from_lut_to_sparse`,
:func:`from_sparse_shift_scale` (the iOS18 constexpr ops), :func:`from_sparse_ios16`, or from a
dense palettized or quantized weight with :func:`from_lut` and :func:`from_shift_scale`.

**Kernel view.** Kernels see the weight as a matrix ``[rows, columns]`` with ``rows = Cout``
and ``columns = prod(rest)``. For rank 2 (``linear`` ``[out, in]``) the columns are ``in``. For
a conv weight ``[Cout, Cin/groups, *K]`` the columns are ordered channels last,
``(*K, Cin/groups)``, so that n:m groups and blocks along ``Cin`` are contiguous. The
convolution kernels build their im2col columns in the same order.

**Values.** The nonzero values stay in their stored form and are decoded inside the kernels:

- ``FLOAT16``/``FLOAT32``: fp16 or fp32 values (integer ``nonzero_data`` is widened to fp32);
- ``LUT16``/``LUT``: uint8 palette indices with one LUT per group of elements (``LUT16`` when a
  LUT has at most 16 entries, which a vector permute can read);
- ``AFFINE_UINT8``/``AFFINE_INT8``: quantized codes with a scale and an offset per group,
  decoded as ``(code - offset) * scale`` in fp32 and rounded to fp16 when the scale is fp16,
  exactly as Core ML's ``constexpr_blockwise_shift_scale`` does.

A LUT or scale group covers a block of ``B_k = shape[k] / G_k`` positions on every axis. Vector
palettization (``VS > 1``) and float data with a scale are decoded to fp16/fp32 nonzero values
at construction.

**Layouts.**

- :class:`BitmaskWeight` (unstructured and n:m): one uint16 mask per 16 columns of a row, the
  row's values in column order. Used for every mask.
- :class:`RowBlockWeight` (``Blocks(b, axis=0)``): blocks of ``b`` rows share a list of kept
  columns; each kept column stores ``b`` values.
- :class:`ColumnBlockWeight` (``Blocks(b, axis=1)``): each row stores the start column of every
  kept block of ``b`` contiguous kernel columns, and ``b`` values per block.

Every weight offers :meth:`CompressedWeight.dense`, the decoded fp32 weight in the Core ML
shape, computed once with plain numpy and cached. It is the reference for every kernel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .. import bitpack
from ..errors import MaskError, NonFiniteError, OptionError, ParameterShapeError, PatternError, ShapeError, UnsupportedOpError
from ..limits import element_count
from .patterns import NM, Blocks, Pattern, check_pattern, detect_pattern

logger = logging.getLogger(__name__)

__all__ = [
    "FLOAT16",
    "FLOAT32",
    "LUT16",
    "LUT",
    "AFFINE_UINT8",
    "AFFINE_INT8",
    "ROUND_PRODUCT",
    "ROUND_SHIFT",
    "LANES",
    "SPARE",
    "ColumnPanels",
    "GroupMap",
    "Payload",
    "CompressedWeight",
    "BitmaskWeight",
    "RowBlockWeight",
    "ColumnBlockWeight",
    "from_sparse",
    "from_sparse_ios16",
    "from_lut_to_sparse",
    "from_sparse_shift_scale",
    "from_lut",
    "from_shift_scale",
    "with_pattern",
    "restructure",
    "transposed",
    "row_slice",
    "decode_elements",
    "CONSTRUCTION_ERRORS",
]

FLOAT16 = 0
FLOAT32 = 1
LUT16 = 2
LUT = 3
AFFINE_UINT8 = 4
AFFINE_INT8 = 5

# AFFINE rounding steps, matching numpy's fp16 arithmetic in coremltools' decompress: with an
# fp16 scale the product is fp16, and with an fp16 offset the difference is fp16 too.
ROUND_PRODUCT = 1
ROUND_SHIFT = 2

_MODE_NAMES = {FLOAT16: "fp16", FLOAT32: "fp32", LUT16: "lut", LUT: "lut", AFFINE_UINT8: "uint8", AFFINE_INT8: "int8"}

# Vector loads read 16 elements past any start position (32 for paired fp16 steps), so every
# payload and index array ends with SPARE spare elements and every column range is padded to a
# multiple of 16.
LANES = 16
SPARE = 2 * LANES

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_CODE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---------------------------------------------------------------------------------------------
# Value payloads


@dataclass(frozen=True, eq=False)
class Payload:
    """Stored nonzero values and the tables needed to decode them.

    The element arrays list one entry per stored value, in the order of the layout that stores
    them, and end with :data:`SPARE` spare entries. Only the array of the active ``mode`` is
    non-empty; the others have length :data:`SPARE` so kernels can take every argument.

    Attributes:
        mode: one of FLOAT16, FLOAT32, LUT16, LUT, AFFINE_UINT8, AFFINE_INT8.
        data16: ``tensor<uint16, [n + 32]>``, fp16 bits (FLOAT16).
        data32: ``tensor<fp32, [n + 32]>`` (FLOAT32).
        codes: ``tensor<uint8, [n + 32]>``, palette indices or quantized codes (int8 codes are
            stored as their two's-complement bytes).
        table: ``tensor<fp32, [groups * width]>``, LUT entries per group (LUT modes).
        width: entries per LUT group in ``table`` (16 for LUT16).
        scale: ``tensor<fp32, [groups]>`` (AFFINE modes).
        offset: ``tensor<fp32, [groups]>`` (AFFINE modes; zeros when Core ML has no offset).
        rounding: fp16 rounding steps of AFFINE decoding, a combination of ROUND_SHIFT (round
            ``code - offset``) and ROUND_PRODUCT (round the product with the scale).
        dtype: dtype of the decoded weight in Core ML (fp16 or fp32).
        group_counts: number of LUT or scale groups along each axis of the Core ML weight; empty
            for a row slice, which shares its parent's tables.
        size: number of stored values ``n``.
    """

    mode: int
    data16: np.ndarray
    data32: np.ndarray
    codes: np.ndarray
    table: np.ndarray
    width: int
    scale: np.ndarray
    offset: np.ndarray
    rounding: int
    dtype: np.dtype
    group_counts: tuple[int, ...]
    size: int

    @property
    def grouped(self) -> bool:
        """True for LUT and AFFINE modes, whose decoding depends on the element's group."""
        return self.mode >= LUT16

    @property
    def format_name(self) -> str:
        """Short name of the value encoding: fp16, fp32, lut, int8 or uint8."""
        return _MODE_NAMES[self.mode]

    def element_array(self) -> np.ndarray:
        """Return the array of the active mode, without the spare entries."""
        if self.mode == FLOAT16:
            return self.data16[: self.size]
        if self.mode == FLOAT32:
            return self.data32[: self.size]
        return self.codes[: self.size]

    def take(self, index: np.ndarray) -> Payload:
        """Return a payload whose element k is element ``index[k]`` of this one.

        An index equal to ``size`` selects a filler element: 0.0 for float modes and code 0
        for the others. Kernels never use a filler's decoded value except multiplied by a
        padding zero or in a discarded output lane.
        """
        source = np.concatenate([self.element_array(), np.zeros(1, self.element_array().dtype)])
        return _payload_from_elements(self, source[index])

    def bytes_per_value(self) -> float:
        """Bytes one stored value occupies in the kernel payload."""
        return float(self.element_array().itemsize)


def _padded(array: np.ndarray, dtype) -> np.ndarray:
    out = np.zeros(array.size + SPARE, dtype=dtype)
    out[: array.size] = array
    return out


def _empty(dtype) -> np.ndarray:
    return np.zeros(SPARE, dtype=dtype)


def _payload_from_elements(template: Payload, elements: np.ndarray) -> Payload:
    """Return ``template`` with its element array replaced by ``elements`` (then padded)."""
    data16, data32, codes = _empty(np.uint16), _empty(np.float32), _empty(np.uint8)
    if template.mode == FLOAT16:
        data16 = _padded(elements, np.uint16)
    elif template.mode == FLOAT32:
        data32 = _padded(elements, np.float32)
    else:
        codes = _padded(elements, np.uint8)
    return replace(template, data16=data16, data32=data32, codes=codes, size=int(elements.size))


def _float_payload(values: np.ndarray, rank: int) -> Payload:
    """Payload of plain float values, fp16 kept as bits, everything else widened to fp32."""
    values = np.asarray(values)
    if values.dtype == np.float16:
        mode, dtype = FLOAT16, np.dtype(np.float16)
        elements = values.view(np.uint16)
    else:
        mode, dtype = FLOAT32, np.dtype(np.float32)
        elements = values.astype(np.float32)
    template = Payload(
        mode=mode,
        data16=_empty(np.uint16),
        data32=_empty(np.float32),
        codes=_empty(np.uint8),
        table=np.zeros(0, np.float32),
        width=0,
        scale=np.zeros(0, np.float32),
        offset=np.zeros(0, np.float32),
        rounding=0,
        dtype=dtype,
        group_counts=(1,) * rank,
        size=0,
    )
    return _payload_from_elements(template, elements)


def decode_elements(payload: Payload, groups: np.ndarray | None) -> np.ndarray:
    """Decode stored values with numpy, the reference for the compiled kernels.

    Args:
        payload: values to decode.
        groups: ``tensor<int64, [n]>``, the LUT or scale group of each stored value; ignored
            for float modes.

    Returns:
        ``tensor<fp32, [n]>``.
    """
    elements = payload.element_array()
    if payload.mode == FLOAT16:
        return elements.view(np.float16).astype(np.float32)
    if payload.mode == FLOAT32:
        return elements.astype(np.float32, copy=True)
    if payload.mode in (LUT16, LUT):
        return payload.table[groups * payload.width + elements]
    codes = elements.view(np.int8) if payload.mode == AFFINE_INT8 else elements
    shifted = codes.astype(np.float32) - payload.offset[groups]
    if payload.rounding & ROUND_SHIFT:
        shifted = shifted.astype(np.float16).astype(np.float32)
    values = shifted * payload.scale[groups]
    if payload.rounding & ROUND_PRODUCT:
        values = values.astype(np.float16).astype(np.float32)
    return values


# ---------------------------------------------------------------------------------------------
# Group maps


@dataclass(frozen=True, eq=False)
class GroupMap:
    """LUT or scale group of each element of the kernel view ``[rows, columns]``.

    The group of element ``(r, c)`` is ``row_group[r] + column_group[c]``.

    Attributes:
        row_group: ``tensor<int32, [rows]>``.
        column_group: ``tensor<int32, [columns_padded + 16]>``; padding columns repeat the
            last real column's group.
        chunk_group: ``tensor<int32, [n_chunks]>``, the group offset of each run of 16
            columns, or None when some run of 16 columns spans two groups.
        uniform_columns: every column has group offset 0 (groups depend on the row only).
    """

    row_group: np.ndarray
    column_group: np.ndarray
    chunk_group: np.ndarray | None
    uniform_columns: bool

    def groups_of(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Return the group of each element ``(rows[k], columns[k])`` as int64."""
        return self.row_group[rows].astype(np.int64) + self.column_group[columns]


def _kernel_column_order(shape: tuple[int, ...]) -> np.ndarray | None:
    """Return, for each kernel column, its column in C order; None when both orders agree.

    Kernel columns of a weight of rank 3 or more are ordered ``(*K, Cin)`` instead of
    ``(Cin, *K)``.
    """
    if len(shape) <= 2:
        return None
    rest = shape[1:]
    original = np.arange(int(np.prod(rest)), dtype=np.int64).reshape(rest)
    return np.ascontiguousarray(np.moveaxis(original, 0, -1)).ravel()


def _group_map(shape: tuple[int, ...], counts: tuple[int, ...], columns_padded: int) -> GroupMap:
    """Build the group map of a weight whose groups are ``counts`` blocks along each axis."""
    rows = shape[0]
    blocks = [dim // count for dim, count in zip(shape, counts)]
    strides = [int(np.prod(counts[k + 1 :])) for k in range(len(counts))]
    row_group = ((np.arange(rows) // blocks[0]) * strides[0]).astype(np.int32)

    rest = shape[1:]
    column_group = np.zeros(rest, dtype=np.int64)
    for axis, index in enumerate(np.indices(rest, sparse=True)):
        column_group = column_group + (index // blocks[axis + 1]) * strides[axis + 1]
    if len(rest) >= 2:
        column_group = np.moveaxis(column_group, 0, -1)
    column_group = np.ascontiguousarray(column_group).ravel().astype(np.int32)

    columns = column_group.size
    padded = np.empty(columns_padded + LANES, dtype=np.int32)
    padded[:columns] = column_group
    padded[columns:] = column_group[-1] if columns else 0
    runs = padded[:columns_padded].reshape(-1, LANES)
    aligned = bool((runs == runs[:, :1]).all())
    chunk_group = np.ascontiguousarray(runs[:, 0]) if aligned else None
    return GroupMap(
        row_group=row_group,
        column_group=padded,
        chunk_group=chunk_group,
        uniform_columns=bool((column_group == 0).all()),
    )


# ---------------------------------------------------------------------------------------------
# Weights


class CompressedWeight:
    """A sparse weight in a kernel layout. Build one with the ``from_*`` constructors.

    Attributes:
        name: weight name used in error messages.
        shape: Core ML shape of the weight, ``(Cout, *rest)``.
        payload: the stored values, in layout order.
        groups: group map of the kernel view (meaningful for LUT and AFFINE payloads).
        pattern: the validated structured pattern, or None for an unstructured mask.
        nnz: number of set mask bits.
    """

    layout: str = ""

    def __init__(
        self,
        *,
        name: str,
        shape: tuple[int, ...],
        payload: Payload,
        groups: GroupMap,
        pattern: Pattern | None,
        nnz: int,
    ) -> None:
        self.name = name
        self.shape = shape
        self.payload = payload
        self.groups = groups
        self.pattern = pattern
        self.nnz = nnz
        self._column_order = _kernel_column_order(shape)

    @property
    def rows(self) -> int:
        """Rows of the kernel view (``shape[0]``)."""
        return self.shape[0]

    @property
    def columns(self) -> int:
        """Columns of the kernel view (``prod(shape[1:])``)."""
        return int(np.prod(self.shape[1:]))

    @property
    def columns_padded(self) -> int:
        """Columns rounded up to a multiple of 16; kernels read inputs of this width."""
        return _round_up(self.columns, LANES)

    @property
    def size(self) -> int:
        """Number of elements of the dense weight."""
        return self.rows * self.columns

    @property
    def density(self) -> float:
        """Fraction of elements that are stored as nonzero (1.0 for an empty weight)."""
        return self.nnz / self.size if self.size else 1.0

    @property
    def dtype(self) -> np.dtype:
        """dtype of the weight that Core ML decodes (fp16 or fp32)."""
        return self.payload.dtype

    @property
    def value_format(self) -> str:
        """Short name of the value encoding: fp16, fp32, lut, int8 or uint8."""
        return self.payload.format_name

    def element_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the kernel-view position of every stored value.

        Returns:
            ``(rows, columns, real)``, each ``tensor<int64 or bool, [payload.size]>``; ``real``
            is False for filler values outside the weight.
        """
        raise NotImplementedError

    def compressed_bytes(self) -> int:
        """Bytes the kernels stream for one pass over the weight (payload and structure)."""
        raise NotImplementedError

    def _decoded_elements(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, columns, real = self.element_positions()
        groups = self.groups.groups_of(rows, columns) if self.payload.grouped else None
        return rows[real], columns[real], decode_elements(self.payload, groups)[real]

    @cached_property
    def _dense_matrix(self) -> np.ndarray:
        element_count((self.rows, self.columns), name=self.name)
        matrix = np.zeros((self.rows, self.columns), dtype=np.float32)
        rows, columns, values = self._decoded_elements()
        matrix[rows, columns] = values
        return matrix

    def dense_matrix(self) -> np.ndarray:
        """Return the decoded fp32 weight as the kernel view ``[rows, columns]`` (cached)."""
        return self._dense_matrix

    def dense(self) -> np.ndarray:
        """Return the decoded fp32 weight in its Core ML shape (cached, read-only).

        Returns:
            ``tensor<fp32, [*shape]>``; a fp16 weight is widened exactly.
        """
        return self._dense

    @cached_property
    def _dense(self) -> np.ndarray:
        matrix = self.dense_matrix()
        if len(self.shape) <= 2:
            dense = matrix.reshape(self.shape)
        else:
            channels_last = matrix.reshape((self.shape[0], *self.shape[2:], self.shape[1]))
            dense = np.ascontiguousarray(np.moveaxis(channels_last, -1, 1))
        dense.flags.writeable = False
        return dense

    def mask(self) -> np.ndarray:
        """Return the Core ML mask, ``tensor<bool, [*shape]>``, rebuilt from the layout."""
        rows, columns, real = self.element_positions()
        flat = self._flat_index(rows[real], columns[real])
        mask = np.zeros(self.size, dtype=bool)
        mask[flat] = True
        return mask.reshape(self.shape)

    def _flat_index(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """C-order index in the Core ML weight of kernel-view positions."""
        if self._column_order is not None:
            columns = self._column_order[columns]
        return rows * self.columns + columns

    def c_order_payload(self) -> Payload:
        """Return the stored values in the C order of the Core ML weight (as ``nonzero_data``)."""
        rows, columns, real = self.element_positions()
        flat = self._flat_index(rows[real], columns[real])
        order = np.flatnonzero(real)[np.argsort(flat, kind="stable")]
        return self.payload.take(order)

    def describe(self) -> str:
        """Return a one-line summary: layout, pattern, value format, shape and density."""
        pattern = f", {self.pattern}" if self.pattern is not None else ""
        return (
            f"{self.name}: {self.layout}{pattern}, {self.value_format} values, shape {list(self.shape)}, "
            f"density {self.density:.3f}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class BitmaskWeight(CompressedWeight):
    """Unstructured (or n:m) layout: a 16-bit mask per 16 columns and values in row order.

    Attributes (besides :class:`CompressedWeight`'s):
        chunk_masks: ``tensor<uint16, [rows * n_chunks]>``; bit j of mask k of row r is column
            ``16 k + j``.
        row_start: ``tensor<int64, [rows + 1]>``; row r's values are
            ``payload[row_start[r]:row_start[r + 1]]``.
    """

    layout = "bitmask"

    def __init__(self, *, chunk_masks: np.ndarray, row_start: np.ndarray, **common) -> None:
        super().__init__(**common)
        self.chunk_masks = chunk_masks
        self.row_start = row_start

    @property
    def n_chunks(self) -> int:
        """Masks per row (``columns_padded // 16``)."""
        return self.columns_padded // LANES

    def kernel_mask(self) -> np.ndarray:
        """Return the mask of the kernel view, ``tensor<bool, [rows, columns]>``."""
        masks = self.chunk_masks.reshape(self.rows, self.n_chunks)
        bits = np.unpackbits(masks.view(np.uint8), axis=1, bitorder="little")
        return bits[:, : self.columns].astype(bool)

    def element_positions(self):
        rows, columns = np.nonzero(self.kernel_mask())
        return rows.astype(np.int64), columns.astype(np.int64), np.ones(rows.size, dtype=bool)

    def column_panels(self, width: int) -> ColumnPanels:
        """Return the stored values regrouped by panels of ``width`` columns (cached per width).

        Kernels that walk the stored values read one input element per value at its column.
        Walking one panel of columns for all rows before the next keeps the panel's inputs in
        the first-level cache, and the regrouped values keep that walk sequential in memory.
        With a single panel the payload is shared with this weight, not copied.
        """
        cache = self.__dict__.setdefault("_column_panels", {})
        if width not in cache:
            cache[width] = _column_panels(self, width)
        return cache[width]

    def compressed_bytes(self) -> int:
        return int(self.chunk_masks.nbytes + self.payload.size * self.payload.bytes_per_value())


@dataclass(frozen=True, eq=False)
class ColumnPanels:
    """A :class:`BitmaskWeight`'s stored values ordered by column panel, then row, then column.

    Attributes:
        width: columns per panel (a multiple of 16); the last panel may be narrower.
        n_panels: ``ceil(columns_padded / width)``.
        start: ``tensor<int64, [n_panels * rows + 1]>``; the values of row r in panel q are
            entries ``start[q * rows + r] : start[q * rows + r + 1]``.
        columns: ``tensor<uint16 or int32, [n + 32]>``, the kernel column of each value; uint16
            when every column index fits in it.
        payload: the values in this order (the weight's own payload when ``n_panels == 1``).
    """

    width: int
    n_panels: int
    start: np.ndarray
    columns: np.ndarray
    payload: Payload


def _column_panels(weight: BitmaskWeight, width: int) -> ColumnPanels:
    if width <= 0 or width % LANES:
        raise OptionError(f"{weight.name}: column panel width is {width}; expected a positive multiple of {LANES}")
    rows, columns = np.nonzero(weight.kernel_mask())
    n_panels = max(1, -(-weight.columns_padded // width))
    index_dtype = np.uint16 if weight.columns_padded <= 1 << 16 else np.int32
    if n_panels == 1:
        return ColumnPanels(width, 1, weight.row_start, _padded(columns, index_dtype), weight.payload)

    # Row-major order is already sorted by row, then column, so a stable sort on the key
    # yields panel, row, column order.
    key = (columns // width).astype(np.int64) * weight.rows + rows
    order = np.argsort(key, kind="stable")
    start = np.zeros(n_panels * weight.rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=n_panels * weight.rows), out=start[1:])
    return ColumnPanels(width, n_panels, start, _padded(columns[order], index_dtype), weight.payload.take(order))


class RowBlockWeight(CompressedWeight):
    """Blocks of ``block`` rows that share their kept columns.

    Attributes (besides :class:`CompressedWeight`'s):
        block: rows per block ``b``; the last block may be partial.
        kept_columns: ``tensor<int32, [n_kept + 32]>``, the kept columns of each row block, in
            increasing order, followed by 32 zeros.
        block_start: ``tensor<int64, [n_row_blocks + 1]>``; row block i keeps
            ``kept_columns[block_start[i]:block_start[i + 1]]``.
        Value ``payload[b * j + i]`` belongs to row ``i`` of the block and to kept entry j.
    """

    layout = "row blocks"

    def __init__(self, *, block: int, kept_columns: np.ndarray, block_start: np.ndarray, **common) -> None:
        super().__init__(**common)
        self.block = block
        self.kept_columns = kept_columns
        self.block_start = block_start

    @property
    def n_row_blocks(self) -> int:
        """Number of row blocks, the last one possibly partial."""
        return -(-self.rows // self.block)

    def element_positions(self):
        counts = np.diff(self.block_start)
        block_of_entry = np.repeat(np.arange(self.n_row_blocks, dtype=np.int64), counts)
        n_kept = int(self.block_start[-1])
        rows = (block_of_entry[:, None] * self.block + np.arange(self.block)[None, :]).ravel()
        columns = np.repeat(self.kept_columns[:n_kept].astype(np.int64), self.block)
        real = rows < self.rows
        return np.minimum(rows, self.rows - 1), columns, real

    def compressed_bytes(self) -> int:
        n_kept = int(self.block_start[-1])
        return int(n_kept * 4 + self.payload.size * self.payload.bytes_per_value())


class ColumnBlockWeight(CompressedWeight):
    """Rows that keep blocks of ``block`` contiguous kernel columns.

    Attributes (besides :class:`CompressedWeight`'s):
        block: columns per block ``b``.
        block_columns: ``tensor<int32, [n_kept + 32]>``, the first column of each kept block of
            each row, in increasing order, followed by 32 zeros.
        row_start: ``tensor<int64, [rows + 1]>``; row r keeps
            ``block_columns[row_start[r]:row_start[r + 1]]``.
        Value ``payload[b * j + i]`` is column ``block_columns[j] + i``. A block that runs past
        the last column stores filler values there.
    """

    layout = "column blocks"

    def __init__(self, *, block: int, block_columns: np.ndarray, row_start: np.ndarray, **common) -> None:
        super().__init__(**common)
        self.block = block
        self.block_columns = block_columns
        self.row_start = row_start

    def element_positions(self):
        n_kept = int(self.row_start[-1])
        row_of_block = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.row_start))
        rows = np.repeat(row_of_block, self.block)
        columns = (self.block_columns[:n_kept].astype(np.int64)[:, None] + np.arange(self.block)[None, :]).ravel()
        real = columns < self.columns
        return rows, np.minimum(columns, self.columns - 1), real

    def compressed_bytes(self) -> int:
        n_kept = int(self.row_start[-1])
        return int(n_kept * 4 + self.payload.size * self.payload.bytes_per_value())


# ---------------------------------------------------------------------------------------------
# Layout builders


def _kernel_mask(mask: np.ndarray) -> np.ndarray:
    """Return the kernel view of a Core ML mask, ``tensor<bool, [rows, columns]>``."""
    if mask.ndim >= 3:
        mask = np.moveaxis(mask, 1, -1)
    return np.ascontiguousarray(mask).reshape(mask.shape[0], -1)


def _kernel_value_order(mask: np.ndarray) -> np.ndarray | None:
    """For each nonzero in kernel order, its index in C order; None when the orders agree."""
    if mask.ndim <= 2:
        return None
    rank_in_c_order = np.cumsum(mask.ravel(), dtype=np.int64) - 1
    rank_in_c_order = rank_in_c_order.reshape(mask.shape)
    return np.moveaxis(rank_in_c_order, 1, -1)[np.moveaxis(mask, 1, -1)]


def _build_bitmask(common: dict, kernel_mask: np.ndarray, payload: Payload) -> BitmaskWeight:
    rows, columns = kernel_mask.shape
    columns_padded = _round_up(columns, LANES)
    padded = np.zeros((rows, columns_padded), dtype=bool)
    padded[:, :columns] = kernel_mask
    chunk_masks = np.packbits(padded, axis=1, bitorder="little").view("<u2").astype(np.uint16).ravel()
    row_start = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(kernel_mask.sum(axis=1, dtype=np.int64), out=row_start[1:])
    return BitmaskWeight(chunk_masks=np.ascontiguousarray(chunk_masks), row_start=row_start, payload=payload, **common)


def _build_row_blocks(common: dict, kernel_mask: np.ndarray, payload: Payload, block: int) -> RowBlockWeight:
    rows, columns = kernel_mask.shape
    n_blocks = -(-rows // block)
    padded = np.zeros((n_blocks * block, columns), dtype=bool)
    padded[:rows] = kernel_mask
    column_kept = padded.reshape(n_blocks, block, columns).any(axis=1)
    block_of_entry, kept_columns = np.nonzero(column_kept)
    block_start = np.zeros(n_blocks + 1, dtype=np.int64)
    np.cumsum(column_kept.sum(axis=1, dtype=np.int64), out=block_start[1:])

    # With the block pattern validated, every real row of a block keeps exactly the block's
    # columns, so row r's j-th value is its j-th kept column of the block.
    row_start = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(kernel_mask.sum(axis=1, dtype=np.int64), out=row_start[1:])
    entry_in_block = np.arange(kept_columns.size, dtype=np.int64) - block_start[block_of_entry]
    row = block_of_entry[:, None] * block + np.arange(block)[None, :]
    source = np.where(row < rows, row_start[np.minimum(row, rows - 1)] + entry_in_block[:, None], payload.size)
    return RowBlockWeight(
        block=block,
        kept_columns=_padded(kept_columns, np.int32),
        block_start=block_start,
        payload=payload.take(source.ravel()),
        **common,
    )


def _build_column_blocks(common: dict, kernel_mask: np.ndarray, payload: Payload, block: int) -> ColumnBlockWeight:
    rows, columns = kernel_mask.shape
    n_blocks = -(-columns // block)
    padded = np.zeros((rows, n_blocks * block), dtype=bool)
    padded[:, :columns] = kernel_mask
    block_kept = padded.reshape(rows, n_blocks, block).any(axis=2)
    row_of_block, block_index = np.nonzero(block_kept)
    row_start = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(block_kept.sum(axis=1, dtype=np.int64), out=row_start[1:])
    block_columns = block_index.astype(np.int64) * block

    # Values of a row are consecutive in the payload. A kept block has min(b, columns - start)
    # of them, so the first value of block j is the running sum of the earlier blocks' sizes.
    sizes = np.minimum(block, columns - block_columns)
    first_value = np.cumsum(sizes) - sizes
    lane = np.arange(block)[None, :]
    source = np.where(lane < sizes[:, None], first_value[:, None] + lane, payload.size)
    return ColumnBlockWeight(
        block=block,
        block_columns=_padded(block_columns, np.int32),
        row_start=row_start,
        payload=payload.take(source.ravel()),
        **common,
    )


def _normalize_pattern(pattern: Pattern | None, rank: int, name: str) -> Pattern | None:
    if pattern is None:
        return None
    if not -rank <= pattern.axis < rank:
        raise ShapeError(f"{name}: pattern axis {pattern.axis} is out of range for a weight of rank {rank}")
    return replace(pattern, axis=pattern.axis % rank)


def _build(name: str, mask: np.ndarray, payload_c: Payload, pattern: Pattern | None) -> CompressedWeight:
    """Build the layout for ``pattern`` from a Core ML mask and its values in C order."""
    shape = tuple(int(d) for d in mask.shape)
    if len(payload_c.group_counts) != len(shape):
        raise UnsupportedOpError(
            f"{name}: the values have no group grid for shape {list(shape)}; a row slice of a weight cannot be rebuilt"
        )
    pattern = _normalize_pattern(pattern, mask.ndim, name)
    if pattern is not None:
        check_pattern(mask, pattern, name)

    order = _kernel_value_order(mask)
    payload = payload_c if order is None else payload_c.take(order)
    kernel_mask = _kernel_mask(mask)
    columns_padded = _round_up(kernel_mask.shape[1], LANES)
    groups = _group_map(shape, payload.group_counts, columns_padded)
    common = dict(name=name, shape=shape, groups=groups, pattern=pattern, nnz=int(payload.size))

    if isinstance(pattern, Blocks) and pattern.size > 1:
        if pattern.axis == 0:
            return _build_row_blocks(common, kernel_mask, payload, pattern.size)
        # A block along Cin is a run of contiguous kernel columns unless it crosses the end of
        # a Cin run, which only a conv weight with Cin not a multiple of the block size has.
        if pattern.axis == 1 and (len(shape) == 2 or shape[1] % pattern.size == 0):
            return _build_column_blocks(common, kernel_mask, payload, pattern.size)
    return _build_bitmask(common, kernel_mask, payload)


# ---------------------------------------------------------------------------------------------
# Parameter checks


def _require_dtype(array: np.ndarray, allowed, param: str, name: str) -> None:
    if array.dtype not in [np.dtype(d) for d in allowed]:
        names = ", ".join(str(np.dtype(d)) for d in allowed)
        raise ShapeError(f"{name}: {param} has dtype {array.dtype}; expected one of {names}")


def _check_mask(mask, name: str, param: str = "mask") -> np.ndarray:
    """Return a uint1 mask as bool after checking its values and rank."""
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        _require_dtype(mask, (np.uint8, np.int8, np.int32, np.int64, np.uint16, np.uint32), param, name)
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) > 1):
            position = tuple(int(i) for i in np.argwhere((mask < 0) | (mask > 1))[0])
            raise MaskError(f"{name}: {param} contains {int(mask[position])} at index {list(position)}; expected 0 or 1")
    if mask.ndim < 2:
        raise ShapeError(
            f"{name}: {param} has rank {mask.ndim} (shape {list(mask.shape)}); the kernels need a weight of rank 2 or more"
        )
    element_count(mask.shape, name=f"{name}: {param}")
    return mask.astype(bool, copy=False)


def _check_values(values, count: int, name: str, param: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ShapeError(f"{name}: {param} has shape {list(values.shape)}; expected a rank-1 tensor")
    if values.size != count:
        raise MaskError(
            f"{name}: the mask has {count} set bits, but {param} has {values.size} values; expected one value per set bit"
        )
    return values


def _check_group_shape(parameter: np.ndarray, shape: tuple[int, ...], param: str, name: str) -> tuple[int, ...]:
    """Return the group counts of a scale/offset/LUT whose leading dims divide ``shape``."""
    counts = tuple(int(d) for d in parameter.shape[: len(shape)])
    if len(counts) != len(shape):
        raise ParameterShapeError(
            f"{name}: {param} has shape {list(parameter.shape)}; expected rank {len(shape)} groups for weight shape {list(shape)}"
        )
    for axis, (dim, count) in enumerate(zip(shape, counts)):
        if count < 1 or dim % count:
            raise ParameterShapeError(
                f"{name}: {param} has {count} groups on axis {axis}, which does not divide the weight "
                f"dimension {dim}; expected a divisor of {dim}"
            )
    return counts


def _group_of_positions(flat: np.ndarray, shape: tuple[int, ...], counts: tuple[int, ...]) -> np.ndarray:
    """Return the C-order group index of each flat position of a weight."""
    index = np.unravel_index(flat, shape)
    blocks = [dim // count for dim, count in zip(shape, counts)]
    return np.ravel_multi_index(tuple(i // b for i, b in zip(index, blocks)), counts).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Constructors from Core ML parameters


def from_sparse(mask, nonzero_data, *, name: str = "weight", pattern: Pattern | None | str = None) -> CompressedWeight:
    """Build a weight from iOS18 ``constexpr_sparse_to_dense`` parameters.

    Shapes:
        mask: ``tensor<uint1, [Cout, *rest]>`` (held as uint8 0/1 or bool), rank 2 or more.
        nonzero_data: ``tensor<T, [popcount(mask)]>``, the kept values in C order;
        T is fp16 or fp32, or int8/uint8 (widened to fp32).

    Args:
        name: weight name used in error messages.
        pattern: a declared :class:`NM` or :class:`Blocks` pattern to validate and use, ``"auto"``
            to use :func:`detect_pattern`, or None for the unstructured layout.

    Raises:
        MaskError: the mask contains a value other than 0 and 1, or its popcount differs from the
            number of values.
        ShapeError: a rank or dtype is wrong.
        PatternError: the mask does not have the declared pattern.

    Example: ``from_sparse([[1, 0], [0, 1]], np.array([2, 3], np.float16))`` decodes to
    ``[[2, 0], [0, 3]]``.
    """
    mask = _check_mask(mask, name)
    count = int(np.count_nonzero(mask))
    values = _check_values(nonzero_data, count, name, "nonzero_data")
    _require_dtype(values, (np.float16, np.float32, np.int8, np.uint8), "nonzero_data", name)
    return _build(name, mask, _float_payload(values, mask.ndim), _resolve_pattern(pattern, mask))


def from_sparse_ios16(mask, nonzero_data, shape, *, name: str = "weight", pattern: Pattern | None | str = None) -> CompressedWeight:
    """Build a weight from iOS16 ``constexpr_sparse_to_dense`` parameters.

    Shapes:
        mask: ``tensor<uint8, [ceil(prod(shape) / 8)]>``, bits packed LSB first.
        nonzero_data: ``tensor<T, [popcount(mask)]>``.
        shape: the dense shape, rank 2 or more.

    Raises:
        ShapeError: the mask byte count does not match ``shape``.
        MaskError: padding bits are set, or the popcount differs from the number of values.
    """
    packed = np.asarray(mask)
    _require_dtype(packed, (np.uint8,), "mask", name)
    shape_array = np.asarray(shape)
    if shape_array.ndim != 1 or shape_array.dtype.kind not in "iu":
        raise ShapeError(
            f"{name}: shape is {shape_array.tolist()!r}; expected a rank-1 list of integer dimensions"
        )
    dims = tuple(int(d) for d in shape_array)
    count = element_count(dims, name=f"{name}: shape")
    expected = -(-count // 8)
    if packed.ndim != 1 or packed.size != expected:
        raise ShapeError(
            f"{name}: mask has shape {list(packed.shape)}; expected {expected} bytes for shape {list(dims)}"
        )
    if bitpack.padding_bits_set(packed, 1, count):
        raise MaskError(f"{name}: mask has set padding bits after element {count}; padding bits must be 0")
    bits = bitpack.unpack_bits(packed, 1, count).reshape(dims)
    return from_sparse(bits, nonzero_data, name=name, pattern=pattern)


def _resolve_pattern(pattern: Pattern | None | str, mask: np.ndarray) -> Pattern | None:
    if isinstance(pattern, str):
        if pattern != "auto":
            raise ValueError(f"pattern must be an NM or Blocks pattern, 'auto' or None, not {pattern!r}")
        return detect_pattern(mask)
    return pattern


def _check_lut(lut, rank: int, name: str) -> tuple[np.ndarray, int]:
    lut = np.asarray(lut)
    _require_dtype(lut, (np.float16, np.float32, np.int8, np.uint8), "lut", name)
    if lut.ndim != rank + 2:
        raise ParameterShapeError(
            f"{name}: lut has shape {list(lut.shape)}; expected rank {rank + 2} ([*groups, 2^nbits, vector_size])"
        )
    entries = int(lut.shape[-2])
    if entries not in (2, 4, 8, 16, 64, 256):
        raise ParameterShapeError(
            f"{name}: lut has {entries} entries per table; expected 2^nbits entries for nbits in 1, 2, 3, 4, 6, 8"
        )
    if lut.dtype.kind == "f" and not np.isfinite(lut).all():
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(lut))[0])
        raise NonFiniteError(f"{name}: lut contains {lut[position]!r} at index {list(position)}; expected finite entries")
    return lut, entries


def _check_indices(indices: np.ndarray, entries: int, name: str, param: str) -> np.ndarray:
    _require_dtype(indices, (np.uint8,), param, name)
    if indices.size and int(indices.max()) >= entries:
        position = int(np.argmax(indices >= entries))
        raise ParameterShapeError(
            f"{name}: {param} contains {int(indices[position])} at index {position}; expected values below {entries}, "
            f"the number of LUT entries"
        )
    return indices


def _lut_payload(lut: np.ndarray, indices: np.ndarray, counts: tuple[int, ...], entries: int) -> Payload:
    dtype = np.dtype(np.float16) if lut.dtype == np.float16 else np.dtype(np.float32)
    tables = lut[..., 0].astype(np.float32).reshape(-1, entries)
    width = LANES if entries <= LANES else entries
    table = np.zeros((tables.shape[0], width), dtype=np.float32)
    table[:, :entries] = tables
    template = Payload(
        mode=LUT16 if entries <= LANES else LUT,
        data16=_empty(np.uint16),
        data32=_empty(np.float32),
        codes=_empty(np.uint8),
        table=np.ascontiguousarray(table.ravel()),
        width=width,
        scale=np.zeros(0, np.float32),
        offset=np.zeros(0, np.float32),
        rounding=0,
        dtype=dtype,
        group_counts=counts,
        size=0,
    )
    return _payload_from_elements(template, indices)


def from_lut_to_sparse(
    indices_mask,
    indices_nonzero_data,
    lut,
    *,
    vector_axis: int | None = None,
    name: str = "weight",
    pattern: Pattern | None | str = None,
) -> CompressedWeight:
    """Build a weight from iOS18 ``constexpr_lut_to_sparse`` parameters (palettized and sparse).

    Element ``p`` with mask bit set decodes to ``lut[group(p), index, 0]``, where ``group``
    selects the LUT block that contains ``p``.

    Shapes:
        indices_mask: ``tensor<uint1, [Cout, *rest]>``.
        indices_nonzero_data: ``tensor<uint8, [popcount(indices_mask)]>``, palette indices.
        lut: ``tensor<T, [*G, 2^nbits, VS]>`` with T in fp16, fp32, int8, uint8 and each G_k
        dividing the weight dimension.

    Args:
        vector_axis: the axis along which each index expands to VS values; required when
            VS > 1. Vector LUTs are decoded to fp16/fp32 values here, not in the kernels.

    Raises:
        ParameterShapeError: the LUT shape does not fit the weight, or an index is out of range.
        NonFiniteError: the LUT contains NaN or infinity.
        MaskError, ShapeError, PatternError: as in :func:`from_sparse`.
    """
    mask = _check_mask(indices_mask, name, "indices_mask")
    count = int(np.count_nonzero(mask))
    indices = _check_values(indices_nonzero_data, count, name, "indices_nonzero_data")
    lut, entries = _check_lut(lut, mask.ndim, name)
    indices = _check_indices(indices, entries, name, "indices_nonzero_data")
    counts = _check_group_shape(lut, mask.shape, "lut", name)
    vector_size = int(lut.shape[-1])
    if vector_size == 1:
        payload = _lut_payload(lut, indices, counts, entries)
        return _build(name, mask, payload, _resolve_pattern(pattern, mask))
    return _vector_lut_to_sparse(mask, indices, lut, counts, vector_axis, name, pattern)


def _vector_lut_to_sparse(mask, indices, lut, counts, vector_axis, name, pattern) -> CompressedWeight:
    """Decode a vector LUT (VS > 1) to float nonzero values of the expanded weight."""
    vector_size = int(lut.shape[-1])
    if vector_axis is None:
        raise ParameterShapeError(f"{name}: lut has vectors of {vector_size} values; vector_axis is required")
    if not -mask.ndim <= int(vector_axis) < mask.ndim:
        raise ParameterShapeError(f"{name}: vector_axis {vector_axis} is out of range for rank {mask.ndim}")
    axis = int(vector_axis) % mask.ndim
    flat = np.flatnonzero(mask)
    groups = _group_of_positions(flat, mask.shape, counts)
    vectors = lut.reshape(-1, lut.shape[-2], vector_size)[groups, indices]  # [nnz, VS]

    # Each kept index expands into VS consecutive elements along vector_axis. Ordering the
    # expanded positions gives the values in C order of the expanded tensor.
    expanded_shape = list(mask.shape)
    expanded_shape[axis] *= vector_size
    coordinates = np.array(np.unravel_index(flat, mask.shape))  # [rank, nnz]
    coordinates = np.repeat(coordinates, vector_size, axis=1)
    coordinates[axis] = coordinates[axis] * vector_size + np.tile(np.arange(vector_size), flat.size)
    expanded_flat = np.ravel_multi_index(tuple(coordinates), expanded_shape)
    order = np.argsort(expanded_flat, kind="stable")
    values = vectors.reshape(-1)[order]
    if values.dtype not in _FLOAT_DTYPES:
        values = values.astype(np.float32)
    expanded_mask = np.repeat(mask, vector_size, axis=axis)
    logger.debug("%s: vector LUT decoded to %d %s values at construction", name, values.size, values.dtype)
    return _build(name, expanded_mask, _float_payload(values, mask.ndim), _resolve_pattern(pattern, expanded_mask))


def _affine_payload(data, scale, offset, mask, flat, name) -> Payload:
    """Payload of quantized codes with per-group scale and offset (or decoded float values)."""
    scale = np.asarray(scale)
    _require_dtype(scale, (np.float16, np.float32), "scale", name)
    if scale.ndim != mask.ndim:
        raise ParameterShapeError(
            f"{name}: scale has rank {scale.ndim}; expected rank {mask.ndim}, the rank of the weight"
        )
    counts = _check_group_shape(scale, mask.shape, "scale", name)
    if offset is not None:
        offset = np.asarray(offset)
        if offset.shape != scale.shape:
            raise ParameterShapeError(
                f"{name}: offset has shape {list(offset.shape)}; expected the scale shape {list(scale.shape)}"
            )
        if offset.dtype.kind in "iu" and data.dtype.kind in "iu" and offset.dtype != data.dtype:
            raise ParameterShapeError(
                f"{name}: offset has dtype {offset.dtype}; an integer offset must have the data dtype {data.dtype}"
            )
        _require_dtype(offset, (np.float16, np.float32, np.int8, np.uint8), "offset", name)
    if not np.isfinite(scale).all():
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(scale))[0])
        raise NonFiniteError(f"{name}: scale contains {scale[position]!r} at index {list(position)}; expected finite values")

    # Follow numpy's dtype promotion in coremltools' decompress: the data is cast to the scale
    # dtype, ``data - offset`` takes the wider dtype of the two, and so does the product.
    shift_dtype = np.result_type(scale.dtype, offset.dtype) if offset is not None else np.dtype(scale.dtype)
    dtype = np.result_type(scale.dtype, shift_dtype)
    # Integer offsets give exact differences, so only an fp16 offset needs the rounding step.
    round_shift = shift_dtype == np.float16 and offset is not None and offset.dtype == np.float16
    rounding = 0
    if round_shift:
        rounding |= ROUND_SHIFT
    if dtype == np.float16:
        rounding |= ROUND_PRODUCT
    scale32 = scale.astype(np.float32).ravel()
    offset32 = np.zeros(scale32.size, np.float32) if offset is None else offset.astype(np.float32).ravel()
    if data.dtype in _CODE_DTYPES:
        template = Payload(
            mode=AFFINE_INT8 if data.dtype == np.int8 else AFFINE_UINT8,
            data16=_empty(np.uint16),
            data32=_empty(np.float32),
            codes=_empty(np.uint8),
            table=np.zeros(0, np.float32),
            width=0,
            scale=scale32,
            offset=offset32,
            rounding=rounding,
            dtype=np.dtype(dtype),
            group_counts=counts,
            size=0,
        )
        return _payload_from_elements(template, data.view(np.uint8))

    # Float data with a scale: decode the nonzero values here with the same numpy operations.
    groups = _group_of_positions(flat, mask.shape, counts)
    shifted = data.astype(scale.dtype)
    if offset is not None:
        shifted = shifted - offset.ravel()[groups]
    values = scale.ravel()[groups] * shifted
    return _float_payload(values, mask.ndim)


def from_sparse_shift_scale(
    data_mask,
    nonzero_data,
    scale,
    offset=None,
    *,
    name: str = "weight",
    pattern: Pattern | None | str = None,
) -> CompressedWeight:
    """Build a weight from iOS18 ``constexpr_sparse_blockwise_shift_scale`` parameters.

    The j-th kept element, at position ``p``, decodes to
    ``(nonzero_data[j] - offset[block(p)]) * scale[block(p)]`` in fp32, rounded to the scale
    dtype.

    Shapes:
        data_mask: ``tensor<uint1, [Cout, *rest]>``.
        nonzero_data: ``tensor<SrcT, [popcount(data_mask)]>`` with SrcT int8 or uint8 (int4 and
        uint4 held in them), or fp16/fp32.
        scale: ``tensor<fp16 or fp32, [*G]>`` with the weight's rank, each G_k dividing the
        weight dimension.
        offset: optional, the scale's shape; the data dtype or a float dtype.

    Raises:
        ParameterShapeError: scale or offset do not fit the weight.
        NonFiniteError: a scale is NaN or infinite.
        MaskError, ShapeError, PatternError: as in :func:`from_sparse`.
    """
    mask = _check_mask(data_mask, name, "data_mask")
    count = int(np.count_nonzero(mask))
    data = _check_values(nonzero_data, count, name, "nonzero_data")
    _require_dtype(data, (np.int8, np.uint8, np.float16, np.float32), "nonzero_data", name)
    flat = np.flatnonzero(mask) if data.dtype.kind == "f" else None
    payload = _affine_payload(data, scale, offset, mask, flat, name)
    return _build(name, mask, payload, _resolve_pattern(pattern, mask))


def from_lut(indices, lut, *, vector_axis: int | None = None, name: str = "weight") -> CompressedWeight:
    """Build a dense palettized weight (iOS18 ``constexpr_lut_to_dense``) with an all-ones mask.

    Shapes:
        indices: ``tensor<uint8, [Cout, *rest]>``, one palette index per element.
        lut: as in :func:`from_lut_to_sparse`.
    """
    indices = np.asarray(indices)
    _require_dtype(indices, (np.uint8,), "indices", name)
    mask = np.ones(indices.shape, dtype=bool)
    return from_lut_to_sparse(mask, indices.ravel(), lut, vector_axis=vector_axis, name=name)


def from_shift_scale(data, scale, offset=None, *, name: str = "weight") -> CompressedWeight:
    """Build a dense quantized weight (iOS18 ``constexpr_blockwise_shift_scale``), all-ones mask.

    Shapes:
        data: ``tensor<SrcT, [Cout, *rest]>``; scale and offset as in
        :func:`from_sparse_shift_scale`.
    """
    data = np.asarray(data)
    mask = np.ones(data.shape, dtype=bool)
    return from_sparse_shift_scale(mask, data.ravel(), scale, offset, name=name)


def with_pattern(weight: CompressedWeight, pattern: Pattern | None) -> CompressedWeight:
    """Return ``weight`` rebuilt in the layout of ``pattern`` after validating the pattern.

    Raises:
        PatternError: the weight's mask does not have ``pattern``.
    """
    return _build(weight.name, weight.mask(), weight.c_order_payload(), pattern)


def restructure(weight: CompressedWeight) -> CompressedWeight:
    """Return ``weight`` in the structured layout of the pattern its mask has, if any.

    Uses :func:`detect_pattern`. A weight whose mask has no structured pattern, or that already
    uses a pattern, is returned unchanged.
    """
    if weight.pattern is not None:
        return weight
    pattern = detect_pattern(weight.mask())
    if pattern is None:
        return weight
    logger.debug("%s: mask has %s", weight.name, pattern)
    return with_pattern(weight, pattern)


def transposed(weight: CompressedWeight) -> CompressedWeight:
    """Return the rank-2 weight ``[a, b]`` as a weight ``[b, a]``, without densifying it.

    Raises:
        ShapeError: the weight does not have rank 2.
    """
    if len(weight.shape) != 2:
        raise ShapeError(f"{weight.name}: only a rank-2 weight can be transposed; shape is {list(weight.shape)}")
    mask = weight.mask()
    payload = weight.c_order_payload()
    if len(payload.group_counts) != 2:
        raise UnsupportedOpError(f"{weight.name}: the values have no group grid; a row slice of a weight cannot be transposed")
    rows, columns = np.nonzero(mask)
    order = np.lexsort((rows, columns))
    payload = payload.take(order)

    # Group tables are stored in C order of the group grid, so they are transposed too.
    counts = payload.group_counts
    table = payload.table
    if payload.mode in (LUT16, LUT):
        table = table.reshape(*counts, payload.width).transpose(1, 0, 2).ravel()
    scale, offset = payload.scale, payload.offset
    if payload.mode >= AFFINE_UINT8:
        scale = scale.reshape(counts).T.ravel()
        offset = offset.reshape(counts).T.ravel()
    payload = replace(
        payload,
        table=np.ascontiguousarray(table),
        scale=np.ascontiguousarray(scale),
        offset=np.ascontiguousarray(offset),
        group_counts=counts[::-1],
    )
    pattern = weight.pattern
    if pattern is not None:
        pattern = replace(pattern, axis=1 - pattern.axis)
    return _build(f"{weight.name}.T", np.ascontiguousarray(mask.T), payload, pattern)


def row_slice(weight: CompressedWeight, start: int, stop: int) -> CompressedWeight:
    """Return rows ``start:stop`` (output channels) of ``weight`` as a weight of their own.

    The slice shares the LUT and scale tables of ``weight``: its group map keeps the original
    group numbers. A row-block weight whose slice does not start and end on block boundaries
    is sliced from its bitmask form.

    Raises:
        ShapeError: the range is empty or outside ``[0, rows]``.
    """
    if not 0 <= start < stop <= weight.rows:
        raise ShapeError(f"{weight.name}: row range [{start}, {stop}) is empty or outside [0, {weight.rows})")
    if isinstance(weight, RowBlockWeight):
        aligned = start % weight.block == 0 and (stop % weight.block == 0 or stop == weight.rows)
        if not aligned:
            return row_slice(with_pattern(weight, None), start, stop)

    # The slice keeps the parent's group tables, so its payload has no group grid of its own.
    payload = replace(weight.payload, group_counts=())
    groups = replace(weight.groups, row_group=np.ascontiguousarray(weight.groups.row_group[start:stop]))
    common = dict(
        name=f"{weight.name}[{start}:{stop}]",
        shape=(stop - start, *weight.shape[1:]),
        groups=groups,
        pattern=weight.pattern,
    )
    if isinstance(weight, RowBlockWeight):
        first, last = start // weight.block, -(-stop // weight.block)
        entries = weight.block_start[first : last + 1]
        values = np.arange(entries[0] * weight.block, entries[-1] * weight.block)
        rows, _, real = weight.element_positions()
        nnz = int(np.count_nonzero(real[values] & (rows[values] >= start) & (rows[values] < stop)))
        kept_columns = weight.kept_columns[entries[0] : entries[-1]]
        return RowBlockWeight(
            block=weight.block,
            kept_columns=_padded(kept_columns, np.int32),
            block_start=entries - entries[0],
            payload=payload.take(values),
            nnz=nnz,
            **common,
        )

    row_start = weight.row_start[start : stop + 1]
    if isinstance(weight, ColumnBlockWeight):
        values = np.arange(row_start[0] * weight.block, row_start[-1] * weight.block)
        _, _, real = weight.element_positions()
        return ColumnBlockWeight(
            block=weight.block,
            block_columns=_padded(weight.block_columns[row_start[0] : row_start[-1]], np.int32),
            row_start=row_start - row_start[0],
            payload=payload.take(values),
            nnz=int(np.count_nonzero(real[values])),
            **common,
        )
    n_chunks = weight.n_chunks
    return BitmaskWeight(
        chunk_masks=np.ascontiguousarray(weight.chunk_masks[start * n_chunks : stop * n_chunks]),
        row_start=row_start - row_start[0],
        payload=payload.take(np.arange(row_start[0], row_start[-1])),
        nnz=int(row_start[-1] - row_start[0]),
        **common,
    )


# Errors raised by the constructors, for callers that want to catch exactly these.
CONSTRUCTION_ERRORS = (MaskError, ShapeError, ParameterShapeError, PatternError, NonFiniteError)
