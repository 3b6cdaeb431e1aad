"""linear and matmul kernels against the dense path of the same weight."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.runtime.errors import OptionError, ShapeError, UnsupportedOpError
from sparseblob.runtime.kernels import _simd, formats, linear as linear_module
from sparseblob.runtime.kernels.linear import linear, matmul, sparse_supported
from sparseblob.runtime.kernels.patterns import NM
from sparseblob.verify.compare import assert_close

from .test_kernels_builders import LAYOUTS, VALUE_FORMATS, fit_shape, make_weight

DENSITIES = (0.0, 0.05, 0.3, 0.5, 0.9, 1.0)
STRATEGIES = ("sparse", "tiled", "dense")


def _reference(x: np.ndarray, dense: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) @ dense.astype(np.float64).T).astype(np.float32)


def _assert_outputs_close(actual: np.ndarray, expected: np.ndarray, dense: np.ndarray, name: str = "output") -> None:
    """Compare with the fp32 tolerance after scaling weights of large magnitude down to 1.

    The fp32 tolerance assumes unit-sized terms. int8 values up to 128 make the rounding error
    of a cancelling sum 128 times larger, so both sides are divided by the largest weight.
    """
    __tracebackhide__ = True
    magnitude = max(1.0, float(np.abs(dense).max(initial=0.0)))
    assert_close(actual / magnitude, expected / magnitude, name=name)


@st.composite
def linear_cases(draw):
    rows = draw(st.integers(1, 40))
    columns = draw(st.integers(1, 80))
    value_format = draw(st.sampled_from(VALUE_FORMATS))
    layout = draw(st.sampled_from(LAYOUTS))
    density = draw(st.sampled_from(DENSITIES))
    tokens = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    return fit_shape((rows, columns), value_format, layout), value_format, layout, density, tokens, seed


def _check_strategies(case):
    shape, value_format, layout, density, tokens, seed = case
    rng = np.random.default_rng(seed)
    built = make_weight(rng, shape, density, value_format, layout)
    x = rng.standard_normal((tokens, shape[1])).astype(np.float32)
    expected = _reference(x, built.reference)
    for strategy in STRATEGIES:
        _assert_outputs_close(linear(x, built.weight, strategy=strategy), expected, built.reference, name=strategy)


@given(linear_cases())
def test_linear_matches_dense(case):
    _check_strategies(case)


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("value_format", VALUE_FORMATS)
def test_kernels_decode_values_exactly(value_format, layout):
    # With one-hot inputs each output is one weight times 1.0 plus zeros, so every strategy
    # must return the decoded weight exactly, fp16 rounding steps included.
    rng = np.random.default_rng(23)
    shape = fit_shape((12, 40), value_format, layout)
    built = make_weight(rng, shape, 0.6, value_format, layout)
    identity = np.eye(shape[1], dtype=np.float32)
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(linear(identity, built.weight, strategy=strategy), built.reference.T, err_msg=strategy)


@pytest.mark.parametrize("vbmi2", [True, False], ids=["vbmi2", "no-vbmi2"])
@pytest.mark.parametrize("tokens", [1, 3])
@pytest.mark.parametrize("density", [0.1, 0.5])
@pytest.mark.parametrize("value_format", VALUE_FORMATS)
def test_kernels_over_many_steps(value_format, density, tokens, vbmi2, monkeypatch):
    # 200 columns give 13 steps of 16 columns per row, more than the kernels' 4 rotating
    # accumulators. Density 0.1 takes the indexed kernel, and 0.5 the mask kernels. Without
    # VBMI2, fp16 and 4-bit LUT values take the generic mask kernel.
    if vbmi2 and not _simd.VBMI2:
        pytest.skip("the host has no AVX-512 VBMI2")
    monkeypatch.setattr(_simd, "VBMI2", vbmi2)
    rng = np.random.default_rng(24)
    shape = fit_shape((9, 200), value_format, "unstructured")
    built = make_weight(rng, shape, density, value_format)
    x = rng.standard_normal((tokens, shape[1])).astype(np.float32)
    _assert_outputs_close(linear(x, built.weight, strategy="sparse"), _reference(x, built.reference), built.reference)


@contextlib.contextmanager
def _portable_kernels():
    """Run the kernels that compile without AVX-512, as on a host that lacks it."""
    saved = _simd.AVAILABLE
    _simd.AVAILABLE = False
    try:
        yield
    finally:
        _simd.AVAILABLE = saved


@given(linear_cases())
def test_portable_kernels_match_dense(case):
    with _portable_kernels():
        _check_strategies(case)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "mask_name, mask",
    [
        ("empty rows", np.array([[0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]] * 6, bool)),
        ("single nonzero", np.eye(1, 37, 36, dtype=bool).repeat(5, axis=0) * np.eye(5, 1, dtype=bool)),
        ("all zero", np.zeros((7, 19), bool)),
        ("all ones", np.ones((7, 19), bool)),
        ("last column", np.eye(3, 48, 47, dtype=bool) | np.eye(3, 48, 45, dtype=bool)),
    ],
)
def test_special_masks_match_dense(mask_name, mask, strategy):
    rng = np.random.default_rng(11)
    built = make_weight(rng, mask.shape, 0.0, "fp16", mask=mask)
    x = rng.standard_normal((3, mask.shape[1])).astype(np.float32)
    assert_close(linear(x, built.weight, strategy=strategy), _reference(x, built.reference), name=mask_name)


@contextlib.contextmanager
def _panel_columns(width: int):
    saved = linear_module.PANEL_COLUMNS
    linear_module.PANEL_COLUMNS = width
    try:
        yield
    finally:
        linear_module.PANEL_COLUMNS = saved


INDEXED_FORMATS = ("fp16", "fp32", "lut4", "lut2-grouped-rows", "lut8-int8-table", "int8-per-channel")


@pytest.mark.skipif(not _simd.AVAILABLE, reason="the indexed kernel needs AVX-512")
@given(
    rows=st.integers(1, 30),
    columns=st.integers(1, 200),
    width=st.sampled_from([16, 32, 48, 4096]),
    value_format=st.sampled_from(INDEXED_FORMATS),
    density=st.sampled_from([0.0, 0.05, 0.1, 0.2]),
    tokens=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_indexed_kernel_column_panels(rows, columns, width, value_format, density, tokens, seed):
    rng = np.random.default_rng(seed)
    shape = fit_shape((rows, columns), value_format, "unstructured")
    mask = np.zeros(shape, bool)
    mask.flat[rng.choice(mask.size, int(density * mask.size), replace=False)] = True
    built = make_weight(rng, shape, density, value_format, mask=mask)
    x = rng.standard_normal((tokens, shape[1])).astype(np.float32)
    with _panel_columns(width):
        actual = linear(x, built.weight, strategy="sparse")
    # The panel cache proves the indexed kernel ran.
    assert width in built.weight.__dict__.get("_column_panels", {})
    _assert_outputs_close(actual, _reference(x, built.reference), built.reference)


def test_column_panels_order():
    rng = np.random.default_rng(30)
    built = make_weight(rng, (5, 70), 0.4, "fp16")
    weight = built.weight
    panels = weight.column_panels(32)
    assert panels.n_panels == 3
    assert panels.start[0] == 0
    assert panels.start[-1] == weight.payload.size

    rebuilt = np.zeros((weight.rows, weight.columns_padded), np.float16)
    for panel in range(panels.n_panels):
        for row in range(weight.rows):
            first, stop = panels.start[panel * weight.rows + row : panel * weight.rows + row + 2]
            columns = panels.columns[first:stop].astype(np.int64)
            assert np.all((columns >= 32 * panel) & (columns < 32 * panel + 32))
            assert np.all(np.diff(columns) > 0)
            rebuilt[row, columns] = panels.payload.data16[first:stop].view(np.float16)
    np.testing.assert_array_equal(rebuilt[:, : weight.columns].view(np.uint16), built.reference.astype(np.float16).view(np.uint16))


def test_single_column_panel_shares_payload():
    built = make_weight(np.random.default_rng(31), (4, 40), 0.3, "lut4")
    assert built.weight.column_panels(4096).payload is built.weight.payload
    with pytest.raises(OptionError, match="width is 20; expected a positive multiple of 16"):
        built.weight.column_panels(20)


@pytest.mark.skipif(not _simd.AVAILABLE, reason="the indexed kernel needs AVX-512")
def test_indexed_tail_ignores_other_rows():
    # Row 0 stores one value (column 0); the vector step past it would read the inputs of
    # row 1's columns. An infinite input there must not reach row 0.
    mask = np.zeros((2, 80), bool)
    mask[0, 0] = True
    mask[1, 1:20] = True
    values = np.full(int(mask.sum()), 0.5, np.float16)
    weight = formats.from_sparse(mask.astype(np.uint8), values)
    x = np.ones((1, 80), np.float32)
    x[0, 5] = np.inf
    assert linear_module._kernel_args(weight).indexed
    y = linear(x, weight, strategy="sparse")
    assert y[0, 0] == 0.5
    assert y[0, 1] == np.inf


@pytest.mark.parametrize("axis, block", [(0, 2), (0, 8), (1, 4), (1, 16)])
def test_other_block_widths_match_dense(axis, block):
    rng = np.random.default_rng(12)
    layout = ("rows" if axis == 0 else "columns", block)
    built = make_weight(rng, (35, 70), 0.4, "lut4", layout)
    x = rng.standard_normal((2, 70)).astype(np.float32)
    assert sparse_supported(built.weight) == _simd.AVAILABLE
    assert_close(linear(x, built.weight, strategy="sparse"), _reference(x, built.reference))


def test_n_m_sparse_matmul_equals_dense():
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    mask = np.zeros((64, 64), bool)
    for row in range(64):
        for group in range(16):
            for position in pairs[(row + group) % 6]:
                mask[row, 4 * group + position] = True
    dense = np.zeros((64, 64), np.float16)
    dense[mask] = (np.arange(1, int(mask.sum()) + 1) * 0.125).astype(np.float16)
    weight = formats.from_sparse(mask, dense[mask], pattern=NM(2, 4, 1))
    x = np.random.default_rng(13).standard_normal((4, 64)).astype(np.float32)
    expected = _reference(x, dense.astype(np.float32))
    for strategy in STRATEGIES:
        assert_close(linear(x, weight, strategy=strategy), expected, name=strategy)


def test_linear_keeps_leading_dims_and_adds_bias():
    rng = np.random.default_rng(14)
    built = make_weight(rng, (6, 10), 0.5, "fp16")
    x = rng.standard_normal((2, 3, 10)).astype(np.float16)
    bias = rng.standard_normal(6).astype(np.float16)
    y = linear(x, built.weight, bias)
    expected = _reference(x.reshape(6, 10), built.reference).reshape(2, 3, 6) + bias.astype(np.float32)
    assert y.shape == (2, 3, 6)
    assert y.dtype == np.float32
    assert_close(y, expected)


def test_linear_rank_one_input():
    rng = np.random.default_rng(15)
    built = make_weight(rng, (5, 9), 0.5, "lut4")
    x = rng.standard_normal(9).astype(np.float32)
    assert_close(linear(x, built.weight), _reference(x[None], built.reference)[0])


def test_linear_fp64_reference():
    rng = np.random.default_rng(16)
    built = make_weight(rng, (5, 9), 0.5, "int8-per-channel")
    x = rng.standard_normal((2, 9))
    y = linear(x, built.weight, compute_dtype=np.float64)
    assert y.dtype == np.float64
    assert_close(y, x @ built.reference.astype(np.float64).T)


@pytest.mark.parametrize("tokens", [1, 2, 8, 64, 150])
def test_default_strategy_matches_dense(tokens):
    rng = np.random.default_rng(17)
    built = make_weight(rng, (24, 40), 0.5, "fp16")
    x = rng.standard_normal((tokens, 40)).astype(np.float32)
    assert_close(linear(x, built.weight), _reference(x, built.reference))


@pytest.mark.parametrize("layout", ["unstructured", ("rows", 4), ("columns", 2)], ids=str)
def test_many_tokens_match_dense(layout):
    # More than 64 tokens switch the BLAS calls to x @ W^T.
    rng = np.random.default_rng(22)
    built = make_weight(rng, (30, 50), 0.5, "lut4", layout)
    x = rng.standard_normal((150, 50)).astype(np.float32)
    expected = _reference(x, built.reference)
    for strategy in STRATEGIES:
        assert_close(linear(x, built.weight, strategy=strategy), expected, name=strategy)


# ---------------------------------------------------------------------------------------------
# matmul


def _numpy_matmul(a, b, transpose_a, transpose_b):
    a = np.swapaxes(a, -1, -2) if transpose_a and a.ndim > 1 else a
    b = np.swapaxes(b, -1, -2) if transpose_b and b.ndim > 1 else b
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.float32)


MATMUL_CASES = [
    (shape, transpose_other, transpose_weight)
    for shape in [(2, 3, 5, 7), (5, 7), (7,)]
    for transpose_other in (False, True)
    for transpose_weight in (False, True)
    if len(shape) > 1 or not transpose_other
]


@pytest.mark.parametrize("other_shape, transpose_other, transpose_weight", MATMUL_CASES)
def test_matmul_weight_on_right(other_shape, transpose_other, transpose_weight):
    rng = np.random.default_rng(18)
    inner = other_shape[-1]
    weight_shape = (4, inner) if transpose_weight else (inner, 4)
    built = make_weight(rng, weight_shape, 0.5, "fp16")
    x = rng.standard_normal(other_shape).astype(np.float32)
    if transpose_other:
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2))
    y = matmul(x, built.weight, transpose_x=transpose_other, transpose_y=transpose_weight)
    assert_close(y, _numpy_matmul(x, built.reference, transpose_other, transpose_weight))


@pytest.mark.parametrize("other_shape, transpose_other, transpose_weight", MATMUL_CASES)
def test_matmul_weight_on_left(other_shape, transpose_other, transpose_weight):
    rng = np.random.default_rng(19)
    # y is [K] or [..., K, N] after its transpose, and the test swaps it back when transposed.
    inner = other_shape[0] if len(other_shape) == 1 else other_shape[-2]
    weight_shape = (inner, 4) if transpose_weight else (4, inner)
    built = make_weight(rng, weight_shape, 0.5, "int8-per-channel")
    y_operand = rng.standard_normal(other_shape).astype(np.float32)
    if transpose_other:
        y_operand = np.ascontiguousarray(np.swapaxes(y_operand, -1, -2))
    result = matmul(built.weight, y_operand, transpose_x=transpose_weight, transpose_y=transpose_other)
    assert_close(result, _numpy_matmul(built.reference, y_operand, transpose_weight, transpose_other))


# ---------------------------------------------------------------------------------------------
# Invalid inputs


def _weight(shape=(4, 8)):
    return make_weight(np.random.default_rng(20), shape, 0.5, "fp16").weight


INVALID = [
    ("x features", lambda: linear(np.ones((2, 7), np.float32), _weight()), ShapeError, "last dimension to be 8"),
    ("x scalar", lambda: linear(np.float32(1.0), _weight()), ShapeError, "x has shape"),
    ("x strings", lambda: linear(np.array([["a"] * 8]), _weight()), ShapeError, "numeric"),
    ("bias shape", lambda: linear(np.ones((2, 8), np.float32), _weight(), np.ones(3)), ShapeError, "bias has shape"),
    ("weight rank 3", lambda: linear(np.ones((2, 8), np.float32), _weight((4, 2, 4))), ShapeError, "rank 2"),
    ("strategy", lambda: linear(np.ones((2, 8), np.float32), _weight(), strategy="fast"), UnsupportedOpError, "strategy 'fast'"),
    ("compute fp16", lambda: linear(np.ones((2, 8), np.float32), _weight(), compute_dtype=np.float16), UnsupportedOpError, "float16"),
    ("matmul inner", lambda: matmul(np.ones((2, 5), np.float32), _weight()), ShapeError, "expected the last dimension"),
    ("matmul two weights", lambda: matmul(_weight(), _weight()), UnsupportedOpError, "exactly one"),
    ("matmul vector transpose", lambda: matmul(np.ones(4), _weight(), transpose_x=True), ShapeError, "rank-1 x"),
]


@pytest.mark.parametrize("call, error, message", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_inputs_raise(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_tile_rows_respects_row_blocks():
    built = make_weight(np.random.default_rng(21), (30, 5000), 0.5, "fp16", ("rows", 4))
    rows = linear_module.tile_rows(built.weight)
    assert rows % 4 == 0
    assert rows * built.weight.columns_padded * 4 <= linear_module.TILE_BYTES
