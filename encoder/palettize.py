"""Palettization: a look-up table (LUT) of 2**nbits entries and one index per element or vector.

The result decodes with ``constexpr_lut_to_dense`` as ``out[i] = lut[group(i), indices[i]]``,
or, for :func:`palettize_nonzero`, with ``constexpr_lut_to_sparse`` and
``constexpr_sparse_to_dense``: there only the nonzero values are palettized, and the pruned zeros
stay in the mask and take no LUT entry.

Modes:

- ``uniform``: Core ML's formula over each group, ``lut[k] = lo + k * (hi - lo) / (2**n - 1)``
  and ``index = round((w - lo) / (hi - lo) * (2**n - 1))``, evaluated in fp64 (Core ML uses
  the weight dtype). A constant group gets index 0 and a LUT filled with the constant.
- ``unique``: lossless. The LUT holds the distinct values (distinct bit patterns, so -0.0 and
  +0.0 are separate entries) sorted by value, zero-padded to 2**nbits. Without ``nbits`` the
  smallest width of 1, 2, 3, 4, 6, 8 bits that fits every group is used.
- ``kmeans``: deterministic k-means without scikit-learn. Scalars: Lloyd iterations on the
  histogram of distinct values until the assignment stops changing (at most 300 iterations),
  once from the weighted quantiles ``(j + 1/2) / k`` and once from evenly spaced values,
  keeping the run with the smaller squared error. A group with at most ``k`` distinct values
  gets them all, losslessly. Vectors: Lloyd iterations started by k-means++ seeded with 0. The
  LUT is sorted (scalars) and each value gets the index of its nearest entry after the LUT is
  rounded to its dtype, ties to the lower index. The result differs from Core ML's kmeans mode,
  which runs scikit-learn's k-means++.

Granularity: one LUT per tensor, or per group of ``group_size`` consecutive channels along
``channel_axis`` (the group size must divide the axis). Vector palettization (``cluster_dim``
> 1) gives each index ``cluster_dim`` consecutive elements along ``vector_axis``. The LUT has
shape ``[G0, ..., G(K-1), 2**nbits, cluster_dim]`` with ``G`` equal to 1 on every axis but
``channel_axis``, as iOS18 ``constexpr_lut_to_dense`` expects.
"""

from __future__ import annotations

import logging

import numpy as np

from sparseblob.runtime.errors import EncodingError

from ._validate import as_weight, check_axis, check_choice, check_int, nonzero
from .params import LutParams, LutToSparseParams, QuantizedLutParams, ScaledLutParams
from .quantize import _store_scale, dequantize, quantize_weight

__all__ = [
    "NBITS",
    "PALETTIZE_MODES",
    "palettize_weight",
    "palettize_nonzero",
    "palettize_quantized_lut",
    "palettize_scaled",
]

logger = logging.getLogger(__name__)

NBITS = (1, 2, 3, 4, 6, 8)
PALETTIZE_MODES = ("uniform", "unique", "kmeans")

_LLOYD_MAX_ITERATIONS = 300
_DISTANCE_CHUNK = 1 << 16


# ---------------------------------------------------------------------------------------------
# Layout: vectors, groups and the LUT tensor


class _Layout:
    """Where the indices, vectors and LUT groups of one palettization request lie."""

    def __init__(self, shape, group_size, channel_axis, cluster_dim, vector_axis):
        rank = len(shape)
        self.shape = tuple(shape)
        self.channel_axis = check_axis(channel_axis, rank, "channel_axis")
        self.cluster_dim = check_int(cluster_dim, "cluster_dim", minimum=1)
        if vector_axis is None:
            vector_axis = self.channel_axis
        self.vector_axis = check_axis(vector_axis, rank, "vector_axis")

        channels = shape[self.channel_axis]
        if group_size is None:
            group_size = channels
        group_size = check_int(group_size, "group_size", minimum=1)
        if channels % group_size:
            raise EncodingError(
                f"group_size={group_size} does not divide the {channels} channels of axis "
                f"{self.channel_axis}; the weight was not palettized"
            )
        self.groups = channels // group_size

        vector_length = shape[self.vector_axis]
        if vector_length % self.cluster_dim:
            raise EncodingError(
                f"cluster_dim={self.cluster_dim} does not divide axis {self.vector_axis} of length "
                f"{vector_length}; the weight was not palettized"
            )
        indices_shape = list(shape)
        indices_shape[self.vector_axis] //= self.cluster_dim
        self.indices_shape = tuple(indices_shape)
        if self.indices_shape[self.channel_axis] % self.groups:
            raise EncodingError(
                f"cluster_dim={self.cluster_dim} does not divide group_size={group_size} along "
                f"axis {self.channel_axis}; each LUT group must hold whole vectors"
            )
        self.group_span = self.indices_shape[self.channel_axis] // self.groups

    def vectors(self, array: np.ndarray) -> np.ndarray:
        """Return ``array`` as ``[*indices_shape, cluster_dim]``: each index's elements, in order."""
        moved = np.moveaxis(array, self.vector_axis, -1)
        split = moved.reshape(*moved.shape[:-1], -1, self.cluster_dim)
        return np.moveaxis(split, -2, self.vector_axis)

    def group(self, array: np.ndarray, g: int) -> np.ndarray:
        """Return the part of an indices-shaped array that LUT group ``g`` covers."""
        index = [slice(None)] * len(self.indices_shape)
        index[self.channel_axis] = slice(g * self.group_span, (g + 1) * self.group_span)
        return array[tuple(index)]

    def lut_shape(self, nbits: int) -> tuple[int, ...]:
        grid = [1] * len(self.shape)
        grid[self.channel_axis] = self.groups
        return (*grid, 1 << nbits, self.cluster_dim)

    def lut_group(self, lut: np.ndarray, g: int) -> np.ndarray:
        """Return the ``[2**nbits, cluster_dim]`` LUT of group ``g`` (a view)."""
        index = [0] * len(self.shape)
        index[self.channel_axis] = g
        return lut[tuple(index)]


# ---------------------------------------------------------------------------------------------
# Distinct values


def _bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint16 if values.dtype == np.float16 else np.uint32)


def _distinct_scalars(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the distinct bit patterns of 1-D ``values`` sorted by (value, bits), with counts.

    Returns:
        ``(distinct, counts, inverse)``: ``distinct`` in the values' dtype, ``counts`` int64,
        and ``inverse`` such that ``distinct[inverse] == values`` bit for bit.
    """
    bits = _bits(values)
    if values.dtype == np.float16:
        counts_all = np.bincount(bits, minlength=1 << 16)
        present = np.flatnonzero(counts_all).astype(np.uint16)
        candidates = present.view(np.float16)
        order = np.lexsort((present, candidates.astype(np.float64)))
        table = np.empty(1 << 16, dtype=np.int64)
        table[present[order]] = np.arange(order.size)
        return candidates[order], counts_all[present[order]], table[bits]

    present, inverse, counts = np.unique(bits, return_inverse=True, return_counts=True)
    candidates = present.view(values.dtype)
    order = np.lexsort((present, candidates.astype(np.float64)))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return candidates[order], counts[order], rank[inverse.reshape(-1)]


def _distinct_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the distinct bit patterns of ``[n, d]`` vectors, sorted by value, with counts."""
    bits = _bits(np.ascontiguousarray(vectors))
    present, inverse, counts = np.unique(bits, axis=0, return_inverse=True, return_counts=True)
    candidates = present.view(vectors.dtype)
    keys = [present[:, c] for c in reversed(range(present.shape[1]))]
    keys += [candidates[:, c].astype(np.float64) for c in reversed(range(present.shape[1]))]
    order = np.lexsort(keys)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return candidates[order], counts[order], rank[inverse.reshape(-1)]


def _unique_count(vectors: np.ndarray) -> int:
    if vectors.shape[1] == 1:
        return int(np.unique(_bits(np.ascontiguousarray(vectors[:, 0]))).size)
    return int(np.unique(_bits(np.ascontiguousarray(vectors)), axis=0).shape[0])


# ---------------------------------------------------------------------------------------------
# k-means


def _kmeans_scalar(points: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Cluster sorted distinct scalars with multiplicities into ``k`` centroids (fp64, sorted).

    Lloyd iterations run twice, from the weighted quantiles ``(j + 1/2) / k`` and from ``k``
    evenly spaced values between the extremes, and the run with the smaller squared error wins
    (the quantile run on a tie). Clusters of sorted 1-D points are contiguous runs, so one Lloyd
    step is k binary searches and k differences of prefix sums.
    """
    if points.size <= k:
        return points.astype(np.float64)

    weight_sum = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
    value_sum = np.concatenate([[0.0], np.cumsum(counts * points, dtype=np.float64)])
    square_sum = np.concatenate([[0.0], np.cumsum(counts * points * points, dtype=np.float64)])
    total = weight_sum[-1]

    quantile_starts = np.searchsorted(weight_sum[1:], (np.arange(k) + 0.5) / k * total)
    even_starts = np.searchsorted(points, np.linspace(points[0], points[-1], k))
    best, best_error = None, np.inf
    for starts in (quantile_starts, even_starts):
        centroids, error = _lloyd_scalar(points, _distinct_starts(starts, points.size), weight_sum, value_sum, square_sum)
        if error < best_error:
            best, best_error = centroids, error
    return best


def _distinct_starts(starts: np.ndarray, size: int) -> np.ndarray:
    """Move start positions apart so that they name ``len(starts)`` distinct points, in order."""
    k = starts.size
    starts = np.minimum(starts, size - 1)
    for j in range(1, k):
        starts[j] = max(starts[j], starts[j - 1] + 1)
    starts[k - 1] = min(starts[k - 1], size - 1)
    for j in range(k - 2, -1, -1):
        starts[j] = min(starts[j], starts[j + 1] - 1)
    return starts


def _lloyd_scalar(points, starts, weight_sum, value_sum, square_sum) -> tuple[np.ndarray, float]:
    """Run Lloyd iterations from ``points[starts]`` and return the centroids and the squared error."""
    centroids = points[starts].astype(np.float64)
    cuts = None
    for _ in range(_LLOYD_MAX_ITERATIONS):
        midpoints = (centroids[:-1] + centroids[1:]) / 2
        # A point exactly on a midpoint joins the lower cluster.
        new_cuts = np.concatenate([[0], np.searchsorted(points, midpoints, side="right"), [points.size]])
        if cuts is not None and np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
        weights = weight_sum[cuts[1:]] - weight_sum[cuts[:-1]]
        sums = value_sum[cuts[1:]] - value_sum[cuts[:-1]]
        filled = weights > 0
        centroids[filled] = sums[filled] / weights[filled]
        centroids.sort()

    # Squared error of the last assignment: sum(w x^2) - 2 c sum(w x) + c^2 sum(w), per cluster.
    weights = weight_sum[cuts[1:]] - weight_sum[cuts[:-1]]
    sums = value_sum[cuts[1:]] - value_sum[cuts[:-1]]
    squares = square_sum[cuts[1:]] - square_sum[cuts[:-1]]
    error = float(np.sum(squares - 2 * centroids * sums + centroids * centroids * weights))
    return centroids, error


def _kmeans_vectors(points: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Cluster distinct vectors with multiplicities into ``k`` centroids (fp64 ``[k, d]``)."""
    points = points.astype(np.float64)
    if points.shape[0] <= k:
        return points

    rng = np.random.default_rng(0)
    weights = counts.astype(np.float64)
    chosen = [int(np.argmax(weights))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        spread = weights * nearest
        if spread.sum() <= 0:
            break
        pick = int(rng.choice(points.shape[0], p=spread / spread.sum()))
        chosen.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    centroids = points[chosen]
    if centroids.shape[0] < k:
        centroids = np.concatenate([centroids, np.repeat(centroids[-1:], k - centroids.shape[0], 0)])

    assignment = None
    for _ in range(_LLOYD_MAX_ITERATIONS):
        new_assignment = _nearest_vectors(points, centroids)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        totals = np.bincount(assignment, weights=weights, minlength=k)
        filled = totals > 0
        for column in range(points.shape[1]):
            sums = np.bincount(assignment, weights=weights * points[:, column], minlength=k)
            centroids[filled, column] = sums[filled] / totals[filled]
    return centroids


# ---------------------------------------------------------------------------------------------
# Index assignment


def _nearest_scalars(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Return, for each value, the index of the nearest LUT entry, ties going to the lower index."""
    lut = lut.astype(np.float64)
    order = np.argsort(lut, kind="stable")
    ordered = lut[order]
    midpoints = (ordered[:-1] + ordered[1:]) / 2
    # side="left": a value on a midpoint goes to the lower entry.
    position = np.searchsorted(midpoints, values.astype(np.float64), side="left")
    return order[position]


def _nearest_vectors(points: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Return, for each ``[n, d]`` point, the index of the nearest LUT row (first on ties)."""
    lut = lut.astype(np.float64)
    found = np.empty(points.shape[0], dtype=np.int64)
    for start in range(0, points.shape[0], _DISTANCE_CHUNK):
        chunk = points[start : start + _DISTANCE_CHUNK].astype(np.float64)
        distance = ((chunk[:, None, :] - lut[None, :, :]) ** 2).sum(axis=2)
        found[start : start + _DISTANCE_CHUNK] = np.argmin(distance, axis=1)
    return found


def _nearest(points: np.ndarray, lut: np.ndarray) -> np.ndarray:
    if points.shape[1] == 1:
        return _nearest_scalars(points[:, 0], lut[:, 0])
    return _nearest_vectors(points, lut)


# ---------------------------------------------------------------------------------------------
# One group


def _fit_group(points: np.ndarray, mode: str, nbits: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Fit the LUT of one group and index its points.

    Args:
        points: ``tensor<dtype, [n, d]>``, the group's vectors (d = 1 for scalars).

    Returns:
        ``lut`` ``tensor<dtype, [2**nbits, d]>`` and ``indices`` ``tensor<int64, [n]>``.
    """
    size = 1 << nbits
    lut = np.zeros((size, points.shape[1]), dtype=dtype)
    if points.shape[0] == 0:
        return lut, np.zeros(0, dtype=np.int64)

    if mode == "unique":
        if points.shape[1] == 1:
            distinct, _, inverse = _distinct_scalars(np.ascontiguousarray(points[:, 0]))
            distinct = distinct[:, None]
        else:
            distinct, _, inverse = _distinct_vectors(points)
        lut[: distinct.shape[0]] = distinct
        return lut, inverse

    if mode == "uniform":
        values = points[:, 0].astype(np.float64)
        low, high = values.min(), values.max()
        if high == low:
            lut[:, 0] = points[0, 0]
            return lut, np.zeros(values.size, dtype=np.int64)
        steps = size - 1
        lut[:, 0] = (low + np.arange(size) * ((high - low) / steps)).astype(dtype)
        values -= low
        values /= high - low
        values *= steps
        return lut, np.rint(values, out=values).astype(np.uint8)

    if points.shape[1] == 1:
        distinct, counts, _ = _distinct_scalars(np.ascontiguousarray(points[:, 0]))
        centroids = _kmeans_scalar(distinct.astype(np.float64), counts, size)[:, None]
    else:
        distinct, counts, _ = _distinct_vectors(points)
        centroids = _kmeans_vectors(distinct, counts, size)
    used = centroids.shape[0]
    lut[:used] = centroids.astype(dtype)
    return lut, _nearest(points, lut[:used])


# ---------------------------------------------------------------------------------------------
# The whole tensor


def _check_nbits(nbits, mode: str) -> int | None:
    check_choice(mode, "mode", PALETTIZE_MODES)
    if nbits is None:
        if mode != "unique":
            raise EncodingError(f"nbits is required for mode={mode!r}; expected one of {list(NBITS)}")
        return None
    check_choice(nbits, "nbits", NBITS)
    return int(nbits)


def _group_points(layout: _Layout, vectors: np.ndarray, keep: np.ndarray | None, g: int) -> np.ndarray:
    """Return the kept vectors of group ``g`` in C order, ``[n, cluster_dim]``."""
    group_vectors = layout.group(vectors, g)
    if keep is None:
        return group_vectors.reshape(-1, layout.cluster_dim)
    if layout.cluster_dim == 1:
        # A 1-D selection is much faster than selecting rows of an [..., 1] array.
        return group_vectors[..., 0][layout.group(keep, g)][:, None]
    return group_vectors[layout.group(keep, g)]


def _unique_nbits(layout, vectors, keep, nbits: int | None) -> int:
    """Return the index width for unique mode: ``nbits``, or the smallest width that fits."""
    largest = max(_unique_count(_group_points(layout, vectors, keep, g)) for g in range(layout.groups))
    if nbits is not None:
        if largest > 1 << nbits:
            raise EncodingError(
                f"a group has {largest} distinct values, more than the {1 << nbits} entries of "
                f"nbits={nbits}; use more bits or mode='kmeans'"
            )
        return nbits

    for width in NBITS:
        if largest <= 1 << width:
            return width
    raise EncodingError(
        f"a group has {largest} distinct values, more than the 256 entries of 8-bit palettization; "
        "use mode='kmeans'"
    )


class _Palettized:
    """The result of :func:`_palettize_core`: the LUT and each group's indices."""

    def __init__(self, layout: _Layout, lut: np.ndarray, keep, group_indices: list, extra):
        self.layout = layout
        self.lut = lut
        self.keep = keep
        self.group_indices = group_indices
        self.extra = extra

    def dense_indices(self) -> np.ndarray:
        """Return ``tensor<uint8, indices_shape>``, 0 where no vector is kept."""
        indices = np.zeros(self.layout.indices_shape, dtype=np.uint8)
        for g, found in enumerate(self.group_indices):
            target = self.layout.group(indices, g)
            if self.keep is None:
                target[...] = found.reshape(target.shape)
            else:
                target[self.layout.group(self.keep, g)] = found
        return indices

    def nonzero_indices(self) -> np.ndarray:
        """Return ``tensor<uint8, [count(keep)]>``: the indices of the kept vectors in C order."""
        if self.layout.channel_axis == 0 or self.layout.groups == 1:
            # Groups are consecutive runs of the first axis, so their C orders concatenate.
            return np.concatenate(self.group_indices).astype(np.uint8)
        return self.dense_indices()[self.keep]


def _palettize_core(
    weight: np.ndarray,
    keep_elements: np.ndarray | None,
    nbits,
    mode: str,
    layout: _Layout,
    lut_transform=None,
) -> _Palettized:
    """Palettize ``weight``, fitting each group on the vectors where ``keep_elements`` is set.

    ``lut_transform``, when given, maps the fitted LUT tensor to ``(effective_lut, extra)``, and
    the indices are then reassigned to the nearest entries of the effective LUT. A vector is kept
    when any of its elements is.
    """
    nbits = _check_nbits(nbits, mode)
    if mode == "uniform" and layout.cluster_dim > 1:
        raise EncodingError("mode='uniform' palettizes scalars only; use 'kmeans' or 'unique' with cluster_dim > 1")

    vectors = layout.vectors(weight)
    keep = None
    if keep_elements is not None:
        keep = keep_elements if layout.cluster_dim == 1 else layout.vectors(keep_elements).any(axis=-1)
    if mode == "unique":
        nbits = _unique_nbits(layout, vectors, keep, nbits)

    lut = np.zeros(layout.lut_shape(nbits), dtype=weight.dtype)
    group_indices = []
    for g in range(layout.groups):
        points = _group_points(layout, vectors, keep, g)
        group_lut, found = _fit_group(points, mode, nbits, weight.dtype)
        layout.lut_group(lut, g)[...] = group_lut
        group_indices.append(found.astype(np.uint8))

    extra = None
    if lut_transform is not None:
        lut, extra = lut_transform(lut)
        for g in range(layout.groups):
            points = _group_points(layout, vectors, keep, g)
            group_indices[g] = _nearest(points, layout.lut_group(lut, g)).astype(np.uint8)
    return _Palettized(layout, lut, keep, group_indices, extra)


def palettize_weight(
    weight: np.ndarray,
    nbits: int | None = None,
    *,
    mode: str = "kmeans",
    group_size: int | None = None,
    channel_axis: int = 0,
    cluster_dim: int = 1,
    vector_axis: int | None = None,
    name: str = "weight",
) -> LutParams:
    """Palettize every element of a weight.

    Args:
        weight: ``tensor<fp16 or fp32, shape>``, finite.
        nbits: index width, one of 1, 2, 3, 4, 6, 8, optional for ``unique``.
        mode: ``kmeans``, ``uniform`` or ``unique``.
        group_size: channels per LUT along ``channel_axis``, or None for one LUT per tensor.
        channel_axis: the output-channel axis.
        cluster_dim: elements per LUT entry (vector palettization when > 1).
        vector_axis: the axis of the vectors, ``channel_axis`` by default.
        name: tensor name for error messages.

    Returns:
        :class:`LutParams`: ``indices`` ``tensor<uint{nbits}, indices_shape>`` (the weight shape
        with ``vector_axis`` divided by ``cluster_dim``), ``lut`` ``tensor<weight dtype, [G..,
        2**nbits, cluster_dim]>``, and ``vector_axis`` when ``cluster_dim > 1``.

    Raises:
        EncodingError: an argument is invalid, or ``group_size`` or ``cluster_dim`` does not
            divide its axis. Nothing is computed then.
    """
    weight = as_weight(weight, name)
    layout = _Layout(weight.shape, group_size, channel_axis, cluster_dim, vector_axis)
    result = _palettize_core(weight, None, nbits, mode, layout)
    return LutParams(indices=result.dense_indices(), lut=result.lut, vector_axis=_vector_axis(layout))


def palettize_nonzero(
    weight: np.ndarray,
    nbits: int | None = None,
    *,
    mode: str = "kmeans",
    group_size: int | None = None,
    channel_axis: int = 0,
    cluster_dim: int = 1,
    vector_axis: int | None = None,
    name: str = "weight",
) -> LutToSparseParams:
    """Palettize only the nonzero values of a pruned weight, leaving the zeros in the mask.

    The mask is ``weight != 0`` (-0.0 counts as zero). With ``cluster_dim > 1`` a vector is kept
    when any of its elements is nonzero, and decodes whole from the LUT. The decoded mask is
    ``indices_mask`` repeated ``cluster_dim`` times along ``vector_axis``.

    Args:
        weight, nbits, mode, group_size, channel_axis, cluster_dim, vector_axis, name: as in
            :func:`palettize_weight`.

    Returns:
        :class:`LutToSparseParams` with ``indices_mask`` ``tensor<uint1, indices_shape>`` and
        ``indices_nonzero_data`` ``tensor<uint{nbits}, [count(indices_mask)]>``.
    """
    weight = as_weight(weight, name)
    layout = _Layout(weight.shape, group_size, channel_axis, cluster_dim, vector_axis)
    result = _palettize_core(weight, nonzero(weight), nbits, mode, layout)
    return LutToSparseParams(
        indices_mask=result.keep.view(np.uint8),
        indices_nonzero_data=result.nonzero_indices(),
        lut=result.lut,
        vector_axis=_vector_axis(layout),
    )


def palettize_quantized_lut(
    weight: np.ndarray,
    nbits: int | None = None,
    *,
    lut_dtype: str = "int8",
    lut_mode: str = "symmetric",
    nonzero_only: bool = False,
    mode: str = "kmeans",
    group_size: int | None = None,
    channel_axis: int = 0,
    cluster_dim: int = 1,
    vector_axis: int | None = None,
    name: str = "weight",
) -> QuantizedLutParams:
    """Palettize a weight and quantize its LUT per tensor, reindexing to the quantized entries.

    The LUT is fitted as in :func:`palettize_weight` (or :func:`palettize_nonzero` when
    ``nonzero_only``), quantized with one scale for the whole LUT tensor, and every value then
    takes the index of the nearest entry of the *decoded* quantized LUT.

    Args:
        lut_dtype: int8, uint8, int4 or uint4.
        lut_mode: ``symmetric`` or ``affine``.
        nonzero_only: palettize only the nonzero values (``constexpr_lut_to_sparse``).
        weight, nbits, mode, group_size, channel_axis, cluster_dim, vector_axis, name: as in
            :func:`palettize_weight`.

    Returns:
        :class:`QuantizedLutParams`. ``lut_quant.scale`` has the LUT's rank, all ones, in the
        weight's dtype, and ``palettized.lut`` holds the decoded quantized LUT.
    """
    weight = as_weight(weight, name)
    layout = _Layout(weight.shape, group_size, channel_axis, cluster_dim, vector_axis)

    def quantize_lut(lut):
        params = quantize_weight(lut, lut_dtype, mode=lut_mode, granularity="per_tensor", name=f"{name} lut")
        return dequantize(params.data, params.scale, params.offset), params

    keep_elements = nonzero(weight) if nonzero_only else None
    result = _palettize_core(weight, keep_elements, nbits, mode, layout, lut_transform=quantize_lut)
    if nonzero_only:
        palettized = LutToSparseParams(
            indices_mask=result.keep.view(np.uint8),
            indices_nonzero_data=result.nonzero_indices(),
            lut=result.lut,
            vector_axis=_vector_axis(layout),
        )
    else:
        palettized = LutParams(indices=result.dense_indices(), lut=result.lut, vector_axis=_vector_axis(layout))
    return QuantizedLutParams(lut_quant=result.extra, palettized=palettized)


def palettize_scaled(
    weight: np.ndarray,
    nbits: int | None = None,
    *,
    mode: str = "kmeans",
    group_size: int | None = None,
    channel_axis: int = 0,
    cluster_dim: int = 1,
    vector_axis: int | None = None,
    name: str = "weight",
) -> ScaledLutParams:
    """Palettize a weight divided by one scale per output channel, then multiplied back.

    Each channel along ``channel_axis`` is divided by its largest magnitude (a zero channel by 1)
    before palettization, so channels of different ranges share one LUT well. Core ML's
    ``enable_per_channel_scale`` takes the maximum over the output-channel axis instead, one
    scale per input column. All checks run before anything is computed, and the input is never
    written.

    Args:
        weight, nbits, mode, group_size, channel_axis, cluster_dim, vector_axis, name: as in
            :func:`palettize_weight`.

    Returns:
        :class:`ScaledLutParams` with ``scale`` ``tensor<weight dtype, [1..Cout..1]>``.
    """
    weight = as_weight(weight, name)
    layout = _Layout(weight.shape, group_size, channel_axis, cluster_dim, vector_axis)
    _check_nbits(nbits, mode)

    others = tuple(axis for axis in range(weight.ndim) if axis != layout.channel_axis)
    largest = np.abs(weight.astype(np.float64)).max(axis=others, keepdims=True)
    largest[largest == 0] = 1.0
    scale = _store_scale(largest, weight.dtype, f"{name} scale")
    normalized = (weight.astype(np.float64) / scale.astype(np.float64)).astype(weight.dtype)

    result = _palettize_core(normalized, None, nbits, mode, layout)
    palettized = LutParams(indices=result.dense_indices(), lut=result.lut, vector_axis=_vector_axis(layout))
    return ScaledLutParams(palettized=palettized, scale=scale)


def _vector_axis(layout: _Layout) -> int | None:
    return layout.vector_axis if layout.cluster_dim > 1 else None
