"""The ``sparseblob`` command.

Each subcommand is a thin shell over the Python API: it parses options, calls the library, and
renders the result as a rich table on a terminal or as JSON. User errors (bad input files,
invalid options) print one line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

# coremltools logs a warning for each native Core ML binding that Linux lacks.
logging.getLogger("coremltools").setLevel(logging.ERROR)

from sparseblob.runtime.errors import SparseblobError  # noqa: E402

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(click.ClickException):
    """An error in the user's input: one line on stderr and exit status 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"sparseblob: error: {self.format_message()}", err=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _load(path: str):
    """Load a package, turning format errors into user errors."""
    from sparseblob.runtime.package import load

    try:
        return load(path)
    except (SparseblobError, OSError) as error:
        raise UserError(f"cannot load {path}: {error}") from error


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparseblob")
@click.option("-v", "--verbose", count=True, help="Log more: -v for INFO, -vv for DEBUG.")
def cli(verbose: int) -> None:
    """Encode, decode, run and verify Core ML compressed weights.

    \b
    Examples:
      sparseblob inspect model.mlpackage
      sparseblob run model.mlpackage --input x=x.npy -o out.npz
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("package", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(package: str, as_json: bool) -> None:
    """Show the compressed weights of PACKAGE (an .mlpackage directory).

    For every weight that a constexpr chain produces: the chain of ops, dense shape and dtype,
    stored bytes, compression ratio against dense fp16, and density of the sparsity mask.

    \b
    Example:
      sparseblob inspect fixtures/formats/ios18_prune_50.mlpackage
    """
    from sparseblob.verify.inspect import summarize

    loaded = _load(package)
    try:
        summary = summarize(loaded)
    except SparseblobError as error:
        raise UserError(f"{package}: {error}") from error

    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
        return

    console = _stdout()
    console.print(f"[bold]{summary.path}[/]  specificationVersion {summary.specification_version}")
    for function in summary.functions:
        console.print(
            f"function [bold]{function.name}[/] ({function.opset}): inputs "
            f"{', '.join(f'{k} {v}' for k, v in function.inputs.items())}; outputs "
            f"{', '.join(function.outputs)}; {sum(function.op_counts.values())} ops"
        )
        if not function.weights:
            console.print("  no compressed weights")
            continue
        table = Table(show_edge=False)
        for column in ("weight", "chain", "shape", "dtype", "stored", "ratio", "density"):
            table.add_column(column, justify="right" if column in ("stored", "ratio", "density") else "left")
        for weight in function.weights:
            table.add_row(
                weight.name,
                " > ".join(op.removeprefix("constexpr_") for op in weight.chain),
                "x".join(map(str, weight.shape)),
                weight.dtype,
                f"{weight.stored_bytes:,}",
                f"{weight.compression_ratio:.2f}",
                "-" if weight.density is None else f"{weight.density:.3f}",
            )
        console.print(table)


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, np.ndarray]:
    inputs = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise UserError(f"--input {pair!r}: expected NAME=FILE.npy")
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UserError(f"--input {name}: cannot read {file}: {error}") from error
    return inputs


@cli.command()
@click.argument("package", type=click.Path(exists=True, file_okay=False))
@click.option("--input", "-i", "input_pairs", multiple=True, metavar="NAME=FILE.npy",
              help="An input array, by input name; repeat for each input.")
@click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False),
              help="An .npz file holding every input by name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the outputs to this .npz file.")
@click.option("--weights", type=click.Choice(["sparse", "dense"]), default="sparse", show_default=True,
              help="Run compressed sparse weights with the sparse kernels, or decode all weights first.")
@click.option("--precision", type=click.Choice(["fp32", "fp64"]), default="fp32", show_default=True,
              help="Arithmetic precision of each op before rounding to the declared dtype.")
@click.option("--function", default=None, help="The function to run; the default function when omitted.")
@click.option("--trace", is_flag=True, help="Print each op's output shape, dtype, range and time.")
def run(package, input_pairs, inputs_file, output, weights, precision, function, trace) -> None:
    """Run PACKAGE on numpy inputs and print or save the outputs.

    \b
    Example:
      sparseblob run model.mlpackage --input x=x.npy -o out.npz
    """
    from sparseblob.runtime.interpreter import run_with_trace

    inputs = {}
    if inputs_file:
        with np.load(inputs_file, allow_pickle=False) as archive:
            inputs.update({name: archive[name] for name in archive.files})
    inputs.update(_parse_inputs(input_pairs))

    loaded = _load(package)
    try:
        result = run_with_trace(loaded, inputs, function=function, weights=weights,
                                precision=precision, trace=trace)
    except SparseblobError as error:
        raise UserError(f"{package}: {error}") from error

    console = _stdout()
    if trace:
        table = Table(title="trace", show_edge=False)
        for column in ("op", "type", "shape", "dtype", "min", "max", "ms", "kernel"):
            table.add_column(column)
        for entry in result.trace:
            table.add_row(entry.name, entry.type, " ".join("x".join(map(str, s)) for s in entry.shapes),
                          " ".join(entry.dtypes), " ".join(f"{v:.4g}" for v in entry.minimum),
                          " ".join(f"{v:.4g}" for v in entry.maximum), f"{entry.seconds * 1e3:.3f}",
                          entry.kernel)
        console.print(table)

    if output:
        np.savez(output, **result.outputs)
        console.print(f"wrote {len(result.outputs)} outputs to {output}")
    else:
        for name, value in result.outputs.items():
            console.print(f"{name}: {value.dtype} {list(value.shape)} min {value.min():.6g} max {value.max():.6g}")


@cli.command()
@click.argument("package", type=click.Path(exists=True, file_okay=False))
@click.option("--device", default="a17pro-ios18-ne", show_default=True, metavar="PROFILE",
              help="Device profile name (see --list-devices) or a profile JSON file.")
@click.option("--compare", "other", type=click.Path(exists=True, file_okay=False),
              help="A second package; prints its predicted latency over PACKAGE's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw per-layer time stacked by bound to this PNG file (needs matplotlib).")
@click.option("--list-devices", is_flag=True, help="List the shipped device profiles and exit.")
def latency(package, device, other, as_json, plot, list_devices) -> None:
    """Predict on-device latency of PACKAGE from its compressed weights.

    The model is fitted to Apple's published measurements; predictions for patterns that no
    published row measures are marked as extrapolations. Absolute times drift between OS
    builds, so compare ratios.

    \b
    Examples:
      sparseblob latency model.mlpackage --device a16-ios17-ne
      sparseblob latency dense.mlpackage --compare pruned.mlpackage --json
    """
    from sparseblob.runtime.latency import compare, costs_from_package, list_profiles, predict

    if list_devices:
        for name in list_profiles():
            click.echo(name)
        return

    try:
        loaded = _load(package)
        costs = costs_from_package(loaded)
        prediction = predict(costs, device)
        comparison = compare(_load(package), _load(other), device) if other else None
    except SparseblobError as error:
        raise UserError(f"{package}: {error}") from error

    if plot:
        _plot_latency(prediction, plot)

    if as_json:
        data = prediction.to_dict()
        data["device"] = prediction.profile
        if comparison is not None:
            data["compare"] = {"package": other, "total_ms": comparison.b.total_ms,
                               "ratio": comparison.ratio, "extrapolated": comparison.extrapolated}
        click.echo(json.dumps(data, indent=2))
        return

    console = _stdout()
    table = Table(title=f"{package} on {prediction.profile}", show_edge=False)
    numeric = ("MACs", "weight bytes", "activation bytes", "skipped", "ms")
    for column in ("layer", "op", *numeric[:-1], "bound", "ms", "note"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for layer, cost in zip(prediction.layers, costs):
        table.add_row(
            layer.name,
            cost.op,
            f"{cost.macs:,}",
            f"{layer.weight_bytes:,}",
            f"{cost.input_bytes + cost.output_bytes:,}",
            f"{layer.skipped_fraction:.0%}",
            layer.bound,
            f"{layer.ms:.4f}",
            "extrapolated" if layer.extrapolated else "",
        )
    console.print(table)
    reasons = sorted({reason for layer in prediction.layers for reason in layer.reasons})
    for reason in reasons:
        console.print(f"[yellow]extrapolated:[/] {reason}")
    console.print(
        f"total {prediction.total_ms:.4f} ms (dense fp16 equivalent {prediction.dense_ms:.4f} ms, "
        f"ratio {prediction.ratio_to_dense:.3f})"
        + ("  [yellow]extrapolated[/]" if prediction.extrapolated else "")
    )
    if comparison is not None:
        console.print(
            f"{other}: {comparison.b.total_ms:.4f} ms, ratio to {package}: {comparison.ratio:.3f}"
            + ("  [yellow]extrapolated[/]" if comparison.extrapolated else "")
        )


def _plot_latency(prediction, path: str) -> None:
    """Draw per-layer time, stacked by the model's terms, to a PNG file."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise UserError("--plot needs matplotlib: pip install 'sparseblob[plot]'") from error

    names = [layer.name for layer in prediction.layers]
    fig, axes = plt.subplots(figsize=(max(6, 0.3 * len(names)), 4))
    bottom = np.zeros(len(names))
    for term in ("compute_ms", "memory_ms", "decode_ms", "overhead_ms"):
        values = np.array([getattr(layer, term) for layer in prediction.layers])
        axes.bar(names, values, bottom=bottom, label=term.removesuffix("_ms"))
        bottom += values
    axes.set_ylabel("ms (terms; the model takes their max plus overhead)")
    axes.set_title(f"{prediction.profile}" + (" (extrapolated)" if prediction.extrapolated else ""))
    axes.tick_params(axis="x", rotation=90)
    axes.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Entry point of the installed ``sparseblob`` command."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
