"""Parse a stored DICOM Part 10 file into what ingest records (`ParsedInstance`).

Bulk values are never read: a file may be gigabytes of pixel data. pydicom's element
generator reads runs of ordinary elements with `defer_size`, so long values are skipped
with only their position kept; this module takes over wherever pydicom would read a whole
value regardless of size:

- sequences, because pydicom reads nested datasets without `defer_size`;
- undefined-length values (encapsulated pixel data), whose items are walked by reading
  8-byte headers and seeking over the fragments;
- the top-level Pixel Data, whose frames are located here.

Bulk data: every value longer than the threshold whose VR PS3.18 F.2.2 allows as bulk data,
every undefined-length value other than a sequence, and the top-level pixel data. Each gets
a BulkDataURI in the metadata and a `BulkRange` under the same path. A range holds the value
bytes as stored: in the file's byte order (big endian files are rare and retired), and for
an undefined-length value from its first item tag to the end of its sequence delimiter, so
that it can follow an undefined-length element header verbatim. Frames are ranges of
fragment values, never of item headers.

Warnings pydicom issues about bad values are collected as `ParsedInstance.warnings`;
anything that makes the file unusable raises `DicomParseError` with a FailureReason text.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from app.dicom.instance import BULK_BASE, BulkRange, FrameRanges, ParsedInstance
from app.dicom.json import BULK_VRS, decoding_path, describe_path, element_vr, encode_dataset
from app.dicom.uid import is_valid_uid

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
EXTENDED_OFFSET_TABLE = 0x7FE00001
EXTENDED_OFFSET_TABLE_LENGTHS = 0x7FE00002
MAX_INFLATED_SIZE = 1 << 28  # 256 MiB

_SPECIFIC_CHARACTER_SET = frozenset({0x00080005})  # a set: BaseTag's == is slow
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_MEDIA_SOP_CLASS_UID = 0x00020002
_MEDIA_SOP_INSTANCE_UID = 0x00020003
_TRANSFER_SYNTAX_UID = 0x00020010
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Native pixel data in implicit VR has no VR of its own: PS3.5 A.1 says OW.
_IMPLICIT_PIXEL_VR = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}
_DEFAULT_BITS = {FLOAT_PIXEL_DATA: 32, DOUBLE_FLOAT_PIXEL_DATA: 64}
# First bytes of a fragment that starts a frame: JPEG/JPEG-LS SOI, JPEG 2000 SOC+SIZ, JP2.
_CODESTREAM_STARTS = (b"\xff\xd8\xff", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n")

_INVALID_VALUE = re.compile(r"Invalid value for VR (\w+): (.*?)\. Please see", re.DOTALL)
_TOO_LONG = re.compile(
    r"The value length \((\d+)\) exceeds the maximum length of (\d+) allowed for VR (\w+)"
)
# pydicom repeats the invalid IS message in a second wording.
_REPEATED = re.compile(r'Value ".*" is not valid for elements with a VR of IS')


class DicomParseError(ValueError):
    """The file cannot be stored; the message is a human-readable FailureReason."""


def parse_instance(path: Path, *, bulk_threshold: int = 1024) -> ParsedInstance:
    """Parse the Part 10 file at `path`; values longer than `bulk_threshold` bytes become
    bulk data (a BulkDataURI in the metadata and a `BulkRange`).

    Synchronous and CPU-bound: run it in a worker thread. Calls are serialised (see
    `_collect_warnings`). Raises `DicomParseError` for any unusable content; only an
    `OSError` opening `path` escapes as such, because that is a server fault.
    """
    with open(path, "rb") as fp:
        notes: list[str] = []
        with _collect_warnings(notes):
            try:
                return _parse(fp, bulk_threshold, notes)
            except DicomParseError:
                raise
            except Exception as exc:  # pydicom raises many types on malformed input
                raise DicomParseError(f"cannot parse: {_summary(exc)}") from exc


def _parse(fp: BinaryIO, bulk_threshold: int, notes: list[str]) -> ParsedInstance:
    size = os.fstat(fp.fileno()).st_size
    meta = _read_meta(fp, size)
    transfer_syntax = _transfer_syntax(meta)
    implicit, little, deflated = _encoding_of(transfer_syntax)
    if deflated:
        # Offsets into the file mean nothing once inflated: read everything inline.
        data = _inflate(fp)
        reader = _Reader(io.BytesIO(data), len(data), None, notes)
    else:
        reader = _Reader(fp, size, bulk_threshold, notes)
    ds = reader.read_dataset(implicit, little)
    reader.propagate_pixel_representation()
    for tag in [tag for tag in ds.keys() if tag >> 16 == 0x0002]:  # noqa: SIM118 (no decoding)
        del ds[tag]  # the file meta group is not part of the dataset's metadata

    identity = _uids(ds, meta, notes)  # first: the commonest reason to reject a file
    frames: tuple[FrameRanges, ...] = ()
    pixel = reader.pixel
    if pixel is not None and deflated:
        del ds[pixel.tag]
        reader.bulk.pop(f"{pixel.tag:08X}", None)
        notes.append("deflated transfer syntax: frames not indexed")
    elif pixel is not None:
        frames = _frames(ds, pixel, reader.pread, notes)

    bulk = reader.bulk
    metadata = encode_dataset(ds, lambda p, _e: _bulk_uri(p, bulk), warn=notes.append)
    study, series, sop_instance, sop_class = identity
    return ParsedInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        metadata=metadata,
        bulk=bulk,
        frames=frames,
        encapsulated=pixel is not None and not deflated and pixel.length == _UNDEFINED,
        warnings=tuple(dict.fromkeys(notes)),
    )


def _bulk_uri(path: str, bulk: dict[str, BulkRange]) -> str | None:
    return f"{BULK_BASE}/bulkdata/{path}" if path in bulk else None


# -- file meta information and transfer syntax -------------------------------------------


def _read_meta(fp: BinaryIO, size: int) -> Dataset:
    head = fp.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise DicomParseError("not a DICOM Part 10 file: no 'DICM' prefix")
    try:
        # Stop at an undefined length too: pydicom would read such a value whole, and no
        # meta element has one; the dataset walk then rejects it.
        meta = read_dataset(fp, False, True, stop_when=_end_of_meta, defer_size=1024)
    except struct.error as exc:  # a header cut short by the end of the file
        raise DicomParseError("truncated: file ends inside the file meta information") from exc
    if not meta:
        raise DicomParseError("not a DICOM Part 10 file: no file meta information")
    for tag, raw in meta.items():
        if isinstance(raw, RawDataElement) and raw.value_tell + raw.length > size:
            raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
    return meta


def _end_of_meta(tag: BaseTag, _vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002 or length == _UNDEFINED


def _transfer_syntax(meta: Dataset) -> str:
    elem = meta.get(_TRANSFER_SYNTAX_UID)
    value = elem.value if elem is not None else None
    if not value:
        raise DicomParseError("missing TransferSyntaxUID in the file meta information")
    if not isinstance(value, str) or not is_valid_uid(value):
        raise DicomParseError(f"invalid TransferSyntaxUID {str(value)!r}")
    return str(value)


def _encoding_of(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) of the dataset."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        # Unknown (private) syntaxes: explicit VR little endian, as PS3.5 A.4 requires of
        # every encapsulated one.
        return False, True, False
    return uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated


def _inflate(fp: BinaryIO) -> bytes:
    """The inflated dataset, in memory: bounded so that a small file cannot expand to
    gigabytes (deflate is used for small non-image objects in practice)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, PS3.5 A.5
    try:
        data = inflater.decompress(fp.read(), MAX_INFLATED_SIZE + 1)
    except zlib.error as exc:
        raise DicomParseError(f"invalid deflated dataset: {exc}") from exc
    if len(data) > MAX_INFLATED_SIZE:
        raise DicomParseError(f"deflated dataset larger than {MAX_INFLATED_SIZE} bytes")
    if not inflater.eof:
        raise DicomParseError("truncated: deflated dataset ends early")
    return data


# -- the dataset walk ----------------------------------------------------------------------


@dataclass
class _PixelData:
    tag: int
    vr: str
    offset: int  # first byte of the value
    length: int  # value length, _UNDEFINED when encapsulated
    # Encapsulated: (offset, length) of every item value, the Basic Offset Table first.
    items: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Header:
    """An element pydicom's generator stopped at; the file is positioned at its value."""

    tag: BaseTag
    vr: str | None  # None in implicit VR
    length: int
    value_tell: int


@dataclass(frozen=True, slots=True)
class _Level:
    """How the dataset being read is encoded and where it is in the tree."""

    implicit: bool
    little: bool
    prefix: str  # path of the enclosing item, "" or ending in "/"
    encoding: str | list[str]
    nested: bool


class _Reader:
    """Reads one dataset tree with pydicom's element generator, taking over at sequences,
    undefined-length values and the top-level pixel data (see the module docstring)."""

    def __init__(self, fp: BinaryIO, size: int, defer_size: int | None, notes: list[str]) -> None:
        self.fp = fp
        self.size = size
        self.defer_size = defer_size  # None: read every value (inflated data in memory)
        self.notes = notes
        self.bulk: dict[str, BulkRange] = {}
        self.pixel: _PixelData | None = None
        # (dataset, sequence element in it), innermost first
        self.sequences: list[tuple[Dataset, DataElement]] = []
        self._fd = _fileno(fp) if hasattr(os, "pread") else None

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes at `offset` without moving the buffered position (no buffer refill)."""
        if self._fd is not None:
            return os.pread(self._fd, length, offset)
        position = self.fp.tell()
        self.fp.seek(offset)
        data = self.fp.read(length)
        self.fp.seek(position)
        return data

    def read_dataset(
        self,
        implicit: bool,
        little: bool,
        *,
        end: int | None = None,
        prefix: str = "",
        encoding: str | list[str] = default_encoding,
        nested: bool = False,
    ) -> Dataset:
        """The dataset from the current position up to `end`, an item delimiter (nested,
        `end` None) or the end of the file."""
        implicit = self._detect_implicit(implicit, nested)
        level = _Level(implicit, little, prefix, encoding, nested)
        elements: dict[BaseTag, RawDataElement | DataElement] = {}
        sequences: list[DataElement] = []
        last_end = self.fp.tell()
        while True:
            stops: list[_Header] = []
            for element in self._run(level, end, stops):
                if element.tag >> 16 == 0xFFFE:  # a stray item or delimiter: no attribute
                    self.notes.append(f"ignored {_label(element.tag)} at {element.value_tell}")
                    continue
                raw = self._accept(element, prefix)
                elements[raw.tag] = raw
                last_end = raw.value_tell + raw.length
                if raw.tag in _SPECIFIC_CHARACTER_SET:
                    level = replace(level, encoding=_encodings(raw))
            if not stops:
                break
            self.fp.seek(stops[0].value_tell)
            elem = self._take_over(stops[0], level)
            elements[elem.tag] = elem
            if isinstance(elem, DataElement):
                sequences.append(elem)
            last_end = self.fp.tell()
        self._check_end(last_end, end, nested)
        ds = Dataset(elements, parent_encoding=level.encoding)
        ds.set_original_encoding(implicit, little, level.encoding)
        self.sequences.extend((ds, sequence) for sequence in sequences)
        return ds

    def propagate_pixel_representation(self) -> None:
        """What pydicom does when it decodes a sequence itself: items learn the nearest
        Pixel Representation, which decides their 'US or SS' values. Outermost first."""
        for ds, sequence in reversed(self.sequences):
            ds._set_pixel_representation(sequence)

    def _run(
        self, level: _Level, end: int | None, stops: list[_Header]
    ) -> Iterator[RawDataElement]:
        """Ordinary elements until `end`, the end of the dataset, or an element that
        `_must_take_over` (recorded in `stops`)."""
        fp = self.fp
        top = not level.nested

        def stop_when(tag: BaseTag, vr: str | None, length: int) -> bool:
            if self._must_take_over(tag, vr, length, top):
                stops.append(_Header(tag, vr, length, fp.tell()))
                return True
            return False

        elements = data_element_generator(
            fp,
            level.implicit,
            level.little,
            stop_when=stop_when,
            defer_size=self.defer_size,
            encoding=level.encoding,
        )
        try:
            # Like pydicom's read_dataset: test the end before reading the next element.
            while end is None or fp.tell() < end:
                raw = next(elements, None)
                if raw is None:
                    return
                assert isinstance(raw, RawDataElement)  # undefined lengths stop the run
                yield raw
        except struct.error as exc:  # an element header cut short by the end of the file
            position = fp.tell()
            raise DicomParseError(f"truncated: file ends inside the element at {position}") from exc

    def _must_take_over(self, tag: BaseTag, vr: str | None, length: int, top: bool) -> bool:
        if length == _UNDEFINED or vr == "SQ":
            return True
        if top and tag in PIXEL_TAGS and self.pixel is None:
            return True
        # Implicit VR, or UN in explicit VR (which pydicom decodes as the dictionary's VR):
        # sequences must not be read as a raw value, however long.
        return (vr is None or (vr == "UN" and length < 0xFFFF)) and _is_public_sequence(tag)

    def _accept(self, raw: RawDataElement, prefix: str) -> RawDataElement:
        if raw.value_tell + raw.length > self.size:
            raise DicomParseError(f"truncated: file ends inside element {_label(raw.tag)}")
        if raw.value is not None or not raw.length:
            return raw
        # Deferred by pydicom (longer than defer_size).
        vr = element_vr(raw)
        if vr in BULK_VRS:
            self.bulk[f"{prefix}{raw.tag:08X}"] = BulkRange(raw.value_tell, raw.length, vr)
            return raw
        # PS3.18 F.2.2 allows no BulkDataURI for this VR (UI, CS, PN, ...): it is metadata.
        return raw._replace(value=self.pread(raw.value_tell, raw.length))

    def _take_over(self, header: _Header, level: _Level) -> RawDataElement | DataElement:
        if not level.nested and header.tag in PIXEL_TAGS and self.pixel is None:
            return self._pixel_data(header, level)
        if self._is_sequence(header, level.little):
            return self._sequence(header, level)
        return self._undefined_length_value(header, level)

    def _is_sequence(self, header: _Header, little: bool) -> bool:
        vr, length = header.vr, header.length
        if vr == "SQ" or (vr == "UN" and length == _UNDEFINED):  # UN: PS3.5 6.2.2
            return True
        if vr in (None, "UN") and _is_public_sequence(header.tag):
            return True
        if vr is None and length == _UNDEFINED and _dictionary_vr(header.tag) is None:
            # Private: a sequence if the value starts with an item, as pydicom decides.
            start = self.pread(header.value_tell, 4)
            return start == struct.pack("<HH" if little else ">HH", 0xFFFE, 0xE000)
        return False

    def _sequence(self, header: _Header, level: _Level) -> DataElement:
        tag = header.tag
        path = f"{level.prefix}{tag:08X}"
        undefined = header.length == _UNDEFINED
        seq_end = None if undefined else header.value_tell + header.length
        if seq_end is not None and seq_end > self.size:
            raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
        items: list[Dataset] = []
        while seq_end is None or self.fp.tell() < seq_end:
            item_tag, item_length = self._item_header(tag, level.little)
            if item_tag == _SEQUENCE_DELIMITER:
                break
            if item_tag != _ITEM:
                position = self.fp.tell() - 8
                raise DicomParseError(f"malformed sequence {_label(tag)}: no item at {position}")
            item_end = None if item_length == _UNDEFINED else self.fp.tell() + item_length
            if item_end is not None and item_end > self.size:
                raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
            item = self.read_dataset(
                level.implicit,
                level.little,
                end=item_end,
                prefix=f"{path}/{len(items)}/",
                encoding=level.encoding,
                nested=True,
            )
            item.is_undefined_length_sequence_item = item_end is None
            items.append(item)
        return DataElement(tag, "SQ", Sequence(items), header.value_tell, undefined)

    def _item_header(self, owner: int, little: bool) -> tuple[int, int]:
        data = self.fp.read(8)
        if len(data) < 8:
            raise DicomParseError(f"truncated: file ends inside element {_label(owner)}")
        group, element, length = struct.unpack("<HHL" if little else ">HHL", data)
        return group << 16 | element, length

    def _undefined_length_value(self, header: _Header, level: _Level) -> RawDataElement:
        """An encapsulated value below the top level (an icon image, say): bulk data."""
        tag, start = header.tag, header.value_tell
        vr = header.vr or "OB"
        _, end = self._walk_items(tag, start, level.little)
        if self.defer_size is None:  # everything inline: the value as pydicom reads it
            value = self.pread(start, end - 8 - start)
        else:
            value = None
            self.bulk[f"{level.prefix}{tag:08X}"] = BulkRange(start, end - start, vr)
        return RawDataElement(tag, vr, _UNDEFINED, value, start, level.implicit, level.little)

    def _pixel_data(self, header: _Header, level: _Level) -> RawDataElement:
        tag, start, length = header.tag, header.value_tell, header.length
        if length == _UNDEFINED:
            items, end = self._walk_items(tag, start, level.little)
            vr = header.vr or "OB"
            stored = end - start  # up to and including the sequence delimiter
        else:
            items, end = [], start + length
            vr = header.vr or _IMPLICIT_PIXEL_VR[tag]
            stored = length
            if end > self.size:
                raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
            self.fp.seek(end)
        self.pixel = _PixelData(tag, vr, start, length, items)
        value = None
        if length:
            self.bulk[f"{tag:08X}"] = BulkRange(start, stored, vr)
        else:
            value = b""
        return RawDataElement(tag, vr, length, value, start, level.implicit, level.little)

    def _walk_items(self, tag: int, start: int, little: bool) -> tuple[list[tuple[int, int]], int]:
        """(offset, length) of each item value of an undefined-length value, and the
        offset after its sequence delimiter; leaves the file there. Reads only headers."""
        header = struct.Struct("<HHL" if little else ">HHL")
        items: list[tuple[int, int]] = []
        position = start
        while True:
            data = self.pread(position, 8)
            if len(data) < 8:
                raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
            group, element, length = header.unpack(data)
            position += 8
            if group << 16 | element == _SEQUENCE_DELIMITER:
                break
            if group << 16 | element != _ITEM or length == _UNDEFINED:
                raise DicomParseError(
                    f"malformed encapsulated value {_label(tag)}: no item at {position - 8}"
                )
            if position + length > self.size:
                raise DicomParseError(f"truncated: file ends inside element {_label(tag)}")
            items.append((position, length))
            position += length
        self.fp.seek(position)
        return items, position

    def _detect_implicit(self, implicit: bool, nested: bool) -> bool:
        """pydicom's check of the first element: a VR that is not two capital letters means
        implicit VR. Items of an implicit VR dataset are implicit regardless."""
        if nested and implicit:
            return True
        start = self.fp.tell()
        head = self.fp.read(6)
        self.fp.seek(start)
        if len(head) < 6:
            return implicit
        found = not (0x40 < head[4] < 0x5B and 0x40 < head[5] < 0x5B)
        if found != implicit and not nested:
            kind = "implicit" if found else "explicit"
            self.notes.append(f"dataset is encoded in {kind} VR, unlike its transfer syntax")
        return found

    def _check_end(self, last_end: int, end: int | None, nested: bool) -> None:
        """Whatever stopped pydicom's generator early must be the end of the dataset."""
        if end is not None:
            if self.fp.tell() < end:  # an item delimiter inside a defined-length item
                self.fp.seek(end)
            return
        if nested:  # an undefined-length item ends with an 8-byte item delimiter
            if last_end + 8 > self.size:
                raise DicomParseError("truncated: file ends inside a sequence item")
            return
        if last_end < self.size:
            if self.size - last_end < 8:
                raise DicomParseError(
                    f"truncated: file ends inside the element header at {last_end}"
                )
            ignored = self.size - last_end
            self.notes.append(f"ignored {ignored} bytes after an item delimiter at {last_end}")


def _fileno(fp: BinaryIO) -> int | None:
    try:
        return fp.fileno()
    except (AttributeError, OSError):  # io.BytesIO raises io.UnsupportedOperation
        return None


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _is_public_sequence(tag: int) -> bool:
    return _dictionary_vr(int(tag)) == "SQ"  # int(): BaseTag's == is slow in the cache


def _encodings(raw: RawDataElement) -> str | list[str]:
    value = convert_raw_data_element(raw).value
    return convert_encodings(value)


# -- frames ---------------------------------------------------------------------------------

Pread = Callable[[int, int], bytes]


def _frames(
    ds: Dataset, pixel: _PixelData, pread: Pread, notes: list[str]
) -> tuple[FrameRanges, ...]:
    count = _number_of_frames(ds, notes)
    if pixel.length == _UNDEFINED:
        return _encapsulated_frames(ds, pixel, count, pread, notes)
    return _native_frames(ds, pixel, count, notes)


def _number_of_frames(ds: Dataset, notes: list[str]) -> int:
    elem = _get(ds, _NUMBER_OF_FRAMES)
    if elem is None or elem.value in (None, ""):
        return 1
    count = _as_int(elem.value)
    if count is None or count < 1:
        notes.append(f"invalid NumberOfFrames {str(elem.value)!r}; assuming 1")
        return 1
    return count


def _native_frames(
    ds: Dataset, pixel: _PixelData, count: int, notes: list[str]
) -> tuple[FrameRanges, ...]:
    rows, columns = _int_attribute(ds, _ROWS), _int_attribute(ds, _COLUMNS)
    bits = _int_attribute(ds, _BITS_ALLOCATED) or _DEFAULT_BITS.get(pixel.tag)
    samples = _int_attribute(ds, _SAMPLES_PER_PIXEL) or 1
    if not pixel.length:
        notes.append("frames not indexed: empty pixel data")
        return ()
    if not (rows and columns and bits):
        notes.append("frames not indexed: no Rows, Columns or BitsAllocated")
        return ()
    frame_bits = rows * columns * samples * bits
    photometric = _get(ds, _PHOTOMETRIC_INTERPRETATION)
    if photometric is not None and photometric.value == "YBR_FULL_422" and samples == 3:
        frame_bits = frame_bits // 3 * 2  # two chroma samples per two pixels
    if count == 1:
        size = (frame_bits + 7) // 8  # the whole value, bit-packed or not
    elif frame_bits % 8:
        notes.append(f"frames not indexed: a frame of {frame_bits} bits is not whole bytes")
        return ()
    else:
        size = frame_bits // 8
    if size * count > pixel.length:
        raise DicomParseError(
            f"truncated: pixel data has {pixel.length} bytes, {count} frame(s) of {size} "
            f"bytes need {size * count}"
        )
    return tuple(((pixel.offset + index * size, size),) for index in range(count))


def _encapsulated_frames(
    ds: Dataset, pixel: _PixelData, count: int, pread: Pread, notes: list[str]
) -> tuple[FrameRanges, ...]:
    """Frame boundaries, from the most to the least reliable source (PS3.5 A.4)."""
    fragments = pixel.items[1:]  # the first item is the Basic Offset Table
    if not fragments:
        notes.append("frames not indexed: encapsulated pixel data has no fragments")
        return ()
    # Offset tables count from the first byte of the first fragment's item tag.
    first = fragments[0][0] - 8
    starts = {offset - 8 - first: index for index, (offset, _) in enumerate(fragments)}
    extended = _extended_offsets(ds, pread)
    if extended is not None:
        frames = _frames_from_extended_table(*extended, starts, fragments)
        if frames is not None:
            return _checked_count(frames, count, notes)
        notes.append("Extended Offset Table does not match the fragments; ignored")
    table_offset, table_length = pixel.items[0]
    if table_length:
        basic = _unpack_offsets(pread(table_offset, table_length), "L")
        frames = _frames_from_offsets(basic, starts, fragments)
        if frames is not None:
            return _checked_count(frames, count, notes)
        notes.append("Basic Offset Table does not match the fragments; ignored")
    if len(fragments) == count:
        return tuple((fragment,) for fragment in fragments)
    if count == 1:
        return (tuple(fragments),)
    frames = _frames_from_codestream_starts(fragments, pread)
    if len(frames) == count:
        return frames
    notes.append(
        f"frames not indexed: {len(fragments)} fragments for {count} frames and no offset table"
    )
    return ()


def _checked_count(
    frames: tuple[FrameRanges, ...], count: int, notes: list[str]
) -> tuple[FrameRanges, ...]:
    if len(frames) != count:
        notes.append(f"offset table lists {len(frames)} frames but NumberOfFrames is {count}")
    return frames


def _extended_offsets(ds: Dataset, pread: Pread) -> tuple[list[int], list[int]] | None:
    offsets = _binary_value(ds, EXTENDED_OFFSET_TABLE, pread)
    lengths = _binary_value(ds, EXTENDED_OFFSET_TABLE_LENGTHS, pread)
    if not offsets or not lengths:
        return None
    return _unpack_offsets(offsets, "Q"), _unpack_offsets(lengths, "Q")


def _binary_value(ds: Dataset, tag: int, pread: Pread) -> bytes | None:
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.value is None:
        return pread(elem.value_tell, elem.length)
    value = elem.value
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _unpack_offsets(data: bytes, code: str) -> list[int]:
    # Offset tables of encapsulated pixel data are little endian (PS3.5 A.4).
    size = struct.calcsize(f"<{code}")
    count = len(data) // size
    return list(struct.unpack(f"<{count}{code}", data[: count * size]))


def _frames_from_extended_table(
    offsets: list[int],
    lengths: list[int],
    starts: dict[int, int],
    fragments: list[tuple[int, int]],
) -> tuple[FrameRanges, ...] | None:
    """One fragment per frame (PS3.3 C.7.6.3.1.8): the frame is the first `length` bytes."""
    if len(offsets) != len(lengths):
        return None
    frames: list[FrameRanges] = []
    for offset, length in zip(offsets, lengths, strict=True):
        index = starts.get(offset)
        if index is None or length > fragments[index][1]:
            return None
        frames.append(((fragments[index][0], length),))
    return tuple(frames)


def _frames_from_offsets(
    offsets: list[int], starts: dict[int, int], fragments: list[tuple[int, int]]
) -> tuple[FrameRanges, ...] | None:
    """Basic Offset Table: each frame runs from its fragment to the next frame's."""
    indices = [starts.get(offset) for offset in offsets]
    if not indices or indices[0] != 0 or None in indices:
        return None
    bounds = [index for index in indices if index is not None] + [len(fragments)]
    if any(later <= earlier for earlier, later in pairwise(bounds)):
        return None
    return tuple(tuple(fragments[begin:stop]) for begin, stop in pairwise(bounds))


def _frames_from_codestream_starts(
    fragments: list[tuple[int, int]], pread: Pread
) -> tuple[FrameRanges, ...]:
    """A new frame at each fragment that starts with a JPEG or JPEG 2000 codestream."""
    frames: list[FrameRanges] = []
    current: list[tuple[int, int]] = []
    for offset, length in fragments:
        if current and pread(offset, min(length, 12)).startswith(_CODESTREAM_STARTS):
            frames.append(tuple(current))
            current = []
        current.append((offset, length))
    frames.append(tuple(current))
    return tuple(frames)


def _get(ds: Dataset, tag: int) -> DataElement | None:
    """`ds.get(tag)`, with pydicom's warnings about the value naming the element."""
    token = decoding_path.set(f"{tag:08X}")
    try:
        return ds.get(tag)
    finally:
        decoding_path.reset(token)


def _int_attribute(ds: Dataset, tag: int) -> int | None:
    elem = _get(ds, tag)
    return None if elem is None else _as_int(elem.value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# -- identity -------------------------------------------------------------------------------


def _uids(ds: Dataset, meta: Dataset, notes: list[str]) -> tuple[str, str, str, str]:
    study = _required_uid(ds, _STUDY_INSTANCE_UID, "StudyInstanceUID")
    series = _required_uid(ds, _SERIES_INSTANCE_UID, "SeriesInstanceUID")
    instance = _required_uid(ds, _SOP_INSTANCE_UID, "SOPInstanceUID")
    if _uid_value(ds, _SOP_CLASS_UID) is None and _uid_value(meta, _MEDIA_SOP_CLASS_UID):
        notes.append("missing SOPClassUID: MediaStorageSOPClassUID used")
        sop_class = _required_uid(meta, _MEDIA_SOP_CLASS_UID, "MediaStorageSOPClassUID")
    else:
        sop_class = _required_uid(ds, _SOP_CLASS_UID, "SOPClassUID")
    media_instance = _uid_value(meta, _MEDIA_SOP_INSTANCE_UID)
    if media_instance is not None and media_instance != instance:
        notes.append(
            f"SOPInstanceUID {instance} differs from MediaStorageSOPInstanceUID {media_instance}"
        )
    return study, series, instance, sop_class


def _required_uid(ds: Dataset, tag: int, keyword: str) -> str:
    value = _uid_value(ds, tag)
    if value is None:
        raise DicomParseError(f"missing {keyword}")
    if not is_valid_uid(value):
        raise DicomParseError(f"invalid {keyword} {value!r}")
    return value


def _uid_value(ds: Dataset, tag: int) -> str | None:
    elem = _get(ds, tag)
    if elem is None or elem.value in (None, ""):
        return None
    return str(elem.value) if isinstance(elem.value, str) else str(list(elem.value))


# -- warnings and messages ------------------------------------------------------------------

# warnings.catch_warnings changes process-wide state, so two parses must not overlap.
_WARNINGS_LOCK = threading.Lock()


@contextmanager
def _collect_warnings(sink: list[str]) -> Iterator[None]:
    """Turn the warnings this thread issues into `sink` entries instead of showing them.

    Warnings filters are process-wide (before Python 3.14), so parses are serialised by a
    lock; meanwhile other threads' warnings are shown through the previous handler.
    """
    owner = threading.get_ident()
    with _WARNINGS_LOCK, warnings.catch_warnings():
        previous = warnings.showwarning

        def show(  # noqa: PLR0917 (the signature of warnings.showwarning)
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if threading.get_ident() != owner:
                previous(message, category, filename, lineno, file, line)
                return
            text = _describe_warning(str(message))
            if text:
                sink.append(text)

        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _describe_warning(message: str) -> str | None:
    if _REPEATED.match(message):
        return None
    text = message
    if match := _INVALID_VALUE.match(message):
        text = f"invalid {match[1]} value {match[2]}"
    elif match := _TOO_LONG.match(message):
        text = f"{match[3]} value of {match[1]} characters exceeds the maximum of {match[2]}"
    path = decoding_path.get()
    return f"{describe_path(path)} {text}" if path else text


def _label(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _summary(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
