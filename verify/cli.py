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

# Exit status of a usage error; verify exits 1 when a check fails.
EXIT_USAGE = 2


class UserError(click.ClickException):
    """An error in the user's input: one line on stderr and exit status 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"sparseblob: error: {self.format_message()}", err=True)


def _stdout() -> Console:
    # Rich assumes 80 columns when stdout is not a terminal; a pipe or a log file gets whole
    # names instead of truncated ones.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=True, width=width)


def _check_writable_parent(path: str, option: str) -> None:
    """Reject an output path whose directory does not exist, before any work is done."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: the directory {parent} does not exist")


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
    levels = {0: logging.WARNING, 1: logging.INFO}
    level = levels.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _inspect_onnx(path: str) -> None:
    from sparseblob.runtime.onnx_run import inspect_onnx

    try:
        summary = inspect_onnx(path)
    except SparseblobError as error:
        raise UserError(f"{path}: {error}") from error
    click.echo(json.dumps(summary.to_dict(), indent=2))


@cli.command()
@click.argument("package", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (ONNX models always print JSON).")
def inspect(package: str, as_json: bool) -> None:
    """Show the compressed weights of PACKAGE (an .mlpackage directory or an .onnx file).

    For every weight that a constexpr chain produces: the chain of ops, dense shape and dtype,
    stored bytes, compression ratio against dense fp16, and density of the sparsity mask.

    \b
    Example:
      sparseblob inspect fixtures/formats/ios18/prune_magnitude50.mlpackage
    """
    if str(package).endswith(".onnx"):
        _inspect_onnx(package)
        return

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


def _read_inputs_file(path: str) -> dict[str, np.ndarray]:
    """Read an ``--inputs`` .npz file, turning an unreadable file into a user error."""
    from sparseblob.runtime.errors import OptionError
    from sparseblob.verify.outputs import read_inputs

    try:
        return read_inputs(path)
    except OptionError as error:
        raise UserError(str(error)) from error


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, np.ndarray]:
    inputs = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise UserError(f"--input {pair!r}: expected NAME=FILE.npy")
        try:
            inputs[name] = np.load(file, allow_pickle=False)
        except OSError as error:
            raise UserError(f"--input {name}: cannot read {file}: {error}") from error
        except ValueError as error:
            raise UserError(f"--input {name}: {file} is not a .npy array file") from error
    return inputs


@cli.command()
@click.argument("package", type=click.Path(exists=True))
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
@click.option("--trace", is_flag=True,
              help="Print each op's output shape, dtype, range and time (.mlpackage only). The first "
                   "run of a sparse kernel includes its compilation time.")
def run(package, input_pairs, inputs_file, output, weights, precision, function, trace) -> None:
    """Run PACKAGE on numpy inputs and print or save the outputs.

    \b
    Example:
      sparseblob run model.mlpackage --input x=x.npy -o out.npz
    """
    from sparseblob.runtime.interpreter import run_with_trace

    if output:
        _check_writable_parent(output, "-o")
    inputs = _read_inputs_file(inputs_file) if inputs_file else {}
    inputs.update(_parse_inputs(input_pairs))

    if str(package).endswith(".onnx"):
        from sparseblob.runtime.interpreter import RunResult
        from sparseblob.runtime.onnx_run import run_onnx

        try:
            result = RunResult(run_onnx(package, inputs, weights=weights))
        except SparseblobError as error:
            raise UserError(f"{package}: {error}") from error
        except Exception as error:
            # onnx.reference raises its own types for inputs of the wrong dtype or rank.
            raise UserError(f"{package}: the ONNX run failed: {type(error).__name__}: {error}") from error
    else:
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
        noun = "output" if len(result.outputs) == 1 else "outputs"
        console.print(f"wrote {len(result.outputs)} {noun} to {output}")
    else:
        for name, value in result.outputs.items():
            console.print(f"{name}: {value.dtype} {list(value.shape)} min {value.min():.6g} max {value.max():.6g}")


@cli.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(), help="The compressed package or .onnx file to write.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A TOML file with global and per-op settings; the options below override its [global] table.")
@click.option("--sparsity", type=float, help="Fraction of weights to prune by magnitude, e.g. 0.5.")
@click.option("--n-m", "n_m", metavar="N:M", help="Prune N of every M consecutive weights along --axis, e.g. 2:4.")
@click.option("--block", type=int, help="Prune whole blocks of this many weights along --axis (with --sparsity, default 0.5).")
@click.option("--threshold", type=float, help="Prune every weight with |w| <= this value.")
@click.option("--axis", type=int, help="Axis of n:m groups (default 1) or blocks (default 0).")
@click.option("--values", type=click.Choice(["fp16", "fp32"]), help="Store the kept values in this float type.")
@click.option("--palettize", "nbits", type=click.Choice(["1", "2", "3", "4", "6", "8"]),
              help="Palettize the kept values with a LUT of 2**BITS entries.")
@click.option("--palettize-mode", type=click.Choice(["kmeans", "uniform", "unique"]), help="How the LUT is fitted.")
@click.option("--palettize-granularity", type=click.Choice(["per_tensor", "per_grouped_channel"]),
              help="One LUT per tensor, or one per group of output channels (--group-size).")
@click.option("--group-size", type=int, help="Output channels per LUT with per_grouped_channel.")
@click.option("--cluster-dim", type=int, help="Vector palettization: elements per LUT entry.")
@click.option("--quantize", "quantize_dtype", type=click.Choice(["int8", "uint8", "int4", "uint4"]),
              help="Linearly quantize the kept values to this integer type.")
@click.option("--quantize-mode", type=click.Choice(["symmetric", "affine"]), help="Symmetric (no offset) or affine.")
@click.option("--quantize-granularity", type=click.Choice(["per_tensor", "per_channel", "per_block"]),
              help="Scale granularity.")
@click.option("--block-size", "quantize_block_size", type=int, help="Elements per scale with per_block.")
@click.option("--op-types", help="Comma-separated op types to compress (default linear,matmul,conv,conv_transpose).")
@click.option("--min-elements", type=int, help="Compress only weights with more elements than this (default 2048).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the compression report as JSON.")
def encode(source, output, config_file, sparsity, n_m, block, threshold, axis, values, nbits, palettize_mode,
           palettize_granularity, group_size, cluster_dim, quantize_dtype, quantize_mode, quantize_granularity,
           quantize_block_size, op_types, min_elements, overwrite, as_json) -> None:
    """Compress the weights of SOURCE (.mlpackage or .onnx) into OUTPUT.

    The const weights of linear, matmul, conv and conv_transpose ops become Core ML constexpr
    chains for the package's deployment target (iOS16 forms for iOS16 and iOS17, iOS18 forms
    from iOS18). A weight that cannot take the requested form is left unchanged and listed
    with the reason.

    \b
    Examples:
      sparseblob encode dense.mlpackage -o pruned.mlpackage --sparsity 0.5
      sparseblob encode dense.mlpackage -o p24.mlpackage --n-m 2:4 --palettize 4 --palettize-mode uniform
      sparseblob encode dense.mlpackage -o q.mlpackage --quantize int4 --quantize-granularity per_block --block-size 32
      sparseblob encode model.onnx -o model-sparse.onnx --sparsity 0.5 --quantize int8
    """
    pattern = None
    if n_m is not None:
        pattern = "n_m"
    elif block is not None:
        pattern = "block"
        sparsity = 0.5 if sparsity is None else sparsity
    elif threshold is not None:
        pattern = "threshold"
    elif sparsity is not None:
        pattern = "unstructured"
    if sum(option is not None for option in (n_m, block, threshold)) > 1:
        raise UserError("choose at most one of --n-m, --block and --threshold")
    if sparsity is not None and (n_m is not None or threshold is not None):
        raise UserError("--sparsity sets the target of unstructured or --block pruning; it cannot be combined with --n-m or --threshold")
    if n_m is not None:
        n, sep, m = n_m.partition(":")
        if not (sep and n.isdigit() and m.isdigit() and 1 <= int(n) < int(m)):
            raise UserError(f"--n-m {n_m}: expected N:M with 1 <= N < M, e.g. 2:4 (N zeros in every M weights)")
    if config_file is None and not any(
        option is not None for option in (sparsity, n_m, block, threshold, values, nbits, quantize_dtype)
    ):
        raise UserError("nothing to compress: give a pattern (--sparsity, --n-m, --block, --threshold), "
                        "a value format (--palettize, --quantize, --values) or --config")
    if str(source).endswith(".onnx") != str(output).endswith(".onnx"):
        raise UserError(f"-o {output}: the output must have the input's format "
                        f"({'an .onnx file' if str(source).endswith('.onnx') else 'an .mlpackage directory'})")
    if nbits is not None and quantize_dtype is not None:
        raise UserError("choose either --palettize or --quantize for the kept values, not both")
    value_format = "palettize" if nbits is not None else "quantize" if quantize_dtype is not None else values

    options = dict(
        pattern=pattern, sparsity=sparsity, n_m=n_m, pattern_block_size=block, threshold=threshold,
        pattern_axis=axis, values=value_format, nbits=nbits, palettize_mode=palettize_mode,
        palettize_granularity=palettize_granularity, group_size=group_size, cluster_dim=cluster_dim,
        quantize_dtype=quantize_dtype, quantize_mode=quantize_mode, quantize_granularity=quantize_granularity,
        quantize_block_size=quantize_block_size, op_types=op_types, min_elements=min_elements,
    )
    if str(source).endswith(".onnx"):
        _encode_onnx(source, output, options, config_file, overwrite, as_json)
        return

    from sparseblob.encoder.config import CompressionConfig
    from sparseblob.encoder.mlpackage import compress_package
    from sparseblob.runtime.errors import OutputExistsError

    try:
        config = CompressionConfig.from_options(config_file, **options)
        report = compress_package(source, output, config, overwrite=overwrite)
    except OutputExistsError as error:
        raise UserError(f"{output} already exists; pass --overwrite to replace it") from error
    except SparseblobError as error:
        raise UserError(str(error)) from error

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = _stdout()
    table = Table(title=f"{source} -> {output}", show_edge=False)
    for column in ("weight", "chain", "shape", "dense bytes", "stored bytes"):
        table.add_column(column, justify="right" if "bytes" in column else "left")
    for item in report.compressed:
        table.add_row(item.name, " > ".join(op.removeprefix("constexpr_") for op in item.chain),
                      "x".join(map(str, item.shape)), f"{item.dense_bytes:,}", f"{item.stored_bytes:,}")
    console.print(table)
    for item in report.skipped:
        console.print(f"[yellow]skipped[/] {item.name}: {item.reason}")
    for item in report.below_limit:
        console.print(f"[dim]left dense[/] {item.name}: {item.reason} (see --min-elements)")
    console.print(
        f"weight.bin {report.input_weight_bytes:,} -> {report.output_weight_bytes:,} bytes; "
        f"compressed {len(report.compressed)}, skipped {len(report.skipped)}, "
        f"below the size limit {len(report.below_limit)}"
    )


def _encode_onnx(source, output, options, config_file, overwrite, as_json) -> None:
    """Compress an ONNX model; the options are the package options, mapped to ONNX names."""
    from sparseblob.encoder.onnx_compress import compress_onnx

    if config_file is not None:
        raise UserError("--config applies to .mlpackage input only; pass the options directly for ONNX")
    if options["cluster_dim"] is not None:
        raise UserError("--cluster-dim: ONNX output supports scalar LUTs only")
    if Path(output).exists() and not overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it")
    if options["threshold"] is not None:
        raise UserError("--threshold applies to .mlpackage input only")

    kwargs = {
        "sparsity": options["sparsity"],
        "n_m": options["n_m"],
        "block": options["pattern_block_size"],
        "axis": options["pattern_axis"],
        "values": options["values"],
        "nbits": None if options["nbits"] is None else int(options["nbits"]),
        "palettize_mode": options["palettize_mode"],
        "group_size": options["group_size"],
        "quantize_dtype": options["quantize_dtype"],
        "quantize_mode": options["quantize_mode"],
        "granularity": options["palettize_granularity"] or options["quantize_granularity"],
        "block_size": options["quantize_block_size"],
        "min_elements": options["min_elements"],
        "op_types": None if options["op_types"] is None else tuple(options["op_types"].split(",")),
    }
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    try:
        report = compress_onnx(source, output, **kwargs)
    except SparseblobError as error:
        raise UserError(str(error)) from error

    data = report.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _stdout().print_json(json.dumps(data))


@cli.command()
@click.argument("package", required=False, type=click.Path(exists=True))
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
    if package is None:
        raise UserError("latency needs a PACKAGE (or --list-devices)")
    for path in (package, other):
        if path is not None and not Path(path).is_dir():
            raise UserError(f"{path}: latency reads .mlpackage directories only")

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
    console.print(f"per-prediction dispatch {prediction.dispatch_ms:.4f} ms (not in the layer rows)")
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


@cli.command()
@click.argument("package", type=click.Path(exists=True))
@click.option("--reference", type=click.Path(exists=True),
              help="The dense package (or, for .onnx, the dense model) to compare outputs and weights with.")
@click.option("--inputs", "inputs_file", type=click.Path(exists=True, dir_okay=False),
              help="An .npz file of model inputs by name; seeded random inputs when omitted.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--expect", multiple=True, metavar="PATTERN",
              help="Required pattern of every compressed weight, e.g. 2:4, 2:4@axis1, block4@axis0, "
                   "sparsity>=0.5; repeat or join with commas.")
@click.option("--min-cosine", type=float, default=0.99, show_default=True,
              help="Smallest cosine similarity of each output to the --reference output.")
@click.option("--min-weight-cosine", type=float, default=0.9, show_default=True,
              help="Smallest cosine similarity of palettized or quantized weights to the reference weights.")
@click.option("--expected", "expected_weights", type=click.Path(exists=True, dir_okay=False),
              help="An .npz of dense weights by output name that the decoded weights must equal bit for bit.")
@click.option("--expected-outputs", type=click.Path(exists=True, dir_okay=False),
              help="An .npz of outputs from another runtime (e.g. torch) to compare with by cosine.")
@click.option("--no-coremltools", is_flag=True, help="Skip the cross-check against coremltools' decompression.")
@click.option("--no-run", is_flag=True, help="Check the weights only; do not run the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write the report as JUnit XML to this file.")
def verify(package, reference, inputs_file, seed, expect, min_cosine, min_weight_cosine, expected_weights,
           expected_outputs, no_coremltools, no_run, as_json, junit) -> None:
    """Check every compressed weight of PACKAGE and compare its outputs.

    Decodes each compressed weight and checks its structure (mask, LUT, scales, finite values),
    detects its pattern and checks it against --expect, requires bit-exact agreement with
    coremltools' own decompression, and runs the model with the sparse kernels and the dense
    path (and the --reference package), comparing every output.

    Exit status: 0 when every check holds, 1 when a check fails, 2 for a usage error.

    \b
    Examples:
      sparseblob verify pruned.mlpackage --reference dense.mlpackage --expect 2:4
      sparseblob verify pruned.mlpackage --inputs inputs.npz --json
      sparseblob verify model-sparse.onnx --reference model.onnx
    """
    if junit:
        _check_writable_parent(junit, "--junit")
    if str(package).endswith(".onnx"):
        package_only = {
            "--expect": bool(expect), "--min-cosine": min_cosine != 0.99,
            "--min-weight-cosine": min_weight_cosine != 0.9, "--expected": expected_weights is not None,
            "--expected-outputs": expected_outputs is not None, "--no-coremltools": no_coremltools,
            "--no-run": no_run, "--junit": junit is not None,
        }
        used = [option for option, given in package_only.items() if given]
        if used:
            raise UserError(f"{', '.join(used)}: not supported for ONNX models, which are checked against onnxruntime's runs")
        _verify_onnx(package, reference, inputs_file, seed, as_json)
        return

    from rich.progress import Progress

    from sparseblob.runtime.errors import OptionError
    from sparseblob.verify.report import render_table, to_json, write_junit
    from sparseblob.verify.verify import verify_package

    console = _stdout()
    show_progress = not as_json and sys.stderr.isatty()
    with Progress(console=Console(stderr=True), transient=True, disable=not show_progress) as progress:
        task = progress.add_task("verify", total=None)

        def update(description, completed, total):
            progress.update(task, description=description, completed=completed, total=total)

        try:
            report = verify_package(
                package, reference=reference, inputs=inputs_file, seed=seed, expect=list(expect) or None,
                coremltools=not no_coremltools, progress=update, min_cosine=min_cosine,
                min_weight_cosine=min_weight_cosine, expected=expected_weights,
                expected_outputs=expected_outputs, run_model=not no_run,
            )
        except OptionError as error:
            raise UserError(str(error)) from error

    if junit:
        write_junit(report, junit)
    if as_json:
        click.echo(json.dumps(to_json(report), indent=2, allow_nan=False))
    else:
        render_table(report, console)
    sys.exit(report.exit_code)


def _verify_onnx(package, reference, inputs_file, seed, as_json) -> None:
    """Verify a compressed ONNX model against onnxruntime's runs; exit 1 when a check fails."""
    from sparseblob.verify.onnx_verify import verify_onnx

    if reference is None:
        raise UserError("verify MODEL.onnx needs --reference DENSE.onnx")
    inputs = _read_inputs_file(inputs_file) if inputs_file else None
    try:
        report = verify_onnx(package, reference, inputs=inputs, seed=seed)
    except SparseblobError as error:
        raise UserError(str(error)) from error
    except Exception as error:
        # onnxruntime raises its own types for unreadable models and mismatched inputs.
        raise UserError(f"{package}: the ONNX runs failed: {type(error).__name__}: {error}") from error

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = _stdout()
        table = Table(title=f"{package} against {reference}", show_edge=False)
        for column in ("output", "actual", "expected", "max abs", "max rel", "cosine", "status"):
            table.add_column(column)
        for item in report.comparisons:
            status = ("pass" if item.passed else "FAIL") if item.checked else "info"
            table.add_row(item.output, item.actual, item.expected, f"{item.max_abs:.3g}",
                          f"{item.max_rel:.3g}", f"{item.cosine:.6f}", status)
        console.print(table)
        console.print("PASS" if report.passed else "FAIL")
    sys.exit(0 if report.passed else 1)


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False),
              help="Write the demo packages to this new directory instead of a temporary one.")
def demo(keep) -> None:
    """Run the main job on a built-in model.

    Builds a small dense fp16 model, compresses it several ways with sparseblob's encoder
    (unstructured, 2:4, palettized, quantized), verifies each against the dense model and
    prints the reports. Exits 1 if any verification fails.
    """
    import tempfile

    from sparseblob.verify.demo import run_demo

    console = _stdout()
    if keep:
        workdir = Path(keep)
        if workdir.exists() and any(workdir.iterdir()):
            raise UserError(f"--keep {keep}: the directory exists and is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        reports = run_demo(workdir, console)
    else:
        with tempfile.TemporaryDirectory(prefix="sparseblob-demo-") as temp:
            reports = run_demo(temp, console)
    sys.exit(max(report.exit_code for report in reports))


def main() -> None:
    """Entry point of the installed ``sparseblob`` command."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
