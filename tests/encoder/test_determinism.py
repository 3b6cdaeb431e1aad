"""The same input always gives the same bytes, through every encoder path."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sparseblob.encoder import (
    apply_mask,
    block_mask,
    encode_sparse,
    magnitude_mask,
    n_m_mask,
    palettize_nonzero,
    palettize_quantized_lut,
    quantize_nonzero,
)

from .strategies import weights

EVEN_SHAPES = st.tuples(st.sampled_from([4, 8]), st.sampled_from([4, 8]))


def _encode_all(weight: np.ndarray) -> list[bytes]:
    """Run every mask and encoding on ``weight`` and return all output arrays as bytes."""
    found = []
    for keep in (magnitude_mask(weight, 0.5), block_mask(weight, 0.5, 2), n_m_mask(weight, 2, 4)):
        pruned = apply_mask(weight, keep)
        sparse = encode_sparse(pruned)
        lut = palettize_nonzero(pruned, 2, group_size=2)
        quant = quantize_nonzero(pruned, "int4", mode="affine", granularity="per_block", block_size=2)
        chain = palettize_quantized_lut(pruned, 2, nonzero_only=True)
        arrays = [keep, pruned, sparse.mask, sparse.nonzero_data, lut.indices_nonzero_data, lut.lut]
        arrays += [quant.nonzero_data, quant.scale, quant.offset, chain.lut_quant.data, chain.lut_quant.scale]
        found += [np.asarray(array).tobytes() for array in arrays]
    return found


@given(weights(shape=EVEN_SHAPES))
def test_same_input_gives_same_bytes(weight):
    assert _encode_all(weight) == _encode_all(weight.copy())
