"""Blob file throughput: reading a 100 MB fp16 blob against a plain in-memory copy.

Each row reports the best of several repeats. "read + copy" maps the file, reads the blob
as a view and copies it into a preallocated array, so it touches every page. The file is in
the page cache after the first repeat. "np.copyto" copies between two in-memory arrays of
the same size. The sub-byte rows unpack 100 MB of packed payload.

Usage: ``python bench/bench_blobfile.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sparseblob.runtime.blobfile import BlobFile, BlobWriter

PAYLOAD_BYTES = 100 * 2**20
REPEATS = 5


def best_seconds(run) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    fp16 = rng.standard_normal(PAYLOAD_BYTES // 2).astype(np.float16)
    uint4 = rng.integers(0, 16, PAYLOAD_BYTES * 2).astype(np.uint8)
    uint3 = rng.integers(0, 8, PAYLOAD_BYTES * 8 // 3).astype(np.uint8)
    target = np.empty_like(fp16)
    rows = []

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "weight.bin"

        def write_fp16() -> None:
            with BlobWriter(path) as writer:
                writer.write(fp16, "fp16")

        rows.append(("write fp16 (with fsync)", PAYLOAD_BYTES, best_seconds(write_fp16)))

        def read_and_copy() -> None:
            with BlobFile(path) as blob_file:
                np.copyto(target, blob_file.read(64, dtype="fp16"))

        rows.append(("read + copy fp16", PAYLOAD_BYTES, best_seconds(read_and_copy)))
        rows.append(("np.copyto fp16 (in memory)", PAYLOAD_BYTES, best_seconds(lambda: np.copyto(target, fp16))))

        for name, values in (("uint4", uint4), ("uint3", uint3)):
            with BlobWriter(path) as writer:
                writer.write(values, name)

            def read_sub_byte() -> None:
                with BlobFile(path) as blob_file:
                    blob_file.read(64, dtype=name)

            rows.append((f"read + unpack {name}", PAYLOAD_BYTES, best_seconds(read_sub_byte)))

    table = Table(title=f"blob file throughput, best of {REPEATS}")
    table.add_column("operation")
    table.add_column("payload MB", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("GB/s", justify="right")
    for label, size, seconds in rows:
        table.add_row(label, f"{size / 2**20:.0f}", f"{seconds * 1e3:.1f}", f"{size / seconds / 1e9:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
