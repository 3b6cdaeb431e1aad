"""The ``sparseblob demo`` job: build a small dense model, compress it four ways, verify each.

:func:`run_demo` writes into ``workdir``:

- ``dense.mlpackage``: an fp16 MLP 64-128-128-32 with a batch of 8
  (:func:`sparseblob.verify.builders.build_mlp_package`), built with coremltools' MIL builder,
  so that the demo needs no fixture file and no download;
- four copies compressed by sparseblob's encoder (:func:`sparseblob.encoder.mlpackage.compress_package`):
  50% unstructured pruning, 2:4 pruning, 4-bit k-means palettization and int8 symmetric
  per-channel quantization.

Each copy is verified against the dense model with seeded random inputs, and its report is
printed. The reference threshold is 0.95 instead of the default 0.99: these models are
compressed after training with no fine-tuning, which is where an output cosine of 0.97 to 0.99
is normal (2:4 pruning and 4-bit palettization of this model measure about 0.97 and 0.98).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from .builders import build_mlp_package
from .report import Report, render_table, summary_line
from .verify import verify_package

__all__ = ["DEMO_MIN_COSINE", "DemoVariant", "DEMO_VARIANTS", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_MIN_COSINE = 0.95
"""The ``reference_output`` threshold of the demo; see the module docstring for why it is below the default."""


@dataclass(frozen=True)
class DemoVariant:
    """One way the demo compresses the dense model.

    Attributes:
        name: the package name (``<name>.mlpackage``).
        title: a one-line description.
        options: options of :meth:`CompressionConfig.from_options`.
        expect: the ``--expect`` expectations the result must meet, or None.
    """

    name: str
    title: str
    options: dict
    expect: str | None = None


DEMO_VARIANTS = (
    DemoVariant("prune50", "50% unstructured pruning", {"pattern": "unstructured", "sparsity": 0.5}, "sparsity>=0.5"),
    DemoVariant("prune2of4", "2:4 pruning along the input axis", {"pattern": "n_m", "n_m": "2:4"}, "2:4@axis1"),
    DemoVariant("palettize4", "4-bit k-means palettization", {"values": "palettize", "nbits": 4, "palettize_mode": "kmeans"}),
    DemoVariant("int8", "int8 symmetric per-channel quantization", {"values": "quantize", "quantize_dtype": "int8"}),
)


def run_demo(workdir: str | os.PathLike, console: Console) -> list[Report]:
    """Build, compress and verify the demo models, printing each report.

    Args:
        workdir: an existing, empty directory for the packages.
        console: where the progress and the reports go.

    Returns:
        One report per variant, in the order of :data:`DEMO_VARIANTS`.
    """
    from sparseblob.encoder.config import CompressionConfig
    from sparseblob.encoder.mlpackage import compress_package

    workdir = Path(workdir)
    started = time.perf_counter()
    console.print(f"[bold]sparseblob demo[/] in {workdir}")

    dense = build_mlp_package(workdir / "dense.mlpackage")
    console.print(f"built the dense model {dense.name}: fp16 MLP 64-128-128-32, batch 8")

    reports = []
    for variant in DEMO_VARIANTS:
        package = workdir / f"{variant.name}.mlpackage"
        config = CompressionConfig.from_options(min_elements=0, **variant.options)
        compress_package(dense, package, config)
        console.rule(f"{variant.name}: {variant.title}")
        report = verify_package(package, reference=dense, expect=variant.expect, min_cosine=DEMO_MIN_COSINE)
        render_table(report, console)
        reports.append(report)

    console.rule("summary")
    for variant, report in zip(DEMO_VARIANTS, reports):
        console.print(f"{variant.name:>12}  {summary_line(report)}")
    console.print(
        f"finished in {time.perf_counter() - started:.1f} s; reference threshold cosine >= {DEMO_MIN_COSINE} "
        "(see docs/verify.md)"
    )
    return reports
