"""sparseblob.runtime: read, decode and run Core ML compressed weights with numpy.

The runtime depends on nothing in ``sparseblob.encoder`` or ``sparseblob.verify``.
"""

from .errors import SparseblobError
from .interpreter import run, run_with_trace
from .package import (
    Argument,
    Binding,
    Block,
    Function,
    NamedType,
    Operation,
    Package,
    load,
)
from .values import (
    BlobValue,
    DictionaryType,
    ImmediateValue,
    ListType,
    StateType,
    TensorType,
    TupleType,
)

__all__ = [
    "SparseblobError",
    "load",
    "run",
    "run_with_trace",
    "Package",
    "Function",
    "Block",
    "Operation",
    "Argument",
    "Binding",
    "NamedType",
    "TensorType",
    "ListType",
    "TupleType",
    "DictionaryType",
    "StateType",
    "ImmediateValue",
    "BlobValue",
]
