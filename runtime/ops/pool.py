"""``max_pool``, ``avg_pool`` and ``l2_pool`` over 1, 2 or 3 spatial dimensions.

The windows are a ``sliding_window_view`` of the padded input, reduced over the kernel axes.

Output size per spatial dim, with ``P = before + after``:

* ``ceil_mode=False``: ``floor((D + P - k) / s) + 1``.
* ``ceil_mode=True``: ``o = floor((D + P - k + s - 1) / s) + 1``, then ``o -= 1`` when
  ``(o - 1) * s >= D + P/2`` and ``P > 0``. This is the output size that coremltools 9.0 declares
  in converted models. PyTorch decrements even when ``P == 0``, so the two differ, for example
  for ``D=5, k=1, s=3`` (3 versus 2). That last window would start past the input, and this
  module rejects it because no source specifies its value.

A ceil-mode window may overhang the padded input at the end. The overhang never counts: max
ignores it, and avg divides by the number of elements inside the padded input (or inside the
real input, with ``exclude_padding_from_average``), as PyTorch does.
NOTE: Core ML's divisor for that overhang is unverified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import OpParameterError, UnsupportedOpError
from ._params import as_bool, as_int_tuple, as_str, check_rank, spatial_ints
from ._spatial import PAD_TYPES, output_size, pad_spatial, resolve_padding

__all__ = ["max_pool", "avg_pool", "l2_pool"]


@dataclass(frozen=True)
class _Geometry:
    """Kernel, strides, padding and output size of each spatial dim of one pooling op."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    out_sizes: tuple[int, ...]
    # Elements past the padded input that ceil-mode windows reach, per spatial dim.
    overhangs: tuple[int, ...]


def _ceil_output_size(
    op: str, axis: int, size: int, before: int, after: int, k: int, s: int
) -> int:
    total = before + after
    count = output_size(op, axis, size + total, k, 1) - 1  # checks size + total >= k
    out = (count + s - 1) // s + 1
    if total > 0 and 2 * (out - 1) * s >= 2 * size + total:
        out -= 1
    if (out - 1) * s >= size + total:
        raise UnsupportedOpError(
            f"{op}: with ceil_mode, spatial dim {axis} (size {size}, pad {total}, kernel {k}, "
            f"stride {s}) has a last window that starts past the padded input; its value is "
            "unspecified"
        )
    return out


def _geometry(
    op: str,
    x: np.ndarray,
    kernel_sizes: object,
    strides: object,
    pad_type: object,
    pad: object,
    ceil_mode: object,
) -> _Geometry:
    check_rank(x, op=op, minimum=3, maximum=5)
    spatial = x.ndim - 2
    kernel = as_int_tuple(kernel_sizes, op=op, param="kernel_sizes", length=spatial, minimum=1)
    strides = spatial_ints(strides, spatial, op=op, param="strides", default=1, minimum=1)
    pad_type = as_str(pad_type, op=op, param="pad_type", choices=PAD_TYPES)
    ceil = as_bool(ceil_mode, op=op, param="ceil_mode")
    pads = resolve_padding(op, pad_type, pad, x.shape[2:], kernel, strides)

    if ceil:
        if spatial > 2:
            raise UnsupportedOpError(f"{op}: ceil_mode is defined for 1-D and 2-D pooling only")
        if pad_type in ("same", "same_lower"):
            raise UnsupportedOpError(f"{op}: ceil_mode requires pad_type valid or custom")
        if any(before != after for before, after in pads):
            flat = [p for pair in pads for p in pair]
            raise OpParameterError(f"{op}: ceil_mode requires symmetric padding; got pad={flat}")
        out_sizes = tuple(
            _ceil_output_size(op, i, size, before, after, k, s)
            for i, (size, (before, after), k, s) in enumerate(
                zip(x.shape[2:], pads, kernel, strides)
            )
        )
    else:
        out_sizes = tuple(
            output_size(op, i, size + before + after, k, s)
            for i, (size, (before, after), k, s) in enumerate(
                zip(x.shape[2:], pads, kernel, strides)
            )
        )

    overhangs = tuple(
        max(0, (o - 1) * s + k - (size + before + after))
        for o, s, k, size, (before, after) in zip(out_sizes, strides, kernel, x.shape[2:], pads)
    )
    return _Geometry(kernel, strides, pads, out_sizes, overhangs)


def _windows(array: np.ndarray, geometry: _Geometry) -> np.ndarray:
    """Return the view ``[*lead, *D_out, *K]`` of the pooling windows of a padded array."""
    spatial = len(geometry.kernel)
    axes = tuple(range(array.ndim - spatial, array.ndim))
    windows = sliding_window_view(array, geometry.kernel, axis=axes)
    lead = (slice(None),) * (array.ndim - spatial)
    steps = tuple(
        slice(None, (o - 1) * s + 1, s) for o, s in zip(geometry.out_sizes, geometry.strides)
    )
    return windows[lead + steps]


def _padded(x: np.ndarray, geometry: _Geometry, value: float) -> np.ndarray:
    pads = tuple(
        (before, after + extra) for (before, after), extra in zip(geometry.pads, geometry.overhangs)
    )
    return pad_spatial(x, pads, value)


def _kernel_axes(x: np.ndarray, geometry: _Geometry) -> tuple[int, ...]:
    spatial = len(geometry.kernel)
    return tuple(range(x.ndim, x.ndim + spatial))


def max_pool(
    x: np.ndarray,
    kernel_sizes: np.ndarray,
    pad_type: str,
    strides: np.ndarray | None = None,
    pad: np.ndarray | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Take the maximum over each window (MIL ``max_pool``); padding counts as -inf.

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, 1 to 3 spatial dims.
        kernel_sizes: ``tensor<int32, [S]>``.
        output: ``tensor<T, [N, C, *D_out]>`` (see the module docstring for ``D_out``).

    Args:
        x: fp16/fp32 input.
        kernel_sizes: window size per spatial dim (required).
        pad_type: ``valid``, ``custom``, ``same`` or ``same_lower`` (required).
        strides: ``tensor<int32, [S]>``; default all 1.
        pad: ``tensor<int32, [2S]>`` for ``custom``; default all 0.
        ceil_mode: round the output size up (1-D/2-D, symmetric pad only); default False.

    Returns:
        The window maxima in x's dtype.

    Raises:
        ShapeError: rank of x not 3 to 5, or a kernel larger than the padded input.
        ParameterShapeError: parameter vectors of the wrong length.
        OpParameterError: a kernel size or stride below 1, a negative pad, or asymmetric pad
            with ceil_mode.
        UnsupportedOpError: unknown pad_type; ceil_mode with 3-D or same padding.
    """
    op = "max_pool"
    x = np.asarray(x)
    geometry = _geometry(op, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    windows = _windows(_padded(x, geometry, low), geometry)
    return windows.max(axis=_kernel_axes(x, geometry))


def avg_pool(
    x: np.ndarray,
    kernel_sizes: np.ndarray,
    pad_type: str,
    strides: np.ndarray | None = None,
    pad: np.ndarray | None = None,
    exclude_padding_from_average: bool = False,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Average each window (MIL ``avg_pool``).

    The divisor is ``prod(kernel_sizes)``, less any ceil-mode overhang past the padded input.
    With ``exclude_padding_from_average`` it is the count of real (unpadded) input elements in
    the window; a window made only of padding gives 0.

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, 1 to 3 spatial dims.
        output: ``tensor<T, [N, C, *D_out]>``.

    Args:
        x: fp16/fp32 input.
        kernel_sizes: ``tensor<int32, [S]>``, window size per spatial dim (required).
        pad_type: ``valid``, ``custom``, ``same`` or ``same_lower`` (required).
        strides: ``tensor<int32, [S]>``; default all 1.
        pad: ``tensor<int32, [2S]>`` for ``custom``; default all 0.
        exclude_padding_from_average: leave padding out of the divisor; default False
            (PyTorch's ``count_include_pad=True``).
        ceil_mode: round the output size up; default False.

    Returns:
        The window averages in x's dtype.

    Raises:
        The errors of :func:`max_pool`.

    Example:
        x = [[[1, 2, 3]]], kernel_sizes=[2], pad_type="custom", pad=[1, 1]: windows [0, 1],
        [2, 3] give [[[0.5, 2.5]]]; with exclude_padding_from_average, [[[1.0, 2.5]]].
    """
    op = "avg_pool"
    x = np.asarray(x)
    geometry = _geometry(op, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    exclude = as_bool(exclude_padding_from_average, op=op, param="exclude_padding_from_average")
    kernel_axes = _kernel_axes(x, geometry)
    totals = _windows(_padded(x, geometry, 0.0), geometry).sum(axis=kernel_axes)

    # Divisor per output position: the count of counted elements in each window.
    if exclude:
        counted = np.ones(x.shape[2:], dtype=x.dtype)
        counted = _padded(counted, geometry, 0.0)
    else:
        sizes = tuple(
            size + before + after for size, (before, after) in zip(x.shape[2:], geometry.pads)
        )
        counted = np.ones(sizes, dtype=x.dtype)
        counted = pad_spatial(counted, tuple((0, extra) for extra in geometry.overhangs))
    counts = _windows(counted, geometry).sum(axis=tuple(range(counted.ndim, 2 * counted.ndim)))
    if not counts.all():
        # Only windows made entirely of padding have no counted element; their sum is 0.
        counts = np.where(counts == 0, 1, counts)
    return (totals / counts).astype(x.dtype, copy=False)


def l2_pool(
    x: np.ndarray,
    kernel_sizes: np.ndarray,
    pad_type: str,
    strides: np.ndarray | None = None,
    pad: np.ndarray | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Take ``sqrt(sum(x**2))`` over each window (MIL ``l2_pool``); padding counts as 0.

    Shapes:
        x: ``tensor<T, [N, C, *D]>``, 1 or 2 spatial dims.
        output: ``tensor<T, [N, C, *D_out]>``.

    Args:
        x: fp16/fp32 input.
        kernel_sizes: ``tensor<int32, [S]>`` (required).
        pad_type: ``valid``, ``custom``, ``same`` or ``same_lower`` (required).
        strides: ``tensor<int32, [S]>``; default all 1.
        pad: ``tensor<int32, [2S]>`` for ``custom``; default all 0.
        ceil_mode: round the output size up; default False.

    Returns:
        The window L2 norms in x's dtype.
    """
    op = "l2_pool"
    x = np.asarray(x)
    check_rank(x, op=op, minimum=3, maximum=4)
    geometry = _geometry(op, x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    windows = _windows(_padded(np.square(x), geometry, 0.0), geometry)
    return np.sqrt(windows.sum(axis=_kernel_axes(x, geometry)))
