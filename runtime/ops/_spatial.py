"""Padding and output sizes of the spatial dimensions of conv and pooling ops.

MIL's ``pad_type`` values:

* ``valid``: no padding.
* ``custom``: ``pad = [before_0, after_0, before_1, after_1, ...]``, one pair per spatial dim.
* ``same``: total padding ``max(0, (ceil(D/s) - 1) * s + k_eff - D)`` so that the output has
  ``ceil(D/s)`` entries; ``floor(total/2)`` goes before and the odd extra element after.
* ``same_lower``: the same total, with the odd extra element before.

``k_eff = (K - 1) * dilation + 1`` is the extent of a dilated kernel.
"""

from __future__ import annotations

import numpy as np

from ..errors import OpParameterError, ParameterShapeError, ShapeError
from ._params import as_int_tuple, as_str

__all__ = ["PAD_TYPES", "resolve_padding", "same_padding", "output_size", "pad_spatial"]

PAD_TYPES = ("valid", "custom", "same", "same_lower")


def same_padding(size: int, kernel: int, stride: int, *, lower: bool) -> tuple[int, int]:
    """Return ``(before, after)`` padding of one dimension for ``same`` or ``same_lower``.

    Example: ``size=5, kernel=4, stride=2`` needs ``(3 - 1) * 2 + 4 - 5 = 3`` elements:
    ``(1, 2)`` for ``same`` and ``(2, 1)`` for ``same_lower``.
    """
    total = max(0, (-(-size // stride) - 1) * stride + kernel - size)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def resolve_padding(
    op: str,
    pad_type: object,
    pad: object,
    sizes: tuple[int, ...],
    kernels: tuple[int, ...],
    strides: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """Return the ``(before, after)`` padding of each spatial dim.

    Args:
        op: op type, for messages.
        pad_type: one of :data:`PAD_TYPES`.
        pad: ``tensor<int32, [2 * len(sizes)]>``; read only when ``pad_type`` is ``custom``,
            where None means zeros.
        sizes: the input's spatial sizes.
        kernels: the dilated kernel extents ``k_eff``.
        strides: the strides.

    Raises:
        UnsupportedOpError: unknown ``pad_type``.
        ParameterShapeError: ``pad`` does not have two entries per spatial dim.
        OpParameterError: a negative entry in ``pad``.
    """
    pad_type = as_str(pad_type, op=op, param="pad_type", choices=PAD_TYPES)
    count = len(sizes)

    if pad_type == "valid":
        return ((0, 0),) * count

    if pad_type == "custom":
        if pad is None:
            return ((0, 0),) * count
        values = as_int_tuple(pad, op=op, param="pad")
        if len(values) != 2 * count:
            raise ParameterShapeError(
                f"{op}: pad={list(values)} has {len(values)} entries; expected {2 * count} "
                f"(before and after for each of {count} spatial dims)"
            )
        if min(values) < 0:
            raise OpParameterError(f"{op}: pad={list(values)} has a negative entry")
        return tuple((values[2 * i], values[2 * i + 1]) for i in range(count))

    lower = pad_type == "same_lower"
    return tuple(
        same_padding(size, kernel, stride, lower=lower)
        for size, kernel, stride in zip(sizes, kernels, strides)
    )


def output_size(op: str, axis: int, padded: int, kernel: int, stride: int) -> int:
    """Return ``floor((padded - kernel) / stride) + 1``, the count of windows in one dimension.

    Raises:
        ShapeError: the kernel is larger than the padded input.
    """
    if padded < kernel:
        raise ShapeError(
            f"{op}: spatial dim {axis} has {padded} elements after padding, fewer than the "
            f"kernel extent {kernel}"
        )
    return (padded - kernel) // stride + 1


def pad_spatial(
    x: np.ndarray, pads: tuple[tuple[int, int], ...], value: float = 0.0
) -> np.ndarray:
    """Pad the trailing ``len(pads)`` dims of ``x`` with ``value``; no copy when all pads are 0."""
    if not any(before or after for before, after in pads):
        return x
    widths = ((0, 0),) * (x.ndim - len(pads)) + tuple(pads)
    return np.pad(x, widths, mode="constant", constant_values=value)
