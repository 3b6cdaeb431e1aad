"""Small compressed ``.mlpackage`` builds for runtime tests, and tools to corrupt copies of them.

Every package is built from one MIL program with a linear weight ``[64, 128]``, a conv weight
``[32, 16, 3, 3]`` and a ``concat`` (a tuple input), converted with coremltools and compressed
with its ``optimize.coreml`` APIs (``weight_threshold=100`` so that both weights qualify). Builds
are cached for the whole session in one directory from ``tmp_path_factory``; tests that edit a
package copy it into their own ``tmp_path`` first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

logging.getLogger("coremltools").setLevel(logging.ERROR)

import coremltools as ct  # noqa: E402
import coremltools.optimize.coreml as cto  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.proto import Model_pb2  # noqa: E402

MODEL_DIR = Path("Data/com.apple.CoreML")
MODEL_FILE = MODEL_DIR / "model.mlmodel"
WEIGHT_FILE = MODEL_DIR / "weights/weight.bin"

_RNG = np.random.default_rng(20240607)
LINEAR_WEIGHT = _RNG.standard_normal((64, 128)).astype(np.float32)
CONV_WEIGHT = _RNG.standard_normal((32, 16, 3, 3)).astype(np.float32)

_TARGETS = {
    "ios16": ct.target.iOS16,
    "ios17": ct.target.iOS17,
    "ios18": ct.target.iOS18,
}


def _config(op_config) -> cto.OptimizationConfig:
    return cto.OptimizationConfig(global_config=op_config)


def _prune():
    return _config(cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=100))


def _palettize(nbits: int, **kwargs):
    return _config(cto.OpPalettizerConfig(mode="uniform", nbits=nbits, weight_threshold=100, **kwargs))


def _quantize(**kwargs):
    return _config(cto.OpLinearQuantizerConfig(weight_threshold=100, **kwargs))


# name -> (target, [(API, config factory), ...]); every step after the first is joint.
RECIPES: dict[str, tuple[str, list[tuple[Callable, Callable]]]] = {
    "ios16_prune": ("ios16", [(cto.prune_weights, _prune)]),
    "ios16_palettize2": ("ios16", [(cto.palettize_weights, lambda: _palettize(2))]),
    "ios16_palettize4": ("ios16", [(cto.palettize_weights, lambda: _palettize(4))]),
    "ios16_quantize_uint8": (
        "ios16",
        [(cto.linear_quantize_weights, lambda: _quantize(mode="linear", dtype="uint8"))],
    ),
    "ios17_quantize_int8": (
        "ios17",
        [(cto.linear_quantize_weights, lambda: _quantize(mode="linear_symmetric", dtype="int8"))],
    ),
    "ios18_prune": ("ios18", [(cto.prune_weights, _prune)]),
    "ios18_palettize3_grouped": (
        "ios18",
        [(cto.palettize_weights, lambda: _palettize(3, granularity="per_grouped_channel", group_size=16))],
    ),
    "ios18_quantize_uint4_block": (
        "ios18",
        [
            (
                cto.linear_quantize_weights,
                lambda: _quantize(mode="linear", dtype="uint4", granularity="per_block", block_size=8),
            )
        ],
    ),
    "ios18_quantize_int4_channel": (
        "ios18",
        [(cto.linear_quantize_weights, lambda: _quantize(mode="linear_symmetric", dtype="int4"))],
    ),
    "ios18_prune_palettize": (
        "ios18",
        [(cto.prune_weights, _prune), (cto.palettize_weights, lambda: _palettize(2))],
    ),
    "ios18_prune_quantize": (
        "ios18",
        [
            (cto.prune_weights, _prune),
            (cto.linear_quantize_weights, lambda: _quantize(mode="linear_symmetric", dtype="int8")),
        ],
    ),
    "ios18_palettize_quantize": (
        "ios18",
        [
            (cto.palettize_weights, lambda: _palettize(4)),
            (
                cto.linear_quantize_weights,
                lambda: _quantize(mode="linear_symmetric", dtype="int8", granularity="per_tensor"),
            ),
        ],
    ),
}

@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """Silence the ResourceWarning of the temporary weights directory coremltools leaves behind.

    coremltools 9.0 creates a ``TemporaryDirectory`` for the weights of every ML program it
    converts and never cleans it up explicitly, so each conversion warns when the directory
    object is finalized, which happens inside the conversion call.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


_BUILT: dict[str, Path] = {}
_BASE_MODELS: dict[str, ct.models.MLModel] = {}


def _base_model(target: str) -> ct.models.MLModel:
    if target not in _BASE_MODELS:
        with quiet_coremltools():
            _BASE_MODELS[target] = _convert(target)
    return _BASE_MODELS[target]


def _convert(target: str) -> ct.models.MLModel:
    opset = _TARGETS[target]

    # The builder numbers unnamed ops and consts with one counter per process. Clearing it gives
    # every build the names a fresh process would, whatever a test worker built before.
    mb.name_count.clear()

    @mb.program(input_specs=[mb.TensorSpec((1, 128)), mb.TensorSpec((1, 16, 8, 8))], opset_version=opset)
    def program(x, y):
        dense = mb.linear(x=x, weight=LINEAR_WEIGHT, bias=np.zeros(64, np.float32))
        conv = mb.conv(x=y, weight=CONV_WEIGHT)
        both = mb.concat(values=[dense, dense], axis=1)
        return both, conv

    return ct.convert(program, convert_to="mlprogram", minimum_deployment_target=opset, skip_model_load=True)


def build_package(name: str, tmp_path_factory) -> Path:
    """Return the path of the package built by recipe ``name``, building it once per session.

    The recipe ``"ios16_plain"``/``"ios18_plain"`` gives the uncompressed model.
    """
    if name in _BUILT:
        return _BUILT[name]

    if name.endswith("_plain"):
        model = _base_model(name.removesuffix("_plain"))
    else:
        target, steps = RECIPES[name]
        model = _base_model(target)
        for position, (api, config) in enumerate(steps):
            kwargs = {"joint_compression": True} if position else {}
            with quiet_coremltools():
                model = api(model, config(), **kwargs)

    path = tmp_path_factory.mktemp("packages") / f"{name}.mlpackage"
    model.save(str(path))
    _BUILT[name] = path
    return path


def copy_package(source: Path, tmp_path: Path) -> Path:
    """Copy a package into ``tmp_path`` so that a test can edit it."""
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def read_spec(package: Path) -> Model_pb2.Model:
    """Parse the model protobuf of a package."""
    spec = Model_pb2.Model()
    spec.ParseFromString((package / MODEL_FILE).read_bytes())
    return spec


def write_spec(package: Path, spec: Model_pb2.Model) -> None:
    """Replace the model protobuf of a package."""
    (package / MODEL_FILE).write_bytes(spec.SerializeToString())


def main_block(spec: Model_pb2.Model):
    """Return the block of the ``main`` function for its opset."""
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset]


def find_op(spec: Model_pb2.Model, op_type: str, index: int = 0):
    """Return the ``index``-th op of ``op_type`` in the main block."""
    ops = [op for op in main_block(spec).operations if op.type == op_type]
    return ops[index]


def parameter_value(op, parameter: str):
    """Return the ``MILSpec.Value`` of a parameter, from the inputs or the attributes."""
    if parameter in op.inputs:
        return op.inputs[parameter].arguments[0].value
    return op.attributes[parameter]


def patch_record(package: Path, metadata_offset: int, field: str, value: int) -> None:
    """Overwrite one field of a blob metadata record in ``weight.bin``."""
    layout = {"sentinel": (0, "<I"), "dtype": (4, "<I"), "size": (8, "<Q"), "offset": (16, "<Q"), "padding": (24, "<Q")}
    position, fmt = layout[field]
    path = package / WEIGHT_FILE
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, metadata_offset + position, value)
    path.write_bytes(bytes(data))


def read_record(package: Path, metadata_offset: int) -> dict[str, int]:
    """Read one blob metadata record of ``weight.bin`` as a dict of its fields."""
    data = (package / WEIGHT_FILE).read_bytes()
    sentinel, dtype, size, offset, padding = struct.unpack_from("<IIQQQ", data, metadata_offset)
    return {"sentinel": sentinel, "dtype": dtype, "size": size, "offset": offset, "padding": padding}


@functools.cache
def reference_weights(package: Path) -> dict[str, np.ndarray]:
    """Dense weights as coremltools decompresses them, by the name of the constexpr output.

    ``decompress_weights`` replaces each ``constexpr_*`` op, in program order, by a ``const`` op
    named after the op's output and holding ``materialized_val_inference()``. Reading the const
    ops of the returned model's MIL program gives every dense weight under the same output
    name as in the compressed package.
    """
    model = ct.models.MLModel(str(package), skip_model_load=True)
    with quiet_coremltools():
        decompressed = cto.decompress_weights(model)
    weights = {}
    for op in decompressed._mil_program.functions["main"].operations:
        if op.op_type == "const" and isinstance(op.outputs[0].val, np.ndarray):
            weights[op.outputs[0].name] = op.outputs[0].val
    return weights


@functools.cache
def reference_constexpr_values(package: Path) -> dict[str, np.ndarray]:
    """Every constexpr output, masks included, as coremltools materializes it.

    The public ``decompress_weights`` runs the default pass pipeline afterwards, which removes
    the consts that only fed other constexpr ops. Applying coremltools' ``WeightDecompressor``
    pass through the private ``_apply_graph_pass(..., return_pymil_prog=True)`` stops before that
    pipeline, so every replaced output is still a const op named after it.
    """
    from coremltools.models.utils import _apply_graph_pass
    from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

    model = ct.models.MLModel(str(package), skip_model_load=True)
    constexpr_outputs = {
        out.name
        for op in load_program(package).functions["main"].operations
        if op.op_type.startswith("constexpr_")
        for out in op.outputs
    }
    program = _apply_graph_pass(model, WeightDecompressor(op_selector=lambda op: True), return_pymil_prog=True)
    values = {}
    for op in program.functions["main"].operations:
        name = op.outputs[0].name
        if op.op_type == "const" and name in constexpr_outputs:
            values[name] = op.outputs[0].val
    return values


@functools.cache
def reference_weight_names(package: Path) -> list[str]:
    """Constexpr outputs consumed by a non-constexpr op, from coremltools' own program loader."""
    names = []
    for op in load_program(package).functions["main"].operations:
        if not op.op_type.startswith("constexpr_"):
            continue
        for out in op.outputs:
            if any(not child.op_type.startswith("constexpr_") for child in out.child_ops):
                names.append(out.name)
    return names


@functools.cache
def load_program(package: Path):
    """Load a saved package's MIL program with coremltools' own protobuf loader, changing nothing.

    The result is cached per path, so callers must not modify the program.
    """
    from coremltools.models.utils import _apply_graph_pass

    model = ct.models.MLModel(str(package), skip_model_load=True)
    return _apply_graph_pass(model, [], return_pymil_prog=True)


def build_multifunction(tmp_path_factory) -> Path:
    """Return a package whose functions ``pruned`` (iOS18 prune) and ``quantized`` (iOS18 uint4
    per-block quantization) share one weight file; ``quantized`` is the default function."""
    if "multifunction" in _BUILT:
        return _BUILT["multifunction"]

    from coremltools.models.utils import MultiFunctionDescriptor, save_multifunction

    descriptor = MultiFunctionDescriptor()
    descriptor.add_function(str(build_package("ios18_prune", tmp_path_factory)), "main", "pruned")
    descriptor.add_function(
        str(build_package("ios18_quantize_uint4_block", tmp_path_factory)), "main", "quantized"
    )
    descriptor.default_function_name = "quantized"

    path = tmp_path_factory.mktemp("packages") / "multifunction.mlpackage"
    with quiet_coremltools():
        save_multifunction(descriptor, str(path))
    _BUILT["multifunction"] = path
    return path
