"""Request identifiers (C-FIND, C-MOVE, C-GET) decoded straight into a pydicom Dataset.

pydicom reads a data set as raw elements and converts each when it is first used, through
its hooks: about 30 microseconds an element, most of a C-FIND's own cost once the query
is parsed. An identifier is almost always a handful of short text keys in little endian
with the default character set: those are read here and set as converted elements, the
values exactly as pydicom converts them (compared in tests/unit/dimse). Anything else (a
sequence, a binary or a private element, another character set, non-ASCII bytes, big
endian, deflate) returns None and the caller takes pydicom's path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import PersonName

_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
# VRs with a 4-byte length in explicit VR (PS3.5 7.1.2).
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"UV"}
# The text VRs read here, by how pydicom converts them (pydicom.values, without datetime
# conversion): padding stripped from the whole value, then split (and typed); split, then
# padding stripped from each value; split, each value stripped at both ends; not split.
_WHOLE: dict[str, Callable[[str], Any]] = {
    "AS": str, "CS": str, "DA": str, "DT": str, "TM": str, "UI": UID, "PN": PersonName,
}  # fmt: skip
_EACH = {"LO", "SH", "UC"}
_BOTH_ENDS = {"AE"}
_SINGLE = {"LT", "ST", "UT"}
SPECIFIC_CHARACTER_SET = 0x0008_0005
_KNOWN = {*_WHOLE, *_EACH, *_BOTH_ENDS, *_SINGLE}


def decode(data: bytes, implicit: bool) -> Dataset | None:
    """The little endian data set `data` (implicit or explicit VR), or None when it holds
    anything this module leaves to pydicom."""
    out = Dataset()
    offset, end = 0, len(data)
    previous = -1
    while offset < end:
        if implicit:
            if end - offset < _IMPLICIT.size:
                return None
            group, element, length = _IMPLICIT.unpack_from(data, offset)
            offset += _IMPLICIT.size
            tag = group << 16 | element
            if not dictionary_has_tag(tag):
                return None
            vr = dictionary_VR(tag)
        else:
            if end - offset < _EXPLICIT.size:
                return None
            group, element, raw_vr, length = _EXPLICIT.unpack_from(data, offset)
            offset += _EXPLICIT.size
            tag = group << 16 | element
            if raw_vr in _LONG:
                if end - offset < _LONG_LENGTH.size:
                    return None
                (length,) = _LONG_LENGTH.unpack_from(data, offset)
                offset += _LONG_LENGTH.size
            vr = raw_vr.decode("ascii", "replace")
        if tag <= previous or length > end - offset or group <= 0x0002 or element == 0:
            return None  # out of order, truncated, undefined length; meta or group length
        if group % 2:
            return None  # private: pydicom keeps track of its creators
        previous = tag
        raw = data[offset : offset + length]
        offset += length
        if not raw.isascii():
            return None
        value = _value(vr, raw.decode("ascii"))
        if value is None:
            return None
        if tag == SPECIFIC_CHARACTER_SET and value not in ("", "ISO_IR 6"):
            return None  # other text decodes by that character set: pydicom's job
        out.add(DataElement(tag, vr, value, already_converted=True))
    encoding = out.get(SPECIFIC_CHARACTER_SET)
    out.set_original_encoding(
        implicit, True, convert_encodings(encoding.value) if encoding else default_encoding
    )
    return out


def _value(vr: str, text: str) -> Any:
    """A text value converted as pydicom converts it; None for a VR it is not read here."""
    if not text:  # pydicom's empty value (empty_value_for_VR)
        return PersonName("") if vr == "PN" else "" if vr in _KNOWN else None
    kind: Callable[[str], Any] = str
    if vr in _WHOLE:
        kind = _WHOLE[vr]
        parts = text.rstrip(" \0").split("\\")
    elif vr in _EACH:
        parts = [part.rstrip("\0 ") for part in text.split("\\")]
    elif vr in _BOTH_ENDS:
        parts = [part.strip() for part in text.split("\\")]
    elif vr in _SINGLE:
        return text.rstrip("\0 ")
    else:
        return None
    return kind(parts[0]) if len(parts) == 1 else MultiValue(kind, parts)
