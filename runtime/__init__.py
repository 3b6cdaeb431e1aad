"""sparseblob.runtime: read, decode and run Core ML compressed weights with numpy.

The runtime depends on nothing in ``sparseblob.encoder`` or ``sparseblob.verify``.
"""

from .errors import SparseblobError

__all__ = ["SparseblobError"]
