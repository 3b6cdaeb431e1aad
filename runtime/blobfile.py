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
A sub-byte payload occupies ``ceil(n*bits/8)`` bytes and ``padding_size_in_bits = 8*size - n*bits``.
Reserved fields are ignored on reading, because writers before iOS18 could leave garbage there.
``padding_size_in_bits`` took the place of the first reserved field in iOS18, so it is ignored
for whole-byte types too, as Core ML's reader does.

:class:`BlobFile` memory-maps the file, so reading one blob touches only its pages.
:class:`BlobWriter` writes files byte-identical to coremltools' ``_BlobStorageWriter``.
"""

from __future__ import annotations

import logging
import mmap
import operator
import os
import secrets
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bitpack
from .dtypes import ELEMENT_TYPES, ElementType, by_blob_code, by_name
from .errors import (
    BlobBoundsError,
    BlobFileError,
    BlobHeaderError,
    BlobOverlapError,
    BlobSentinelError,
    EncodingError,
    PaddingError,
    ShapeError,
    UnknownDtypeError,
)
from .limits import DEFAULT_MAX_ELEMENTS, element_count

__all__ = [
    "ALIGNMENT",
    "HEADER_SIZE",
    "RECORD_SIZE",
    "SENTINEL",
    "STORAGE_VERSION",
    "BlobFile",
    "BlobRecord",
    "BlobWriter",
    "check_disjoint",
]

logger = logging.getLogger(__name__)

STORAGE_VERSION = 2
ALIGNMENT = 64
SENTINEL = 0xDEADBEEF
_HEADER = struct.Struct("<II56x")
_RECORD = struct.Struct("<IIQQQ32x")
HEADER_SIZE = _HEADER.size
RECORD_SIZE = _RECORD.size


_BLOB_NAMES = {t.blob_code: t.name for t in ELEMENT_TYPES if t.blob_code is not None}


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
        padding_bits: unused bits in the last payload byte. Always 0 for whole-byte types,
            whose stored field is ignored.
    """

    metadata_offset: int
    dtype: ElementType
    size_in_bytes: int
    data_offset: int
    padding_bits: int

    @property
    def element_count(self) -> int:
        """Number of elements in the payload."""
        return (8 * self.size_in_bytes - self.padding_bits) // self.dtype.bits

    @property
    def end(self) -> int:
        """File offset one past the last payload byte."""
        return self.data_offset + self.size_in_bytes


class BlobFile:
    """A read-only, memory-mapped ``weight.bin``.

    Every record is validated when it is first read: sentinel, dtype code, size, bounds,
    padding, element limit, and that its payload does not overlap its own record.
    :meth:`validate` also walks the whole file and checks that no two blobs share bytes.
    Reading a blob touches only the pages of its record and payload.

    Args:
        path: the blob file.
        max_elements: largest element count accepted for one blob.

    Raises:
        BlobHeaderError: the file is shorter than the header or its version is not 2.
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
                f"{self.path}: storage header at offset 0 has version {self.version}; "
                f"expected {STORAGE_VERSION}"
            )

    def close(self) -> None:
        """Release the memory map.

        Arrays returned by :meth:`read` stay valid: while any of them is alive, the map is
        released when the last one is garbage-collected instead.
        """
        if self._map is None:
            return
        try:
            self._map.close()
        except BufferError:
            logger.debug("%s: arrays still view the map; it is released with the last one", self.path)
        self._map = None

    def __enter__(self) -> BlobFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            raise ValueError(f"{self.path}: the blob file is closed")
        return self._map

    def record(self, metadata_offset: int) -> BlobRecord:
        """Read and validate the metadata record at ``metadata_offset``.

        Raises:
            BlobBoundsError: the record or its payload lies outside the file, or the size is 0.
            BlobSentinelError: the record does not start with 0xDEADBEEF.
            UnknownDtypeError: the dtype code is not a blob dtype.
            BlobOverlapError: the payload overlaps its own record.
            PaddingError: ``padding_size_in_bits`` does not fit the sub-byte type.
            ShapeError: a whole-byte payload is not a whole number of elements.
            ElementLimitError: the payload contains more than ``max_elements`` elements.
        """
        metadata_offset = operator.index(metadata_offset)
        cached = self._records.get(metadata_offset)
        if cached is not None:
            return cached

        where = self._where(metadata_offset)
        _, code, size, data_offset, padding = self._record_fields(metadata_offset)
        dtype = by_blob_code(code, where=where)
        if size == 0:
            raise BlobBoundsError(
                f"{where}: sizeInBytes is 0; expected at least 1, because Core ML cannot read "
                "an empty blob"
            )

        record_end = metadata_offset + RECORD_SIZE
        data_end = data_offset + size
        if data_offset < record_end and data_end > metadata_offset:
            raise BlobOverlapError(
                f"{where}: payload [{data_offset}, {data_end}) overlaps its own record "
                f"[{metadata_offset}, {record_end})"
            )
        if data_offset < HEADER_SIZE or data_end > self.file_size:
            raise BlobBoundsError(
                f"{where}: payload [{data_offset}, {data_end}) lies outside the blob area "
                f"[{HEADER_SIZE}, {self.file_size}) of the file"
            )

        padding = _checked_padding(dtype, size, padding, where)
        record = BlobRecord(metadata_offset, dtype, size, data_offset, padding)
        element_count([record.element_count], name=where, max_elements=self.max_elements)
        self._records[metadata_offset] = record
        return record

    def _where(self, metadata_offset: int) -> str:
        return f"{self.path.name} record at offset {metadata_offset}"

    def _record_fields(self, metadata_offset: int) -> tuple[int, int, int, int, int]:
        """Return the sentinel-checked fields of the record at ``metadata_offset``.

        The fields are sentinel, dtype code, sizeInBytes, data offset and padding_size_in_bits.
        """
        where = self._where(metadata_offset)
        if metadata_offset < HEADER_SIZE or metadata_offset % ALIGNMENT:
            raise BlobBoundsError(
                f"{where}: expected a multiple of {ALIGNMENT} that is at least {HEADER_SIZE}"
            )
        record_end = metadata_offset + RECORD_SIZE
        if record_end > self.file_size:
            raise BlobBoundsError(
                f"{where}: the {RECORD_SIZE}-byte record ends at {record_end}, past the end of "
                f"the {self.file_size}-byte file"
            )

        fields = _RECORD.unpack_from(self._mapped(), metadata_offset)
        sentinel = fields[0]
        if sentinel != SENTINEL:
            raise BlobSentinelError(f"{where}: sentinel is {sentinel:#010x}; expected {SENTINEL:#010x}")
        return fields

    def records(self) -> Iterator[BlobRecord]:
        """Walk ``count`` records from offset 64, as Core ML's ``GetAllOffsets`` does.

        The next record starts at the first multiple of 64 at or after the end of the
        previous payload.

        Raises:
            BlobOverlapError: a payload ends at or before its own record, so the walk would
                not advance.
            BlobFileError: any error of :meth:`record`.
        """
        offset = HEADER_SIZE
        for index in range(self.count):
            record = self.record(offset)
            yield record
            if index == self.count - 1:
                break

            next_offset = _align(record.end)
            if next_offset <= offset:
                raise BlobOverlapError(
                    f"{self._where(offset)}: payload ends at {record.end}, so the next record "
                    f"would be at {next_offset}; expected an offset after {offset}"
                )
            offset = next_offset

    def validate(self) -> list[BlobRecord]:
        """Check the whole file and return its records in file order.

        Checks every record, that no two records or payloads share bytes, and that the file
        ends at the last payload. Core ML's reader checks none of the last two.

        Raises:
            BlobOverlapError: two records or payloads share bytes.
            BlobFileError: bytes follow the last payload, or any error of :meth:`record`.
        """
        records = list(self.records())
        check_disjoint(records, name=self.path.name)

        end = max((_align(record.end) for record in records), default=HEADER_SIZE)
        last_end = max((record.end for record in records), default=HEADER_SIZE)
        if self.file_size > last_end:
            raise BlobFileError(
                f"{self.path.name}: the header declares {self.count} blobs, which end at offset "
                f"{last_end}, but the file is {self.file_size} bytes long; expected no bytes "
                f"after the last payload (an undeclared record would start at {end})"
            )
        return records

    def payload(self, metadata_offset: int) -> memoryview:
        """Return the raw payload bytes of one blob, as a read-only view of the map."""
        record = self.record(metadata_offset)
        return memoryview(self._mapped())[record.data_offset : record.end]

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
        Sub-byte types are unpacked into a new array, one element per uint8 (int8 for int4).

        Shapes:
            payload -> ``tensor<dtype, shape>``, or ``tensor<dtype, [n]>`` without ``shape``.

        Args:
            metadata_offset: the record's offset (``BlobFileValue.offset``).
            dtype: the element type the caller expects; a different stored type is an error.
            shape: the declared shape; its element count must equal the stored count.
            name: tensor name used in error messages.

        Raises:
            UnknownDtypeError: the stored dtype is not ``dtype``.
            ShapeError: the stored element count is not ``prod(shape)``.
            BlobFileError: any error of :meth:`record`.
        """
        metadata_offset = operator.index(metadata_offset)
        where = self._where(metadata_offset)
        label = f"{name} ({where})" if name else where

        # Compare the declared type first: a wrong type also makes the size or padding look
        # invalid, and the type mismatch is the more useful message.
        if dtype is not None:
            expected = by_name(dtype) if isinstance(dtype, str) else dtype
            code = self._record_fields(metadata_offset)[1]
            if code != expected.blob_code:
                stored = _BLOB_NAMES.get(code, "an unknown type")
                raise UnknownDtypeError(
                    f"{label}: blob stores {stored} (code {code}), but the tensor is declared "
                    f"{expected} (code {expected.blob_code})"
                )
        record = self.record(metadata_offset)

        count = record.element_count
        if shape is not None:
            declared = element_count(shape, name=label, max_elements=self.max_elements)
            if declared != count:
                raise ShapeError(
                    f"{label}: blob contains {count} {record.dtype} elements, but the declared "
                    f"shape {list(shape)} has {declared}"
                )
            out_shape = tuple(operator.index(dim) for dim in shape)
        else:
            out_shape = (count,)

        raw = np.frombuffer(
            self._mapped(), dtype=np.uint8, count=record.size_in_bytes, offset=record.data_offset
        )
        if record.dtype.is_sub_byte:
            values = bitpack.unpack_bits(
                raw, record.dtype.bits, count, signed=record.dtype.signed, name=label
            )
        else:
            values = raw.view(record.dtype.numpy_dtype.newbyteorder("<"))
            if sys.byteorder != "little":
                values = values.astype(record.dtype.numpy_dtype)
        return values.reshape(out_shape)


def _checked_padding(dtype: ElementType, size: int, padding: int, where: str) -> int:
    """Apply Core ML's ``padding_size_in_bits`` rules and return the padding in effect."""
    bits = dtype.bits
    if not dtype.is_sub_byte:
        if size % (bits // 8):
            raise ShapeError(
                f"{where}: sizeInBytes is {size}; expected a multiple of {bits // 8}, the size "
                f"of one {dtype} element"
            )
        if padding:
            logger.debug("%s: ignoring padding_size_in_bits %d of a %s blob", where, padding, dtype)
        return 0

    if padding >= 8:
        raise PaddingError(f"{where}: padding_size_in_bits is {padding}; expected 0 to 7")
    if (8 * size - padding) % bits:
        raise PaddingError(
            f"{where}: padding_size_in_bits is {padding}, which leaves {8 * size - padding} of "
            f"{8 * size} bits for elements; expected a multiple of {bits} bits for {dtype}"
        )
    return padding


def check_disjoint(records: Sequence[BlobRecord], *, name: str) -> None:
    """Raise :class:`BlobOverlapError` if two records or payloads share a byte.

    Args:
        records: validated records, in any order.
        name: file name used in the message.
    """
    spans = []
    for record in records:
        spans.append((record.metadata_offset, record.metadata_offset + RECORD_SIZE, record, "record"))
        spans.append((record.data_offset, record.end, record, "payload"))
    spans.sort(key=lambda span: (span[0], span[1]))

    # After sorting by start, any overlap shows up between neighbours.
    for (start_a, end_a, rec_a, kind_a), (start_b, end_b, rec_b, kind_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise BlobOverlapError(
                f"{name}: {kind_a} of blob at offset {rec_a.metadata_offset} [{start_a}, {end_a}) "
                f"overlaps {kind_b} of blob at offset {rec_b.metadata_offset} [{start_b}, {end_b})"
            )


class BlobWriter:
    """Write a version-2 blob storage file, byte-identical to coremltools' writer.

    The file is written to a hidden temporary name beside ``path`` and renamed into place by
    :meth:`close`, so a failure never leaves a partial file and never touches an existing
    file at ``path`` before the rename. Use it as a context manager: an exception inside the
    ``with`` block discards everything::

        with BlobWriter(path) as writer:
            offset = writer.write(np.arange(16, dtype=np.float16), "fp16")

    A writer that is garbage-collected without :meth:`close` also discards its file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._temp, self._file = _create_temp_beside(self.path)
        self._file.write(_HEADER.pack(0, STORAGE_VERSION))

    def write(self, values: np.ndarray, dtype: str | ElementType, *, name: str = "values") -> int:
        """Append one blob and return its metadata offset (for ``BlobFileValue.offset``).

        Args:
            values: the elements, any shape, flattened in C order. Sub-byte and integer types
                take integers in range; floating types take arrays of that float type.
            dtype: the element type to store.
            name: tensor name used in error messages.

        Raises:
            UnknownDtypeError: the type has no blob dtype code (fp64, int64, uint64, bool).
            EncodingError: the array is empty, of the wrong kind, or out of range.
        """
        element = by_name(dtype) if isinstance(dtype, str) else dtype
        if element.blob_code is None:
            storable = sorted(t.name for t in ELEMENT_TYPES if t.blob_code is not None)
            raise UnknownDtypeError(
                f"{name}: {element} cannot be stored in a blob file; expected one of {storable}"
            )
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            raise EncodingError(
                f"{name}: cannot write an empty blob, because Core ML cannot read one back; "
                "store an empty tensor as an immediate value"
            )

        if element.is_sub_byte:
            payload = bitpack.pack_bits(flat, element.bits, signed=element.signed, name=name).tobytes()
            padding = 8 * len(payload) - flat.size * element.bits
        else:
            payload = _whole_byte_payload(flat, element, name)
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
        """Flush the file to disk and rename it to its final path."""
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

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and not file.closed:
            logger.warning("%s: blob writer was not closed; discarding its temporary file", self.path)
            self.abort()


def _create_temp_beside(path: Path):
    """Create and open a new hidden file next to ``path``; return its path and file object.

    The file is created with mode 0o666 less the umask, so the renamed file gets the same
    permissions as a file that coremltools' writer creates.
    """
    for _ in range(100):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return temp, os.fdopen(fd, "w+b")
    raise FileExistsError(f"{path}: could not create a unique temporary file beside it")


def _whole_byte_payload(flat: np.ndarray, element: ElementType, name: str) -> bytes:
    """Return the little-endian bytes of whole-byte elements, checking the array's kind."""
    target = element.numpy_dtype
    if element.is_float:
        # Only the byte order may differ: a numeric conversion could round values silently.
        if flat.dtype.type is not target.type:
            raise EncodingError(
                f"{name}: expected a {target} array for {element}, got {flat.dtype}; "
                "convert explicitly so that no value is rounded by accident"
            )
    else:
        if flat.dtype != np.bool_ and not np.issubdtype(flat.dtype, np.integer):
            raise EncodingError(f"{name}: expected an integer array for {element}, got {flat.dtype}")
        info = np.iinfo(target)
        found_min, found_max = int(flat.min()), int(flat.max())
        if found_min < info.min or found_max > info.max:
            raise EncodingError(
                f"{name}: values span [{found_min}, {found_max}], outside the {element} range "
                f"[{info.min}, {info.max}]"
            )
    return flat.astype(target.newbyteorder("<"), copy=False).tobytes()
