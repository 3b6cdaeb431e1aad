"""upsample_nearest_neighbor and upsample_bilinear against onnx.reference Resize and PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparseblob.runtime.errors import OpParameterError, ShapeError, UnsupportedOpError
from sparseblob.runtime.ops.resize import upsample_bilinear, upsample_nearest_neighbor
from sparseblob.verify.compare import assert_bits_equal, assert_close
from tests.runtime.onnx_node import run_onnx_node


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _onnx_resize(x, out_h, out_w, **attributes):
    """ONNX Resize to explicit sizes, so its grid uses in/out like the MIL ops."""
    sizes = np.array(x.shape[:-2] + (out_h, out_w), np.int64)
    return run_onnx_node("Resize", [x, None, None, sizes], **attributes)[0]


# (x shape, scale_factor_height, scale_factor_width)
SCALES = [
    ((1, 2, 4, 5), 2, 2),
    ((1, 2, 3, 4), 3, 1),
    ((2, 4, 6), 2.5, 1.5),
    ((1, 1, 5, 5), 0.6, 1.0),
    ((1, 2, 2, 2), 2.5, 3),
]


@pytest.mark.parametrize("x_shape, scale_h, scale_w", SCALES)
def test_upsample_nearest_matches_onnx(x_shape, scale_h, scale_w):
    x = _random(x_shape)
    actual = upsample_nearest_neighbor(x, scale_h, scale_w)
    out_h, out_w = math.floor(x_shape[-2] * scale_h), math.floor(x_shape[-1] * scale_w)
    expected = _onnx_resize(
        x, out_h, out_w, mode="nearest", coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    assert_bits_equal(actual, expected, "upsample_nearest_neighbor")


# (align_corners, half_pixel_centers, ONNX coordinate_transformation_mode)
BILINEAR_MODES = [
    (True, None, "align_corners"),
    (False, None, "half_pixel"),
    (False, True, "half_pixel"),
    (False, False, "asymmetric"),
    (True, False, "align_corners"),
]


@pytest.mark.parametrize("align_corners, half_pixel_centers, onnx_mode", BILINEAR_MODES)
@pytest.mark.parametrize("x_shape, scale_h, scale_w", SCALES)
def test_upsample_bilinear_matches_onnx(
    x_shape, scale_h, scale_w, align_corners, half_pixel_centers, onnx_mode
):
    x = _random(x_shape)
    actual = upsample_bilinear(
        x, scale_h, scale_w, align_corners=align_corners, half_pixel_centers=half_pixel_centers
    )
    out_h, out_w = math.floor(x_shape[-2] * scale_h), math.floor(x_shape[-1] * scale_w)
    expected = _onnx_resize(
        x, out_h, out_w, mode="linear", coordinate_transformation_mode=onnx_mode
    )
    assert_close(actual, expected, name="upsample_bilinear")


@pytest.mark.parametrize(
    "align_corners, out, grid",
    [
        (True, 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        (False, 5, [0.0, 0.1, 0.5, 0.9, 1.0]),
        (True, 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (False, 6, [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]),
    ],
)
def test_upsample_bilinear_samples_documented_grid(align_corners, out, grid):
    # On the ramp [0, 1] the interpolated value is the source coordinate itself.
    x = np.array([[[0.0, 1.0]]])
    actual = upsample_bilinear(x, 1, out / 2, align_corners=align_corners)
    np.testing.assert_allclose(actual[0, 0], grid, atol=1e-12)


def test_upsample_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    x = _random((1, 3, 5, 7))
    t = torch.from_numpy(x)
    for align_corners in (False, True):
        expected = torch.nn.functional.interpolate(
            t, scale_factor=2, mode="bilinear", align_corners=align_corners
        ).numpy()
        actual = upsample_bilinear(x, 2, 2, align_corners=align_corners)
        assert_close(actual, expected)
    expected = torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest").numpy()
    assert_bits_equal(upsample_nearest_neighbor(x, 2, 2), expected)


def test_upsample_bilinear_rejects_both_alignments():
    with pytest.raises(UnsupportedOpError, match="both True"):
        upsample_bilinear(np.zeros((1, 2, 2)), 2, 2, align_corners=True, half_pixel_centers=True)


@pytest.mark.parametrize("scale", [0.0, 0.2, -1.0, float("nan")])
def test_upsample_rejects_scale_giving_empty_output(scale):
    with pytest.raises(OpParameterError, match="output size"):
        upsample_nearest_neighbor(np.zeros((1, 3, 3)), scale, 1)


def test_upsample_rejects_rank_2():
    with pytest.raises(ShapeError, match="rank 2"):
        upsample_bilinear(np.zeros((3, 3)), 2, 2)
