"""Element-count limits, checked before any array is allocated from untrusted metadata."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ElementLimitError, ShapeError

__all__ = ["DEFAULT_MAX_ELEMENTS", "element_count"]

# 2**32 elements is 8 GiB of fp16: larger than any single weight in a model that fits on a
# phone. Callers that need more pass their own limit.
DEFAULT_MAX_ELEMENTS = 1 << 32


def element_count(
    shape: Sequence[int], *, name: str, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> int:
    """Return ``prod(shape)`` after checking every dimension and the product against a limit.

    The product is accumulated with Python integers, so it cannot overflow, and it is compared
    with ``max_elements`` before the caller allocates anything.

    Raises:
        ShapeError: a dimension is negative or not an integer.
        ElementLimitError: the product exceeds ``max_elements``.
    """
    count = 1
    for axis, dim in enumerate(shape):
        if isinstance(dim, bool) or not isinstance(dim, (int,)) and not hasattr(dim, "__index__"):
            raise ShapeError(f"{name}: dimension {axis} is {dim!r}; expected a non-negative integer")
        dim = int(dim)
        if dim < 0:
            raise ShapeError(f"{name}: dimension {axis} is {dim}; expected a non-negative integer")
        count *= dim
    if count > max_elements:
        raise ElementLimitError(
            f"{name}: shape {list(shape)} has {count} elements, more than the limit of "
            f"{max_elements}; raise max_elements to read it"
        )
    return count
