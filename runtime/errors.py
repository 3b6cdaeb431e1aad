"""Error classes raised by sparseblob on invalid input.

Every error derives from :class:`SparseblobError`, which subclasses :class:`ValueError`, so
callers that already catch ``ValueError`` keep working. Each subclass names one kind of
failure; messages name the blob, tensor or op, the value found and the value expected.
"""

from __future__ import annotations

__all__ = [
    "SparseblobError",
    "BlobFileError",
    "BlobHeaderError",
    "BlobSentinelError",
    "BlobBoundsError",
    "BlobOverlapError",
    "UnknownDtypeError",
    "PaddingError",
    "ShapeError",
    "ElementLimitError",
    "MaskError",
    "ParameterShapeError",
    "NonFiniteError",
    "PackageError",
    "PackagePathError",
    "UnsupportedOpError",
    "PatternError",
    "EncodingError",
    "OpParameterError",
    "OptionError",
    "OutputExistsError",
]


class SparseblobError(ValueError):
    """Root of every error that sparseblob raises for invalid input."""


class BlobFileError(SparseblobError):
    """A Core ML blob storage file (``weight.bin``) is malformed."""


class BlobHeaderError(BlobFileError):
    """The storage header is truncated or has an unsupported version."""


class BlobSentinelError(BlobFileError):
    """A blob metadata record does not start with the 0xDEADBEEF sentinel."""


class BlobBoundsError(BlobFileError):
    """A blob offset or size points outside the file."""


class BlobOverlapError(BlobFileError):
    """Two blobs, or a blob and a metadata record, share bytes."""


class UnknownDtypeError(BlobFileError):
    """A dtype code is not one of Core ML's blob or protobuf dtypes, or is not allowed here."""


class PaddingError(BlobFileError):
    """``padding_size_in_bits`` or the padding bits of a packed tensor are inconsistent."""


class ShapeError(SparseblobError):
    """A declared shape does not match the data: element count, rank or byte count."""


class ElementLimitError(ShapeError):
    """A shape's element count overflows or exceeds the configured limit."""


class MaskError(SparseblobError):
    """A sparse mask disagrees with its values (popcount) or has set padding bits."""


class ParameterShapeError(SparseblobError):
    """A LUT, scale or offset shape does not divide or match the tensor it applies to."""


class NonFiniteError(SparseblobError):
    """A LUT entry, scale or weight is NaN or infinite where a finite value is required."""


class PackageError(SparseblobError):
    """An ``.mlpackage`` or its model protobuf is malformed or inconsistent."""


class PackagePathError(PackageError):
    """A path inside a package resolves outside the package directory."""


class UnsupportedOpError(SparseblobError):
    """An op type, or an op form, that sparseblob does not implement."""


class PatternError(SparseblobError):
    """A tensor does not have the sparsity pattern it is declared to have."""


class EncodingError(SparseblobError):
    """Weights or options that the encoder cannot turn into the requested format."""


class OpParameterError(SparseblobError):
    """An op parameter has a value the op does not accept: a zero stride, a negative pad, an
    axis or index out of range, or a missing required input."""


class OptionError(SparseblobError):
    """An option cannot be used as given: an expectation that does not parse, a reference
    package or inputs whose names or shapes do not match the package, or a kernel layout
    setting out of range."""


class OutputExistsError(SparseblobError):
    """The output path of a write already exists, and overwriting it was not requested."""
