"""Small dense Core ML packages built at run time, for the demo and for property tests.

:func:`build_mlp_package` writes a multilayer perceptron with the MIL builder of coremltools
and converts it without loading it (``skip_model_load=True``), which works on Linux. Nothing
is downloaded and no fixture file is needed, so it works from an installed sparseblob.

The program has one fp16 input ``x`` of shape ``[batch, sizes[0]]`` and one fp16 output
``logits`` of shape ``[batch, sizes[-1]]``. Each layer ``k`` is a ``linear`` op named ``dense{k}``
with const weight ``dense{k}_weight`` (``[sizes[k+1], sizes[k]]``) and bias ``dense{k}_bias``,
followed by ``relu`` except after the last layer.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseblob.runtime.errors import OptionError

__all__ = ["TARGETS", "mlp_weights", "build_mlp_package"]

logger = logging.getLogger(__name__)

TARGETS = ("iOS16", "iOS17", "iOS18")
"""Deployment targets that :func:`build_mlp_package` accepts."""


def mlp_weights(sizes: Sequence[int], *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Draw the fp16 ``(weight, bias)`` of each layer of an MLP.

    Weights are Laplace distributed with variance ``2 / fan_in`` (He scaling), and a random half
    of them is then divided by 20. An untrained network with normal weights loses much more
    accuracy to pruning than a trained one, which has many small weights; the small half plays
    their part, so that pruning the model changes its outputs about as little as pruning a
    trained model does. Biases are normal with standard deviation 0.1.

    Returns:
        ``(tensor<fp16, [sizes[k+1], sizes[k]]>, tensor<fp16, [sizes[k+1]]>)`` per layer.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        # A Laplace distribution with scale b has variance 2 b**2.
        weight = rng.laplace(0.0, np.sqrt(1.0 / fan_in), (fan_out, fan_in))
        weight *= np.where(rng.random((fan_out, fan_in)) < 0.5, 0.05, 1.0)
        bias = 0.1 * rng.standard_normal(fan_out)
        layers.append((weight.astype(np.float16), bias.astype(np.float16)))
    return layers


def build_mlp_package(
    path: str | os.PathLike,
    *,
    sizes: Sequence[int] = (64, 128, 128, 32),
    batch: int = 8,
    target: str = "iOS18",
    seed: int = 0,
) -> Path:
    """Write a dense fp16 MLP as an ``.mlpackage``.

    Args:
        path: the package directory to write; it must not exist.
        sizes: the input size, then the output size of each layer (at least two entries).
        batch: the first dimension of the input and the output.
        target: the deployment target, one of :data:`TARGETS`.
        seed: the seed of the weights (see :func:`mlp_weights`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OptionError: fewer than two sizes, a size or batch below 1, an unknown target, or
            ``path`` exists.
    """
    sizes = [int(size) for size in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise OptionError(f"sizes={sizes}; expected at least two sizes, each at least 1")
    if int(batch) < 1:
        raise OptionError(f"batch={batch}; expected at least 1")
    if target not in TARGETS:
        raise OptionError(f"target={target!r}; expected one of {TARGETS}")
    path = Path(path)
    if path.exists():
        raise OptionError(f"{path} exists; expected a new package path")

    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    deployment = getattr(ct.target, target)
    layers = mlp_weights(sizes, seed=seed)

    @mb.program(input_specs=[mb.TensorSpec(shape=(int(batch), sizes[0]), dtype=types.fp16)], opset_version=deployment)
    def program(x):
        for k, (weight, bias) in enumerate(layers):
            last = k == len(layers) - 1
            x = mb.linear(
                x=x,
                weight=mb.const(val=weight, name=f"dense{k}_weight"),
                bias=mb.const(val=bias, name=f"dense{k}_bias"),
                name="logits" if last else f"dense{k}",
            )
            if not last:
                x = mb.relu(x=x, name=f"relu{k}")
        return x

    # coremltools prints a progress bar per pass pipeline to stderr and warns about untested
    # torch versions; neither says anything about this program.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=deployment,
            compute_precision=ct.precision.FLOAT16,
            skip_model_load=True,
        )
        model.save(str(path))
    logger.info("wrote a dense MLP %s for %s to %s", sizes, target, path)
    return path
