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


def main() -> None:
    """Entry point of the installed ``sparseblob`` command."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
