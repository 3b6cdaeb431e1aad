"""Element-count limits, checked before any array is allocated from untrusted metadata."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

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
    with ``max_elements`` before the caller allocates anything. A shape with a zero dimension
    has 0 elements whatever its other dimensions.

    Example: ``element_count([64, 128], name="weight")`` returns 8192.

    Raises:
        ShapeError: the shape is not a sequence, or a dimension is negative or not an integer.
        ElementLimitError: the product exceeds ``max_elements``.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise ShapeError(f"{name}: shape is {shape!r}; expected a sequence of integers")

    dims = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, (bool, np.bool_)):
            raise ShapeError(f"{name}: dimension {axis} is {dim!r}; expected a non-negative integer")
        try:
            dim = operator.index(dim)
        except TypeError:
            raise ShapeError(
                f"{name}: dimension {axis} is {dim!r}; expected a non-negative integer"
            ) from None
        if dim < 0:
            raise ShapeError(f"{name}: dimension {axis} is {dim}; expected a non-negative integer")
        dims.append(dim)

    if 0 in dims:
        return 0

    # Stop multiplying once past the limit, so a long list of huge dimensions stays cheap.
    count = 1
    for dim in dims:
        count *= dim
        if count > max_elements:
            break
    if count <= max_elements:
        return count

    # Name the exact product in the message when it is small enough to print.
    if sum(dim.bit_length() for dim in dims) <= 256:
        found = f"{math.prod(dims)} elements"
    else:
        found = "over 2**256 elements"
    raise ElementLimitError(
        f"{name}: shape {_shape_text(dims)} has {found}, which exceeds the limit of {max_elements}; "
        "pass a larger max_elements to read it"
    )


def _shape_text(dims: list[int]) -> str:
    if len(dims) <= 16:
        return str(dims)
    return f"[{', '.join(map(str, dims[:8]))}, ... ({len(dims)} dimensions)]"
