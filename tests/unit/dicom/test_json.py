from __future__ import annotations

import base64
import struct
import warnings
from typing import Any

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from app.dicom.json import describe_path, element_vr, encode_dataset

PATIENT_NAME = 0x00100010


def raw(
    tag: int, vr: str | None, value: bytes | None, *, little: bool = True, length: int = -1
) -> RawDataElement:
    """An element as pydicom's reader yields it (explicit VR unless `vr` is None)."""
    size = len(value or b"") if length < 0 else length
    return RawDataElement(BaseTag(tag), vr, size, value, 0, vr is None, little)


def dataset(*elements: RawDataElement | DataElement, charset: str = "iso8859") -> Dataset:
    ds = Dataset({BaseTag(elem.tag): elem for elem in elements})
    little = all(e.is_little_endian for e in elements if isinstance(e, RawDataElement))
    ds.set_original_encoding(False, little, charset)
    return ds


def encode_one(elem: RawDataElement | DataElement, **kwargs: Any) -> dict[str, Any]:
    encoded = encode_dataset(dataset(elem), **kwargs)
    return encoded[f"{elem.tag:08X}"]  # type: ignore[no-any-return]


# -- values by VR (PS3.18 F.2.3-F.2.5) ---------------------------------------------------

CASES: list[tuple[str, RawDataElement, dict[str, Any]]] = [
    # Person names: component groups present only when non-empty; empty values are null.
    ("PN", raw(PATIENT_NAME, "PN", b"Doe^John"), {"Value": [{"Alphabetic": "Doe^John"}]}),
    (
        "PN ideographic only",
        raw(PATIENT_NAME, "PN", b"=Yamada"),
        {"Value": [{"Ideographic": "Yamada"}]},
    ),
    (
        "PN three groups",
        raw(PATIENT_NAME, "PN", b"A^B=C^D=E^F "),
        {"Value": [{"Alphabetic": "A^B", "Ideographic": "C^D", "Phonetic": "E^F"}]},
    ),
    (
        "PN empty value in a list",
        raw(0x00101001, "PN", b"A\\\\B "),
        {"Value": [{"Alphabetic": "A"}, None, {"Alphabetic": "B"}]},
    ),
    ("PN empty", raw(PATIENT_NAME, "PN", b""), {}),
    # Strings: split on backslash, padding removed, empty values null.
    ("CS", raw(0x00080060, "CS", b"CT"), {"Value": ["CT"]}),
    (
        "CS empty value in a list",
        raw(0x00080008, "CS", b"ORIGINAL\\\\AXIAL "),
        {"Value": ["ORIGINAL", None, "AXIAL"]},
    ),
    ("CS empty", raw(0x00080060, "CS", b""), {}),
    ("CS only padding", raw(0x00080060, "CS", b"  "), {}),
    ("UI NUL padding", raw(0x00080018, "UI", b"1.2.3\x00"), {"Value": ["1.2.3"]}),
    ("LT keeps backslash", raw(0x00204000, "LT", b"a\\b"), {"Value": ["a\\b"]}),
    ("DA", raw(0x00080020, "DA", b"20240131"), {"Value": ["20240131"]}),
    # IS and DS are JSON numbers; what is no number stays a string (F.2.3 Note).
    ("IS", raw(0x00200013, "IS", b"12"), {"Value": [12]}),
    ("IS signed, spaces", raw(0x00200013, "IS", b" -3 \\+4 "), {"Value": [-3, 4]}),
    ("IS empty value in a list", raw(0x00200013, "IS", b"1\\\\3 "), {"Value": [1, None, 3]}),
    ("DS", raw(0x00281050, "DS", b"40.5\\-1e3 "), {"Value": [40.5, -1000.0]}),
    ("DS integer", raw(0x00281050, "DS", b"40"), {"Value": [40.0]}),
    (
        "DS empty value in a list",
        raw(0x00280030, "DS", b"0.5\\\\0.7 "),
        {"Value": [0.5, None, 0.7]},
    ),
    ("DS empty", raw(0x00281050, "DS", b""), {}),
    # Binary numbers, both byte orders.
    ("US", raw(0x00280010, "US", b"\x00\x02"), {"Value": [512]}),
    ("US multi", raw(0x00280010, "US", b"\x01\x00\x02\x00"), {"Value": [1, 2]}),
    ("US big endian", raw(0x00280010, "US", b"\x02\x00", little=False), {"Value": [512]}),
    ("SS", raw(0x00281106, "SS", struct.pack("<h", -5)), {"Value": [-5]}),
    ("UL", raw(0x00081162, "UL", struct.pack("<L", 4_000_000_000)), {"Value": [4_000_000_000]}),
    ("SL", raw(0x00186020, "SL", struct.pack("<l", -7)), {"Value": [-7]}),
    ("FL", raw(0x00189087, "FL", struct.pack("<f", 0.5)), {"Value": [0.5]}),
    ("FD", raw(0x00189087, "FD", struct.pack("<2d", 1.25, -2.0)), {"Value": [1.25, -2.0]}),
    ("FD NaN is null", raw(0x00189087, "FD", struct.pack("<d", float("nan"))), {"Value": [None]}),
    (
        "FD infinity is null",
        raw(0x00189087, "FD", struct.pack("<d", float("inf"))),
        {"Value": [None]},
    ),
    ("UV", raw(0x00189087, "UV", struct.pack("<Q", 2**63)), {"Value": [2**63]}),
    ("US empty", raw(0x00280010, "US", b""), {}),
    (
        "AT",
        raw(0x00209165, "AT", b"\x10\x00\x20\x00\x28\x00\x08\x00"),
        {"Value": ["00100020", "00280008"]},
    ),
    # Binary VRs: base64 of the value, little endian.
    ("OB", raw(0x00091010, "OB", b"\x01\x02\x03\x04"), {"InlineBinary": "AQIDBA=="}),
    ("UN", raw(0x00091010, "UN", b"\xff"), {"InlineBinary": "/w=="}),
    ("OB empty", raw(0x00091010, "OB", b""), {}),
    (
        "OW big endian is swapped",
        raw(0x00283006, "OW", b"\x01\x02\x03\x04", little=False),
        {"InlineBinary": base64.b64encode(b"\x02\x01\x04\x03").decode()},
    ),
    (
        "OF big endian is swapped",
        raw(0x00091010, "OF", b"\x01\x02\x03\x04", little=False),
        {"InlineBinary": base64.b64encode(b"\x04\x03\x02\x01").decode()},
    ),
    ("implicit VR from the dictionary", raw(0x00280010, None, b"\x00\x02"), {"Value": [512]}),
]


@pytest.mark.parametrize(("name", "elem", "expected"), CASES, ids=[case[0] for case in CASES])
def test_value_encoding(name: str, elem: RawDataElement, expected: dict[str, Any]) -> None:
    vr = elem.VR or {0x00280010: "US"}[elem.tag]
    assert encode_one(elem) == {"vr": vr, **expected}


@pytest.mark.parametrize(
    ("name", "elem", "value"),
    [
        ("IS not an integer", raw(0x00200013, "IS", b"1.5 "), "1.5"),
        ("IS not a number", raw(0x00200013, "IS", b"abc "), "abc"),
        ("IS too long", raw(0x00200013, "IS", b"12345678901234"), 12345678901234),
        ("DS too long", raw(0x00281050, "DS", b"1.00000000000000001"), 1.0),
        ("DS not a number", raw(0x00281050, "DS", b"1,5 "), "1,5"),
        ("DS not finite", raw(0x00281050, "DS", b"1e400 "), "1e400"),
    ],
)
def test_invalid_numbers_keep_their_text(name: str, elem: RawDataElement, value: object) -> None:
    # The JSON keeps what the file says (F.2.3 Note); pydicom may warn about the value.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = encode_one(elem)
    assert encoded == {"vr": elem.VR, "Value": [value]}


def test_character_set_of_the_dataset_is_used() -> None:
    name = "山田^太郎".encode()
    ds = dataset(raw(0x00080005, "CS", b"ISO_IR 192"), raw(PATIENT_NAME, "PN", name))
    ds.set_original_encoding(False, True, ["utf_8"])
    assert encode_dataset(ds)["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "山田^太郎"}]}


def test_keys_are_sorted_hex_tags_without_group_length() -> None:
    ds = dataset(
        raw(0x00200013, "IS", b"1"),
        raw(0x00080000, "UL", b"\x04\x00\x00\x00"),
        raw(0x0008103E, "LO", b"x"),
        raw(0x00080060, "CS", b"CT"),
        raw(0x00091001, "LO", b"private"),
    )
    assert list(encode_dataset(ds)) == ["00080060", "0008103E", "00091001", "00200013"]


def test_user_built_dataset() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.InstanceNumber = 3
    ds.ImagePositionPatient = [0, 1.5, -2]
    ds.ReferencedFrameNumber = None
    assert encode_dataset(ds) == {
        "00081160": {"vr": "IS"},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00200013": {"vr": "IS", "Value": [3]},
        "00200032": {"vr": "DS", "Value": [0.0, 1.5, -2.0]},
    }


def test_unresolved_ambiguous_vr_gets_a_concrete_one() -> None:
    assert encode_one(DataElement(0x60003000, "OB or OW", b"\x00\x01")) == {
        "vr": "OW",
        "InlineBinary": "AAE=",
    }
    assert encode_one(DataElement(0x00280106, "US or SS", -3)) == {"vr": "SS", "Value": [-3]}


# -- sequences and bulk data -----------------------------------------------------------------


def icon_dataset() -> Dataset:
    icon = dataset(raw(0x00280010, "US", b"\x40\x00"), raw(0x7FE00010, "OB", b"\x00" * 16))
    empty_item = Dataset()
    sequence = DataElement(0x00880200, "SQ", Sequence([icon, empty_item]))
    other = DataElement(0x00081140, "SQ", Sequence([]))
    return dataset(sequence, other)  # type: ignore[arg-type]


def test_sequence_items_empty_item_and_empty_sequence() -> None:
    assert encode_dataset(icon_dataset()) == {
        "00081140": {"vr": "SQ"},
        "00880200": {
            "vr": "SQ",
            "Value": [
                {
                    "00280010": {"vr": "US", "Value": [64]},
                    "7FE00010": {"vr": "OB", "InlineBinary": base64.b64encode(bytes(16)).decode()},
                },
                {},
            ],
        },
    }


def test_bulk_callback_gets_element_paths() -> None:
    seen: list[str] = []

    def bulk(path: str, elem: RawDataElement | DataElement) -> str | None:
        seen.append(path)
        return f"https://pacs/bulk/{path}"

    encoded = encode_dataset(icon_dataset(), bulk)
    assert seen == ["00880200/0/7FE00010"]
    icon = encoded["00880200"]["Value"][0]
    assert icon["7FE00010"] == {"vr": "OB", "BulkDataURI": "https://pacs/bulk/00880200/0/7FE00010"}


def test_deferred_element_is_never_loaded() -> None:
    deferred = raw(0x7FE00010, "OW", None, length=1 << 30)
    ds = dataset(deferred)
    assert encode_dataset(ds, lambda path, _: f"uri:{path}") == {
        "7FE00010": {"vr": "OW", "BulkDataURI": "uri:7FE00010"}
    }
    with pytest.raises(ValueError, match="deferred"):
        encode_dataset(ds)


def test_undecodable_value_is_kept_as_un_with_a_warning() -> None:
    notes: list[str] = []
    encoded = encode_one(raw(0x00280010, "US", b"\x01\x00\x02"), warn=notes.append)
    assert encoded == {"vr": "UN", "InlineBinary": "AQAC"}
    assert len(notes) == 1
    assert notes[0].startswith("(0028,0010) cannot be decoded")


@pytest.mark.parametrize(
    ("elem", "vr"),
    [
        (raw(PATIENT_NAME, None, b"x"), "PN"),
        (raw(0x00091010, None, b"x"), "UN"),
        (raw(0x60003000, None, b"xx"), "OW"),
        (raw(0x00283006, None, b"xx"), "OW"),
        (raw(0x00280106, None, b"xx"), "US"),
        (raw(0x7FE00010, "OB", b"xx"), "OB"),
    ],
)
def test_element_vr(elem: RawDataElement, vr: str) -> None:
    assert element_vr(elem) == vr


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("00100010", "(0010,0010)"),
        ("00081140/0/00081150", "(0008,1140)[0](0008,1150)"),
        ("00880200/12/7FE00010", "(0088,0200)[12](7FE0,0010)"),
    ],
)
def test_describe_path(path: str, text: str) -> None:
    assert describe_path(path) == text
