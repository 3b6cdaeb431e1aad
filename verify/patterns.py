"""Sparsity patterns of stored masks, and the ``--expect`` language that states required ones.

:func:`detect_pattern` reads a mask (True where a weight is kept) and returns a
:class:`MaskPattern`:

- ``block``: the largest block size ``b`` in 2, 4, 8, 16, ... (at most the axis length), and
  its axis, such that every run of ``b`` consecutive elements along the axis is all zero or all
  kept. A trailing run shorter than ``b`` follows the same rule over its real elements.
- ``n_m``: among ``m`` in 2, 4, 8, 16 and every axis, ``n`` is the smallest number of zeros in
  any run of ``m`` consecutive elements (a trailing run counts as padded with zeros, as
  coremltools pads it). The reported ``n:m`` is the one with the largest guaranteed sparsity
  ``n/m``, the smallest ``m`` among equals, then the lowest axis.
- ``kind``: ``empty`` (nothing kept), ``dense`` (everything kept), ``block`` when a block size
  was found, ``n:m`` when the guaranteed zeros account for at least 90% of the zeros (``n/m >=
  0.9 * sparsity``), else ``unstructured``. The 90% rule exists because every random mask has
  some floor. A 50% unstructured mask of a few thousand elements often has at least 4 zeros in
  every run of 16 (4:16), and no kernel can use that. An n:m pruned mask
  has exactly ``n/m`` sparsity, slightly more where weights were already zero, and less when
  a zero-padded trailing run holds fewer than ``n`` real zeros.

:func:`parse_expectations` reads comma-separated expectations and :func:`check_expectations`
tests a mask against them:

====================  ====================================================================
``2:4``               at least 2 zeros in every run of 4 along some axis
``2:4@axis1``         the same along axis 1 (negative axes count from the end)
``block4``            runs of 4 are all zero or all kept along some axis
``block4@axis0``      the same along axis 0
``sparsity>=0.5``     at least half of the mask is zero (also ``>``, ``<=``, ``<``)
====================  ====================================================================

Example: ``parse_expectations("2:4@axis1, sparsity>=0.5")`` gives two expectations; a 2:4
mask along axis 1 meets both.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sparseblob.runtime.errors import OptionError, PatternError
from sparseblob.runtime.kernels.patterns import NM, Blocks, check_pattern

__all__ = [
    "BLOCK_SIZES",
    "N_M_GROUPS",
    "MaskPattern",
    "Expectation",
    "detect_pattern",
    "parse_expectations",
    "check_expectations",
    "min_zeros_per_run",
    "blocks_hold",
]

N_M_GROUPS = (2, 4, 8, 16)
"""Group sizes ``m`` that :func:`detect_pattern` tries for n:m sparsity."""

BLOCK_SIZES = tuple(2**k for k in range(1, 31))
"""Block sizes that :func:`detect_pattern` tries, smallest first; only those up to the axis length apply."""

# Share of a mask's zeros that its n:m floor must account for to call the mask n:m.
_N_M_SHARE = 0.9

_COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class MaskPattern:
    """The sparsity pattern of one mask, as :func:`detect_pattern` finds it.

    Attributes:
        kind: ``empty``, ``dense``, ``block``, ``n:m`` or ``unstructured``.
        sparsity: fraction of elements not kept.
        size: number of elements.
        block: ``(b, axis)`` of the largest block pattern, or None.
        n_m: ``(n, m, axis)`` of the n:m pattern with the largest guaranteed sparsity, or None.
    """

    kind: str
    sparsity: float
    size: int
    block: tuple[int, int] | None = None
    n_m: tuple[int, int, int] | None = None

    def describe(self) -> str:
        """Return a short text such as ``2:4@axis1, sparsity 0.500``."""
        if self.kind == "block":
            head = f"block{self.block[0]}@axis{self.block[1]}"
        elif self.kind == "n:m":
            head = f"{self.n_m[0]}:{self.n_m[1]}@axis{self.n_m[2]}"
        else:
            head = self.kind
        return f"{head}, sparsity {self.sparsity:.3f}"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Expectation:
    """One parsed expectation.

    Attributes:
        text: the expectation as written, without surrounding spaces.
        kind: ``n:m``, ``block`` or ``sparsity``.
        n, m: zeros required per run of ``m`` (``n:m``).
        size: block size (``block``).
        axis: the axis, or None for "along some axis" (``n:m`` and ``block``).
        comparison: ``>=``, ``<=``, ``>`` or ``<`` (``sparsity``).
        value: the sparsity bound, in [0, 1] (``sparsity``).
    """

    text: str
    kind: str
    n: int = 0
    m: int = 0
    size: int = 0
    axis: int | None = None
    comparison: str = ""
    value: float = 0.0


# ---------------------------------------------------------------------------------------------
# Runs along an axis


def _runs(mask: np.ndarray, axis: int, length: int, fill: bool) -> np.ndarray:
    """Return the mask with ``axis`` moved last and cut into runs: ``[..., n_runs, length]``.

    A trailing run shorter than ``length`` is padded with ``fill``.
    """
    moved = np.moveaxis(mask, axis, -1)
    size = moved.shape[-1]
    n_runs = -(-size // length)
    padded = np.full(moved.shape[:-1] + (n_runs * length,), fill, dtype=bool)
    padded[..., :size] = moved
    return padded.reshape(moved.shape[:-1] + (n_runs, length))


def min_zeros_per_run(mask: np.ndarray, m: int, axis: int) -> int:
    """Return the smallest number of zeros in a run of ``m`` along ``axis``, padding counted as zeros.

    Args:
        mask: ``tensor<bool, shape>``, True where kept, with at least one element.
        m: run length, at least 1.
        axis: the axis, in ``[-rank, rank)``.
    """
    runs = _runs(mask, axis, m, False)
    kept = np.count_nonzero(runs, axis=-1)
    return int(m - kept.max())


def blocks_hold(mask: np.ndarray, size: int, axis: int) -> bool:
    """Return True when every run of ``size`` along ``axis`` is all zero or all kept.

    A trailing shorter run is padded with copies of its own last element, so it is judged over
    its real elements only.
    """
    moved = np.moveaxis(mask, axis, -1)
    length = moved.shape[-1]
    n_runs = -(-length // size)
    padded = np.empty(moved.shape[:-1] + (n_runs * size,), dtype=bool)
    padded[..., :length] = moved
    if n_runs * size > length:
        padded[..., length:] = moved[..., -1:]
    runs = padded.reshape(moved.shape[:-1] + (n_runs, size))
    return bool(np.all(runs.all(axis=-1) | ~runs.any(axis=-1)))


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        mask = mask != 0
    return mask


# ---------------------------------------------------------------------------------------------
# Detection


def _largest_block(mask: np.ndarray) -> tuple[int, int] | None:
    best = None
    for axis in range(min(mask.ndim, 2)):
        # Blocks of b/2 subdivide blocks of b, so the sizes that hold form a prefix.
        for size in BLOCK_SIZES:
            if size > mask.shape[axis] or not blocks_hold(mask, size, axis):
                break
            if best is None or size > best[0]:
                best = (size, axis)
    return best


def _best_n_m(mask: np.ndarray) -> tuple[int, int, int] | None:
    best = None
    for m in N_M_GROUPS:
        for axis in range(min(mask.ndim, 2)):
            if m > mask.shape[axis]:
                continue
            n = min_zeros_per_run(mask, m, axis)
            # n/m > best_n/best_m without floats; equal fractions keep the earlier, smaller m.
            if n > 0 and (best is None or n * best[1] > best[0] * m):
                best = (n, m, axis)
    return best


def detect_pattern(mask: np.ndarray) -> MaskPattern:
    """Detect the sparsity pattern of a stored mask.

    Args:
        mask: ``tensor<bool or uint8, shape>``, nonzero where the weight is kept.

    Returns:
        The pattern; see the module docstring for the rules.
    """
    mask = _as_mask(mask)
    size = int(mask.size)
    kept = int(np.count_nonzero(mask))
    sparsity = 1.0 - kept / size if size else 0.0
    if size == 0 or kept == size:
        return MaskPattern("dense", sparsity, size)
    if kept == 0:
        return MaskPattern("empty", sparsity, size)
    if mask.ndim == 0:
        return MaskPattern("unstructured", sparsity, size)

    block = _largest_block(mask)
    n_m = _best_n_m(mask)
    if block is not None:
        kind = "block"
    elif n_m is not None and n_m[0] / n_m[1] >= _N_M_SHARE * sparsity:
        kind = "n:m"
    else:
        kind = "unstructured"
    return MaskPattern(kind, sparsity, size, block, n_m)


# ---------------------------------------------------------------------------------------------
# Expectations

_N_M = re.compile(r"(?P<n>\d+):(?P<m>\d+)(?:@axis(?P<axis>-?\d+))?")
_BLOCK = re.compile(r"block(?P<size>\d+)(?:@axis(?P<axis>-?\d+))?")
_SPARSITY = re.compile(r"sparsity\s*(?P<op>>=|<=|>|<)\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)")

_SYNTAX = "N:M, N:M@axisK, blockB, blockB@axisK, sparsity>=X or sparsity<=X"


def _parse_one(text: str) -> Expectation:
    match = _N_M.fullmatch(text)
    if match:
        n, m = int(match["n"]), int(match["m"])
        if not 1 <= n < m:
            raise OptionError(f"expectation {text!r}: n:m needs 1 <= n < m, got n={n}, m={m}")
        axis = None if match["axis"] is None else int(match["axis"])
        return Expectation(text, "n:m", n=n, m=m, axis=axis)

    match = _BLOCK.fullmatch(text)
    if match:
        size = int(match["size"])
        if size < 2:
            raise OptionError(f"expectation {text!r}: the block size must be at least 2, got {size}")
        axis = None if match["axis"] is None else int(match["axis"])
        return Expectation(text, "block", size=size, axis=axis)

    match = _SPARSITY.fullmatch(text)
    if match:
        value = float(match["value"])
        if not 0.0 <= value <= 1.0:
            raise OptionError(
                f"expectation {text!r}: sparsity is a fraction in [0, 1], got {value}; write 0.5, not 50"
            )
        return Expectation(text, "sparsity", comparison=match["op"], value=value)

    raise OptionError(f"expectation {text!r} is not valid; expected one of {_SYNTAX}")


def parse_expectations(text: str | Sequence[str] | None) -> tuple[Expectation, ...]:
    """Parse expectations written as comma-separated items, or a sequence of such strings.

    Args:
        text: e.g. ``"2:4@axis1, sparsity>=0.5"``, or ``["2:4", "sparsity<=0.9"]`` (as a
            repeated command-line option gives them), or None for no expectation.

    Returns:
        The expectations in the order written.

    Raises:
        OptionError: an item is empty or does not parse; the message shows the item and the
            accepted forms.
    """
    if text is None:
        return ()
    pieces = [text] if isinstance(text, str) else list(text)
    found = []
    for piece in pieces:
        for item in str(piece).split(","):
            item = item.strip()
            if not item:
                raise OptionError(f"expectation list {piece!r} contains an empty item; expected {_SYNTAX}")
            found.append(_parse_one(item))
    return tuple(found)


def _axes(expectation: Expectation, rank: int) -> list[int] | None:
    """Return the axes an expectation allows, or None when its axis does not exist."""
    if expectation.axis is None:
        # Core ML prunes n:m groups and blocks along axis 0 (output channels) or axis 1 (input
        # channels) only. A kernel axis of size 3 would satisfy any n:m with m > 3 through its
        # zero-padded partial group, so it must not count as a match.
        return list(range(min(rank, 2)))
    if not -rank <= expectation.axis < rank:
        return None
    return [expectation.axis % rank]


def _holds(mask: np.ndarray, expectation: Expectation, sparsity: float) -> tuple[bool, str]:
    """Return whether ``mask`` meets one expectation, and what was found when it does not."""
    if expectation.kind == "sparsity":
        ok = _COMPARISONS[expectation.comparison](sparsity, expectation.value)
        return ok, f"sparsity is {sparsity:.4f}"

    axes = _axes(expectation, mask.ndim)
    if axes is None:
        return False, f"axis {expectation.axis} does not exist in a mask of rank {mask.ndim}"
    if mask.size == 0:
        return True, ""

    problems = []
    for axis in axes:
        if expectation.kind == "n:m":
            pattern = NM(expectation.n, expectation.m, axis)
        else:
            pattern = Blocks(expectation.size, axis)
        try:
            check_pattern(mask, pattern, name="mask")
        except PatternError as error:
            problems.append(str(error).removeprefix("mask: "))
            continue
        return True, ""
    return False, "; ".join(problems)


def check_expectations(mask: np.ndarray | None, shape: Sequence[int], expectations: Iterable[Expectation]) -> list[str]:
    """Test a stored mask against expectations.

    Args:
        mask: ``tensor<bool or uint8, shape>`` nonzero where kept, or None for a weight stored
            without a mask, which counts as everything kept (sparsity 0).
        shape: the dense weight shape, used when ``mask`` is None.
        expectations: from :func:`parse_expectations`.

    Returns:
        One message per expectation that does not hold, empty when all hold.
    """
    mask = np.ones(tuple(shape), dtype=bool) if mask is None else _as_mask(mask)
    sparsity = 1.0 - np.count_nonzero(mask) / mask.size if mask.size else 0.0
    problems = []
    for expectation in expectations:
        ok, found = _holds(mask, expectation, sparsity)
        if not ok:
            problems.append(f"expected {expectation.text}, but {found}")
    return problems
