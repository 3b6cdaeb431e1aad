"""Convolution (MIL ``conv``) with a compressed weight, on the linear kernels.

``y[n, o, *p] = bias[o] + sum_{c, k} W[o, c, *k] * x_pad[n, g * Cin_g + c, *(p * s + k * d)]``
with ``g = o // Cout_g``, for 1 to 3 spatial dimensions.

Three paths:

- **1x1 kernels**: the input, padded and subsampled by the stride, is already the token matrix
  ``[N * prod(D_out), Cin_g]``; one :func:`.linear.apply_weight` call per group.
- **depthwise** (``Cin_g == 1``): a direct loop over the kernel taps, each adding a scaled and
  shifted input plane. Taps whose weights are all zero are skipped. The weight is tiny, so it
  is decoded once.
- **everything else**: im2col per group in the kernel column order ``(*K, Cin_g)``, then
  :func:`.linear.apply_weight`.

Padding is taken resolved: one ``(begin, end)`` pair of zero padding per spatial axis. Results
are fp32 (fp64 with ``compute_dtype=np.float64``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import OpParameterError, ParameterShapeError, ShapeError, UnsupportedOpError
from ..limits import element_count
from .formats import CompressedWeight, row_slice
from .linear import apply_weight

logger = logging.getLogger(__name__)

__all__ = ["conv", "conv_output_shape"]


def _spatial_parameter(value, default: int, count: int, name: str, param: str, minimum: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * count
    values = tuple(int(v) for v in np.asarray(value).ravel())
    if len(values) != count:
        raise OpParameterError(f"{name}: {param} has {len(values)} entries {list(values)}; expected {count}, one per spatial axis")
    if any(v < minimum for v in values):
        raise OpParameterError(f"{name}: {param} is {list(values)}; expected every entry to be at least {minimum}")
    return values


def _pads(pads, count: int, name: str) -> tuple[tuple[int, int], ...]:
    if pads is None:
        return ((0, 0),) * count
    pairs = np.asarray(pads, dtype=np.int64)
    if pairs.shape != (count, 2):
        raise OpParameterError(
            f"{name}: pads has shape {list(pairs.shape)}; expected [{count}, 2], one (begin, end) pair per spatial axis"
        )
    if (pairs < 0).any():
        raise OpParameterError(f"{name}: pads is {pairs.tolist()}; expected non-negative padding")
    return tuple((int(b), int(e)) for b, e in pairs)


def conv_output_shape(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[tuple[int, int]],
    name: str = "conv",
) -> tuple[int, ...]:
    """Return ``[N, Cout, *D_out]`` with ``D_out = floor((D + begin + end - k_eff) / s) + 1``.

    ``k_eff = (K - 1) * d + 1``.

    Raises:
        ShapeError: an output spatial size would be zero or negative.
    """
    out = [int(input_shape[0]), int(weight_shape[0])]
    for axis, (size, kernel, stride, dilation, (begin, end)) in enumerate(
        zip(input_shape[2:], weight_shape[2:], strides, dilations, pads)
    ):
        effective = (kernel - 1) * dilation + 1
        padded = size + begin + end
        if padded < effective:
            raise ShapeError(
                f"{name}: spatial axis {axis} has padded size {padded}, smaller than the dilated kernel size {effective}"
            )
        out.append((padded - effective) // stride + 1)
    return tuple(out)


def _group_weights(weight: CompressedWeight, groups: int) -> list[CompressedWeight]:
    """Return the weight of each group's output channels (cached on the weight)."""
    if groups == 1:
        return [weight]
    cache = weight.__dict__.setdefault("_group_weights", {})
    if groups not in cache:
        rows = weight.rows // groups
        cache[groups] = [row_slice(weight, g * rows, (g + 1) * rows) for g in range(groups)]
    return cache[groups]


def _windows(x_pad: np.ndarray, kernel: tuple[int, ...], strides, dilations, out_spatial) -> np.ndarray:
    """Return the im2col view ``[N, *D_out, *K, C]`` of a channels-last padded input."""
    spatial = len(kernel)
    n_stride, *d_strides, c_stride = x_pad.strides
    shape = (x_pad.shape[0], *out_spatial, *kernel, x_pad.shape[-1])
    strides_bytes = (
        n_stride,
        *(d_strides[a] * strides[a] for a in range(spatial)),
        *(d_strides[a] * dilations[a] for a in range(spatial)),
        c_stride,
    )
    return as_strided(x_pad, shape=shape, strides=strides_bytes, writeable=False)


def _depthwise(x_pad, dense, groups, strides, dilations, out_spatial, compute_dtype) -> np.ndarray:
    """Direct depthwise convolution: one multiply-add of a shifted plane per kernel tap."""
    n = x_pad.shape[0]
    cout = dense.shape[0]
    multiplier = cout // groups
    channels = np.arange(cout) // multiplier
    source = x_pad if multiplier == 1 else x_pad[:, channels]
    y = np.zeros((n, cout, *out_spatial), dtype=compute_dtype)
    kernel = dense.shape[2:]
    for tap in np.ndindex(*kernel):
        taps = dense[(slice(None), 0, *tap)].astype(compute_dtype)
        if not taps.any():
            continue
        window = tuple(
            slice(tap[a] * dilations[a], tap[a] * dilations[a] + (out_spatial[a] - 1) * strides[a] + 1, strides[a])
            for a in range(len(kernel))
        )
        y += taps.reshape((1, cout) + (1,) * len(kernel)) * source[(slice(None), slice(None), *window)]
    return y


def conv(
    x,
    weight: CompressedWeight,
    bias=None,
    *,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    pads: Sequence[tuple[int, int]] | None = None,
    groups: int = 1,
    strategy: str | None = None,
    compute_dtype=np.float32,
) -> np.ndarray:
    """MIL ``conv`` with a compressed weight and explicit padding.

    Shapes:
        x: ``tensor<T, [N, Cin, *D]>``, 1 to 3 spatial dims; weight ``[Cout, Cin/groups, *K]``;
        bias ``tensor<T, [Cout]>`` -> ``tensor<fp32, [N, Cout, *D_out]>``.

    Args:
        strides: one positive stride per spatial axis (default 1).
        dilations: one positive dilation per spatial axis (default 1).
        pads: one ``(begin, end)`` pair of zero padding per spatial axis (default 0); ``same``
            padding must be resolved by the caller.
        groups: number of groups; depthwise is ``groups == Cin``.
        strategy: "sparse", "tiled", "dense" or None (see :mod:`.linear`).
        compute_dtype: np.float32, or np.float64 for a reference on the dense path.

    Raises:
        ShapeError: ranks, channel counts or the output size do not fit.
        OpParameterError: a stride, dilation, pad or groups value is invalid.
        ParameterShapeError: the bias shape is not ``[Cout]``.

    Example: a 1-D input ``[[[1, 2, 3]]]`` with weight ``[[[1, 1]]]`` gives ``[[[3, 5]]]``.
    """
    name = weight.name
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ShapeError(f"{name}: conv input has dtype {x.dtype}; expected a numeric tensor")
    if not 3 <= x.ndim <= 5:
        raise ShapeError(f"{name}: conv input has shape {list(x.shape)}; expected [N, Cin, *D] with 1 to 3 spatial axes")
    if len(weight.shape) != x.ndim:
        raise ShapeError(f"{name}: weight has shape {list(weight.shape)}; expected rank {x.ndim} to match input {list(x.shape)}")
    spatial = x.ndim - 2
    if isinstance(groups, bool) or int(groups) != groups or groups < 1:
        raise OpParameterError(f"{name}: groups is {groups!r}; expected a positive integer")
    groups = int(groups)
    cout, cin_group = weight.shape[0], weight.shape[1]
    cin = x.shape[1]
    if cin != cin_group * groups or cout % groups:
        raise ShapeError(
            f"{name}: input has {cin} channels and weight {list(weight.shape)} with groups={groups}; expected "
            f"Cin = {cin_group} * {groups} and Cout divisible by {groups}"
        )
    strides = _spatial_parameter(strides, 1, spatial, name, "strides", 1)
    dilations = _spatial_parameter(dilations, 1, spatial, name, "dilations", 1)
    pad_pairs = _pads(pads, spatial, name)
    out_shape = conv_output_shape(x.shape, weight.shape, strides, dilations, pad_pairs, name)
    out_spatial = out_shape[2:]
    compute_dtype = np.dtype(compute_dtype)
    if compute_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise UnsupportedOpError(f"{name}: compute_dtype {compute_dtype} is not supported; use float32 or float64")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (cout,):
            raise ParameterShapeError(f"{name}: bias has shape {list(bias.shape)}; expected [{cout}]")

    # Zero padding, channels last: [N, *D_pad, Cin].
    padded_shape = (x.shape[0], *(d + b + e for d, (b, e) in zip(x.shape[2:], pad_pairs)), cin)
    element_count(padded_shape, name=f"{name}: padded input")
    x_pad = np.zeros(padded_shape, dtype=compute_dtype)
    inner = tuple(slice(b, b + d) for d, (b, _) in zip(x.shape[2:], pad_pairs))
    x_pad[(slice(None), *inner, slice(None))] = np.moveaxis(x, 1, -1)

    kernel = tuple(weight.shape[2:])
    if cin_group == 1 and groups > 1:
        channels_first = np.moveaxis(x_pad, -1, 1)
        y = _depthwise(channels_first, weight.dense(), groups, strides, dilations, out_spatial, compute_dtype)
    else:
        tokens = int(np.prod(out_shape[:1] + out_spatial))
        element_count((tokens, cin_group * int(np.prod(kernel))), name=f"{name}: im2col matrix")
        outputs = []
        for g, group_weight in enumerate(_group_weights(weight, groups)):
            x_group = x_pad[..., g * cin_group : (g + 1) * cin_group]
            if all(k == 1 for k in kernel):
                columns = x_group[(slice(None), *(slice(0, (o - 1) * s + 1, s) for o, s in zip(out_spatial, strides)))]
            else:
                columns = _windows(x_group, kernel, strides, dilations, out_spatial)
            columns = np.ascontiguousarray(columns).reshape(tokens, -1)
            outputs.append(apply_weight(columns, group_weight, strategy=strategy, compute_dtype=compute_dtype))
        y = np.concatenate(outputs, axis=1) if len(outputs) > 1 else outputs[0]
        y = np.moveaxis(y.reshape(out_shape[0], *out_spatial, cout), -1, 1)

    if bias is not None:
        y = y + bias.astype(y.dtype).reshape((1, cout) + (1,) * spatial)
    return np.ascontiguousarray(y)
