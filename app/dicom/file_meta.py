"""The PS3.10 header (preamble, 'DICM', file meta information) of a file this archive writes
around a dataset received over the network.

Encoded here rather than through pydicom's FileMetaDataset and writer, which took about
1 ms per received instance for some 200 bytes; tests/unit/dicom/test_file_meta.py checks
that the bytes are those pydicom writes.
"""

from __future__ import annotations

import struct

from app.dicom.uid import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

_PREAMBLE = b"\x00" * 128 + b"DICM"
# Explicit VR little endian (PS3.5 7.1.2): a short element (2-byte length) and, for OB,
# one with 2 reserved bytes and a 4-byte length.
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2sHI")
_VERSION = _LONG.pack(0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def file_header(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble, 'DICM' and the file meta information (PS3.10 7.1) naming this archive as
    the implementation that wrote the file and `source_ae` as the sender."""
    elements = [
        _VERSION,
        _element(0x0002, "UI", sop_class),
        _element(0x0003, "UI", sop_instance),
        _element(0x0010, "UI", transfer_syntax),
        _element(0x0012, "UI", IMPLEMENTATION_CLASS_UID),
        _element(0x0013, "SH", IMPLEMENTATION_VERSION_NAME),
    ]
    if source_ae.strip():
        elements.append(_element(0x0016, "AE", source_ae.strip()))
    group = b"".join(elements)
    length = _SHORT.pack(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", len(group))
    return _PREAMBLE + length + group


def _element(element: int, vr: str, value: str) -> bytes:
    """One element of group 0002; a value of odd length is padded (UI with NUL, text with a
    space, PS3.5 6.2). UIDs and AE titles are ASCII; anything else is replaced."""
    data = value.encode("ascii", "replace")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return _SHORT.pack(0x0002, element, vr.encode(), len(data)) + data
