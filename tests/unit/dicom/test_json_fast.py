"""The fast path of DICOM JSON encoding (app/dicom/json.py `_fast_path`, `plain_value`)
gives what pydicom's decoding gives, element for element, and takes the values it can.

Each file is parsed twice, with the fast path and with it turned off (every element then
decoded by pydicom), and the two results must be equal: the metadata byte for byte (as
orjson writes it for the index), the warnings in their order, the identity and the frames.
"""

from __future__ import annotations

import glob
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import data_store
import orjson
import pydicom.data
import pytest
from pydicom import dataelem
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.dicom import json as json_module
from app.dicom.json import encode_dataset
from app.dicom.parse import DicomParseError, parse_instance
from app.dicom.parse import _collect_warnings as collect_warnings

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
INSTANCE = "1.2.826.0.1.3680043.8.498.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def outcome(path: Path) -> tuple[Any, ...]:
    try:
        parsed = parse_instance(path)
    except DicomParseError as exc:
        return ("rejected", str(exc))
    return (
        orjson.dumps(parsed.metadata),
        parsed.warnings,
        parsed.study_instance_uid,
        parsed.series_instance_uid,
        parsed.sop_instance_uid,
        parsed.sop_class_uid,
        parsed.transfer_syntax_uid,
        parsed.frames,
        parsed.bulk,
    )


def both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = outcome(path)
    with monkeypatch.context() as patch:
        patch.setattr(json_module, "_fast_path", lambda _raw, _text: None)
        general = outcome(path)
    return fast, general


def corpus() -> list[Path]:
    files = set(pydicom.data.get_testdata_files())
    files |= set(glob.glob(os.path.join(os.path.dirname(data_store.__file__), "data", "*")))
    return sorted(Path(name) for name in files if os.path.isfile(name))


CORPUS = corpus()


@pytest.mark.parametrize("path", CORPUS, ids=[str(p.relative_to(p.parents[1])) for p in CORPUS])
def test_corpus_fast_path_equals_pydicom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, general = both_ways(path, monkeypatch)
    assert fast == general


# -- values chosen at the edges of what the fast path takes ----------------------------------


def element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    group, number = tag >> 16, tag & 0xFFFF
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"):
        return struct.pack("<HH2sHL", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), len(value)) + value


def implicit_element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def part10(tmp_path: Path, body: bytes, syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = INSTANCE
    meta.TransferSyntaxUID = syntax
    holder = Dataset()
    holder.file_meta = meta
    holder.preamble = b"\0" * 128
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.dcm"
    holder.save_as(path, enforce_file_format=True)
    with path.open("ab") as out:
        out.write(body)
    return path


def pad(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


def identity() -> list[tuple[int, str, bytes]]:
    return [
        (0x00080016, "UI", CT_IMAGE.encode() + b"\0"),
        (0x00080018, "UI", INSTANCE.encode() + b"\0"),
        (0x0020000D, "UI", STUDY.encode()),
        (0x0020000E, "UI", SERIES.encode() + b"\0"),
    ]


def dataset_file(
    tmp_path: Path,
    elements: list[tuple[int, str, bytes]],
    *,
    charset: bytes | None = None,
    implicit: bool = False,
) -> Path:
    items = identity() + elements
    if charset is not None:
        items.append((0x00080005, "CS", charset))
    chunks = []
    for tag, vr, value in sorted(items, key=lambda item: item[0]):
        data = value if vr == "UI" else pad(value)
        if len(data) % 2:
            data += b"\0"
        chunks.append(implicit_element(tag, data) if implicit else element(tag, vr, data))
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return part10(tmp_path, b"".join(chunks), syntax)


# (tag, VR, value as stored): ordinary values, empty ones, multiple values with empty ones,
# trailing NULs and spaces, over-long values (pydicom warns), invalid UIDs, non-ASCII
# bytes, control characters, backslashes in single-valued text, person names with one to
# four component groups.
VALUES: list[tuple[int, str, bytes]] = [
    (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\AXIAL"),
    (0x00080008, "CS", b"ORIGINAL\\\\AXIAL"),
    (0x00080008, "CS", b"\\"),
    (0x00080008, "CS", b"  "),
    (0x00080008, "CS", b" lower case \xe9"),
    (0x00080008, "CS", b"X" * 20),
    (0x00080020, "DA", b"20240101"),
    (0x00080020, "DA", b"2024-01-01"),
    (0x00080020, "DA", b"20240101\\20240102"),
    (0x00080030, "TM", b"120000.123456 "),
    (0x00080030, "TM", b"25"),
    (0x0008002A, "DT", b"20240101120000+0100"),
    (0x00101010, "AS", b"045Y"),
    (0x00101010, "AS", b"45 years"),
    (0x00081150, "UI", b"1.2.3\0"),
    (0x00081150, "UI", b"1.02.3"),
    (0x00081150, "UI", b"1.2.3 "),
    (0x00081150, "UI", b"1." + b"2" * 70),
    (0x00081150, "UI", b"1.2\\1.3"),
    (0x00081150, "UI", b"1.2\\\\1.3"),
    (0x00081150, "UI", b"1.2\n"),
    (0x00081150, "UI", b"\0\0"),
    (0x00080050, "SH", b"ACC123"),
    (0x00080050, "SH", b"A" * 17),
    (0x00080050, "SH", b"A" * 16 + b"\\B"),
    (0x00080050, "SH", b"\\"),
    (0x00080050, "SH", b" lead and trail  "),
    (0x00081030, "LO", b"Study \\ description"),
    (0x00081030, "LO", b"x" * 65),
    (0x00081030, "LO", b"caf\xe9"),
    (0x00081030, "LO", b"tab\there"),
    (0x00081030, "LO", b"escape \x1b(B"),
    (0x00081030, "LO", b"nul\0inside"),
    (0x00204000, "LT", b"line one\r\nline two \\ with a backslash  "),
    (0x00204000, "LT", b"y" * 10242),
    (0x00081090, "LO", b""),
    (0x00321060, "LO", b"   "),
    (0x00080081, "ST", b"s" * 1026),
    (0x00080081, "ST", b"Main street 1"),
    (0x00189004, "CS", b"PRODUCT"),
    (0x00081195, "UI", b"1.2.3.4"),
    (0x00100010, "PN", b"Doe^John"),
    (0x00100010, "PN", b"Doe^John^^Dr^"),
    (0x00100010, "PN", b"Doe^John=Ideo=Phon"),
    (0x00100010, "PN", b"=Ideo"),
    (0x00100010, "PN", b"=="),
    (0x00100010, "PN", b"a=b=c=d"),
    (0x00100010, "PN", b"n" * 65),
    (0x00100010, "PN", b"Doe^John\\Roe^Jane"),
    (0x00100010, "PN", b"Doe\\\\Roe"),
    (0x00100010, "PN", b"M\xfcller^Hans"),
    (0x00100010, "PN", b"  "),
    (0x00100020, "LO", b"PID-1 "),
    (0x00400280, "ST", b"comment\\with\\backslashes"),
    (0x00081080, "LO", b"A\\B\\"),
    (0x00180015, "CS", b"HEAD"),
    (0x00200020, "CS", b"L\\P"),
]


CHARSETS = [None, b"ISO_IR 100", b"ISO_IR 192", b"GB18030", b"ISO_IR 13", b"ISO 2022 IR 87"]
CHARSETS += [b"\\ISO 2022 IR 87", b"ISO 2022 IR 6\\ISO 2022 IR 149"]


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("charset", CHARSETS)
def test_values_fast_path_equals_pydicom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, implicit: bool, charset: bytes | None
) -> None:
    for value in VALUES:
        path = dataset_file(tmp_path, [value], charset=charset, implicit=implicit)
        fast, general = both_ways(path, monkeypatch)
        assert fast == general, value


def test_names_in_a_japanese_first_encoding_keep_pydicom_s_warning(tmp_path: Path) -> None:
    """pydicom re-encodes each name it reads; its JIS X 0208 encoder (ISO 2022 IR 87 as
    the first character set) refuses plain ASCII with a warning, which the fast path
    dropped until names in such encodings were left to pydicom."""
    path = dataset_file(tmp_path, [(0x00100010, "PN", b"Doe^John")], charset=b"ISO 2022 IR 87")
    parsed = parse_instance(path)
    assert parsed.metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert any("Failed to encode" in warning for warning in parsed.warnings)


def test_random_values_fast_path_equals_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random short values of every VR the fast path reads, in several character sets and
    both VR encodings: the JSON and the warnings equal pydicom's (a fixed seed)."""
    rng = random.Random(11)
    alphabet = b"aZ09 .\\=^-\x00\t\r\n\x1b\xe9+"
    charsets = [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "ISO_IR 13", "GB18030"]
    charsets += [["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 149"], "ISO_IR 166"]
    for _ in range(1500):
        vr = rng.choice(list(RANDOM_TAGS))
        value = bytes(rng.choice(alphabet) for _ in range(rng.choice([1, 2, 5, 16, 17, 65])))
        charset = rng.choice(charsets)
        implicit = rng.random() < 0.5
        fast = encoded(vr, value, charset, implicit)
        with monkeypatch.context() as patch:
            patch.setattr(json_module, "_fast_path", lambda _raw, _text: None)
            general = encoded(vr, value, charset, implicit)
        assert fast == general, (vr, value, charset, implicit)


RANDOM_TAGS = {
    "AS": 0x00101010, "CS": 0x00080060, "DA": 0x00080020, "DT": 0x0008002A, "LO": 0x00081030,
    "LT": 0x00204000, "PN": 0x00100010, "SH": 0x00080050, "ST": 0x00080081, "TM": 0x00080030,
    "UC": 0x00080119, "UI": 0x00081150, "UT": 0x00400441,
}  # fmt: skip


def encoded(vr: str, value: bytes, charset: str | list[str] | None, implicit: bool) -> Any:
    """One element's JSON, encoded as parse_instance does, and the warnings it gave."""
    tag = BaseTag(RANDOM_TAGS[vr])
    raw = dataelem.RawDataElement(
        tag, None if implicit else vr, len(value), value, 0, implicit, True
    )
    ds = Dataset({tag: raw})
    ds.set_original_encoding(implicit, True, convert_encodings(charset) if charset else "iso8859")
    notes: list[str] = []
    with collect_warnings(notes):
        try:
            return orjson.dumps(encode_dataset(ds, warn=notes.append)), notes
        except Exception as exc:  # compared, not hidden
            return repr(exc), notes


def test_unknown_character_set_takes_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = dataset_file(tmp_path, [(0x00081030, "LO", b"text")], charset=b"ISO_IR 999")
    fast, general = both_ways(path, monkeypatch)
    assert fast == general
    assert any("ISO_IR 999" in warning for warning in fast[1])


def test_expected_json_of_fast_values(tmp_path: Path) -> None:
    """The values themselves, so that the two paths cannot agree on a wrong answer."""
    path = dataset_file(
        tmp_path,
        [
            (0x00080008, "CS", b"ORIGINAL\\\\AXIAL"),
            (0x00080020, "DA", b"20240101"),
            (0x00080050, "SH", b"\\"),
            (0x00081030, "LO", b"Study \\ description"),
            (0x00081150, "UI", b"1.2.3\0"),
            (0x00100010, "PN", b"Doe^John=Ideo\\=Phon=x"),
            (0x00100020, "LO", b"  "),
            (0x00204000, "LT", b"a \\ b  "),
        ],
    )
    metadata = parse_instance(path).metadata
    assert metadata["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert metadata["00080020"] == {"vr": "DA", "Value": ["20240101"]}
    assert metadata["00080050"] == {"vr": "SH", "Value": [None, None]}
    assert metadata["00081030"] == {"vr": "LO", "Value": ["Study", " description"]}
    assert metadata["00081150"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert metadata["00100010"] == {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Doe^John", "Ideographic": "Ideo"},
            {"Ideographic": "Phon", "Phonetic": "x"},
        ],
    }
    assert metadata["00100020"] == {"vr": "LO"}
    assert metadata["00204000"] == {"vr": "LT", "Value": ["a \\ b"]}


def counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every element pydicom decodes from now on (by tag)."""
    decoded: list[int] = []
    original: Callable[..., Any] = dataelem.convert_raw_data_element

    def counted(raw: dataelem.RawDataElement, **kwargs: Any) -> dataelem.DataElement:
        decoded.append(int(raw.tag))
        return original(raw, **kwargs)

    for module in ("pydicom.dataelem", "pydicom.dataset", "app.dicom.json", "app.dicom.reader"):
        monkeypatch.setattr(f"{module}.convert_raw_data_element", counted)
    return decoded


def test_plain_ct_is_parsed_without_pydicom_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typical image header (UIDs, codes, dates, names, numbers, ASCII text) costs no
    decoding by pydicom but its character set's: decoding was most of ingest's parse time
    (some 25-40 us an element)."""
    path = dataset_file(
        tmp_path,
        [
            (0x00080008, "CS", b"ORIGINAL\\PRIMARY\\AXIAL"),
            (0x00080020, "DA", b"20240101"),
            (0x00080030, "TM", b"120000"),
            (0x00080050, "SH", b"ACC123"),
            (0x00080060, "CS", b"CT"),
            (0x00081030, "LO", b"CT HEAD"),
            (0x00100010, "PN", b"Doe^John"),
            (0x00100020, "LO", b"PID-1"),
            (0x00180050, "DS", b"1.25"),
            (0x00200013, "IS", b"7"),
            (0x00280002, "US", struct.pack("<H", 1)),
            (0x00280004, "CS", b"MONOCHROME2"),
            (0x00280010, "US", struct.pack("<H", 2)),
            (0x00280011, "US", struct.pack("<H", 2)),
            (0x00280100, "US", struct.pack("<H", 16)),
            (0x7FE00010, "OW", b"\1\0" * 4),
        ],
        charset=b"ISO_IR 100",
    )
    decoded = counting_decodes(monkeypatch)
    parsed = parse_instance(path)
    assert parsed.frames and parsed.warnings == ()
    assert parsed.metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert decoded == [0x00080005]  # the character set, which the reader must know
