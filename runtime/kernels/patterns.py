"""Structured sparsity patterns of a weight mask: n:m groups and blocks.

Both patterns follow ``coremltools.optimize.coreml.OpMagnitudePrunerConfig``:

- ``NM(n, m, axis)`` is its ``n_m_ratio=(n, m)``: in every run of ``m`` consecutive elements
  along ``axis`` (at fixed indices on the other axes), at least ``n`` elements are zero. When the
  axis length is not a multiple of ``m``, the trailing run is shorter and may hold at most
  ``m - n`` nonzeros, as if it were zero-padded to ``m``.
- ``Blocks(size, axis)`` is its ``block_size`` with ``dim=axis``: runs of ``size`` consecutive
  elements along ``axis`` are either all zero or all nonzero. A trailing run shorter than
  ``size`` follows the same rule over its real elements.

A checker never repairs a mask: it raises :class:`PatternError` naming the first run (in C
order of the run's start index) that breaks the pattern.

Example: the mask row ``[1, 1, 0, 0, 0, 1, 1, 0]`` has the pattern ``NM(2, 4, axis=1)``, and
the row ``[1, 1, 1, 0]`` does not, because its 2:4 group has 3 nonzeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PatternError, ShapeError

__all__ = ["NM", "Blocks", "Pattern", "check_pattern", "holds", "detect_pattern"]


@dataclass(frozen=True)
class NM:
    """n:m sparsity: at least ``n`` zeros in every ``m`` consecutive elements along ``axis``."""

    n: int
    m: int
    axis: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.m, int) and isinstance(self.n, int)) or self.m < 1 or not 0 <= self.n <= self.m:
            raise PatternError(f"n:m pattern ({self.n}, {self.m}) is invalid; expected integers with 0 <= n <= m, m >= 1")

    @property
    def keep(self) -> int:
        """Largest number of nonzeros in one group of ``m``."""
        return self.m - self.n

    def __str__(self) -> str:
        return f"{self.n}:{self.m} sparsity along axis {self.axis}"


@dataclass(frozen=True)
class Blocks:
    """Block sparsity: runs of ``size`` elements along ``axis`` are all zero or all nonzero."""

    size: int
    axis: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise PatternError(f"block size {self.size!r} is invalid; expected an integer >= 1")

    def __str__(self) -> str:
        return f"block sparsity with blocks of {self.size} along axis {self.axis}"


Pattern = NM | Blocks


def _runs(mask: np.ndarray, axis: int, length: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Count nonzeros and real elements in each run of ``length`` along ``axis``.

    Returns:
        ``(counts, sizes)``: ``tensor<int64, [*other_dims, n_runs]>`` with the axis moved last,
        and ``tensor<int64, [n_runs]>`` with each run's real length.
    """
    if not -mask.ndim <= axis < mask.ndim:
        raise ShapeError(f"{name}: pattern axis {axis} is out of range for a mask of rank {mask.ndim}")
    moved = np.moveaxis(mask.astype(bool, copy=False), axis, -1)
    size = moved.shape[-1]
    n_runs = -(-size // length)
    padded = np.zeros(moved.shape[:-1] + (n_runs * length,), dtype=bool)
    padded[..., :size] = moved
    counts = padded.reshape(moved.shape[:-1] + (n_runs, length)).sum(axis=-1, dtype=np.int64)
    sizes = np.minimum(length, size - np.arange(n_runs) * length)
    return counts, sizes


def _first_violation(
    bad: np.ndarray, mask_shape: tuple[int, ...], axis: int, length: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the first violating run, as its index in ``bad`` and its start in mask coordinates."""
    axis = axis % len(mask_shape)
    runs = np.argwhere(bad)
    starts = np.insert(runs[:, :-1], axis, runs[:, -1] * length, axis=1)
    first = int(np.argmin(np.ravel_multi_index(starts.T, mask_shape)))
    return tuple(int(i) for i in runs[first]), tuple(int(i) for i in starts[first])


def check_pattern(mask: np.ndarray, pattern: Pattern, name: str = "weight") -> None:
    """Raise :class:`PatternError` unless ``mask`` has ``pattern``.

    Args:
        mask: ``tensor<bool or uint8, [*shape]>``, nonzero where the weight is kept.
        pattern: the declared pattern.
        name: weight name for error messages.

    Raises:
        PatternError: a run breaks the pattern; the message names its start index.
        ShapeError: the pattern axis does not exist in the mask.
    """
    mask = np.asarray(mask)
    if isinstance(pattern, NM):
        counts, _ = _runs(mask, pattern.axis, pattern.m, name)
        bad = counts > pattern.keep
        if bad.any():
            moved, start = _first_violation(bad, mask.shape, pattern.axis, pattern.m)
            raise PatternError(
                f"{name}: the group of {pattern.m} starting at index {start} along axis {pattern.axis} has "
                f"{int(counts[moved])} nonzero values; {pattern} allows at most {pattern.keep}"
            )
        return
    if isinstance(pattern, Blocks):
        counts, sizes = _runs(mask, pattern.axis, pattern.size, name)
        bad = (counts != 0) & (counts != sizes)
        if bad.any():
            moved, start = _first_violation(bad, mask.shape, pattern.axis, pattern.size)
            raise PatternError(
                f"{name}: the block of {int(sizes[moved[-1]])} starting at index {start} along axis "
                f"{pattern.axis} has {int(counts[moved])} nonzero values; {pattern} requires 0 or "
                f"{int(sizes[moved[-1]])}"
            )
        return
    raise TypeError(f"pattern must be NM or Blocks, not {type(pattern).__name__}")


def holds(mask: np.ndarray, pattern: Pattern) -> bool:
    """Return True when ``mask`` has ``pattern`` (the non-raising form of :func:`check_pattern`)."""
    try:
        check_pattern(mask, pattern)
    except PatternError:
        return False
    return True


def detect_pattern(
    mask: np.ndarray,
    *,
    block_sizes: tuple[int, ...] = (16, 8, 4, 2),
    n_m_ratios: tuple[tuple[int, int], ...] = ((2, 4), (1, 4), (3, 4), (4, 8)),
    axes: tuple[int, ...] = (0, 1),
) -> Pattern | None:
    """Return the most useful structured pattern that ``mask`` has, or None.

    Blocks come first, largest size first, because the block kernels skip whole blocks. n:m
    patterns come next; a ratio that a mask of all zeros satisfies is still reported.
    Masks of rank below 2 have no pattern.

    Args:
        mask: ``tensor<bool or uint8, [*shape]>``.
        block_sizes: block sizes to try, in order of preference.
        n_m_ratios: ``(n, m)`` ratios to try, in order of preference.
        axes: axes to try for every candidate.
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim < 2 or mask.size == 0:
        return None
    for size in block_sizes:
        for axis in axes:
            if size <= mask.shape[axis] and holds(mask, Blocks(size, axis)):
                return Blocks(size, axis)
    for n, m in n_m_ratios:
        for axis in axes:
            if m <= mask.shape[axis] and holds(mask, NM(n, m, axis)):
                return NM(n, m, axis)
    return None
