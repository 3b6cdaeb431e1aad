"""The rule that picks the sparse, tiled or dense strategy for one op.

:func:`choose_strategy` looks at the token count (``prod`` of the input's leading dims, or
``N * prod(D_out)`` for a convolution), the weight layout and its density, and whether the
AVX-512 streaming kernels can run the weight on this host:

1. No streaming kernel (no AVX-512, or a LUT/scale grouping the kernels do not handle):
   ``"dense"``. The portable decoder plus BLAS took 1.4 to 10 times as long as dense BLAS.
2. One token: ``"sparse"``. The streaming kernel reads less than the fp32 weight at any density.
3. More tokens: ``"sparse"`` while the streaming kernel still wins. The bitmask layout decodes
   each 16-column step once per 4 tokens and wins up to 8 tokens. The block layouts skip
   whole blocks for every token, so the lower the density, the more tokens they win for:
   while ``tokens * density**2`` is at most 2.25 for row blocks and 1.5 for column blocks.
4. Otherwise: ``"tiled"``. Decoding 16 MiB tiles and multiplying them with BLAS costs 1.0 to
   1.25 times dense BLAS, without keeping the dense weight in memory.

Measured with one thread each for BLAS and numba (``bench/bench_kernels.py --threads 1`` and a
token sweep) on a 2-core AMD EPYC (Zen 4, AVX-512) VM, OpenBLAS 0.3.31 with its SkylakeX
kernel, weight 4096x4096. Time over the faster dense orientation, ``s`` for the streaming
kernel and ``t`` for tiles with BLAS, the faster one shown:

=====================  ======  ======  ======  ======  ======  ======
layout, density        T=1     T=2     T=4     T=8     T=16    T=64
=====================  ======  ======  ======  ======  ======  ======
bitmask 50 %, fp16     0.55 s  0.56 s  0.47 s  0.67 s  0.97 t  1.07 t
bitmask 50 %, lut4     0.57 s  0.43 s  0.38 s  0.58 s  0.96 s  1.05 t
bitmask 10 %, fp16     0.26 s  0.19 s  0.30 s  0.56 s  0.93 s  1.04 t
row blocks 50 %, fp16  0.60 s  0.39 s  0.53 s  0.82 s  1.22 t  1.10 t
row blocks 10 %, fp16  0.18 s  0.11 s  0.16 s  0.20 s  0.33 s  1.07 t
col blocks 50 %, lut4  0.47 s  0.33 s  0.49 s  0.76 s  1.04 t  1.08 t
=====================  ======  ======  ======  ======  ======  ======

Blocks of 4, fp16, 4096x4096: streaming kernel time over tiled time. The block rule keeps each
measured crossover (ratio 1) at or above its token limit:

=====================  ======  ======  ======  ======  ======  ======
layout, density        T=8     T=16    T=32    T=64    T=128   T=512
=====================  ======  ======  ======  ======  ======  ======
row blocks 10 %        0.23    0.36    0.44    0.53    0.50    0.60
row blocks 15 %        0.33    0.52    0.63    0.75    0.72    0.86
row blocks 25 %        0.48    0.78    0.95    1.17    1.16    1.37
row blocks 50 %        0.71    1.23    1.67
col blocks 10 %        0.29    0.47    0.56    0.69    0.77    1.20
col blocks 15 %        0.39    0.57    0.76    0.95    1.14    1.66
col blocks 25 %        0.60    0.95    1.17    1.54
col blocks 50 %        1.00    1.59
=====================  ======  ======  ======  ======  ======  ======

The two-thread timings on the same VM, which other jobs share, varied by up to ten times
between runs, so the rule rests on the one-thread measurements. A likely cause, not verified:
OpenBLAS worker threads spin after a call and can hold a core for a scheduler time slice while
a numba kernel waits for its second thread.
"""

from __future__ import annotations

from typing import Literal

from .formats import BitmaskWeight, CompressedWeight, RowBlockWeight

__all__ = ["Strategy", "choose_strategy", "BITMASK_MAX_TOKENS", "ROW_BLOCK_LIMIT", "COLUMN_BLOCK_LIMIT"]

Strategy = Literal["sparse", "tiled", "dense"]

# Largest token count for which the bitmask streaming kernel beats tiles with BLAS.
BITMASK_MAX_TOKENS = 8

# The block streaming kernels win while tokens * density**2 stays at or below these limits
# (fitted to the crossovers in the table above).
ROW_BLOCK_LIMIT = 2.25
COLUMN_BLOCK_LIMIT = 1.5


def choose_strategy(weight: CompressedWeight, tokens: int) -> Strategy:
    """Return the strategy for multiplying ``tokens`` input rows by ``weight``.

    Example: for a 50 % unstructured 4096x4096 weight, 1 token gives "sparse", 8 tokens
    "sparse" and 64 tokens "tiled"; with 10 % row blocks, 64 tokens still give "sparse".
    """
    from .linear import sparse_supported

    if not sparse_supported(weight):
        return "dense"
    if tokens <= 1:
        return "sparse"
    if isinstance(weight, BitmaskWeight):
        return "sparse" if tokens <= BITMASK_MAX_TOKENS else "tiled"
    limit = ROW_BLOCK_LIMIT if isinstance(weight, RowBlockWeight) else COLUMN_BLOCK_LIMIT
    if tokens * weight.density**2 <= limit:
        return "sparse"
    return "tiled"
