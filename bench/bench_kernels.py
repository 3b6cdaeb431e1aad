"""Sparse kernels versus dense fp32 BLAS on the decoded weight: linear layers and ResNet-50 convs.

Usage: ``python bench/bench_kernels.py [--quick] [--repeat N] [--threads N] [--shapes 4096x4096,4096x11008]``

Linear weights are ``[out, in]``: 4096x4096 and 4096x11008 (out 4096, in 11008, the shape of a
LLaMA-7B down projection). For each sparsity pattern, value format and batch (tokens), the
dense time is the faster of ``np.matmul(x, W.T)`` and ``np.matmul(W, x.T)`` on the decoded fp32
weight, and the sparse times are the
streaming kernel (``strategy="sparse"``) and decoded tiles with BLAS (``strategy="tiled"``).
Each sparse strategy is run interleaved with the dense product, and the best of
``--repeat`` runs is kept. The ratio column is
the faster sparse strategy over dense. The targets are at most 0.6 at 50 % sparsity and 0.3 at
90 % for one token, and at most 1.2 at 50 % for 64 tokens.

Convolutions are the ResNet-50 conv2_x layers at 56x56 with one image: 1x1 64->64, 3x3 64->64
(pad 1) and 1x1 64->256, compared with the same im2col and a dense matmul.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def _thread_count_from_argv(argv: list[str]) -> str | None:
    """Return the --threads value, which must be applied before numpy and numba load."""
    for index, item in enumerate(argv):
        if item == "--threads" and index + 1 < len(argv):
            return argv[index + 1]
        if item.startswith("--threads="):
            return item.split("=", 1)[1]
    return None


# One thread each by default: the ratios compare kernels at equal thread counts, and on a
# shared machine with few cores the two-thread timings varied by up to ten times between runs.
_THREADS = _thread_count_from_argv(sys.argv[1:]) or "1"
os.environ["OPENBLAS_NUM_THREADS"] = _THREADS
os.environ["NUMBA_NUM_THREADS"] = _THREADS

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numba  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sparseblob.runtime.kernels import _simd, choose, formats  # noqa: E402
from sparseblob.runtime.kernels.conv import conv  # noqa: E402
from sparseblob.runtime.kernels.linear import linear, sparse_supported  # noqa: E402
from sparseblob.runtime.kernels.patterns import NM, Blocks  # noqa: E402

console = Console()

# (label, kind, density): kind is "unstructured", "2:4" or "block4" (blocks of 4 output rows,
# coremltools' default block axis).
PATTERNS = [
    ("50% unstructured", "unstructured", 0.5),
    ("75% unstructured", "unstructured", 0.25),
    ("90% unstructured", "unstructured", 0.1),
    ("2:4", "2:4", 0.5),
    ("50% block 4", "block4", 0.5),
    ("75% block 4", "block4", 0.25),
    ("90% block 4", "block4", 0.1),
]
VALUE_FORMATS = ("fp16", "lut4")
BATCHES = (1, 8, 64)


def blas_description() -> str:
    """Return the BLAS library and kernel numpy uses, from threadpoolctl or numpy's config."""
    try:
        from threadpoolctl import threadpool_info

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            info = infos[0]
            return f"{info.get('internal_api')} {info.get('version')}, kernel {info.get('architecture')}, {info.get('num_threads')} threads"
    except ImportError:
        pass
    config = np.show_config(mode="dicts")
    blas = config["Build Dependencies"]["blas"]
    text = f"{blas.get('name')} {blas.get('version')}"
    # numpy wheels bundle scipy-openblas; it reports the kernel it selected at load time.
    libraries = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "libscipy_openblas*.so"))
    for path in libraries:
        library = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            if hasattr(library, symbol):
                function = getattr(library, symbol)
                function.restype = ctypes.c_char_p
                text += f", kernel {function().decode()}"
                break
        for symbol in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
            if hasattr(library, symbol):
                text += f", {getattr(library, symbol)()} threads"
                break
    return text


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def make_mask(rng: np.random.Generator, shape: tuple[int, ...], kind: str, density: float):
    """Return a mask with the pattern and the pattern object to declare."""
    if kind == "unstructured":
        return rng.random(shape) < density, None
    if kind == "block4":
        reduced = (-(-shape[0] // 4),) + shape[1:]
        return np.repeat(rng.random(reduced) < density, 4, axis=0)[: shape[0]], Blocks(4, 0)
    moved = np.moveaxis(np.zeros(shape, bool), 1, -1)
    groups = rng.random(moved.shape[:-1] + (moved.shape[-1] // 4, 4)).argsort(axis=-1)[..., :2]
    keep = np.zeros(moved.shape[:-1] + (moved.shape[-1] // 4, 4), bool)
    np.put_along_axis(keep, groups, True, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, 1), NM(2, 4, 1)


def make_weight(rng, shape, kind, density, value_format):
    mask, pattern = make_mask(rng, shape, kind, density)
    count = int(mask.sum())
    if value_format == "fp16":
        return formats.from_sparse(mask, rng.standard_normal(count).astype(np.float16), pattern=pattern)
    lut = rng.standard_normal((1,) * len(shape) + (16, 1)).astype(np.float16)
    return formats.from_lut_to_sparse(mask, rng.integers(0, 16, count).astype(np.uint8), lut, pattern=pattern)


@dataclass
class Timing:
    dense: float
    sparse: float | None
    tiled: float


def best_of(functions: dict, repeat: int) -> dict:
    """Run the functions interleaved ``repeat`` times and return each one's best time."""
    for function in functions.values():
        function()
    best = {name: float("inf") for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def time_linear(weight, batch: int, repeat: int, rng) -> Timing:
    x = rng.standard_normal((batch, weight.columns)).astype(np.float32)
    dense = weight.dense_matrix()
    dense_functions = {
        "dense": lambda: np.matmul(x, dense.T),
        "dense transposed": lambda: np.matmul(dense, x.T),
    }
    # Each sparse strategy is interleaved with the dense products on its own, so that one
    # strategy's cache and thread state does not slow down the next one.
    tiled = best_of({**dense_functions, "tiled": lambda: linear(x, weight, strategy="tiled")}, repeat)
    dense_time = min(tiled["dense"], tiled["dense transposed"])
    sparse_time = None
    if sparse_supported(weight):
        sparse = best_of({**dense_functions, "sparse": lambda: linear(x, weight, strategy="sparse")}, repeat)
        dense_time = min(dense_time, sparse["dense"], sparse["dense transposed"])
        sparse_time = sparse["sparse"]
    # The baseline is the faster orientation of the dense product.
    return Timing(dense_time, sparse_time, tiled["tiled"])


def ratio_style(ratio: float, target: float | None) -> str:
    if target is None:
        return f"{ratio:.2f}"
    colour = "green" if ratio <= target else "red"
    return f"[{colour}]{ratio:.2f}[/{colour}] (≤{target})"


def target_for(kind: str, density: float, batch: int) -> float | None:
    if kind != "unstructured":
        return None
    if batch == 1:
        return {0.5: 0.6, 0.1: 0.3}.get(density)
    if batch == 64:
        return {0.5: 1.2}.get(density)
    return None


def bench_linear(shapes, repeat: int) -> None:
    rng = np.random.default_rng(0)
    for shape in shapes:
        table = Table(title=f"linear [out, in] = {list(shape)}, fp32 compute, times in ms")
        for column in ("pattern", "values", "batch", "dense BLAS", "sparse", "tiled", "chosen", "best / dense"):
            table.add_column(column, justify="right" if column not in ("pattern", "values", "chosen") else "left")
        for label, kind, density in PATTERNS:
            for value_format in VALUE_FORMATS:
                weight = make_weight(rng, shape, kind, density, value_format)
                for batch in BATCHES:
                    timing = time_linear(weight, batch, repeat, rng)
                    candidates = [t for t in (timing.sparse, timing.tiled) if t is not None]
                    ratio = min(candidates) / timing.dense
                    table.add_row(
                        label,
                        value_format,
                        str(batch),
                        f"{timing.dense * 1e3:.2f}",
                        "-" if timing.sparse is None else f"{timing.sparse * 1e3:.2f}",
                        f"{timing.tiled * 1e3:.2f}",
                        choose.choose_strategy(weight, batch),
                        ratio_style(ratio, target_for(kind, density, batch)),
                    )
                del weight
            table.add_section()
        console.print(table)


RESNET_STAGE = [
    # (label, weight shape, pads)
    ("1x1 64->64", (64, 64, 1, 1), ((0, 0), (0, 0))),
    ("3x3 64->64", (64, 64, 3, 3), ((1, 1), (1, 1))),
    ("1x1 64->256", (256, 64, 1, 1), ((0, 0), (0, 0))),
]


def bench_conv(repeat: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    table = Table(title="ResNet-50 conv2_x at 56x56, batch 1 (3136 tokens), fp16 values, times in ms")
    for column in ("conv", "pattern", "dense", "sparse", "tiled", "chosen", "best / dense"):
        table.add_column(column, justify="left" if column in ("conv", "pattern", "chosen") else "right")
    for label, shape, pads in RESNET_STAGE:
        for pattern_label, kind, density in (("50% unstructured", "unstructured", 0.5), ("2:4", "2:4", 0.5)):
            weight = make_weight(rng, shape, kind, density, "fp16")
            dense = lambda: conv(x, weight, pads=pads, strategy="dense")  # noqa: E731
            sparse = best_of({"dense": dense, "sparse": lambda: conv(x, weight, pads=pads, strategy="sparse")}, repeat)
            tiled = best_of({"dense": dense, "tiled": lambda: conv(x, weight, pads=pads, strategy="tiled")}, repeat)
            best = {"dense": min(sparse["dense"], tiled["dense"]), "sparse": sparse["sparse"], "tiled": tiled["tiled"]}
            ratio = min(best["sparse"], best["tiled"]) / best["dense"]
            table.add_row(
                label,
                pattern_label,
                f"{best['dense'] * 1e3:.2f}",
                f"{best['sparse'] * 1e3:.2f}",
                f"{best['tiled'] * 1e3:.2f}",
                choose.choose_strategy(weight, 56 * 56),
                f"{ratio:.2f}",
            )
    console.print(table)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per strategy (best is kept)")
    parser.add_argument("--quick", action="store_true", help="only the 4096x4096 layer, 3 runs")
    parser.add_argument("--shapes", default="4096x4096,4096x11008", help="comma-separated OUTxIN linear shapes")
    parser.add_argument("--no-conv", action="store_true", help="skip the convolution table")
    parser.add_argument("--threads", default="1", help="threads for BLAS and numba (default: 1)")
    args = parser.parse_args(argv)
    shapes = [tuple(int(d) for d in item.split("x")) for item in args.shapes.split(",")]
    repeat = args.repeat
    if args.quick:
        shapes, repeat = [(4096, 4096)], 3

    console.print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; numpy {np.__version__}")
    console.print(f"BLAS: {blas_description()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    console.print(f"AVX-512 sparse kernels: {'enabled' if _simd.AVAILABLE else 'disabled'}; numba threads {numba.get_num_threads()}")
    console.print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    bench_linear(shapes, repeat)
    if not args.no_conv:
        bench_conv(repeat)
    console.print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
