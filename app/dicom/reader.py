"""The dataset walk: every element of a stored dataset, with bulk values located, not read.

pydicom's element generator reads runs of ordinary elements with `defer_size`, so long values
are skipped with only their position kept; `Reader` takes over wherever pydicom would read a
whole value regardless of size:

- sequences, because pydicom reads nested datasets without `defer_size`;
- undefined-length values (encapsulated pixel data), whose items are walked by reading
  8-byte headers and seeking over the fragments;
- the top-level Pixel Data, whose frames `frames.py` locates.

Bulk data: every value longer than the threshold whose VR PS3.18 F.2.2 allows as bulk data,
every undefined-length value other than a sequence, and the top-level pixel data. Each gets
a `BulkRange` under its path. A range holds the value bytes as stored: in the file's byte
order (big endian files are rare and retired), and for an undefined-length value from its
first item tag to the end of its sequence delimiter, so that it can follow an
undefined-length element header verbatim.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import STANDARD_VR

from app.dicom.instance import BulkRange
from app.dicom.json import BULK_VRS, decoding_path, describe_path, element_vr

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
UNDEFINED_LENGTH = 0xFFFFFFFF

_PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
_SPECIFIC_CHARACTER_SET = frozenset({0x00080005})  # a set: BaseTag's == is slow
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# Native pixel data in implicit VR has no VR of its own: PS3.5 A.1 says OW.
_IMPLICIT_PIXEL_VR = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}


class DicomParseError(ValueError):
    """The file cannot be stored; the message is a human-readable FailureReason."""


# Binary VRs whose value length must be a multiple of the value's size (PS3.5 6.2).
_VALUE_WIDTHS = {
    "AT": 4, "FD": 8, "FL": 4, "OD": 8, "OF": 4, "OL": 4, "OV": 8, "OW": 2,
    "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8,
}  # fmt: skip


def _check_vr(tag: int, vr: str | None) -> None:
    """An explicit VR must be one PS3.5 defines: an unknown one makes the value unreadable
    (pydicom cannot decode it, so neither can retrieval, transcoding or a client), and is
    what a damaged element header looks like. The VR is not quoted: a damaged header's
    bytes may be part of a value."""
    if vr is not None and vr not in STANDARD_VR:
        raise DicomParseError(f"element {label(tag)} has an unknown value representation")


def label(tag: int) -> str:
    """'(gggg,eeee)', for messages."""
    return describe_path(f"{tag:08X}")


def get_decoded(ds: Dataset, tag: int) -> DataElement | None:
    """`ds.get(tag)`, with pydicom's warnings about the value naming the element."""
    token = decoding_path.set(f"{tag:08X}")
    try:
        return ds.get(tag)
    finally:
        decoding_path.reset(token)


@dataclass
class PixelData:
    """Where the top-level Pixel Data (or Float or Double Float Pixel Data) value lies."""

    tag: int
    offset: int  # first byte of the value
    length: int  # value length, UNDEFINED_LENGTH when encapsulated
    # Encapsulated: (offset, length) of every item value, the Basic Offset Table first.
    items: list[tuple[int, int]] = field(default_factory=list)

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


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


class Reader:
    """Reads one dataset tree with pydicom's element generator, taking over at sequences,
    undefined-length values and the top-level pixel data (see the module docstring)."""

    def __init__(self, fp: BinaryIO, size: int, defer_size: int | None, notes: list[str]) -> None:
        self.fp = fp
        self.size = size
        self.defer_size = defer_size  # None: read every value (inflated data in memory)
        self.notes = notes
        self.bulk: dict[str, BulkRange] = {}
        self.pixel: PixelData | None = None
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
                    self.notes.append(f"ignored {label(element.tag)} at {element.value_tell}")
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
        if length == UNDEFINED_LENGTH or vr == "SQ":
            return True
        if top and tag in _PIXEL_TAGS and self.pixel is None:
            return True
        # Implicit VR, or UN in explicit VR (which pydicom decodes as the dictionary's VR):
        # sequences must not be read as a raw value, however long.
        return (vr is None or (vr == "UN" and length < 0xFFFF)) and _is_public_sequence(tag)

    def _accept(self, raw: RawDataElement, prefix: str) -> RawDataElement:
        _check_vr(raw.tag, raw.VR)
        if raw.value_tell + raw.length > self.size:
            raise DicomParseError(f"truncated: file ends inside element {label(raw.tag)}")
        vr = element_vr(raw)
        # pydicom decodes an implicit VR group length (gggg,0000) as UL, dictionary or not.
        checked = "UL" if raw.VR is None and raw.tag & 0xFFFF == 0 else vr
        width = _VALUE_WIDTHS.get(checked)
        if width is not None and raw.length % width:
            # pydicom cannot decode it (BytesLengthException), nor can any client.
            raise DicomParseError(
                f"element {label(raw.tag)} has {raw.length} bytes, not a whole number of "
                f"{width}-byte {checked} values"
            )
        if raw.value is not None or not raw.length:
            return raw
        # Deferred by pydicom (longer than defer_size).
        if vr in BULK_VRS:
            self.bulk[f"{prefix}{raw.tag:08X}"] = BulkRange(raw.value_tell, raw.length, vr)
            return raw
        # PS3.18 F.2.2 allows no BulkDataURI for this VR (UI, CS, PN, ...): it is metadata.
        return raw._replace(value=self.pread(raw.value_tell, raw.length))

    def _take_over(self, header: _Header, level: _Level) -> RawDataElement | DataElement:
        _check_vr(header.tag, header.vr)
        if not level.nested and header.tag in _PIXEL_TAGS and self.pixel is None:
            return self._pixel_data(header, level)
        if self._is_sequence(header, level.little):
            return self._sequence(header, level)
        return self._undefined_length_value(header, level)

    def _is_sequence(self, header: _Header, little: bool) -> bool:
        vr, length = header.vr, header.length
        if vr == "SQ" or (vr == "UN" and length == UNDEFINED_LENGTH):  # UN: PS3.5 6.2.2
            return True
        if vr in (None, "UN") and _is_public_sequence(header.tag):
            return True
        if vr is None and length == UNDEFINED_LENGTH and _dictionary_vr(header.tag) is None:
            # Private: a sequence if the value starts with an item, as pydicom decides.
            start = self.pread(header.value_tell, 4)
            return start == struct.pack("<HH" if little else ">HH", 0xFFFE, 0xE000)
        return False

    def _sequence(self, header: _Header, level: _Level) -> DataElement:
        tag = header.tag
        path = f"{level.prefix}{tag:08X}"
        undefined = header.length == UNDEFINED_LENGTH
        seq_end = None if undefined else header.value_tell + header.length
        if seq_end is not None and seq_end > self.size:
            raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
        items: list[Dataset] = []
        while seq_end is None or self.fp.tell() < seq_end:
            item_tag, item_length = self._item_header(tag, level.little)
            if item_tag == _SEQUENCE_DELIMITER:
                break
            if item_tag != _ITEM:
                position = self.fp.tell() - 8
                raise DicomParseError(f"malformed sequence {label(tag)}: no item at {position}")
            item_end = None if item_length == UNDEFINED_LENGTH else self.fp.tell() + item_length
            if item_end is not None and item_end > self.size:
                raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
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
            raise DicomParseError(f"truncated: file ends inside element {label(owner)}")
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
        return RawDataElement(tag, vr, UNDEFINED_LENGTH, value, start, level.implicit, level.little)

    def _pixel_data(self, header: _Header, level: _Level) -> RawDataElement:
        tag, start, length = header.tag, header.value_tell, header.length
        if length == UNDEFINED_LENGTH:
            items, end = self._walk_items(tag, start, level.little)
            vr = header.vr or "OB"
            stored = end - start  # up to and including the sequence delimiter
        else:
            items, end = [], start + length
            vr = header.vr or _IMPLICIT_PIXEL_VR[tag]
            stored = length
            if end > self.size:
                raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
            self.fp.seek(end)
        self.pixel = PixelData(tag, start, length, items)
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
                raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
            group, element, length = header.unpack(data)
            position += 8
            if group << 16 | element == _SEQUENCE_DELIMITER:
                break
            if group << 16 | element != _ITEM or length == UNDEFINED_LENGTH:
                raise DicomParseError(
                    f"malformed encapsulated value {label(tag)}: no item at {position - 8}"
                )
            if position + length > self.size:
                raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
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
