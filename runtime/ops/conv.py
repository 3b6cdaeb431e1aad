"""Dense ``conv`` and ``conv_transpose`` over 1, 2 or 3 spatial dimensions.

``conv`` gathers the input windows with ``sliding_window_view`` (no copy), copies them once
into an im2col matrix per group and multiplies it with the weight through ``np.matmul`` (BLAS).
``conv_transpose`` does the reverse: one matmul produces every kernel tap's contribution, and a
loop over the ``prod(K)`` kernel taps adds them into the strided output positions (col2im).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import OpParameterError, ParameterShapeError, ShapeError
from ..limits import element_count
from ._params import as_int, as_int_tuple, as_str, check_rank, spatial_ints
from ._spatial import output_size, pad_spatial, resolve_padding

__all__ = ["conv", "conv_transpose"]


def _check_groups(op: str, groups: object, cin: int, cout: int) -> int:
    value = as_int(groups, op=op, param="groups")
    if value < 1:
        raise OpParameterError(f"{op}: groups={value}; expected a positive integer")
    if cin % value or cout % value:
        raise ShapeError(
            f"{op}: groups={value} does not divide the {cin} input channels and {cout} output "
            "channels"
        )
    return value


def _check_bias(op: str, bias: np.ndarray | None, cout: int) -> np.ndarray | None:
    if bias is None:
        return None
    bias = np.asarray(bias)
    if bias.shape != (cout,):
        raise ParameterShapeError(
            f"{op}: bias has shape {list(bias.shape)}; expected [{cout}] (one per output channel)"
        )
    return bias


def _add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return y
    return y + bias.astype(y.dtype, copy=False).reshape((-1,) + (1,) * (y.ndim - 2))


def conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    strides: np.ndarray | None = None,
    pad_type: str = "valid",
    pad: np.ndarray | None = None,
    dilations: np.ndarray | None = None,
    groups: int = 1,
) -> np.ndarray:
    """Apply a grouped, strided, dilated cross-correlation (MIL ``conv``).

    ``y[n, o, *p] = bias[o] + sum_{c, k} w[o, c, *k] * x_padded[n, g*Cin/G + c, *(p*s + k*d)]``
    where ``g = o // (Cout/G)``.

    Shapes:
        x: ``tensor<T, [N, Cin, *D]>``, 1 to 3 spatial dims.
        weight: ``tensor<T, [Cout, Cin/groups, *K]>``.
        bias: ``tensor<T, [Cout]>``.
        output: ``tensor<T, [N, Cout, *D_out]>`` with
        ``D_out = floor((D + before + after - k_eff) / s) + 1`` and ``k_eff = (K - 1) * d + 1``.

    Args:
        x: input activations, fp16/fp32.
        weight: filters. A dtype other than x's is converted to x's.
        bias: per output channel; default none (zeros).
        strides: ``tensor<int32, [S]>``; default all 1.
        pad_type: ``valid`` (default), ``custom``, ``same`` or ``same_lower``. ``same`` puts the
            odd extra padding element after, ``same_lower`` before.
        pad: ``tensor<int32, [2S]>``, ``[before_0, after_0, ...]``; used only with ``custom``;
            default all 0.
        dilations: ``tensor<int32, [S]>``; default all 1.
        groups: ``int32``; default 1. Cin and Cout must be multiples of it.

    Returns:
        The convolution in x's dtype.

    Raises:
        ShapeError: rank of x not 3 to 5, weight rank or channels inconsistent with x.
        ParameterShapeError: strides, dilations, pad or bias of the wrong length.
        OpParameterError: a stride, dilation or groups below 1, or a negative pad.
        UnsupportedOpError: unknown pad_type.

    Example:
        x of shape [1, 4, 5, 5], weight [8, 2, 3, 3], groups=2, pad_type="same", strides=[2, 2]
        gives shape [1, 8, 3, 3].
    """
    op = "conv"
    x = np.asarray(x)
    weight = np.asarray(weight)
    check_rank(x, op=op, minimum=3, maximum=5)
    check_rank(weight, op=op, param="weight", minimum=x.ndim, maximum=x.ndim)

    spatial = x.ndim - 2
    batch, cin = x.shape[:2]
    cout = weight.shape[0]
    kernel = weight.shape[2:]
    groups = _check_groups(op, groups, cin, cout)
    if weight.shape[1] != cin // groups:
        raise ShapeError(
            f"{op}: weight has shape {list(weight.shape)}; dim 1 must be Cin/groups = "
            f"{cin}/{groups} = {cin // groups}"
        )
    if min(kernel) < 1:
        raise ShapeError(f"{op}: weight has an empty kernel, shape {list(weight.shape)}")
    bias = _check_bias(op, bias, cout)
    strides = spatial_ints(strides, spatial, op=op, param="strides", default=1, minimum=1)
    dilations = spatial_ints(dilations, spatial, op=op, param="dilations", default=1, minimum=1)

    # Padding and output size of each spatial dim.
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    pads = resolve_padding(op, pad_type, pad, x.shape[2:], extents, strides)
    out_sizes = tuple(
        output_size(op, i, size + before + after, extent, stride)
        for i, (size, (before, after), extent, stride) in enumerate(
            zip(x.shape[2:], pads, extents, strides)
        )
    )

    # Strided, dilated windows of the padded input: a view [N, Cin, *D_out, *K].
    padded = pad_spatial(x, pads)
    axes = tuple(range(2, x.ndim))
    windows = sliding_window_view(padded, extents, axis=axes)
    windows = windows[
        (slice(None), slice(None))
        + tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(out_sizes, strides))
        + tuple(slice(None, None, d) for d in dilations)
    ]

    # im2col: [N, G, Cin/G * prod(K), prod(D_out)], then one batched matmul per group.
    cin_group, cout_group = cin // groups, cout // groups
    taps, positions = math.prod(kernel), math.prod(out_sizes)
    element_count(
        (batch, cin, taps, positions), name=f"{op}: im2col matrix of x {list(x.shape)}"
    )
    windows = windows.reshape((batch, groups, cin_group) + out_sizes + tuple(kernel))
    order = (0, 1, 2) + tuple(range(3 + spatial, 3 + 2 * spatial)) + tuple(range(3, 3 + spatial))
    columns = windows.transpose(order).reshape(batch, groups, cin_group * taps, positions)
    filters = weight.astype(x.dtype, copy=False).reshape(groups, cout_group, cin_group * taps)
    y = np.matmul(filters, columns)

    y = y.reshape((batch, cout) + out_sizes)
    return _add_bias(y, bias)


def _transpose_crop(
    op: str,
    pad_type: object,
    pad: object,
    output_shape: object,
    full_sizes: tuple[int, ...],
    x_sizes: tuple[int, ...],
    strides: tuple[int, ...],
    batch: int,
    cout: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the first kept index and the output size of each spatial dim of conv_transpose."""
    spatial = len(full_sizes)
    pad_type = as_str(pad_type, op=op, param="pad_type", choices=("valid", "custom", "same"))

    if output_shape is not None:
        shape = as_int_tuple(output_shape, op=op, param="output_shape", length=spatial + 2)
        if shape[:2] != (batch, cout):
            raise ShapeError(
                f"{op}: output_shape={list(shape)} must start with [N, Cout] = [{batch}, {cout}]"
            )
        if min(shape[2:]) < 1:
            raise OpParameterError(f"{op}: output_shape={list(shape)} has an empty dim")
        out_sizes = shape[2:]
    else:
        out_sizes = None

    if pad_type == "valid":
        begins = (0,) * spatial
        sizes = full_sizes
    elif pad_type == "custom":
        pads = resolve_padding(op, "custom", pad, full_sizes, (1,) * spatial, (1,) * spatial)
        begins = tuple(before for before, _ in pads)
        sizes = tuple(full - before - after for full, (before, after) in zip(full_sizes, pads))
    else:
        # NOTE: how Core ML splits the `same` crop is unverified. This takes floor(total/2) from
        # the start, which makes it the exact transpose of conv's `same` padding.
        sizes = tuple(d * s for d, s in zip(x_sizes, strides))
        targets = out_sizes if out_sizes is not None else sizes
        begins = tuple(max(0, full - t) // 2 for full, t in zip(full_sizes, targets))

    if out_sizes is not None:
        sizes = out_sizes
    if min(sizes) < 1:
        raise ShapeError(
            f"{op}: the crop leaves output size {list(sizes)} from the full size "
            f"{list(full_sizes)}"
        )
    return begins, tuple(sizes)


def conv_transpose(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    pad: np.ndarray | None = None,
    output_shape: np.ndarray | None = None,
    pad_type: str = "valid",
    strides: np.ndarray | None = None,
    dilations: np.ndarray | None = None,
    groups: int = 1,
) -> np.ndarray:
    """Apply a transposed convolution (MIL ``conv_transpose``), the adjoint of ``conv``.

    Each input element ``x[n, c, *i]`` adds ``x * w[c, o, *k]`` at full-output position
    ``i*s + k*d``. The full output has ``(D - 1) * s + k_eff`` elements per spatial dim, and is
    then cropped:

    * ``valid``: nothing is cropped.
    * ``custom``: ``pad[2i]`` elements from the start and ``pad[2i+1]`` from the end.
    * ``same``: the output keeps ``D * s`` elements; ``floor(total/2)`` of the surplus is
      cropped from the start.

    ``output_shape``, when given, fixes the output size; the crop still starts at the
    ``pad_type``'s start. NOTE: when ``output_shape`` exceeds the cropped full output, the
    missing end elements are zeros plus bias (unverified against Core ML).

    Shapes:
        x: ``tensor<T, [N, Cin, *D]>``, 1 to 3 spatial dims.
        weight: ``tensor<T, [Cin, Cout/groups, *K]>`` (the layout of torch's ConvTranspose).
        bias: ``tensor<T, [Cout]>``.
        output_shape: ``tensor<int32, [2 + S]>``, the whole shape ``[N, Cout, *D_out]``.
        output: ``tensor<T, [N, Cout, *D_out]>``.

    Args:
        x: input activations, fp16/fp32.
        weight: filters; a dtype other than x's is converted to x's.
        bias: per output channel; default none.
        pad: ``tensor<int32, [2S]>``, crop ``[before_0, after_0, ...]`` for ``custom``; default 0.
        output_shape: optional exact output shape; default None (computed).
        pad_type: ``valid`` (default), ``custom`` or ``same``.
        strides: ``tensor<int32, [S]>``; default all 1.
        dilations: ``tensor<int32, [S]>``; default all 1.
        groups: ``int32``; default 1.

    Returns:
        The transposed convolution in x's dtype.

    Raises:
        ShapeError: inconsistent ranks or channels, or a crop that leaves nothing.
        ParameterShapeError: parameter vectors of the wrong length.
        OpParameterError: strides, dilations or groups below 1, or a negative pad.
        UnsupportedOpError: pad_type other than valid, custom or same.

    Example:
        x [1, 2, 4], weight [2, 3, 4], strides=[2], pad_type="custom", pad=[1, 1] gives
        [1, 3, 8]: the full length (4 - 1) * 2 + 4 = 10 minus 1 at each end.
    """
    op = "conv_transpose"
    x = np.asarray(x)
    weight = np.asarray(weight)
    check_rank(x, op=op, minimum=3, maximum=5)
    check_rank(weight, op=op, param="weight", minimum=x.ndim, maximum=x.ndim)

    spatial = x.ndim - 2
    batch, cin = x.shape[:2]
    if weight.shape[0] != cin:
        raise ShapeError(
            f"{op}: weight has shape {list(weight.shape)}; dim 0 must equal Cin = {cin}"
        )
    groups = as_int(groups, op=op, param="groups")
    if groups < 1:
        raise OpParameterError(f"{op}: groups={groups}; expected a positive integer")
    cout = weight.shape[1] * groups
    _check_groups(op, groups, cin, cout)
    kernel = weight.shape[2:]
    if min(kernel) < 1:
        raise ShapeError(f"{op}: weight has an empty kernel, shape {list(weight.shape)}")
    bias = _check_bias(op, bias, cout)
    strides = spatial_ints(strides, spatial, op=op, param="strides", default=1, minimum=1)
    dilations = spatial_ints(dilations, spatial, op=op, param="dilations", default=1, minimum=1)

    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    full_sizes = tuple((size - 1) * s + e for size, s, e in zip(x.shape[2:], strides, extents))
    begins, out_sizes = _transpose_crop(
        op, pad_type, pad, output_shape, full_sizes, x.shape[2:], strides, batch, cout
    )

    # Every kernel tap's contribution in one matmul: [N, G, Cout/G * prod(K), prod(D)].
    cin_group, cout_group = cin // groups, cout // groups
    taps, positions = math.prod(kernel), math.prod(x.shape[2:])
    element_count(
        (batch, cout, taps, positions), name=f"{op}: column matrix of x {list(x.shape)}"
    )
    element_count((batch, cout) + full_sizes, name=f"{op}: full output")
    filters = weight.astype(x.dtype, copy=False).reshape(groups, cin_group, cout_group * taps)
    inputs = x.reshape(batch, groups, cin_group, positions)
    columns = np.matmul(filters.transpose(0, 2, 1), inputs)
    columns = columns.reshape((batch, cout) + tuple(kernel) + x.shape[2:])

    # col2im: tap k of input position i lands at full-output position i*s + k*d.
    full = np.zeros((batch, cout) + full_sizes, dtype=columns.dtype)
    for tap in np.ndindex(*kernel):
        target = tuple(
            slice(k * d, k * d + (size - 1) * s + 1, s)
            for k, d, s, size in zip(tap, dilations, strides, x.shape[2:])
        )
        full[(slice(None), slice(None)) + target] += columns[(slice(None), slice(None)) + tap]

    # Crop, or zero-fill past the end of the full output.
    if begins == (0,) * spatial and out_sizes == full_sizes:
        y = full
    else:
        y = np.zeros((batch, cout) + out_sizes, dtype=full.dtype)
        kept_sizes = tuple(
            max(0, min(size, full - b)) for size, full, b in zip(out_sizes, full_sizes, begins)
        )
        source = tuple(slice(b, b + k) for b, k in zip(begins, kept_sizes))
        y[(slice(None), slice(None)) + tuple(slice(0, k) for k in kept_sizes)] = full[
            (slice(None), slice(None)) + source
        ]
    return _add_bias(y, bias)
