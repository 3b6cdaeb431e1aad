"""The rule that picks the sparse, tiled or dense strategy for one op.

:func:`choose_strategy` looks at the token count (``prod`` of the input's leading dims, or
``N * prod(D_out)`` for a convolution), the weight layout and its density, and whether the
AVX-512 streaming kernels can run the weight on this host:

1. No streaming kernel (no AVX-512, or a LUT/scale grouping the kernels do not handle):
   ``"dense"``. The portable decoder is 1.4 to 10 times slower than dense BLAS.
2. One token: ``"sparse"``. The streaming kernel reads less than the fp32 weight at any density.
3. A few tokens: ``"sparse"`` while the streaming kernel still wins. The bitmask layout decodes
   each 16-column step once per 4 tokens and wins up to 8 tokens. The block layouts decode once
   per token and win while ``tokens * density <= 4``.
4. More tokens: ``"tiled"``. Decoding 4 MiB tiles and multiplying them with BLAS costs about the
   same as dense BLAS (0.7 to 1.05 times), without keeping the dense weight in memory.

Measured with ``bench/bench_kernels.py`` and a token sweep on a 2-core AMD EPYC (Zen 4,
AVX-512) VM shared with other jobs, one thread each for BLAS and numba, weight 4096x4096,
OpenBLAS 0.3.31 (SkylakeX kernel). Time over the faster dense orientation:

=====================  ======  ======  ======  ======  ======  ======
layout, density        T=1     T=2     T=4     T=8     T=16    T=64
=====================  ======  ======  ======  ======  ======  ======
bitmask 50 %, fp16     0.81 s  0.46 s  0.48 s  0.66 s  0.78 t  0.95 t
bitmask 50 %, lut4     0.62 s  0.43 s  0.38 s  0.58 s  0.78 t  0.94 t
bitmask 10 %, fp16     0.22 s  0.38 s  0.36 s  0.54 s  0.77 t  0.95 t
row blocks 50 %, fp16  0.57 s  0.38 s  0.73 s  0.99 t  1.42 t  0.88 t
row blocks 10 %, fp16  0.17 s  0.10 s  0.15 s  0.20 s  0.33 s  0.97 t
col blocks 50 %, lut4  0.43 s  0.28 s  0.50 s  0.75 t  0.78 t  0.98 t
=====================  ======  ======  ======  ======  ======  ======

(``s`` streaming kernel, ``t`` tiles with BLAS.) The bench script prints the full tables,
with two threads as well; on a loaded 2-core machine the two-thread timings vary by a factor
of ten between runs, so the rule rests on the one-thread sweep.
"""

from __future__ import annotations

from typing import Literal

from .formats import BitmaskWeight, CompressedWeight

__all__ = ["Strategy", "choose_strategy", "BITMASK_MAX_TOKENS", "BLOCK_MAX_TOKENS_TIMES_DENSITY"]

Strategy = Literal["sparse", "tiled", "dense"]

# Largest token count for which the bitmask streaming kernel beats tiles with BLAS.
BITMASK_MAX_TOKENS = 8

# The block streaming kernels run once per token; they win while tokens * density stays at
# or below this value.
BLOCK_MAX_TOKENS_TIMES_DENSITY = 4.0


def choose_strategy(weight: CompressedWeight, tokens: int) -> Strategy:
    """Return the strategy for multiplying ``tokens`` input rows by ``weight``.

    Example: for a 50 % unstructured 4096x4096 weight, 1 token gives "sparse", 8 tokens
    "sparse" and 64 tokens "tiled".
    """
    from .linear import sparse_supported

    if not sparse_supported(weight):
        return "dense"
    if tokens <= 1:
        return "sparse"
    if isinstance(weight, BitmaskWeight):
        return "sparse" if tokens <= BITMASK_MAX_TOKENS else "tiled"
    if tokens * weight.density <= BLOCK_MAX_TOKENS_TIMES_DENSITY:
        return "sparse"
    return "tiled"
