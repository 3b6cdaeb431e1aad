"""Hypothesis strategies for encoder tests: finite weights of rank 2 to 4 and fp16 or fp32."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOAT_DTYPES = (np.float16, np.float32)


def shapes(*, min_dims: int = 2, max_dims: int = 4, min_side: int = 1, max_side: int = 9):
    """Shapes of weights: linear ``[out, in]`` up to conv ``[Cout, Cin, kH, kW]``."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def weights(draw, *, shape=None, dtype=None, allow_ties: bool = True, zeros: bool = True):
    """Finite fp16 or fp32 weights, with repeated values and zeros (including -0.0) mixed in."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES)) if dtype is None else dtype
    shape = draw(shapes()) if shape is None else shape
    width = 16 if dtype == np.float16 else 32
    elements = st.floats(-100, 100, width=width, allow_nan=False, allow_infinity=False)
    if allow_ties:
        elements = st.one_of(elements, st.sampled_from([0.5, -0.5, 1.0, 0.25]))
    if zeros:
        elements = st.one_of(elements, st.sampled_from([0.0, -0.0]))
    else:
        elements = elements.filter(lambda value: value != 0)
    return draw(hnp.arrays(dtype, shape, elements=elements))
