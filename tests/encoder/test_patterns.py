"""Pattern checks name the first violating group and never change the tensor."""

from __future__ import annotations

import numpy as np
import pytest

from sparseblob.encoder import apply_mask, check_blocks, check_n_m, n_m_mask
from sparseblob.runtime.errors import PatternError
from sparseblob.verify.compare import assert_bits_equal


def _dense_fp16(shape=(16, 16)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1, 1], size=shape)).astype(np.float16)


def test_dense_tensor_declared_2_4_rejected():
    weight = _dense_fp16()
    before = weight.copy()
    with pytest.raises(PatternError, match=r"w: group 0 along axis 1 at \[0, 0:4\] has 4 nonzero values") as error:
        check_n_m(weight, 2, 4, name="w")
    assert "64 groups violate it" in str(error.value)
    assert_bits_equal(weight, before, "weight")


def test_single_bad_group_named():
    weight = apply_mask(_dense_fp16(), n_m_mask(_dense_fp16(), 2, 4))
    check_n_m(weight, 2, 4)

    # Give row 5, columns 8:12 a third nonzero value.
    group = weight[5, 8:12]
    zero_position = 8 + int(np.flatnonzero(group == 0)[0])
    weight[5, zero_position] = np.float16(1.5)
    before = weight.copy()

    with pytest.raises(PatternError, match=r"group 2 along axis 1 at \[5, 8:12\] has 3 nonzero values") as error:
        check_n_m(weight, 2, 4)
    assert "(1 groups violate it)" in str(error.value)
    assert_bits_equal(weight, before, "weight")


def test_n_m_check_along_axis_0():
    weight = np.zeros((8, 3), dtype=np.float32)
    weight[0:2, :] = 1.0
    check_n_m(weight, 2, 4, axis=0)

    weight[6, 2] = 1.0
    weight[7, 2] = 1.0
    weight[5, 2] = 1.0
    with pytest.raises(PatternError, match=r"group 1 along axis 0 at \[4:8, 2\] has 3 nonzero values"):
        check_n_m(weight, 2, 4, axis=0)


def test_n_m_check_counts_padding_as_zeros():
    # 2:4 along 6 columns: the last group [x, y, pad, pad] may hold two nonzero values.
    weight = np.array([[1, 0, 0, 0, 1, 1]], dtype=np.float32)
    check_n_m(weight, 2, 4)
    with pytest.raises(PatternError, match=r"group 1 along axis 1 at \[0, 4:6\] has 2 nonzero values \(2 zeros"):
        check_n_m(weight, 3, 4)


def test_negative_zero_counts_as_zero():
    weight = np.array([[1.0, -0.0, 0.0, 2.0]], dtype=np.float16)
    check_n_m(weight, 2, 4)


def test_mixed_block_rejected():
    weight = np.ones((8, 4), dtype=np.float32)
    weight[0:4, 1] = 0.0
    check_blocks(weight, 4)

    weight[6, 3] = 0.0
    before = weight.copy()
    with pytest.raises(PatternError, match=r"block 1 along axis 0 at \[4:8, 3\] has 3 nonzero values out of 4"):
        check_blocks(weight, 4)
    assert_bits_equal(weight, before, "weight")


def test_partial_block_checked_over_real_elements():
    weight = np.ones((6, 2), dtype=np.float32)
    weight[4:6, 0] = 0.0
    check_blocks(weight, 4)

    weight[5, 1] = 0.0
    with pytest.raises(PatternError, match=r"block 1 along axis 0 at \[4:6, 1\] has 1 nonzero values out of 2"):
        check_blocks(weight, 4)
