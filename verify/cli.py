"""The ``sparseblob`` command."""

from __future__ import annotations

import logging

import click

# coremltools logs a warning for each native Core ML binding that Linux lacks.
logging.getLogger("coremltools").setLevel(logging.ERROR)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparseblob")
def cli() -> None:
    """Encode, decode, run and verify Core ML compressed weights."""


def main() -> None:
    """Entry point of the installed ``sparseblob`` command."""
    cli()
