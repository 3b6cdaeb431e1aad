"""Decode throughput of the constexpr decoders on a 4096 x 11008 weight, in GB/s of dense output.

Each decoder runs side by side with coremltools' reference ``decompress`` of the same op and
with two copies of the same number of output bytes. ``np.copyto`` into a new array pays for
allocating and first touching the output, as an allocating decoder call does; the other copy
writes into an existing array. The first table times the allocating call against the copy into a
new array; the second times the decoder writing into an existing array (its ``out``
parameter) against the copy into an existing array. Decoder calls and copies are timed in
interleaved rounds, so that load from other processes affects them alike; each time is the
best over all rounds of several passes, after one warm-up call that also compiles the numba
kernels.

Targets, for the rows marked as such: at least 0.5x the bandwidth of the matching copy (new
array in the first table, existing array in the second) and at least 5x coremltools.

Usage: ``python bench/bench_decode.py [--repeats N] [--passes P] [--reference-repeats M] [--seed S]``
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from sparseblob.runtime import decode

SHAPE = (4096, 11008)
COPY_TARGET = 0.5
REFERENCE_TARGET = 5.0


@dataclass(frozen=True)
class Case:
    """One decoder call, the same call writing into ``out``, and the coremltools equivalent."""

    label: str
    decoder: Callable[[], np.ndarray]
    decoder_into: Callable[[np.ndarray], np.ndarray]
    reference: Callable[[], object]
    targeted: bool


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Return the shortest wall time of ``repeats`` calls, after one untimed warm-up call."""
    return best_times([function], repeats)[0]


def best_times(functions: list[Callable[[], object]], repeats: int) -> list[float]:
    """Return the shortest wall time of each function over ``repeats`` interleaved rounds.

    Each round calls every function once, so that a change of machine load between rounds
    affects all of them alike. One untimed warm-up call per function comes first.
    """
    for function in functions:
        function()
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for position, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[position] = min(best[position], time.perf_counter() - start)
    return best


def build_cases(rng: np.random.Generator) -> list[Case]:
    """Return the benchmark cases, inputs generated once from ``rng``."""
    from coremltools.converters.mil.mil.ops.defs.iOS16 import constexpr_ops as ios16
    from coremltools.converters.mil.mil.ops.defs.iOS18 import compression as ios18
    from coremltools.optimize import _utils as coreml_utils

    rows, columns = SHAPE
    shape_param = np.array(SHAPE, dtype=np.uint32)

    mask = (rng.random(SHAPE) < 0.5).astype(np.uint8)
    nonzero_data = rng.standard_normal(int(mask.sum())).astype(np.float16)
    packed_mask = np.packbits(mask.reshape(-1), bitorder="little")

    indices = rng.integers(0, 16, SHAPE, dtype=np.uint8)
    lut = rng.standard_normal((1, 1, 16, 1)).astype(np.float16)
    packed_indices = coreml_utils.pack_elements_into_bits(indices, 4)
    lut_ios16 = lut.reshape(16)

    int8_data = rng.integers(-128, 128, SHAPE, dtype=np.int8)
    channel_scale = (rng.random((rows, 1)) * 0.01).astype(np.float16)
    int4_data = rng.integers(-8, 8, SHAPE, dtype=np.int8)
    block_scale = (rng.random((rows, columns // 32)) * 0.01).astype(np.float16)

    return [
        Case(
            "sparse_to_dense iOS18, fp16, 50% mask",
            lambda: decode.sparse_to_dense_ios18(nonzero_data, mask),
            lambda out: decode.sparse_to_dense_ios18(nonzero_data, mask, out=out),
            lambda: ios18.constexpr_sparse_to_dense.decompress(nonzero_data, mask),
            True,
        ),
        Case(
            "sparse_to_dense iOS16, fp16, 50% mask",
            lambda: decode.sparse_to_dense_ios16(nonzero_data, packed_mask, shape_param),
            lambda out: decode.sparse_to_dense_ios16(nonzero_data, packed_mask, shape_param, out=out),
            lambda: ios16.constexpr_sparse_to_dense.decompress(nonzero_data, packed_mask, shape_param),
            False,
        ),
        Case(
            "lut_to_dense iOS18, 4-bit per tensor, fp16",
            lambda: decode.lut_to_dense_ios18(indices, lut, nbits=4),
            lambda out: decode.lut_to_dense_ios18(indices, lut, nbits=4, out=out),
            lambda: ios18.constexpr_lut_to_dense.decompress(indices, lut, None),
            True,
        ),
        Case(
            "lut_to_dense iOS16, 4-bit packed, fp16",
            lambda: decode.lut_to_dense_ios16(packed_indices, lut_ios16, shape_param),
            lambda out: decode.lut_to_dense_ios16(packed_indices, lut_ios16, shape_param, out=out),
            lambda: ios16.constexpr_lut_to_dense.decompress(lut_ios16, packed_indices, shape_param),
            False,
        ),
        Case(
            "blockwise_shift_scale int8 per channel, fp16",
            lambda: decode.blockwise_shift_scale(int8_data, channel_scale),
            lambda out: decode.blockwise_shift_scale(int8_data, channel_scale, out=out),
            lambda: ios18.constexpr_blockwise_shift_scale.decompress(int8_data, channel_scale, None),
            True,
        ),
        Case(
            "blockwise_shift_scale int4 per block 32, fp16",
            lambda: decode.blockwise_shift_scale(int4_data, block_scale),
            lambda out: decode.blockwise_shift_scale(int4_data, block_scale, out=out),
            lambda: ios18.constexpr_blockwise_shift_scale.decompress(int4_data, block_scale, None),
            True,
        ),
    ]


def machine_description() -> str:
    """Return the CPU, core count, load average and library versions, for the table caption."""
    import llvmlite.binding
    import numba

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{platform.machine()} {llvmlite.binding.get_host_cpu_name()}, {os.cpu_count()} cores, "
        f"load average {load}; numpy {np.__version__}, numba {numba.__version__}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per case and pass")
    parser.add_argument("--passes", type=int, default=3, help="passes over all cases")
    parser.add_argument(
        "--reference-repeats", type=int, default=2, help="timed calls per coremltools decompress"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated weights")
    args = parser.parse_args()

    # coremltools logs and warns about the Core ML bindings that Linux lacks.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    console = Console(width=max(170, Console().width))

    output_bytes = int(np.prod(SHAPE)) * np.dtype(np.float16).itemsize
    source = np.ones(SHAPE, dtype=np.float16)
    # Existing arrays, touched once here so that no timed call pays for first-touch faults.
    existing = np.zeros(SHAPE, dtype=np.float16)
    decoder_out = np.zeros(SHAPE, dtype=np.float16)

    def copy_to_new() -> None:
        np.copyto(np.empty(SHAPE, dtype=np.float16), source)

    def copy_to_existing() -> None:
        np.copyto(existing, source)

    def gigabytes_per_second(seconds: float) -> float:
        return output_bytes / seconds / 1e9

    # Passes over all cases, keeping each case's best times: a burst of load from other
    # processes then spoils one pass of a case, not its result.
    cases = build_cases(np.random.default_rng(args.seed))
    best = {case.label: [float("inf")] * 4 for case in cases}
    for _ in range(args.passes):
        for case in cases:
            decode_into = functools.partial(case.decoder_into, decoder_out)
            functions = [case.decoder, decode_into, copy_to_new, copy_to_existing]
            times = best_times(functions, args.repeats)
            best[case.label] = [min(old, new) for old, new in zip(best[case.label], times)]

    title = f"{SHAPE[0]} x {SHAPE[1]} fp16 output ({output_bytes / 1e6:.0f} MB)"
    allocating = Table(title=f"Decode throughput into a new array, {title}", caption=machine_description())
    columns = ("case", "ms", "GB/s", "copy ms (new / existing)", "x copy", "x copy (existing)", "coremltools ms", "x coremltools", "targets")
    for column in columns:
        allocating.add_column(column, justify="left" if column == "case" else "right")
    into = Table(title=f"Decode throughput into an existing array (out=), {title}", caption=machine_description())
    for column in ("case", "ms", "GB/s", "copy ms (existing)", "x copy (existing)", "x coremltools", "targets"):
        into.add_column(column, justify="left" if column == "case" else "right")

    missed = []
    for case in cases:
        seconds, seconds_into, new_copy, existing_copy = best[case.label]
        reference = best_time(case.reference, args.reference_repeats)
        versus_copy = new_copy / seconds
        versus_reference = reference / seconds
        verdict = "-"
        if case.targeted:
            met = versus_copy >= COPY_TARGET and versus_reference >= REFERENCE_TARGET
            verdict = "met" if met else "MISSED"
            if not met:
                missed.append(case.label)
        allocating.add_row(
            case.label,
            f"{seconds * 1e3:.1f}",
            f"{gigabytes_per_second(seconds):.1f}",
            f"{new_copy * 1e3:.1f} / {existing_copy * 1e3:.1f}",
            f"{versus_copy:.2f}",
            f"{existing_copy / seconds:.2f}",
            f"{reference * 1e3:.0f}",
            f"{versus_reference:.1f}",
            verdict,
        )

        versus_existing = existing_copy / seconds_into
        versus_reference_into = reference / seconds_into
        verdict = "-"
        if case.targeted:
            met = versus_existing >= COPY_TARGET and versus_reference_into >= REFERENCE_TARGET
            verdict = "met" if met else "MISSED"
            if not met:
                missed.append(f"{case.label} (out=)")
        into.add_row(
            case.label,
            f"{seconds_into * 1e3:.1f}",
            f"{gigabytes_per_second(seconds_into):.1f}",
            f"{existing_copy * 1e3:.1f}",
            f"{versus_existing:.2f}",
            f"{versus_reference_into:.1f}",
            verdict,
        )

    console.print(allocating)
    console.print(into)
    if missed:
        console.print(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
