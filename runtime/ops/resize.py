"""Upsampling of the last two dims: ``upsample_nearest_neighbor`` and ``upsample_bilinear``.

The output has ``floor(H * scale_factor_height)`` rows and ``floor(W * scale_factor_width)``
columns. The sampling grid is computed from the input and output sizes (PyTorch's
``recompute_scale_factor=True``), not from the scale factor itself.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OpParameterError, UnsupportedOpError
from ..limits import element_count
from ._params import as_bool, as_float, check_rank

__all__ = ["upsample_nearest_neighbor", "upsample_bilinear"]


def _output_sizes(
    op: str, x: np.ndarray, scale_height: object, scale_width: object
) -> tuple[int, int]:
    check_rank(x, op=op, minimum=3)
    sizes = []
    for name, scale, size in (
        ("scale_factor_height", scale_height, x.shape[-2]),
        ("scale_factor_width", scale_width, x.shape[-1]),
    ):
        factor = as_float(scale, op=op, param=name)
        out = math.floor(size * factor) if math.isfinite(factor) else -1
        if out < 1:
            raise OpParameterError(
                f"{op}: {name}={factor} on a dim of size {size} gives an output size of {out}; "
                "expected at least 1"
            )
        sizes.append(out)
    element_count(x.shape[:-2] + tuple(sizes), name=f"{op}: output")
    return sizes[0], sizes[1]


def upsample_nearest_neighbor(
    x: np.ndarray, scale_factor_height: float = 1, scale_factor_width: float = 1
) -> np.ndarray:
    """Resize the last two dims by repeating the nearest input element.

    Output index ``i`` reads input index ``floor(i * in / out)``, which for an integer scale
    factor is ``i // scale``. NOTE: Core ML's rounding for fractional scale factors is unverified.

    Shapes:
        x: ``tensor<T, [*D, H, W]>``, rank at least 3.
        scale_factor_height, scale_factor_width: ``int32`` or ``fp32`` scalars; default 1.
        output: ``tensor<T, [*D, floor(H * sh), floor(W * sw)]>``.

    Raises:
        ShapeError: rank below 3.
        OpParameterError: a scale factor that gives an empty output.
    """
    op = "upsample_nearest_neighbor"
    x = np.asarray(x)
    out_h, out_w = _output_sizes(op, x, scale_factor_height, scale_factor_width)
    height, width = x.shape[-2:]
    rows = np.minimum(np.arange(out_h) * height // out_h, height - 1)
    cols = np.minimum(np.arange(out_w) * width // out_w, width - 1)
    return x[..., rows[:, None], cols[None, :]]


def _grid(size: int, out: int, align_corners: bool, half_pixel: bool) -> tuple[np.ndarray, ...]:
    """Return the lower source index, upper source index and upper weight of each output index."""
    positions = np.arange(out, dtype=np.float64)
    if align_corners:
        coords = positions * ((size - 1) / (out - 1)) if out > 1 else np.zeros(out)
    elif half_pixel:
        coords = (positions + 0.5) * (size / out) - 0.5
    else:
        coords = positions * (size / out)
    coords = np.clip(coords, 0, size - 1)
    lower = np.floor(coords).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, coords - lower


def upsample_bilinear(
    x: np.ndarray,
    scale_factor_height: float = 1,
    scale_factor_width: float = 1,
    align_corners: bool = True,
    half_pixel_centers: bool | None = None,
) -> np.ndarray:
    """Resize the last two dims with bilinear interpolation.

    Source coordinate of output index ``i`` (clamped to ``[0, in - 1]``):

    * ``align_corners=True``: ``i * (in - 1) / (out - 1)``; the corners map to the corners.
    * ``align_corners=False, half_pixel_centers=True``: ``(i + 0.5) * in / out - 0.5``
      (PyTorch's ``align_corners=False``).
    * ``align_corners=False, half_pixel_centers=False``: ``i * in / out`` (TensorFlow's legacy
      resize).

    Shapes:
        x: ``tensor<T, [*D, H, W]>``, rank at least 3.
        output: ``tensor<T, [*D, floor(H * sh), floor(W * sw)]>``.

    Args:
        x: fp16/fp32 input.
        scale_factor_height, scale_factor_width: ``int32`` or ``fp32``; default 1.
        align_corners: default True.
        half_pixel_centers: iOS16+; default ``not align_corners``.

    Raises:
        UnsupportedOpError: align_corners and half_pixel_centers both True.
        OpParameterError: a scale factor that gives an empty output.

    Example:
        Width 2 to 5 samples source columns [0, 0.25, 0.5, 0.75, 1] with align_corners, and
        [0, 0.1, 0.5, 0.9, 1] with half-pixel centers.
    """
    op = "upsample_bilinear"
    x = np.asarray(x)
    aligned = as_bool(align_corners, op=op, param="align_corners")
    half_pixel = not aligned
    if half_pixel_centers is not None:
        half_pixel = as_bool(half_pixel_centers, op=op, param="half_pixel_centers")
    if aligned and half_pixel:
        raise UnsupportedOpError(
            f"{op}: align_corners and half_pixel_centers are both True; at most one may be set"
        )
    out_h, out_w = _output_sizes(op, x, scale_factor_height, scale_factor_width)
    height, width = x.shape[-2:]

    # Separable: interpolate rows, then columns.
    top, bottom, weight_h = _grid(height, out_h, aligned, half_pixel)
    weight_h = weight_h.astype(x.dtype)[:, None]
    rows = x[..., top, :] * (1 - weight_h) + x[..., bottom, :] * weight_h

    left, right, weight_w = _grid(width, out_w, aligned, half_pixel)
    weight_w = weight_w.astype(x.dtype)
    return rows[..., left] * (1 - weight_w) + rows[..., right] * weight_w
