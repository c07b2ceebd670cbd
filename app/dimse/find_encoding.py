"""C-FIND response identifiers encoded straight from the index's DICOM JSON.

Building a pydicom Dataset per match (`Dataset.from_json` per attribute, then writing it)
cost about 0.7 ms a match, more than the query itself. The keys of a C-FIND response are
almost always short text, person names, UIDs and counts: those are encoded here, in
explicit or implicit VR little endian, byte for byte as pydicom writes them. Anything else
(sequences, decimal strings, binary values, other syntaxes) returns None and the caller
takes pydicom's path (`find.response`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

# Text VRs whose JSON values are strings, and their padding byte.
_TEXT = dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM"), b" ")
_TEXT.update(dict.fromkeys(("UC", "UR", "UT", "PN", "IS"), b" "))
_TEXT["UI"] = b"\0"
# VRs with a 4-byte length in explicit VR (PS3.5 7.1.2).
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "UV"}
_BINARY = {"US": "<H", "UL": "<L"}


def encode_element(tag: int, vr: str, raw: bytes, implicit: bool) -> bytes:
    if len(raw) % 2:
        raw += _TEXT.get(vr, b"\0")
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHL", group, element, len(raw)) + raw
    if vr in _LONG:
        return struct.pack("<HH2sHL", group, element, vr.encode(), 0, len(raw)) + raw
    return struct.pack("<HH2sH", group, element, vr.encode(), len(raw)) + raw


def value_bytes(vr: str, value: Mapping[str, Any] | None) -> bytes | None:
    """The value of a DICOM JSON attribute as it is encoded (unpadded), b"" when it has
    none; None when this module does not encode that VR or value."""
    if value is None:
        return b""
    if value.get("vr") not in (vr, None) or "BulkDataURI" in value or "InlineBinary" in value:
        return None
    values = value.get("Value")
    if not values:
        return b""
    if vr in _BINARY:
        if not all(isinstance(v, int) for v in values):
            return None
        return b"".join(struct.pack(_BINARY[vr], v) for v in values)
    if vr == "PN":
        texts = []
        for name in values:
            if not isinstance(name, dict):
                return None
            groups = [name.get(k) or "" for k in ("Alphabetic", "Ideographic", "Phonetic")]
            texts.append("=".join(groups).rstrip("="))
    elif vr == "IS":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        texts = [str(v) for v in values]
    elif vr in _TEXT:
        if not all(isinstance(v, str) or v is None for v in values):
            return None
        texts = [v or "" for v in values]
    else:
        return None
    return "\\".join(texts).encode("utf-8")
