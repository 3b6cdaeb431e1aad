"""Strict reader of Core ML ``.mlpackage`` directories holding an ML program.

A package is laid out as::

    X.mlpackage/
      Manifest.json                                 fileFormatVersion, itemInfoEntries,
                                                    rootModelIdentifier
      Data/com.apple.CoreML/model.mlmodel           CoreML.Specification.Model protobuf
      Data/com.apple.CoreML/weights/weight.bin      blob storage file shared by all functions

``Manifest.json`` maps the ``rootModelIdentifier`` to the model's path relative to ``Data/``.
The model's ``mlProgram`` holds functions; each function's ``opset`` names the block in
``block_specializations`` whose operations are in program order. Blob values name their file
as ``@model_path/<relative path>``, where ``@model_path`` is the directory of the model file.

:func:`load` parses and checks everything before it returns. Every path must stay inside the
package and every binding must name a function input or an earlier op output. Every value must
match its declared type, and the blobs that the package references must not share bytes. Blob
payloads are read only when a value is read. :meth:`Package.weights` decodes the compressed
weights.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from .blobfile import RECORD_SIZE, BlobFile, BlobRecord, check_disjoint
from .errors import BlobFileError, BlobOverlapError, PackageError, PackagePathError
from .limits import DEFAULT_MAX_ELEMENTS
from .values import (
    STRING,
    BlobValue,
    TensorType,
    Value,
    ValueType,
    _in_context,
    parse_type,
    parse_value,
)

if TYPE_CHECKING:
    from coremltools.proto import MIL_pb2, Model_pb2

__all__ = [
    "load",
    "Package",
    "Function",
    "Block",
    "Operation",
    "Argument",
    "Binding",
    "NamedType",
    "MODEL_PATH_PREFIX",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "Manifest.json"
DATA_DIR = "Data"
MODEL_PATH_PREFIX = "@model_path/"
# Manifest.json files written by coremltools 9.0 and Xcode carry "1.0.0"; a different major
# version would change the layout.
_MANIFEST_MAJOR_VERSION = "1"
_PROGRAM_VERSION = 1


@dataclass(frozen=True)
class NamedType:
    """A named, typed variable: a function input or an op output."""

    name: str
    type: ValueType


@dataclass(frozen=True, eq=False)
class Binding:
    """One binding of an op input: a variable name or a literal value (exactly one is set)."""

    name: str | None = None
    value: Value | None = None


@dataclass(frozen=True, eq=False)
class Argument:
    """The bindings of one op input, in order; tuple inputs such as ``concat.values`` have several."""

    bindings: tuple[Binding, ...]

    def __len__(self) -> int:
        return len(self.bindings)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self.bindings)


@dataclass(frozen=True, eq=False)
class Operation:
    """One MIL operation.

    Attributes:
        type: the op type, e.g. ``"linear"`` or ``"constexpr_sparse_to_dense"``.
        name: the ``name`` attribute, or the first output name when the attribute is absent.
        inputs: input parameter name to its bindings.
        attributes: attribute name to value, without ``name``. ``const`` ops hold ``val``;
            iOS16/iOS17 ``constexpr_*`` ops hold all their parameters here.
        outputs: output variables with their declared types.
        blocks: nested blocks of control-flow ops, empty otherwise.
    """

    type: str
    name: str
    inputs: Mapping[str, Argument]
    attributes: Mapping[str, Value]
    outputs: tuple[NamedType, ...]
    blocks: tuple[Block, ...] = ()

    @property
    def is_constexpr(self) -> bool:
        """True for ``constexpr_*`` ops, which Core ML evaluates once when the model loads."""
        return self.type.startswith("constexpr_")

    def __repr__(self) -> str:
        return f"Operation(type={self.type!r}, name={self.name!r}, outputs={[out.name for out in self.outputs]})"


@dataclass(frozen=True, eq=False)
class Block:
    """A block of operations in program order, with its inputs and the names it returns."""

    inputs: tuple[NamedType, ...]
    outputs: tuple[str, ...]
    operations: tuple[Operation, ...]


@dataclass(frozen=True, eq=False)
class Function:
    """One function of the ML program.

    Attributes:
        name: the function name (``"main"`` in single-function models).
        opset: the active opset, e.g. ``"CoreML6"`` (iOS16) or ``"CoreML8"`` (iOS18).
        inputs: the function inputs with their types.
        block: the block specialized for ``opset``.
    """

    name: str
    opset: str
    inputs: tuple[NamedType, ...]
    block: Block

    @property
    def operations(self) -> tuple[Operation, ...]:
        """The operations of :attr:`block`, in program order."""
        return self.block.operations

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the values the function returns."""
        return self.block.outputs

    def output_types(self) -> dict[str, ValueType]:
        """Return every op output name of the top-level block mapped to its declared type."""
        return {out.name: out.type for op in self.block.operations for out in op.outputs}


@dataclass(eq=False)
class Package:
    """A loaded ``.mlpackage``; create it with :func:`load`.

    Attributes:
        path: the package directory.
        model_file: the model protobuf file.
        specification_version: ``Model.specificationVersion`` (7 is iOS16, 9 is iOS18).
        spec: the parsed ``CoreML.Specification.Model``, for the model description.
        functions: function name to function.
        default_function_name: ``description.defaultFunctionName``, or the only or ``"main"``
            function when that field is empty.
        blob_files: the opened blob files by resolved path, each opened once.
        max_elements: largest element count accepted for one tensor.
    """

    path: Path
    model_file: Path
    specification_version: int
    spec: Model_pb2.Model = field(repr=False)
    functions: dict[str, Function] = field(repr=False)
    default_function_name: str
    blob_files: dict[Path, BlobFile] = field(repr=False)
    max_elements: int = DEFAULT_MAX_ELEMENTS

    def function(self, name: str | None = None) -> Function:
        """Return the function called ``name``, or the default function."""
        name = self.default_function_name if name is None else name
        try:
            return self.functions[name]
        except KeyError:
            raise PackageError(
                f"{self.path}: no function {name!r}; the package has {sorted(self.functions)}"
            ) from None

    def weights(self, function: str | None = None) -> dict[str, np.ndarray]:
        """Decode the compressed weights of a function.

        Evaluates the ``constexpr_*`` ops in program order and returns each output that a
        non-constexpr op consumes, or that the function returns, as a dense array of its
        declared dtype and shape. Intermediate outputs of constexpr chains (masks, LUTs
        consumed by another constexpr op) are left out; :meth:`constexpr_values` has them.

        Args:
            function: the function name; the default function when ``None``.

        Returns:
            Output name to dense weight, in program order.
        """
        from .constexpr import evaluate_constexpr, weight_names

        func = self.function(function)
        values = evaluate_constexpr(func, max_elements=self.max_elements)
        return {name: values[name] for name in weight_names(func)}

    def constexpr_values(self, function: str | None = None) -> dict[str, np.ndarray]:
        """Return every output of every ``constexpr_*`` op of a function, in program order."""
        from .constexpr import evaluate_constexpr

        return evaluate_constexpr(self.function(function), max_elements=self.max_elements)

    def close(self) -> None:
        """Release the blob file maps.

        Arrays already read stay valid: a map that they view is released with the last of them.
        Values cannot be read after this.
        """
        for blob_file in self.blob_files.values():
            blob_file.close()

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(path: str | os.PathLike, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Package:
    """Load and check an ``.mlpackage`` directory.

    Args:
        path: the package directory.
        max_elements: largest element count accepted for one tensor, checked before anything
            is allocated.

    Returns:
        The package, with every value parsed and checked; blob payloads are read lazily.

    Raises:
        PackagePathError: a manifest or blob path is absolute, contains ``..``, lacks the
            ``@model_path/`` prefix, or resolves outside the package.
        PackageError: a missing or malformed manifest entry, a malformed protobuf, a model that
            is not an ML program, or an unknown binding name.
        BlobFileError: a malformed blob file or record, or two referenced blobs sharing bytes.
        UnknownDtypeError, ShapeError, PaddingError, ElementLimitError: a value disagrees with
            its declared type or exceeds ``max_elements``.
    """
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"{root}: not a directory; expected an .mlpackage directory")
    real_root = root.resolve()

    model_file = _model_file_from_manifest(root, real_root)
    spec = _parse_model(model_file)

    loader = _Loader(root, real_root, model_file.parent, max_elements)
    try:
        functions = loader.functions(spec)
        loader.check_blobs_disjoint()
    except BaseException:
        loader.close()
        raise

    default = spec.description.defaultFunctionName
    if not default:
        default = "main" if "main" in functions or len(functions) != 1 else next(iter(functions))
    if default not in functions:
        loader.close()
        raise PackageError(
            f"{model_file}: default function {default!r} is not among the functions {sorted(functions)}"
        )

    package = Package(
        path=root,
        model_file=model_file,
        specification_version=spec.specificationVersion,
        spec=spec,
        functions=functions,
        default_function_name=default,
        blob_files=loader.blob_files,
        max_elements=max_elements,
    )
    logger.debug(
        "loaded %s: specification version %d, functions %s, %d blob files",
        root, spec.specificationVersion, sorted(functions), len(loader.blob_files),
    )
    return package


def _model_file_from_manifest(root: Path, real_root: Path) -> Path:
    """Read ``Manifest.json`` and return the root model's file inside ``Data/``, after checking
    that it resolves to a file inside the package."""
    manifest_path = _resolve_inside(real_root, root / MANIFEST_NAME, what=MANIFEST_NAME)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"{manifest_path}: failed to read the manifest: {err}") from err
    if not isinstance(manifest, dict):
        raise PackageError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}")

    version = _manifest_field(manifest, "fileFormatVersion", str, manifest_path)
    if version.split(".")[0] != _MANIFEST_MAJOR_VERSION:
        raise PackageError(
            f"{manifest_path}: fileFormatVersion is {version!r}; expected a {_MANIFEST_MAJOR_VERSION}.x version"
        )
    entries = _manifest_field(manifest, "itemInfoEntries", dict, manifest_path)
    root_id = _manifest_field(manifest, "rootModelIdentifier", str, manifest_path)
    entry = entries.get(root_id)
    if not isinstance(entry, dict):
        raise PackageError(
            f"{manifest_path}: rootModelIdentifier {root_id!r} has no entry in itemInfoEntries "
            f"(entries: {sorted(entries)})"
        )
    relative = _manifest_field(entry, "path", str, manifest_path, context=f"itemInfoEntries[{root_id!r}]")

    where = f"{manifest_path}: itemInfoEntries[{root_id!r}].path {relative!r}"
    _check_relative(relative, where=where)
    model_file = root / DATA_DIR / relative
    resolved = _resolve_inside(real_root, model_file, what=where)
    if not resolved.is_file():
        raise PackageError(f"{where}: {resolved} is not a file")

    # @model_path is the directory named by the manifest entry, so the unresolved path is
    # returned: a symlinked model file does not move it.
    return model_file


def _manifest_field(mapping: dict, key: str, kind: type, path: Path, *, context: str = "manifest"):
    if key not in mapping:
        raise PackageError(f"{path}: {context} has no {key!r} entry")
    value = mapping[key]
    if not isinstance(value, kind):
        raise PackageError(
            f"{path}: {context} entry {key!r} is {type(value).__name__} {value!r}; expected {kind.__name__}"
        )
    return value


def _check_relative(relative: str, *, where: str) -> None:
    """Reject absolute paths, ``..`` components and empty paths before touching the disk."""
    parts = PurePosixPath(relative).parts
    if not relative or PurePosixPath(relative).is_absolute() or relative.startswith("\\"):
        raise PackagePathError(f"{where}: expected a relative path inside the package")
    if ".." in parts:
        raise PackagePathError(f"{where}: '..' is not allowed; the path must stay inside the package")
    if "\x00" in relative:
        raise PackagePathError(f"{where}: the path contains a NUL character")


def _resolve_inside(real_root: Path, path: Path, *, what: str) -> Path:
    """Resolve symlinks in ``path`` and check that it exists inside the package."""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise PackageError(f"{what}: {path} not found") from None
    except (OSError, RuntimeError, ValueError) as err:
        raise PackageError(f"{what}: failed to resolve {path}: {err}") from err
    if not resolved.is_relative_to(real_root):
        raise PackagePathError(f"{what}: {path} resolves to {resolved}, outside the package {real_root}")
    return resolved


def _import_model_proto():
    """Import coremltools' protobuf classes without its import-time warnings.

    Importing any part of coremltools on Linux logs one warning per native Core ML binding
    that only exists on macOS. None of them concerns the package being read.
    """
    coremltools_logger = logging.getLogger("coremltools")
    level = coremltools_logger.level
    if level < logging.ERROR:
        coremltools_logger.setLevel(logging.ERROR)
    try:
        from coremltools.proto import Model_pb2
    finally:
        coremltools_logger.setLevel(level)
    return Model_pb2


def _parse_model(model_file: Path) -> Model_pb2.Model:
    Model_pb2 = _import_model_proto()
    from google.protobuf.message import DecodeError

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_file.read_bytes())
    except (DecodeError, RuntimeError, ValueError) as err:
        raise PackageError(f"{model_file}: malformed model protobuf: {err}") from err

    model_type = spec.WhichOneof("Type")
    if model_type != "mlProgram":
        raise PackageError(f"{model_file}: model type is {model_type!r}; expected 'mlProgram'")
    if spec.mlProgram.version != _PROGRAM_VERSION:
        raise PackageError(
            f"{model_file}: mlProgram version is {spec.mlProgram.version}; expected {_PROGRAM_VERSION}"
        )
    return spec


class _Loader:
    """Parses functions, opening each blob file once and remembering every record used."""

    def __init__(self, root: Path, real_root: Path, model_dir: Path, max_elements: int):
        self.root = root
        self.real_root = real_root
        self.model_dir = model_dir
        self.max_elements = max_elements
        self.blob_files: dict[Path, BlobFile] = {}
        self.records: dict[Path, dict[int, BlobRecord]] = {}
        # The first op parameter that references each blob, by file and metadata offset.
        self.referrers: dict[tuple[Path, int], str] = {}

    def close(self) -> None:
        for blob_file in self.blob_files.values():
            blob_file.close()

    def functions(self, spec: Model_pb2.Model) -> dict[str, Function]:
        functions = {}
        for name, proto in spec.mlProgram.functions.items():
            functions[name] = self.function(name, proto)
        if not functions:
            raise PackageError(f"{self.root}: the ML program has no functions")
        return functions

    def function(self, name: str, proto: MIL_pb2.Function) -> Function:
        where = f"function {name!r}"
        if proto.opset not in proto.block_specializations:
            raise PackageError(
                f"{where}: opset {proto.opset!r} has no block; block_specializations has "
                f"{sorted(proto.block_specializations)}"
            )
        inputs = tuple(self.named_type(item, where=f"{where} input") for item in proto.inputs)
        scope = _check_unique([item.name for item in inputs], set(), where=f"{where} inputs")
        block = self.block(proto.block_specializations[proto.opset], scope, where=where)
        return Function(name, proto.opset, inputs, block)

    def named_type(self, proto: MIL_pb2.NamedValueType, *, where: str) -> NamedType:
        if not proto.name:
            raise PackageError(f"{where}: a variable has an empty name")
        return NamedType(proto.name, parse_type(proto.type, where=f"{where} {proto.name!r}"))

    def block(self, proto: MIL_pb2.Block, outer_scope: set[str], *, where: str) -> Block:
        inputs = tuple(self.named_type(item, where=f"{where} block input") for item in proto.inputs)
        scope = _check_unique([item.name for item in inputs], set(outer_scope), where=f"{where} block inputs")

        operations = []
        for index, op_proto in enumerate(proto.operations):
            op = self.operation(op_proto, index, scope, where=where)
            _check_unique([out.name for out in op.outputs], scope, where=f"op {op.name!r} ({op.type}) outputs")
            operations.append(op)

        for name in proto.outputs:
            if name not in scope:
                raise PackageError(f"{where}: block output {name!r} is not a known variable")
        return Block(inputs, tuple(proto.outputs), tuple(operations))

    def operation(self, proto: MIL_pb2.Operation, index: int, scope: set[str], *, where: str) -> Operation:
        outputs = tuple(
            self.named_type(item, where=f"{where} op {index} ({proto.type}) output") for item in proto.outputs
        )
        name = _op_name(proto, outputs, index)
        label = f"op {name!r} ({proto.type})"

        attributes = {}
        for key, value in proto.attributes.items():
            if key == "name":
                continue
            attributes[key] = self.value(value, where=f"{label} attribute {key!r}")

        inputs = {}
        for key, argument in proto.inputs.items():
            bindings = []
            for position, binding in enumerate(argument.arguments):
                param = f"{label} input {key!r}" + (f"[{position}]" if len(argument.arguments) > 1 else "")
                bindings.append(self.binding(binding, scope, where=param))
            if not bindings:
                raise PackageError(f"{label} input {key!r}: the argument has no bindings")
            inputs[key] = Argument(tuple(bindings))

        blocks = tuple(
            self.block(block, scope, where=f"{label} block {position}") for position, block in enumerate(proto.blocks)
        )
        return Operation(proto.type, name, inputs, attributes, outputs, blocks)

    def binding(self, proto: MIL_pb2.Argument.Binding, scope: set[str], *, where: str) -> Binding:
        kind = proto.WhichOneof("binding")
        if kind == "name":
            if proto.name not in scope:
                raise PackageError(
                    f"{where}: binding {proto.name!r} names no function input or earlier op output"
                )
            return Binding(name=proto.name)
        if kind == "value":
            return Binding(value=self.value(proto.value, where=where))
        raise PackageError(f"{where}: the binding has neither a name nor a value")

    def value(self, proto: MIL_pb2.Value, *, where: str) -> Value:
        value = parse_value(proto, where=where, max_elements=self.max_elements, resolve_blob=self.open_blob)
        if isinstance(value, BlobValue):
            self.records.setdefault(value.path, {})[value.offset] = value.record
            self.referrers.setdefault((value.path, value.offset), where)
        return value

    def open_blob(self, file_name: str, where: str) -> BlobFile:
        """Resolve ``@model_path/...`` inside the package and open that file once."""
        label = f"{where}: blob file {file_name!r}"
        if not file_name.startswith(MODEL_PATH_PREFIX):
            raise PackagePathError(f"{label}: expected a path starting with {MODEL_PATH_PREFIX!r}")
        relative = file_name[len(MODEL_PATH_PREFIX):]
        _check_relative(relative, where=label)
        path = _resolve_inside(self.real_root, self.model_dir / relative, what=label)
        if not path.is_file():
            raise PackageError(f"{label}: {path} is not a file")

        blob_file = self.blob_files.get(path)
        if blob_file is None:
            try:
                blob_file = BlobFile(path, max_elements=self.max_elements)
            except BlobFileError as err:
                raise _in_context(err, label) from err
            self.blob_files[path] = blob_file
        return blob_file

    def check_blobs_disjoint(self) -> None:
        """Check that no two referenced blobs of a file share bytes, naming their parameters."""
        for path, records in self.records.items():
            ordered = sorted(records.values(), key=lambda record: record.metadata_offset)
            try:
                check_disjoint(ordered, name=str(path))
            except BlobOverlapError as err:
                first, second = _first_overlap(ordered)
                raise BlobOverlapError(
                    f"{err} (referenced by {self.referrers[path, first]} and "
                    f"{self.referrers[path, second]})"
                ) from err


def _first_overlap(records: list[BlobRecord]) -> tuple[int, int]:
    """Return the metadata offsets of the first two records whose spans share bytes."""
    spans = []
    for record in records:
        spans.append((record.metadata_offset, record.metadata_offset + RECORD_SIZE, record.metadata_offset))
        spans.append((record.data_offset, record.end, record.metadata_offset))
    spans.sort()
    for (_, end_a, owner_a), (start_b, _, owner_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            return owner_a, owner_b
    raise AssertionError("check_disjoint reported an overlap that the spans do not contain")


def _op_name(proto: MIL_pb2.Operation, outputs: tuple[NamedType, ...], index: int) -> str:
    """Return the op's ``name`` attribute, falling back to its first output or its position."""
    if "name" in proto.attributes:
        value = parse_value(proto.attributes["name"], where=f"op {index} ({proto.type}) attribute 'name'", max_elements=1)
        data = value.read()
        if (
            isinstance(value.type, TensorType)
            and value.type.dtype is STRING
            and isinstance(data, np.ndarray)
            and data.ndim == 0
        ):
            return str(data.item())
        raise PackageError(f"op {index} ({proto.type}): the 'name' attribute is {value.type}; expected a string")
    if outputs:
        return outputs[0].name
    return f"{proto.type}#{index}"


def _check_unique(names: list[str], scope: set[str], *, where: str) -> set[str]:
    """Add ``names`` to ``scope``, rejecting a name defined twice."""
    for name in names:
        if name in scope:
            raise PackageError(f"{where}: variable {name!r} is defined more than once")
        scope.add(name)
    return scope
