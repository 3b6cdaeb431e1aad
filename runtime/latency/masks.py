"""Mask statistics that a zero-skipping unit would see, exact or from a density model.

A sparse weight's ``mask`` is True where a value is stored (non-zero) and False where the weight
is zero, as in ``constexpr_sparse_to_dense``. Hardware that skips zeros does so in units: aligned
groups of ``g`` weights along one axis, runs of zeros along the reduction axis, or n:m groups.
This module counts those units exactly on a real mask (:func:`mask_stats`) and gives their
expected values when only a density and a pruning pattern are known (:func:`random_mask_stats`,
:func:`block_mask_stats`, :func:`nm_mask_stats`).

Conventions shared by every function:

* The *input axis* is the weight axis reduced by the op (``Cin/groups`` of a conv weight
  ``[Cout, Cin/groups, *K]``, ``Din`` of a linear weight ``[Dout, Din]``); the *output axis* is the
  one that indexes output channels. Rows are the 1-D lines along an axis at one fixed index on
  every other axis.
* Aligned groups of ``g`` start at multiples of ``g`` along the axis. When the axis length is not
  a multiple of ``g``, the trailing partial group is padded with zeros, the way coremltools pads
  n:m groups, so it counts as all-zero when its real elements are.
* Zero runs never cross a row boundary.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MaskError, PatternError, ShapeError

__all__ = [
    "GROUP_SIZES",
    "MaskStats",
    "aligned_zero_group_fraction",
    "zero_run_lengths",
    "mask_stats",
    "random_mask_stats",
    "block_mask_stats",
    "nm_mask_stats",
]

# Skip-unit sizes that the statistics are tabulated for.
GROUP_SIZES: tuple[int, ...] = (2, 4, 8, 16)


@dataclass(frozen=True)
class MaskStats:
    """Zero structure of one sparse weight, as a skipping unit would see it.

    Each tuple has one entry per size in :data:`GROUP_SIZES`.

    Attributes:
        elements: number of weight elements N.
        nonzeros: number of mask bits set (stored values).
        zero_groups_input: fraction of aligned groups of g along the input axis that are all zero.
        zero_groups_output: the same along the output axis.
        zero_run_fraction: fraction of all N elements that lie in a run of at least g zeros along
            the input axis.
        mean_zero_run: mean length of the maximal zero runs along the input axis (0 without zeros).
        nm_min_zeros: for m in GROUP_SIZES, the smallest number of zeros in any aligned group of m
            along the input axis, so the weight is n:m sparse for every n up to this value.
        estimated: True when the statistics come from a density model instead of a real mask.
    """

    elements: int
    nonzeros: int
    zero_groups_input: tuple[float, ...]
    zero_groups_output: tuple[float, ...]
    zero_run_fraction: tuple[float, ...]
    mean_zero_run: float
    nm_min_zeros: tuple[int, ...]
    estimated: bool = False

    @property
    def sparsity(self) -> float:
        """Fraction of zero elements."""
        return 1.0 - self.nonzeros / self.elements if self.elements else 0.0

    def zero_group_fraction(self, g: int, axis: str) -> float:
        """Return the fraction of all-zero aligned groups of ``g`` along ``"input"`` or ``"output"``."""
        index = _group_index(g)
        if axis == "input":
            return self.zero_groups_input[index]
        if axis == "output":
            return self.zero_groups_output[index]
        raise ValueError(f"axis={axis!r}; expected 'input' or 'output'")

    def nm_eligible(self, n: int, m: int) -> bool:
        """Return True when every aligned group of ``m`` along the input axis has ``n`` zeros or more."""
        return self.nm_min_zeros[_group_index(m)] >= n

    def to_dict(self) -> dict:
        """Return a JSON-ready dict; :meth:`from_dict` reverses it."""
        return {
            "elements": self.elements,
            "nonzeros": self.nonzeros,
            "zero_groups_input": [_round(x) for x in self.zero_groups_input],
            "zero_groups_output": [_round(x) for x in self.zero_groups_output],
            "zero_run_fraction": [_round(x) for x in self.zero_run_fraction],
            "mean_zero_run": _round(self.mean_zero_run),
            "nm_min_zeros": list(self.nm_min_zeros),
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, data: dict) -> MaskStats:
        """Build from the dict written by :meth:`to_dict`."""
        return cls(
            elements=int(data["elements"]),
            nonzeros=int(data["nonzeros"]),
            zero_groups_input=tuple(float(x) for x in data["zero_groups_input"]),
            zero_groups_output=tuple(float(x) for x in data["zero_groups_output"]),
            zero_run_fraction=tuple(float(x) for x in data["zero_run_fraction"]),
            mean_zero_run=float(data["mean_zero_run"]),
            nm_min_zeros=tuple(int(x) for x in data["nm_min_zeros"]),
            estimated=bool(data.get("estimated", False)),
        )


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _group_index(g: int) -> int:
    try:
        return GROUP_SIZES.index(g)
    except ValueError:
        raise ValueError(f"group size {g!r} is not tabulated; expected one of {GROUP_SIZES}") from None


def _check_axes(shape: Sequence[int], input_axis: int, output_axis: int, name: str) -> tuple[int, int]:
    rank = len(shape)
    if rank < 1:
        raise ShapeError(f"{name}: mask has rank 0; expected a weight of rank 1 or more")
    axes = []
    for label, axis in (("input_axis", input_axis), ("output_axis", output_axis)):
        if not -rank <= axis < rank:
            raise ShapeError(f"{name}: {label}={axis} is out of range for a weight of rank {rank}")
        axes.append(axis % rank)
    return axes[0], axes[1]


def _rows(zeros: np.ndarray, axis: int) -> np.ndarray:
    """Return ``tensor<bool, [R, L]>``: the lines of ``zeros`` along ``axis``."""
    moved = np.moveaxis(zeros, axis, -1)
    return moved.reshape(-1, zeros.shape[axis])


def _padded_groups(zeros: np.ndarray, g: int, axis: int) -> np.ndarray:
    """Return ``tensor<bool, [R, L', g]>`` of aligned groups, the tail padded with zeros (True)."""
    rows = _rows(zeros, axis)
    length = rows.shape[1]
    padded_length = -(-length // g) * g
    if padded_length != length:
        pad = np.ones((rows.shape[0], padded_length - length), dtype=bool)
        rows = np.concatenate([rows, pad], axis=1)
    return rows.reshape(rows.shape[0], -1, g)


def aligned_zero_group_fraction(mask: np.ndarray, g: int, axis: int) -> float:
    """Return the fraction of aligned groups of ``g`` along ``axis`` in which every weight is zero.

    Args:
        mask: ``tensor<bool, [*S]>``, True where a value is stored.
        g: group size, 1 or more.
        axis: the axis the groups run along.

    Example: the mask row ``[0, 0, 1, 0, 0]`` (axis length 5) has groups of 2 ``[0,0] [1,0] [0,pad]``,
    so the fraction is 2/3.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return 0.0
    groups = _padded_groups(~mask, g, axis)
    return float(groups.all(axis=2).mean())


def zero_run_lengths(mask: np.ndarray, axis: int) -> np.ndarray:
    """Return the histogram of maximal zero-run lengths along ``axis``.

    Args:
        mask: ``tensor<bool, [*S]>``, True where a value is stored.
        axis: the axis the runs run along (the reduction axis of the op).

    Returns:
        ``tensor<int64, [L + 1]>`` where entry k counts the runs of exactly k zeros and L is the
        axis length. Entry 0 is always 0.

    Example: the row ``[0, 0, 1, 0]`` has one run of 2 and one run of 1, so the result is
    ``[0, 1, 1, 0, 0]``.
    """
    mask = np.asarray(mask, dtype=bool)
    length = mask.shape[axis] if mask.ndim else 0
    if mask.size == 0:
        return np.zeros(length + 1, dtype=np.int64)

    rows = _rows(~mask, axis).astype(np.int8)

    # A run starts where a zero follows a non-zero (or the row start) and ends where it stops.
    edges = np.diff(np.pad(rows, ((0, 0), (1, 1))), axis=1)
    starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)
    lengths = ends[1] - starts[1]
    return np.bincount(lengths, minlength=length + 1).astype(np.int64)


def _nm_min_zeros(zeros: np.ndarray, axis: int) -> tuple[int, ...]:
    counts = []
    for m in GROUP_SIZES:
        groups = _padded_groups(zeros, m, axis)
        counts.append(int(groups.sum(axis=2).min()) if groups.size else 0)
    return tuple(counts)


def _run_summary(histogram: np.ndarray, elements: int) -> tuple[tuple[float, ...], float]:
    lengths = np.arange(histogram.size, dtype=np.float64)
    zeros_in_runs = histogram * lengths
    runs = float(histogram.sum())
    mean = float(zeros_in_runs.sum() / runs) if runs else 0.0
    fractions = tuple(float(zeros_in_runs[g:].sum() / elements) if elements else 0.0 for g in GROUP_SIZES)
    return fractions, mean


def mask_stats(mask: np.ndarray, *, input_axis: int = 1, output_axis: int = 0, name: str = "mask") -> MaskStats:
    """Count the skip units of a real mask.

    Args:
        mask: ``tensor<bool or uint, [*S]>`` in the weight's shape, non-zero where a value is stored.
            Integer masks must hold only 0 and 1.
        input_axis: the reduction axis of the weight (1 for linear and conv, 0 for conv_transpose).
        output_axis: the output-channel axis (0 for linear and conv, 1 for conv_transpose).
        name: tensor name used in error messages.

    Raises:
        MaskError: an integer mask holds values other than 0 and 1.
        ShapeError: the mask has rank 0 or an axis is out of range.
    """
    array = np.asarray(mask)
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.integer):
            raise MaskError(f"{name}: mask dtype is {array.dtype}; expected bool or an integer 0/1 mask")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise MaskError(
                f"{name}: mask values span [{array.min()}, {array.max()}]; expected only 0 and 1"
            )
        array = array.astype(bool)
    input_axis, output_axis = _check_axes(array.shape, input_axis, output_axis, name)

    elements = int(array.size)
    zeros = ~array
    histogram = zero_run_lengths(array, input_axis)
    run_fraction, mean_run = _run_summary(histogram, elements)
    return MaskStats(
        elements=elements,
        nonzeros=int(np.count_nonzero(array)),
        zero_groups_input=tuple(aligned_zero_group_fraction(array, g, input_axis) for g in GROUP_SIZES),
        zero_groups_output=tuple(aligned_zero_group_fraction(array, g, output_axis) for g in GROUP_SIZES),
        zero_run_fraction=run_fraction,
        mean_zero_run=mean_run,
        nm_min_zeros=_nm_min_zeros(zeros, input_axis) if elements else (0,) * len(GROUP_SIZES),
    )


# --- Density models -------------------------------------------------------------------------------


def _check_sparsity(sparsity: float, name: str) -> float:
    sparsity = float(sparsity)
    if not 0.0 <= sparsity <= 1.0 or math.isnan(sparsity):
        raise PatternError(f"{name}: sparsity={sparsity!r}; expected a fraction in [0, 1]")
    return sparsity


def _all_zero_probability(zeros: int, total: int, g: int) -> float:
    """Hypergeometric chance that g distinct positions drawn from ``total`` are all among ``zeros``."""
    if g > total:
        return 0.0
    probability = 1.0
    for i in range(g):
        probability *= max(zeros - i, 0) / (total - i)
    return probability


def _group_fraction_random(length: int, zero_probability: float, g: int) -> float:
    """Expected all-zero fraction of aligned groups of g on rows of ``length`` i.i.d. elements."""
    full, tail = divmod(length, g)
    groups = full + (1 if tail else 0)
    total = full * zero_probability**g + (zero_probability**tail if tail else 0.0)
    return total / groups


def _expected_run_histogram(length: int, p: float) -> np.ndarray:
    """Expected counts of maximal zero runs of each length on a row of i.i.d. zeros with chance p.

    A run of exactly k < L zeros can start at either row end (one bounding non-zero) or at one of
    the L - k - 1 inner positions (two bounding non-zeros), so its expected count is
    p^k (2 (1-p) + (L-k-1) (1-p)^2); a run of L zeros fills the row with chance p^L.
    """
    k = np.arange(length + 1, dtype=np.float64)
    q = 1.0 - p
    with np.errstate(under="ignore"):
        counts = p**k * (2.0 * q + (length - k - 1.0) * q * q)
    counts[0] = 0.0
    counts[length] = p**length
    return counts


def _stats_from_models(
    shape: Sequence[int],
    nonzeros: int,
    input_axis: int,
    output_axis: int,
    groups_input: Sequence[float],
    groups_output: Sequence[float],
    run_histogram_per_row: np.ndarray,
    nm_min_zeros: Sequence[int],
) -> MaskStats:
    elements = math.prod(shape)
    rows = elements // shape[input_axis] if shape[input_axis] else 0
    run_fraction, mean_run = _run_summary(run_histogram_per_row * rows, elements)
    return MaskStats(
        elements=elements,
        nonzeros=nonzeros,
        zero_groups_input=tuple(float(x) for x in groups_input),
        zero_groups_output=tuple(float(x) for x in groups_output),
        zero_run_fraction=run_fraction,
        mean_zero_run=mean_run,
        nm_min_zeros=tuple(int(x) for x in nm_min_zeros),
        estimated=True,
    )


def _median_min_zeros_random(rows: int, length: int, p: float, m: int) -> int:
    """Largest n such that every aligned group of m has n zeros or more with chance at least 1/2."""
    groups = rows * -(-length // m)
    best = 0
    for n in range(1, m + 1):
        # P(one group has fewer than n zeros), binomial(m, p); padded tails are ignored.
        below = sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(n))
        if (1.0 - below) ** groups >= 0.5:
            best = n
        else:
            break
    return best


def random_mask_stats(
    shape: Sequence[int], sparsity: float, *, input_axis: int = 1, output_axis: int = 0
) -> MaskStats:
    """Expected statistics of unstructured magnitude pruning, modelled as zeros at random positions.

    Magnitude pruning zeroes the smallest weights. With weights that are i.i.d. across positions,
    the zeros fall on a uniformly random subset of ``round(sparsity * N)`` positions. The chance
    that g given positions are all zero is then hypergeometric (about ``sparsity**g``). Zero runs
    use the Bernoulli approximation of that model. The n:m entry is the median of the minimum over
    all groups, which is 0 for any large tensor that is not fully zero.

    Args:
        shape: weight shape.
        sparsity: fraction of zeros in [0, 1].
        input_axis: reduction axis of the weight.
        output_axis: output-channel axis of the weight.
    """
    shape = tuple(int(d) for d in shape)
    input_axis, output_axis = _check_axes(shape, input_axis, output_axis, "random mask")
    sparsity = _check_sparsity(sparsity, "random mask")
    elements = math.prod(shape)
    zeros = round(sparsity * elements)
    p = zeros / elements if elements else 0.0

    def group_fraction(axis: int, g: int) -> float:
        length = shape[axis]
        full, tail = divmod(length, g)
        groups = full + (1 if tail else 0)
        if not groups:
            return 0.0
        value = full * _all_zero_probability(zeros, elements, g)
        if tail:
            value += _all_zero_probability(zeros, elements, tail)
        return value / groups

    length = shape[input_axis]
    rows = elements // length if length else 0
    return _stats_from_models(
        shape,
        elements - zeros,
        input_axis,
        output_axis,
        [group_fraction(input_axis, g) for g in GROUP_SIZES],
        [group_fraction(output_axis, g) for g in GROUP_SIZES],
        _expected_run_histogram(length, p),
        [_median_min_zeros_random(rows, length, p, m) for m in GROUP_SIZES],
    )


def block_mask_stats(
    shape: Sequence[int],
    sparsity: float,
    block_size: int,
    *,
    block_axis: int = 0,
    input_axis: int = 1,
    output_axis: int = 0,
) -> MaskStats:
    """Expected statistics of block pruning: blocks of ``block_size`` along ``block_axis``, zeroed whole.

    coremltools scores each block by its L2 norm and zeroes the lowest-scoring fraction. As for
    :func:`random_mask_stats`, the zeroed blocks are modelled as a uniformly random subset, so each
    block is zero independently with chance ``sparsity``. A group of g along the block axis is
    all zero when every block it touches is, and a group along any other axis spans g independent
    blocks. The axis length is assumed to be a multiple of ``block_size``.

    Raises:
        PatternError: the block size does not divide the axis, or sparsity is outside [0, 1].
    """
    shape = tuple(int(d) for d in shape)
    input_axis, output_axis = _check_axes(shape, input_axis, output_axis, "block mask")
    block_axis = _check_axes(shape, block_axis, output_axis, "block mask")[0]
    p = _check_sparsity(sparsity, "block mask")
    if block_size < 1 or shape[block_axis] % block_size:
        raise PatternError(
            f"block mask: block_size={block_size} does not divide axis {block_axis} of length "
            f"{shape[block_axis]}"
        )
    elements = math.prod(shape)

    def group_fraction(axis: int, g: int) -> float:
        length = shape[axis]
        if axis != block_axis:
            return _group_fraction_random(length, p, g)
        # Blocks touched by each aligned group; the padded tail touches only real blocks.
        starts = np.arange(0, length, g)
        touched = (np.minimum(starts + g, length) - 1) // block_size - starts // block_size + 1
        return float(np.mean(p**touched))

    length = shape[input_axis]
    if input_axis == block_axis:
        # Runs are made of whole blocks: a Bernoulli run histogram over blocks, lengths scaled up.
        block_runs = _expected_run_histogram(length // block_size, p)
        histogram = np.zeros(length + 1)
        histogram[np.arange(block_runs.size) * block_size] = block_runs
        histogram[0] = 0.0
        nm = [0] * len(GROUP_SIZES)
    else:
        histogram = _expected_run_histogram(length, p)
        rows = elements // length
        nm = [_median_min_zeros_random(rows, length, p, m) for m in GROUP_SIZES]

    return _stats_from_models(
        shape,
        elements - round(p * (elements // block_size)) * block_size,
        input_axis,
        output_axis,
        [group_fraction(input_axis, g) for g in GROUP_SIZES],
        [group_fraction(output_axis, g) for g in GROUP_SIZES],
        histogram,
        nm,
    )


def nm_mask_stats(
    shape: Sequence[int],
    n: int,
    m: int,
    *,
    nm_axis: int = 1,
    input_axis: int = 1,
    output_axis: int = 0,
) -> MaskStats:
    """Expected statistics of n:m pruning: ``n`` zeros in every aligned group of ``m`` along ``nm_axis``.

    The n pruned positions in each group are modelled as a uniformly random choice among the
    C(m, n) placements, independent across groups. The axis length is assumed to be a multiple of m.

    Raises:
        PatternError: ``n`` is outside [0, m], or m does not divide the axis.
    """
    shape = tuple(int(d) for d in shape)
    input_axis, output_axis = _check_axes(shape, input_axis, output_axis, "n:m mask")
    nm_axis = _check_axes(shape, nm_axis, output_axis, "n:m mask")[0]
    if not (m >= 1 and 0 <= n <= m):
        raise PatternError(f"n:m mask: n={n}, m={m}; expected 0 <= n <= m and m >= 1")
    if shape[nm_axis] % m:
        raise PatternError(f"n:m mask: m={m} does not divide axis {nm_axis} of length {shape[nm_axis]}")
    elements = math.prod(shape)
    p = n / m

    def group_fraction(axis: int, g: int) -> float:
        length = shape[axis]
        if axis != nm_axis:
            return _group_fraction_random(length, p, g)
        if m % g == 0:
            # g aligned positions inside one m-group are all pruned: C(m-g, n-g) / C(m, n).
            return math.comb(m - g, n - g) / math.comb(m, n) if g <= n else 0.0
        if g % m == 0:
            return 1.0 if n == m else 0.0
        # NOTE: groups that straddle m-groups unevenly are approximated as independent elements.
        return _group_fraction_random(length, p, g)

    length = shape[input_axis]
    rows = elements // length
    if input_axis == nm_axis:
        histogram = _nm_run_histogram(length, n, m)
        nm = [_nm_min_zeros_on_axis(n, m, size) for size in GROUP_SIZES]
    else:
        histogram = _expected_run_histogram(length, p)
        nm = [_median_min_zeros_random(rows, length, p, size) for size in GROUP_SIZES]

    return _stats_from_models(
        shape,
        elements - (elements // m) * n,
        input_axis,
        output_axis,
        [group_fraction(input_axis, g) for g in GROUP_SIZES],
        [group_fraction(output_axis, g) for g in GROUP_SIZES],
        histogram,
        nm,
    )


def _nm_min_zeros_on_axis(n: int, m: int, size: int) -> int:
    """Guaranteed zeros in an aligned group of ``size`` on an axis pruned n:m."""
    if size % m == 0:
        return n * (size // m)
    if m % size == 0:
        # A sub-group of an m-group holds at least n - (m - size) zeros.
        return max(0, n - (m - size))
    return 0


def _nm_run_histogram(length: int, n: int, m: int) -> np.ndarray:
    """Expected zero-run histogram of one row pruned n:m with uniformly random placements.

    With n < m every group keeps a weight, so a run either lies inside one group or joins the
    trailing zeros of one group to the leading zeros of the next. Placements are independent
    across groups, so the expected histogram is ``groups`` times the inner-run histogram of one
    group plus the distribution of (trailing + leading) at each inner boundary, and the leading
    and trailing runs at the two row ends.
    """
    histogram = np.zeros(length + 1)
    groups = length // m
    if n == 0 or groups == 0:
        return histogram
    if n == m:
        histogram[length] = 1.0
        return histogram

    placements = []
    for kept in _combinations(m, m - n):
        zeros = np.ones(m, dtype=bool)
        zeros[list(kept)] = False
        placements.append(zeros)
    zeros = np.array(placements)
    weight = 1.0 / len(placements)
    lead = np.argmin(zeros, axis=1)
    trail = np.argmin(zeros[:, ::-1], axis=1)

    inner = np.zeros(m + 1)
    for row, first, last in zip(zeros, lead, trail):
        inner += _padded(zero_run_lengths(~row[first : m - last].reshape(1, -1), 1), m + 1)
    histogram[: m + 1] += inner * weight * groups

    lead_distribution = np.bincount(lead, minlength=m + 1) * weight
    trail_distribution = np.bincount(trail, minlength=m + 1) * weight
    joined = np.convolve(trail_distribution, lead_distribution)
    histogram[: joined.size] += joined * (groups - 1)
    histogram[: m + 1] += lead_distribution + trail_distribution
    histogram[0] = 0.0
    return histogram


def _padded(values: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size)
    out[: values.size] = values
    return out


def _combinations(m: int, k: int) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(m), k))
