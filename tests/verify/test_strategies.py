"""The public Hypothesis strategies generate values with the properties they promise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from sparseblob.runtime.decode.registry import decode_op
from sparseblob.verify import strategies as sbst
from sparseblob.verify.patterns import blocks_hold, detect_pattern, min_zeros_per_run
from sparseblob.verify.report import Status
from sparseblob.verify.verify import verify_package

IOS18_OPSET = "CoreML8"


@given(sbst.masks(min_sparsity=0.25, max_sparsity=0.75, min_side=4))
def test_unstructured_masks_keep_sparsity_bounds(mask):
    sparsity = 1 - mask.mean()

    assert mask.dtype == np.bool_
    assert 0.25 - 1e-9 <= sparsity <= 0.75 + 1e-9


@given(st.data())
def test_n_m_masks_hold_per_axis(data):
    n, m = data.draw(st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8)]))
    axis = data.draw(st.sampled_from([0, 1]))

    mask = data.draw(sbst.masks(pattern="n:m", n=n, m=m, axis=axis))

    assert min_zeros_per_run(mask, m, axis) >= n


@given(sbst.masks(pattern="n:m", shape=(8, 16)))
def test_exact_two_of_four_masks_have_half_zeros(mask):
    assert mask.sum() == 64
    assert detect_pattern(mask).n_m[:2] in ((2, 4), (1, 2))


@given(sbst.masks(pattern="n:m", exact=False, shape=(4, 12)))
def test_inexact_n_m_masks_still_hold(mask):
    assert min_zeros_per_run(mask, 4, 1) >= 2


@given(st.data())
def test_block_masks_hold_per_axis(data):
    size = data.draw(st.sampled_from([2, 4, 8]))
    axis = data.draw(st.sampled_from([0, 1, 2]))

    mask = data.draw(sbst.masks(pattern="block", block_size=size, axis=axis, min_dims=3, max_dims=3, max_side=10))

    assert blocks_hold(mask, size, axis)


@given(sbst.weights(pattern="n:m", dtype=np.float32, axis=0))
def test_weights_zeros_follow_the_mask(weight):
    assert weight.dtype == np.float32
    assert np.isfinite(weight).all()
    assert min_zeros_per_run(weight != 0, 4, 0) >= 2
    assert (np.abs(weight[weight != 0]) >= 2.0**-6).all()


@given(sbst.weights(min_magnitude=0.5, max_magnitude=2.0, min_sparsity=0.5, max_sparsity=0.5, shape=(4, 4)))
def test_weights_keep_magnitude_bounds(weight):
    kept = np.abs(weight[weight != 0]).astype(np.float32)

    assert weight.dtype == np.float16
    assert kept.size == 8
    assert ((kept >= 0.5) & (kept <= 2.0)).all()


@given(sbst.luts())
def test_luts_decode(params):
    (dense,) = decode_op(params.op_type, IOS18_OPSET, params.inputs(), name="lut", dtypes=params.dtypes())

    assert params.lut.shape[-2] == 2**params.nbits
    assert int(params.indices.max()) < 2**params.nbits
    assert dense.shape == params.indices.shape
    assert np.isfinite(dense).all()


@given(sbst.luts(nbits=3, granularity="per_grouped_channel", group_size=4, vector_size=2, vector_axis=1))
def test_grouped_vector_luts_decode(params):
    (dense,) = decode_op(params.op_type, IOS18_OPSET, params.inputs(), name="lut", dtypes=params.dtypes())

    assert params.lut.shape[0] == params.indices.shape[0] // 4
    assert params.lut.shape[-2:] == (8, 2)
    assert dense.shape == (params.indices.shape[0], 2 * params.indices.shape[1])


@given(sbst.quantization_params())
def test_quantization_params_decode(params):
    (dense,) = decode_op(params.op_type, IOS18_OPSET, params.inputs(), name="quant", dtypes=params.dtypes())

    assert (params.scale > 0).all()
    assert np.isfinite(dense).all()
    assert dense.dtype == np.float16


@given(sbst.quantization_params(dtype="int4", granularity="per_block", block_size=4, offset=False))
def test_int4_block_params_in_range(params):
    assert params.offset is None
    assert params.data.min() >= -8
    assert params.data.max() <= 7
    assert params.data.shape[1] == 4 * params.scale.shape[1]


@pytest.mark.parametrize(
    ("strategy", "arguments"),
    [
        (sbst.masks, {"pattern": "diagonal"}),
        (sbst.masks, {"min_sparsity": 0.8, "max_sparsity": 0.2}),
        (sbst.masks, {"pattern": "n:m", "n": 5, "m": 4}),
        (sbst.masks, {"axis": 2}),
        (sbst.weights, {"dtype": np.int8}),
        (sbst.weights, {"min_magnitude": 0.0}),
        (sbst.luts, {"nbits": 5}),
        (sbst.luts, {"granularity": "per_channel"}),
        (sbst.quantization_params, {"dtype": "int2"}),
        (sbst.quantization_params, {"min_scale": 0.0}),
        (sbst.packages, {"targets": ()}),
        (sbst.packages, {"options": ["magic"]}),
        (sbst.packages, {"min_features": 9, "max_features": 11}),
    ],
)
def test_invalid_arguments_rejected(strategy, arguments):
    with pytest.raises(InvalidArgument):
        strategy(**arguments)


@pytest.fixture(scope="module")
def package_directory(tmp_path_factory):
    return tmp_path_factory.mktemp("packages")


@settings(max_examples=4, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_generated_packages_verify(package_directory, data):
    generated = data.draw(sbst.packages(directory=package_directory, max_layers=1, max_features=16))

    report = verify_package(generated.compressed, reference=generated.dense, min_cosine=0.0, min_weight_cosine=0.0)

    assert generated.compressed.is_dir()
    assert report.rows(check="decode")
    assert report.exit_code == 0, [row for row in report.checks if row.status is Status.FAIL]
