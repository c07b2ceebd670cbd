"""Identifiers decoded without pydicom's raw elements give what pydicom's decoding gives
(its values, their types, the data set's encoding), and anything else is left to pydicom."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import dsutils

from app.dimse import identifier_decoding

# Each: the identifier's elements as (keyword or tag, VR, value).
READ = {
    "study keys, no values": [
        ("QueryRetrieveLevel", "CS", "STUDY"),
        ("StudyDate", "DA", ""),
        ("PatientName", "PN", ""),
        ("PatientID", "LO", "LT-1S000"),
        ("StudyInstanceUID", "UI", ""),
    ],
    "a UID list, several modalities": [
        ("QueryRetrieveLevel", "CS", "SERIES"),
        ("ModalitiesInStudy", "CS", ["CT", "MR"]),
        ("StudyInstanceUID", "UI", ["1.2.3", "1.2.3.4"]),
        ("SeriesInstanceUID", "UI", "1.2.3.4.5"),
    ],
    "names, wildcards and groups": [
        ("PatientName", "PN", "DOE^JOHN=Ydo^Jon"),
        ("ReferringPhysicianName", "PN", ["SMITH*", "JONES^A"]),
        ("AccessionNumber", "SH", "A?C*"),
    ],
    "padding inside and at the ends of values": [
        ("RetrieveAETitle", "AE", ["  PACS ", "ARCHIVE"]),
        ("StudyDescription", "LO", "HEAD  "),
        ("PatientID", "LO", ["A ", " B"]),
        ("Modality", "CS", "CT "),
    ],
    "ranges, times, date-times": [
        ("StudyDate", "DA", "20240101-20241231"),
        ("StudyTime", "TM", "101500.5-"),
        ("AcquisitionDateTime", "DT", "20240101101500"),
        ("PatientAge", "AS", "045Y"),
    ],
    "long text and the default character set": [
        ("SpecificCharacterSet", "CS", "ISO_IR 6"),
        ("PatientComments", "LT", "a \\ backslash  "),
        ("StudyComments", "LT", ""),
        ("InstitutionAddress", "ST", "1 Main St"),
    ],
    "no elements": [],
}

LEFT_TO_PYDICOM = {
    "another character set": [
        ("SpecificCharacterSet", "CS", "ISO_IR 100"),
        ("PatientName", "PN", "MULLER"),
    ],
    "a sequence": [("ReferencedStudySequence", "SQ", Sequence([Dataset()]))],
    "a number": [("NumberOfStudyRelatedInstances", "IS", "3")],
    "a binary value": [("Rows", "US", 512)],
    "a private element": [(0x0009_0010, "LO", "ACME")],
    "non-ASCII text": [("PatientName", "PN", "MÜLLER")],
}


def _encoded(elements: list[tuple[Any, str, Any]], implicit: bool) -> bytes:
    """The identifier as pydicom encodes it, in little endian."""
    ds = Dataset()
    for key, vr, value in elements:
        ds.add(DataElement(key, vr, value))
    return bytes(dsutils.encode(ds, implicit, True, False) or b"")


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("elements", READ.values(), ids=READ.keys())
def test_an_identifier_is_read_as_pydicom_reads_it(
    elements: list[tuple[Any, str, Any]], implicit: bool
) -> None:
    raw = _encoded(elements, implicit)
    expected = dsutils.decode(io.BytesIO(raw), implicit, True, False)
    got = identifier_decoding.decode(raw, implicit)
    assert got is not None
    assert got == expected
    assert [(e.tag, e.VR, type(e.value)) for e in got] == [
        (e.tag, e.VR, type(e.value)) for e in expected
    ]
    assert (got.original_encoding, got.original_character_set) == (
        expected.original_encoding,
        expected.original_character_set,
    )


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("elements", LEFT_TO_PYDICOM.values(), ids=LEFT_TO_PYDICOM.keys())
def test_anything_else_is_left_to_pydicom(
    elements: list[tuple[Any, str, Any]], implicit: bool
) -> None:
    assert identifier_decoding.decode(_encoded(elements, implicit), implicit) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x08\x00\x52\x00\x06\x00\x00\x00STU",  # a value longer than what is left
        b"\x08\x00\x52\x00\x06\x00",  # a truncated element header
        b"\x10\x00\x10\x00\x00\x00\x00\x00\x08\x00\x52\x00\x00\x00\x00\x00",  # out of order
        b"\x08\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00",  # a group length
        b"\x02\x00\x10\x00\x02\x00\x00\x001\x00",  # file meta
    ],
    ids=["truncated value", "truncated header", "out of order", "group length", "file meta"],
)
def test_a_malformed_identifier_is_left_to_pydicom(raw: bytes) -> None:
    assert identifier_decoding.decode(raw, implicit=True) is None
