"""Time pruning plus encoding of one 4096x11008 fp16 weight: sparseblob's encoder against coremltools.

Each row prunes the weight (50% unstructured, 2:4, or blocks of 4 at 50%) and then either
palettizes the nonzero values to 4 bits (uniform mode: coremltools' kmeans needs scikit-learn)
or quantizes them to int8 (symmetric, per output channel).

- sparseblob: ``magnitude_mask``/``n_m_mask``/``block_mask``, ``apply_mask``, then
  ``palettize_nonzero`` or ``quantize_nonzero``, on the numpy array; best of ``--repeat`` runs.
- coremltools API: ``prune_weights`` on an iOS18 model holding the weight (built once with the MIL
  builder), then ``palettize_weights`` or ``linear_quantize_weights`` with
  ``joint_compression=True``; one run each, and the pruning time is counted in both of its rows.
- coremltools arrays: the pass's static array functions (``compress_by_magnitude``,
  ``compress_by_nm_sparsity``, ``blockwise_compress``) on the same array, for reference.

Usage: ``python bench/bench_encode.py [--repeat N] [--rows R] [--cols C]``.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def _best_of(repeat: int, function) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _once(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def _build_model(weight: np.ndarray):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, weight.shape[1]), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def program(x):
        return mb.linear(x=x, weight=weight, name="linear")

    return ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )


PATTERNS = {
    "50% unstructured": {"target_sparsity": 0.5},
    "2:4": {"n_m_ratio": (2, 4)},
    "block 4, 50%": {"target_sparsity": 0.5, "block_size": 4},
}
ENCODINGS = ("4-bit palette", "int8")


def _ours(weight: np.ndarray, pattern: str, encoding: str):
    from sparseblob import encoder

    if pattern == "2:4":
        keep = encoder.n_m_mask(weight, 2, 4)
    elif pattern == "block 4, 50%":
        keep = encoder.block_mask(weight, 0.5, 4)
    else:
        keep = encoder.magnitude_mask(weight, 0.5)
    pruned = encoder.apply_mask(weight, keep)
    if encoding == "int8":
        return encoder.quantize_nonzero(pruned, "int8", mode="symmetric", granularity="per_channel")
    return encoder.palettize_nonzero(pruned, 4, mode="uniform")


def _coremltools_arrays(weight: np.ndarray, pattern: str, encoding: str):
    from coremltools.optimize.coreml._quantization_passes import (
        linear_quantize_weights,
        palettize_weights,
        prune_weights,
    )

    if pattern == "2:4":
        sparse = prune_weights.compress_by_nm_sparsity(weight, (2, 4), dim=1)
    elif pattern == "block 4, 50%":
        sparse = prune_weights.compress_by_magnitude(weight, 0.5, block_size=4, dim=0)
    else:
        sparse = prune_weights.compress_by_magnitude(weight, 0.5)
    pruned = prune_weights.decompress(sparse)
    mask = pruned != 0
    if encoding == "int8":
        params = linear_quantize_weights.blockwise_compress(pruned, 8, "LINEAR_SYMMETRIC", True, [1, 0])
        return params.data[mask]
    params = palettize_weights.blockwise_compress(pruned, "UNIFORM", 4, [0, 0])
    return params.indices[mask]


def _coremltools_api(model, pattern: str):
    """Return {encoding: seconds} for pruning the model and then compressing it jointly."""
    from coremltools.optimize import coreml as cto

    pruner = cto.OpMagnitudePrunerConfig(weight_threshold=1024, **PATTERNS[pattern])
    pruned, prune_seconds = _once(lambda: cto.prune_weights(model, cto.OptimizationConfig(pruner)))

    palettizer = cto.OpPalettizerConfig(mode="uniform", nbits=4, weight_threshold=1024)
    _, palette_seconds = _once(
        lambda: cto.palettize_weights(pruned, cto.OptimizationConfig(palettizer), joint_compression=True)
    )
    quantizer = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=1024
    )
    _, quant_seconds = _once(
        lambda: cto.linear_quantize_weights(pruned, cto.OptimizationConfig(quantizer), joint_compression=True)
    )
    return {"4-bit palette": prune_seconds + palette_seconds, "int8": prune_seconds + quant_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the sparseblob encoder; the best counts")
    parser.add_argument("--rows", type=int, default=4096, help="output channels of the weight")
    parser.add_argument("--cols", type=int, default=11008, help="input channels of the weight")
    args = parser.parse_args()
    logging.getLogger("coremltools").setLevel(logging.ERROR)

    console = Console(width=120)
    weight = np.random.default_rng(0).standard_normal((args.rows, args.cols)).astype(np.float16)
    console.print(f"weight fp16 [{args.rows}, {args.cols}]; building the coremltools model once")
    model = _build_model(weight)

    # One untimed call loads the encoder's modules and warms numpy's caches.
    _ours(weight[:64, :64], "2:4", "int8")

    table = Table(title=f"Prune + encode fp16 [{args.rows}, {args.cols}] (seconds)")
    for column in ("pattern", "encoding", "sparseblob", "coremltools API", "speed-up", "coremltools arrays"):
        table.add_column(column, justify="left" if column in ("pattern", "encoding") else "right")

    for pattern in PATTERNS:
        api = _coremltools_api(model, pattern)
        for encoding in ENCODINGS:
            ours = _best_of(args.repeat, lambda: _ours(weight, pattern, encoding))
            arrays = _best_of(1, lambda: _coremltools_arrays(weight, pattern, encoding))
            table.add_row(
                pattern, encoding, f"{ours:.2f}", f"{api[encoding]:.2f}", f"{api[encoding] / ours:.1f}x", f"{arrays:.2f}"
            )
            console.print(f"{pattern}, {encoding}: {ours:.2f} s against {api[encoding]:.2f} s")

    console.print(table)


if __name__ == "__main__":
    main()
