"""Core ML blob storage files (``weight.bin``, storage format version 2).

Layout, all integers little-endian::

    offset 0    storage_header   64 bytes: u32 count, u32 version (= 2), 56 reserved bytes
    offset 64   blob_metadata    64 bytes: u32 sentinel 0xDEADBEEF, u32 blob dtype code,
                                           u64 sizeInBytes, u64 data offset,
                                           u64 padding_size_in_bits, 32 reserved bytes
    offset 128  payload          sizeInBytes bytes
                zero fill        up to the next multiple of 64
                blob_metadata    the next record ...

Every metadata record starts on a multiple of 64. The file ends at the last payload byte.
A sub-byte payload holds ``ceil(n*bits/8)`` bytes and ``padding_size_in_bits = 8*size - n*bits``.
Reserved fields are ignored on reading, because writers before iOS18 could leave garbage there.

:class:`BlobFile` memory-maps the file, so reading one blob touches only its pages.
:class:`BlobWriter` writes files byte-identical to coremltools' ``_BlobStorageWriter``.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bitpack
from .dtypes import ElementType, by_blob_code, by_name
from .errors import (
    BlobBoundsError,
    BlobHeaderError,
    BlobOverlapError,
    BlobSentinelError,
    EncodingError,
    PaddingError,
    ShapeError,
    UnknownDtypeError,
)
from .limits import DEFAULT_MAX_ELEMENTS, element_count

__all__ = ["BlobRecord", "BlobFile", "BlobWriter", "STORAGE_VERSION", "ALIGNMENT"]

logger = logging.getLogger(__name__)

STORAGE_VERSION = 2
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
_HEADER = struct.Struct("<II56x")
_RECORD = struct.Struct("<IIQQQ32x")
HEADER_SIZE = _HEADER.size
RECORD_SIZE = _RECORD.size


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class BlobRecord:
    """One validated ``blob_metadata`` record.

    Attributes:
        metadata_offset: file offset of the record; this is ``BlobFileValue.offset``.
        dtype: element type named by the record's dtype code.
        size_in_bytes: payload length.
        data_offset: absolute file offset of the payload.
        padding_bits: unused bits in the last payload byte (sub-byte types only).
    """

    metadata_offset: int
    dtype: ElementType
    size_in_bytes: int
    data_offset: int
    padding_bits: int

    @property
    def element_count(self) -> int:
        """Number of elements the payload holds."""
        return (8 * self.size_in_bytes - self.padding_bits) // self.dtype.bits

    @property
    def end(self) -> int:
        """File offset one past the last payload byte."""
        return self.data_offset + self.size_in_bytes


class BlobFile:
    """A read-only, memory-mapped ``weight.bin``.

    Every record is validated when it is first read: sentinel, dtype code, bounds, padding,
    and that its payload does not overlap its own record. :meth:`validate` also walks the whole
    file and checks that no two blobs share bytes.

    Args:
        path: the blob file.
        max_elements: largest element count accepted for one blob.
    """

    def __init__(self, path: str | os.PathLike, *, max_elements: int = DEFAULT_MAX_ELEMENTS):
        self.path = Path(path)
        self.max_elements = max_elements
        self._records: dict[int, BlobRecord] = {}

        with open(self.path, "rb") as handle:
            self.file_size = os.fstat(handle.fileno()).st_size
            if self.file_size < HEADER_SIZE:
                raise BlobHeaderError(
                    f"{self.path}: file is {self.file_size} bytes, shorter than the "
                    f"{HEADER_SIZE}-byte storage header"
                )
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

        self.count, self.version = _HEADER.unpack_from(self._map, 0)
        if self.version != STORAGE_VERSION:
            self.close()
            raise BlobHeaderError(
                f"{self.path}: storage version is {self.version}; expected {STORAGE_VERSION}"
            )

    def close(self) -> None:
        """Release the memory map. Arrays returned by :meth:`read` must not be used after."""
        self._map.close()

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(self, metadata_offset: int) -> BlobRecord:
        """Read and validate the metadata record at ``metadata_offset``."""
        cached = self._records.get(metadata_offset)
        if cached is not None:
            return cached

        where = f"{self.path.name} record at offset {metadata_offset}"
        if metadata_offset < HEADER_SIZE or metadata_offset % ALIGNMENT:
            raise BlobBoundsError(
                f"{where}: offset must be a multiple of {ALIGNMENT} and at least {HEADER_SIZE}"
            )
        if metadata_offset + RECORD_SIZE > self.file_size:
            raise BlobBoundsError(
                f"{where}: the {RECORD_SIZE}-byte record ends at {metadata_offset + RECORD_SIZE}, "
                f"past the end of the {self.file_size}-byte file"
            )

        sentinel, code, size, data_offset, padding = _RECORD.unpack_from(self._map, metadata_offset)
        if sentinel != SENTINEL:
            raise BlobSentinelError(f"{where}: sentinel is {sentinel:#010x}; expected {SENTINEL:#010x}")
        dtype = by_blob_code(code, where=where)

        record_end = metadata_offset + RECORD_SIZE
        if data_offset < record_end and data_offset + size > metadata_offset:
            raise BlobOverlapError(
                f"{where}: payload [{data_offset}, {data_offset + size}) overlaps its own record "
                f"[{metadata_offset}, {record_end})"
            )
        if data_offset < HEADER_SIZE or data_offset + size > self.file_size:
            raise BlobBoundsError(
                f"{where}: payload [{data_offset}, {data_offset + size}) lies outside the "
                f"{self.file_size}-byte file"
            )
        if size == 0:
            raise BlobBoundsError(f"{where}: sizeInBytes is 0; Core ML cannot read empty blobs")

        _check_padding(dtype, size, padding, where)
        record = BlobRecord(metadata_offset, dtype, size, data_offset, padding)
        element_count([record.element_count], name=where, max_elements=self.max_elements)
        self._records[metadata_offset] = record
        return record

    def records(self) -> Iterator[BlobRecord]:
        """Walk every record from offset 64, as Core ML's ``GetAllOffsets`` does."""
        offset = HEADER_SIZE
        for _ in range(self.count):
            record = self.record(offset)
            yield record
            offset = _align(record.end)

    def validate(self) -> list[BlobRecord]:
        """Check every record, that they number ``count``, and that no two share bytes."""
        records = list(self.records())
        check_disjoint(records, name=self.path.name)
        return records

    def payload(self, metadata_offset: int) -> memoryview:
        """Return the raw payload bytes of one blob, without copying."""
        record = self.record(metadata_offset)
        return memoryview(self._map)[record.data_offset : record.end]

    def read(
        self,
        metadata_offset: int,
        *,
        dtype: str | ElementType | None = None,
        shape: Sequence[int] | None = None,
        name: str | None = None,
    ) -> np.ndarray:
        """Read one blob as a numpy array.

        Whole-byte types are returned as a read-only view of the mapped file (no copy).
        Sub-byte types are unpacked, one element per uint8 (int8 for int4).

        Args:
            metadata_offset: the record's offset (``BlobFileValue.offset``).
            dtype: the element type the caller expects; a different stored type is an error.
            shape: the declared shape; its element count must equal the stored count.
            name: tensor name used in error messages.

        Raises:
            UnknownDtypeError: the stored dtype is not ``dtype``.
            ShapeError: the stored element count is not ``prod(shape)``.
        """
        record = self.record(metadata_offset)
        label = name or f"{self.path.name} blob at offset {metadata_offset}"

        if dtype is not None:
            expected = by_name(dtype) if isinstance(dtype, str) else dtype
            if expected.blob_code != record.dtype.blob_code:
                raise UnknownDtypeError(
                    f"{label}: blob stores {record.dtype}, but the tensor is declared {expected}"
                )

        count = record.element_count
        if shape is not None:
            declared = element_count(shape, name=label, max_elements=self.max_elements)
            if declared != count:
                raise ShapeError(
                    f"{label}: blob holds {count} {record.dtype} elements, but the declared "
                    f"shape {list(shape)} has {declared}"
                )
        out_shape = tuple(shape) if shape is not None else (count,)

        raw = np.frombuffer(self._map, dtype=np.uint8, count=record.size_in_bytes, offset=record.data_offset)
        if record.dtype.is_sub_byte:
            values = bitpack.unpack_bits(
                raw, record.dtype.bits, count, signed=record.dtype.signed, name=label
            )
        else:
            values = raw.view(record.dtype.numpy_dtype)
            if sys.byteorder != "little":
                values = values.byteswap()
        return values.reshape(out_shape)


def _check_padding(dtype: ElementType, size: int, padding: int, where: str) -> None:
    """Apply Core ML's ``padding_size_in_bits`` rules."""
    bits = dtype.bits
    if not dtype.is_sub_byte:
        if padding != 0:
            raise PaddingError(f"{where}: padding_size_in_bits is {padding} for {dtype}; expected 0")
        if size % (bits // 8):
            raise ShapeError(
                f"{where}: sizeInBytes {size} is not a multiple of the {bits // 8}-byte {dtype} element"
            )
        return
    if padding >= 8:
        raise PaddingError(f"{where}: padding_size_in_bits is {padding}; expected 0 to 7")
    if (8 * size - padding) % bits:
        raise PaddingError(
            f"{where}: {8 * size} bits less {padding} padding bits is not a whole number of "
            f"{bits}-bit {dtype} elements"
        )


def check_disjoint(records: Sequence[BlobRecord], *, name: str) -> None:
    """Raise :class:`BlobOverlapError` if two records or payloads share a byte."""
    spans = []
    for record in records:
        spans.append((record.metadata_offset, record.metadata_offset + RECORD_SIZE, record, "record"))
        spans.append((record.data_offset, record.end, record, "payload"))
    spans.sort(key=lambda span: (span[0], span[1]))
    for (start_a, end_a, rec_a, kind_a), (start_b, end_b, rec_b, kind_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise BlobOverlapError(
                f"{name}: {kind_a} of blob at offset {rec_a.metadata_offset} [{start_a}, {end_a}) "
                f"overlaps {kind_b} of blob at offset {rec_b.metadata_offset} [{start_b}, {end_b})"
            )


class BlobWriter:
    """Write a version-2 blob storage file, byte-identical to coremltools' writer.

    The file is written to a temporary name beside ``path`` and renamed into place by
    :meth:`close`, so a failure never leaves a partial file. Use it as a context manager::

        with BlobWriter(path) as writer:
            offset = writer.write(np.arange(16, dtype=np.float16), "fp16")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "w+b")
        self._file.write(_HEADER.pack(0, STORAGE_VERSION))

    def write(self, values: np.ndarray, dtype: str | ElementType) -> int:
        """Append one blob and return its metadata offset (for ``BlobFileValue.offset``).

        Args:
            values: the elements, any shape, flattened in C order. Sub-byte types take
                integers in range; floating types take arrays of that float type.
            dtype: the element type to store.

        Raises:
            EncodingError: the array is empty, of the wrong kind, or out of range.
        """
        element = by_name(dtype) if isinstance(dtype, str) else dtype
        if element.blob_code is None:
            raise UnknownDtypeError(f"{element} cannot be stored in a blob file")
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            raise EncodingError("cannot write an empty blob: Core ML cannot read one back")

        if element.is_sub_byte:
            payload = bitpack.pack_bits(flat, element.bits, signed=element.signed).tobytes()
            padding = 8 * len(payload) - flat.size * element.bits
        else:
            payload = _whole_byte_payload(flat, element)
            padding = 0

        self._file.seek(0, os.SEEK_END)
        metadata_offset = _align(self._file.tell())
        data_offset = metadata_offset + RECORD_SIZE
        self._file.seek(metadata_offset)
        self._file.write(_RECORD.pack(SENTINEL, element.blob_code, len(payload), data_offset, padding))
        self._file.write(payload)
        self.count += 1
        self._file.seek(0)
        self._file.write(_HEADER.pack(self.count, STORAGE_VERSION))
        return metadata_offset

    def close(self) -> None:
        """Flush the file and move it to its final path."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self.path)

    def abort(self) -> None:
        """Discard everything written; the final path is left untouched."""
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _whole_byte_payload(flat: np.ndarray, element: ElementType) -> bytes:
    """Return the little-endian bytes of whole-byte elements, checking the array's kind."""
    target = element.numpy_dtype
    if element.is_float:
        if flat.dtype != target:
            raise EncodingError(
                f"expected a {target} array for {element}, got {flat.dtype}; "
                "convert explicitly so that no value is rounded by accident"
            )
    else:
        if not np.issubdtype(flat.dtype, np.integer) and flat.dtype != np.bool_:
            raise EncodingError(f"expected an integer array for {element}, got {flat.dtype}")
        info = np.iinfo(target)
        if flat.size and (flat.min() < info.min or flat.max() > info.max):
            raise EncodingError(
                f"values span [{flat.min()}, {flat.max()}], outside the {element} range "
                f"[{info.min}, {info.max}]"
            )
        flat = flat.astype(target)
    flat = flat.astype(target, copy=False)
    if sys.byteorder != "little":
        flat = flat.byteswap()
    return flat.tobytes()
