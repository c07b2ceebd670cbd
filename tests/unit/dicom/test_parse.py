from __future__ import annotations

import base64
import glob
import math
import os
import struct
import threading
import tracemalloc
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import data_store
import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from app.dicom import parse as parse_module
from app.dicom.instance import BULK_BASE, ParsedInstance
from app.dicom.parse import DicomParseError, UnsupportedTransferSyntax, parse_instance

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
INSTANCE = "1.2.826.0.1.3680043.8.498.1.1.1"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def image(
    *,
    rows: int = 4,
    columns: int = 4,
    frames: int | None = None,
    bits: int = 8,
    samples: int = 1,
    photometric: str = "MONOCHROME2",
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = INSTANCE
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Doe^John"
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    frame_bits = rows * columns * samples * bits * (frames or 1)
    if photometric == "YBR_FULL_422":
        frame_bits = frame_bits // 3 * 2
    size = (frame_bits + 7) // 8
    ds.add_new(0x7FE00010, "OW" if bits > 8 else "OB", bytes(i % 251 for i in range(size)))
    return ds


def write(tmp_path: Path, ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> Path:
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # about the invalid values some tests write
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SecondaryCaptureImageStorage)
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", INSTANCE)
        meta.TransferSyntaxUID = syntax
        ds.file_meta = meta
        ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated(frames: list[bytes], fragments: int = 1, table: bool = True) -> Dataset:
    ds = image(rows=8, columns=8, frames=len(frames))
    ds.PixelData = encapsulate(frames, fragments_per_frame=fragments, has_bot=table)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def jpeg(index: int, size: int = 40) -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes([index]) * size + b"\xff\xd9"


def frame_bytes(path: Path, parsed: ParsedInstance) -> list[bytes]:
    data = path.read_bytes()
    return [b"".join(data[o : o + n] for o, n in frame) for frame in parsed.frames]


def bulk_bytes(path: Path, parsed: ParsedInstance, key: str) -> bytes:
    rng = parsed.bulk[key]
    return path.read_bytes()[rng.offset : rng.offset + rng.length]


# -- what is rejected and why ------------------------------------------------------------


def without(*keywords: str) -> Dataset:
    ds = image()
    for keyword in keywords:
        delattr(ds, keyword)
    return ds


def with_value(keyword: str, value: str) -> Dataset:
    ds = image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid value
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("ds", "message"),
    [
        (without("StudyInstanceUID"), "missing StudyInstanceUID"),
        (without("SeriesInstanceUID"), "missing SeriesInstanceUID"),
        (without("SOPInstanceUID"), "missing SOPInstanceUID"),
        (with_value("StudyInstanceUID", "1.2.x"), "invalid StudyInstanceUID '1.2.x'"),
        (with_value("SeriesInstanceUID", "1.02"), "invalid SeriesInstanceUID '1.02'"),
        (with_value("SOPClassUID", "abc"), "invalid SOPClassUID 'abc'"),
    ],
)
def test_identity_errors(tmp_path: Path, ds: Dataset, message: str) -> None:
    path = write(tmp_path, ds)
    with pytest.raises(DicomParseError) as error:
        parse_instance(path)
    assert str(error.value) == message


def test_sop_class_falls_back_to_media_storage(tmp_path: Path) -> None:
    ds = without("SOPClassUID")
    path = write(tmp_path, ds)  # meta still names the SC class
    parsed = parse_instance(path)
    assert parsed.sop_class_uid == SecondaryCaptureImageStorage
    assert "missing SOPClassUID: MediaStorageSOPClassUID used" in parsed.warnings


def test_sop_instance_differing_from_media_storage_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, image())
    other = INSTANCE[:-1] + "2"
    # pydicom's writer copies SOPInstanceUID into the meta: patch the first (meta) copy.
    path.write_bytes(path.read_bytes().replace(INSTANCE.encode(), other.encode(), 1))
    parsed = parse_instance(path)
    assert parsed.sop_instance_uid == INSTANCE
    assert parsed.warnings == (
        f"SOPInstanceUID {INSTANCE} differs from MediaStorageSOPInstanceUID {other}",
    )


def part10(meta: bytes, dataset: bytes = b"") -> bytes:
    return bytes(128) + b"DICM" + meta + dataset


def explicit(tag: int, vr: str, value: bytes) -> bytes:
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in ("OB", "OW", "SQ", "UN", "UT", "OV"):
        return head + struct.pack("<HL", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a DICOM Part 10 file: no 'DICM' prefix"),
        (b"hello", "not a DICOM Part 10 file: no 'DICM' prefix"),
        (bytes(128) + b"DICX" + bytes(40), "not a DICOM Part 10 file: no 'DICM' prefix"),
        (
            part10(b"", explicit(0x00100010, "PN", b"Doe")),
            "not a DICOM Part 10 file: no file meta information",
        ),
        (
            part10(explicit(0x00020002, "UI", SecondaryCaptureImageStorage.encode())),
            "missing TransferSyntaxUID in the file meta information",
        ),
        (
            part10(explicit(0x00020010, "UI", b"1.2.x\x00")),
            "invalid TransferSyntaxUID '1.2.x'",
        ),
        (
            part10(explicit(0x00020010, "UI", b"1.2.840.10008.1.2.1\x00")[:-4]),
            "truncated: file ends inside element (0002,0010)",
        ),
        (
            part10(explicit(0x00020010, "UI", b"1.2.840.10008.1.2.1\x00")),
            "missing StudyInstanceUID",
        ),
    ],
)
def test_file_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomParseError) as error:
        parse_instance(path)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.3.4.5",  # made up (the example)
        "1.2.840.10008.1.2.4.52",  # retired JPEG Extended (Process 3 & 5)
        "1.2.840.10008.1.2.7.1",  # SMPTE ST 2110-20 live video, not a stored object
    ],
)
def test_unknown_transfer_syntax_is_refused_before_the_dataset_is_read(
    tmp_path: Path, syntax: str
) -> None:
    # Stored with such a syntax, an object was found by QIDO but its thumbnail was 501 and
    # C-GET could not send it: nothing downstream reads an encoding it does not know.
    ds = image()
    del ds.PixelData  # a compressed syntax would need it encapsulated
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "x.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntax) as error:
        parse_instance(path)
    assert str(error.value) == (
        f"TransferSyntaxUID {syntax} is not a standard transfer syntax this archive stores"
    )
    # Named from the file meta, for the STOW response's Failed SOP Sequence.
    assert error.value.sop_instance_uid == INSTANCE
    assert error.value.sop_class_uid == SecondaryCaptureImageStorage


def test_deflated_truncated(tmp_path: Path) -> None:
    source = Path(pydicom.data.get_testdata_file("image_dfl.dcm"))  # type: ignore[arg-type]
    path = tmp_path / "x.dcm"
    path.write_bytes(source.read_bytes()[:-100])
    with pytest.raises(DicomParseError, match=r"^truncated: deflated dataset ends early$"):
        parse_instance(path)


def test_deflated_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_module, "MAX_INFLATED_SIZE", 1000)
    path = Path(pydicom.data.get_testdata_file("image_dfl.dcm"))  # type: ignore[arg-type]
    with pytest.raises(DicomParseError, match=r"^deflated dataset larger than 1000 bytes$"):
        parse_instance(path)


def test_empty_pixel_data(tmp_path: Path) -> None:
    ds = image()
    ds.PixelData = b""
    parsed = parse_instance(write(tmp_path, ds))
    assert parsed.frames == ()
    assert parsed.bulk == {}
    assert parsed.metadata["7FE00010"] == {"vr": "OB"}
    assert parsed.warnings == ("frames not indexed: empty pixel data",)


def test_native_pixel_data_shorter_than_its_frames(tmp_path: Path) -> None:
    ds = image(rows=4, columns=4, frames=2)
    ds.PixelData = bytes(20)
    with pytest.raises(DicomParseError) as error:
        parse_instance(write(tmp_path, ds))
    assert str(error.value) == (
        "truncated: pixel data has 20 bytes, 2 frame(s) of 16 bytes need 32"
    )


def nested_file(tmp_path: Path) -> Path:
    ds = image(rows=16, columns=16, bits=16)
    icon = Dataset()
    icon.Rows = 64
    icon.add_new(0x7FE00010, "OB", bytes(range(256)) * 8)  # 2048 bytes: bulk
    icon.add_new(0x00091010, "LO", "small private")
    ds.IconImageSequence = Sequence([icon, Dataset()])
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence = Sequence([item])
    ds.add_new(0xFFFCFFFC, "OB", bytes(2000))  # trailing padding after the pixel data
    return write(tmp_path, ds)


def test_every_cut_of_a_file_is_rejected_or_complete(tmp_path: Path) -> None:
    """Cut a file at every length: a cut inside any element must be rejected (pydicom
    silently keeps what it could read). A cut between two top-level elements leaves a
    shorter valid file, whose metadata must then be the first elements of the whole one."""
    whole_path = nested_file(tmp_path)
    whole = whole_path.read_bytes()
    full = list(parse_instance(whole_path).metadata.items())
    cut = tmp_path / "cut.dcm"
    accepted = 0
    for length in range(len(whole)):
        cut.write_bytes(whole[:length])
        try:
            parsed = parse_instance(cut)
        except DicomParseError as error:
            assert str(error)
            continue
        accepted += 1
        assert list(parsed.metadata.items()) == full[: len(parsed.metadata)], length
    assert 0 < accepted < 20


# -- pixel data and frames ----------------------------------------------------------------


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize(("bits", "frames"), [(8, None), (16, 3), (32, 2)])
def test_native_frames(tmp_path: Path, syntax: str, bits: int, frames: int | None) -> None:
    path = write(tmp_path, image(rows=3, columns=5, frames=frames, bits=bits), syntax)
    parsed = parse_instance(path)
    size = 3 * 5 * bits // 8
    offset = parsed.bulk["7FE00010"].offset
    assert parsed.frames == tuple(((offset + i * size, size),) for i in range(frames or 1))
    assert not parsed.encapsulated
    assert parsed.transfer_syntax_uid == syntax
    pixel_vr = "OB" if bits == 8 and syntax != ImplicitVRLittleEndian else "OW"
    assert parsed.metadata["7FE00010"] == {
        "vr": pixel_vr,
        "BulkDataURI": f"{BULK_BASE}/bulkdata/7FE00010",
    }
    assert bulk_bytes(path, parsed, "7FE00010") == pydicom.dcmread(path).PixelData


@pytest.mark.parametrize(
    ("rows", "columns", "samples", "frames", "photometric", "frame_size"),
    [
        (8, 8, 1, 3, "MONOCHROME2", 8),  # BitsAllocated 1: 64 bits = 8 bytes a frame
        (4, 6, 1, 2, "MONOCHROME2", 3),
        (4, 4, 3, 2, "YBR_FULL_422", 32),  # 16 pixels x 2 samples
        (3, 3, 1, 1, "MONOCHROME2", 2),  # single frame: whole bytes, rounded up
    ],
)
def test_frame_sizes(
    tmp_path: Path,
    *,
    rows: int,
    columns: int,
    samples: int,
    frames: int,
    photometric: str,
    frame_size: int,
) -> None:
    bits = 8 if photometric == "YBR_FULL_422" else 1
    ds = image(
        rows=rows,
        columns=columns,
        frames=frames,
        bits=bits,
        samples=samples,
        photometric=photometric,
    )
    parsed = parse_instance(write(tmp_path, ds))
    assert [frame[0][1] for frame in parsed.frames] == [frame_size] * frames
    assert parsed.warnings == ()


def test_bit_packed_frames_that_are_not_whole_bytes(tmp_path: Path) -> None:
    parsed = parse_instance(write(tmp_path, image(rows=3, columns=3, frames=4, bits=1)))
    assert parsed.frames == ()
    assert parsed.warnings == ("frames not indexed: a frame of 9 bits is not whole bytes",)


def test_float_pixel_data(tmp_path: Path) -> None:
    ds = image(rows=2, columns=3, bits=32, frames=2)
    del ds.PixelData
    ds.add_new(0x7FE00008, "OF", bytes(48))
    parsed = parse_instance(write(tmp_path, ds))
    offset = parsed.bulk["7FE00008"].offset
    assert parsed.frames == (((offset, 24),), ((offset + 24, 24),))
    assert parsed.metadata["7FE00008"]["vr"] == "OF"


FRAMES = [jpeg(1), jpeg(2, 50), jpeg(3, 6)]  # even lengths: fragments are padded


@pytest.mark.parametrize(
    ("name", "fragments", "table", "frames"),
    [
        ("basic offset table, 1 fragment a frame", 1, True, FRAMES),
        ("basic offset table, 3 fragments a frame", 3, True, FRAMES),
        ("no table, 1 fragment a frame", 1, False, FRAMES),
        ("no table, single frame in 3 fragments", 3, False, FRAMES[:1]),
        ("no table, frames found by their SOI marker", 2, False, FRAMES),
    ],
)
def test_encapsulated_frames(
    tmp_path: Path, name: str, fragments: int, table: bool, frames: list[bytes]
) -> None:
    ds = encapsulated(frames, fragments, table)
    path = write(tmp_path, ds, JPEGBaseline8Bit)
    parsed = parse_instance(path)
    assert parsed.encapsulated
    assert frame_bytes(path, parsed) == frames
    assert all(len(frame) == fragments for frame in parsed.frames)
    # The bulk range runs from the first item to the end of the sequence delimiter.
    value = bulk_bytes(path, parsed, "7FE00010")
    assert value[:-8] == ds.PixelData
    assert value[-8:] == SEQUENCE_DELIMITER
    assert parsed.bulk["7FE00010"].vr == "OB"


def test_extended_offset_table(tmp_path: Path) -> None:
    ds = image(rows=8, columns=8, frames=3)
    data, offsets, lengths = encapsulate_extended(FRAMES)
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.ExtendedOffsetTable = offsets
    ds.ExtendedOffsetTableLengths = lengths
    path = write(tmp_path, ds, JPEGBaseline8Bit)
    parsed = parse_instance(path)
    assert frame_bytes(path, parsed) == FRAMES
    assert parsed.warnings == ()


def test_encapsulated_frames_that_cannot_be_found(tmp_path: Path) -> None:
    # Two fragments a frame, no offset table, and fragments that are no JPEG codestream.
    frames = [bytes([i]) * 20 for i in range(3)]
    path = write(tmp_path, encapsulated(frames, 2, table=False), JPEGBaseline8Bit)
    parsed = parse_instance(path)
    assert parsed.frames == ()
    assert parsed.warnings == ("frames not indexed: 6 fragments for 3 frames and no offset table",)


def test_basic_offset_table_that_does_not_match_is_ignored(tmp_path: Path) -> None:
    ds = encapsulated(FRAMES, 1, table=True)
    data = bytearray(ds.PixelData)
    data[12:16] = struct.pack("<L", 5)  # second offset points inside a fragment
    ds.PixelData = bytes(data)
    path = write(tmp_path, ds, JPEGBaseline8Bit)
    parsed = parse_instance(path)
    assert frame_bytes(path, parsed) == FRAMES  # one fragment a frame
    assert parsed.warnings == ("Basic Offset Table does not match the fragments; ignored",)


# -- metadata and bulk data ---------------------------------------------------------------


def test_metadata_and_bulk_data(tmp_path: Path) -> None:
    path = nested_file(tmp_path)
    parsed = parse_instance(path)
    assert (parsed.study_instance_uid, parsed.series_instance_uid) == (STUDY, SERIES)
    assert (parsed.sop_instance_uid, parsed.sop_class_uid) == (
        INSTANCE,
        SecondaryCaptureImageStorage,
    )
    assert not [key for key in parsed.metadata if key.startswith("0002")]
    icon = parsed.metadata["00880200"]["Value"]
    assert icon[0]["7FE00010"] == {
        "vr": "OB",
        "BulkDataURI": f"{BULK_BASE}/bulkdata/00880200/0/7FE00010",
    }
    assert icon[0]["00091010"] == {"vr": "LO", "Value": ["small private"]}
    assert icon[1] == {}
    assert parsed.metadata["00081140"]["Value"] == [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]
    assert parsed.metadata["FFFCFFFC"] == {
        "vr": "OB",
        "BulkDataURI": f"{BULK_BASE}/bulkdata/FFFCFFFC",
    }
    assert set(parsed.bulk) == {"00880200/0/7FE00010", "7FE00010", "FFFCFFFC"}
    assert bulk_bytes(path, parsed, "00880200/0/7FE00010") == bytes(range(256)) * 8
    assert bulk_bytes(path, parsed, "FFFCFFFC") == bytes(2000)


def test_small_binary_values_are_inline(tmp_path: Path) -> None:
    ds = image()
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03\x04")
    parsed = parse_instance(write(tmp_path, ds), bulk_threshold=1024)
    assert parsed.metadata["00091010"] == {"vr": "OB", "InlineBinary": "AQIDBA=="}


def test_bulk_threshold(tmp_path: Path) -> None:
    ds = image()
    ds.add_new(0x00091010, "OB", bytes(100))
    ds.add_new(0x00204000, "LT", "x" * 100)
    ds.add_new(0x00080008, "CS", ["ABCDEFGH"] * 20)  # CS may not be bulk data: inline
    path = write(tmp_path, ds)
    parsed = parse_instance(path, bulk_threshold=64)
    assert set(parsed.bulk) == {"00091010", "00204000", "7FE00010"}
    assert parsed.metadata["00204000"] == {
        "vr": "LT",
        "BulkDataURI": f"{BULK_BASE}/bulkdata/00204000",
    }
    assert parsed.metadata["00080008"] == {"vr": "CS", "Value": ["ABCDEFGH"] * 20}


def test_long_sequence_is_metadata_not_bulk(tmp_path: Path) -> None:
    ds = image()
    items = []
    for index in range(200):
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.3.{index}"
        items.append(item)
    ds.ReferencedImageSequence = Sequence(items)
    ds["ReferencedImageSequence"].is_undefined_length = False
    for item in items:
        item.is_undefined_length_sequence_item = False
    path = write(tmp_path, ds, ImplicitVRLittleEndian)
    parsed = parse_instance(path, bulk_threshold=64)
    values = parsed.metadata["00081140"]["Value"]
    assert [v["00081155"]["Value"][0] for v in values] == [f"1.2.3.{i}" for i in range(200)]
    assert set(parsed.bulk) == {"7FE00010"}


def test_invalid_values_are_warnings(tmp_path: Path) -> None:
    ds = image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientID = "x" * 70
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.x"
        ds.ReferencedImageSequence = Sequence([item])
    parsed = parse_instance(write(tmp_path, ds))
    assert parsed.warnings == (
        "(0008,1140)[0](0008,1155) invalid UI value '1.2.x'",
        "(0010,0020) LO value of 70 characters exceeds the maximum of 64",
    )


def test_deflated(tmp_path: Path) -> None:
    path = Path(pydicom.data.get_testdata_file("image_dfl.dcm"))  # type: ignore[arg-type]
    parsed = parse_instance(path)
    assert parsed.frames == ()
    assert parsed.bulk == {}
    assert "7FE00010" not in parsed.metadata
    assert parsed.warnings == ("deflated transfer syntax: frames not indexed",)
    assert parsed.metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "^^^^"}]}


def test_bulk_values_are_never_loaded(tmp_path: Path) -> None:
    ds = image(rows=1024, columns=1024, frames=16)  # 16 MiB of pixel data
    path = write(tmp_path, ds)
    del ds
    tracemalloc.start()
    try:
        parsed = parse_instance(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed.frames) == 16
    assert peak < 1 << 20


def test_concurrent_parses_agree(tmp_path: Path) -> None:
    ds = image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientID = "x" * 70
    path = write(tmp_path, ds)
    expected = parse_instance(path)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: parse_instance(path), range(40)))
    assert all(result == expected for result in results)
    assert expected.warnings == ("(0010,0020) LO value of 70 characters exceeds the maximum of 64",)


def test_warnings_of_other_threads_are_not_taken(tmp_path: Path) -> None:
    path = write(tmp_path, image())
    stop = threading.Event()

    def warn_elsewhere() -> None:
        while not stop.is_set():
            warnings.warn("elsewhere", UserWarning, stacklevel=1)

    thread = threading.Thread(target=warn_elsewhere)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        thread.start()
        try:
            parsed = [parse_instance(path) for _ in range(50)]
        finally:
            stop.set()
            thread.join()
    assert all(result.warnings == () for result in parsed)
    assert shown
    assert {str(warning.message) for warning in shown} == {"elsewhere"}


# -- the whole pydicom test corpus ---------------------------------------------------------


def corpus() -> list[Path]:
    files = set(pydicom.data.get_testdata_files())
    files |= set(glob.glob(os.path.join(os.path.dirname(data_store.__file__), "data", "*")))
    return sorted(Path(name) for name in files if os.path.isfile(name))


CORPUS = corpus()

# Elements whose value pydicom's to_json_dict cannot encode (it raises); ours keeps the text.
PYDICOM_JSON_FAILS = {("badVR.dcm", "00280008")}  # IS '1A'

# Files whose frames are not indexed, with the reason given as a warning.
UNINDEXED: dict[str, str] = {
    "image_dfl.dcm": "deflated transfer syntax: frames not indexed",
    "nested_priv_SQ.dcm": "frames not indexed: no Rows, Columns or BitsAllocated",
}


def reference(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=False)


def corpus_id(path: Path) -> str:
    return str(path.relative_to(path.parents[1]))


# Every corpus file parse_instance rejects, and why. Files rejected for their identity only
# are also checked as if their UIDs were present (test_corpus_content).
REJECTED = {
    "data/OT-PAL-8-face.dcm": "not a DICOM Part 10 file: no 'DICM' prefix",
    "data/bad_sequence.dcm": "invalid StudyInstanceUID '05fa52f0e599f17b8186ff18fcdf2b5570a5"
    "2206a75c4d03afebf5c475dc8758'",
    "data/emri_small_jpeg_2k_lossless_too_short.dcm": "truncated: file ends inside element "
    "(7FE0,0010)",
    "test_files/ExplVR_BigEndNoMeta.dcm": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/ExplVR_LitEndNoMeta.dcm": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/JPEGLSNearLossless_08.dcm": "missing StudyInstanceUID",
    "test_files/JPEGLSNearLossless_16.dcm": "missing StudyInstanceUID",
    "test_files/MR_truncated.dcm": "truncated: file ends inside element (7FE0,0010)",
    "test_files/README.txt": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/SC_rgb_jls_lossy_line.dcm": "missing StudyInstanceUID",
    "test_files/SC_rgb_jls_lossy_sample.dcm": "missing StudyInstanceUID",
    "test_files/UN_sequence.dcm": "missing StudyInstanceUID",
    "test_files/crayons.icc": "not a DICOM Part 10 file: no 'DICM' prefix",
    "dicomdirtests/DICOMDIR": "missing StudyInstanceUID",
    "dicomdirtests/DICOMDIR-bigEnd": "missing StudyInstanceUID",
    "dicomdirtests/DICOMDIR-empty.dcm": "missing StudyInstanceUID",
    "dicomdirtests/DICOMDIR-implicit": "missing StudyInstanceUID",
    # The last directory record's item is 24 bytes longer than the file.
    "dicomdirtests/DICOMDIR-nooffset": "truncated: file ends inside element (0004,1220)",
    "dicomdirtests/DICOMDIR-nopatient": "missing StudyInstanceUID",
    "dicomdirtests/DICOMDIR-reordered": "missing StudyInstanceUID",
    "dicomdirtests/README.txt": "not a DICOM Part 10 file: no 'DICM' prefix",
    "TINY_ALPHA/DICOMDIR": "missing StudyInstanceUID",
    "TINY_ALPHA/README": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/empty_charset_LEI.dcm": "missing StudyInstanceUID",
    "test_files/meta_missing_tsyntax.dcm": "missing TransferSyntaxUID in the file meta information",
    "test_files/nested_priv_SQ.dcm": "missing StudyInstanceUID",
    "test_files/no_meta.dcm": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/no_meta_group_length.dcm": "missing StudyInstanceUID",
    "test_files/priv_SQ.dcm": "missing StudyInstanceUID",
    "test_files/rtplan.dump": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/rtplan_truncated.dcm": "truncated: file ends inside element (300A,00B0)",
    "test_files/rtstruct.dcm": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/rtstruct.dump": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/test1.json": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/test_PN.json": "not a DICOM Part 10 file: no 'DICM' prefix",
    "test_files/zipMR.gz": "not a DICOM Part 10 file: no 'DICM' prefix",
}
IDENTITY_ONLY = [
    path
    for path in CORPUS
    if REJECTED.get(corpus_id(path), "").startswith(("missing Study", "invalid Study"))
]


@pytest.fixture
def deferred_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Records any attempt by pydicom to load a deferred (bulk) value."""
    reads: list[object] = []

    def record(*args: object) -> None:
        reads.append(args)
        raise OSError("deferred read")

    monkeypatch.setattr(pydicom.filereader, "read_deferred_data_element", record)
    yield reads
    assert reads == []


@pytest.mark.parametrize("path", CORPUS, ids=[corpus_id(p) for p in CORPUS])
@pytest.mark.usefixtures("deferred_reads")
def test_corpus(path: Path) -> None:
    if corpus_id(path) in REJECTED:
        with pytest.raises(DicomParseError) as error:
            parse_instance(path)
        assert str(error.value) == REJECTED[corpus_id(path)]
        return
    parsed = parse_instance(path)
    ref = reference(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_identity(parsed, ref)
        check_content(parsed, ref, path)


@pytest.mark.parametrize("path", IDENTITY_ONLY, ids=[corpus_id(p) for p in IDENTITY_ONLY])
@pytest.mark.usefixtures("deferred_reads")
def test_corpus_content(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files rejected only for their UIDs, read as if they had them: these are the files
    with UN and private sequences, empty character sets and the like."""
    monkeypatch.setattr(parse_module, "_uids", lambda *_: ("1", "2", "3", "4"))
    parsed = parse_instance(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_content(parsed, reference(path), path)


def check_content(parsed: ParsedInstance, ref: pydicom.FileDataset, path: Path) -> None:
    check_metadata(parsed.metadata, ref, parsed, path.name, prefix="")
    check_bulk(parsed, path)
    check_frames(parsed, ref, path)


def check_identity(parsed: ParsedInstance, ref: pydicom.FileDataset) -> None:
    assert parsed.study_instance_uid == ref.StudyInstanceUID
    assert parsed.series_instance_uid == ref.SeriesInstanceUID
    assert parsed.sop_instance_uid == ref.SOPInstanceUID
    assert parsed.sop_class_uid == ref.get("SOPClassUID", ref.file_meta.MediaStorageSOPClassUID)
    assert parsed.transfer_syntax_uid == ref.file_meta.TransferSyntaxUID


def check_metadata(
    metadata: dict[str, Any], ref: Dataset, parsed: ParsedInstance, name: str, prefix: str
) -> None:
    """Every element pydicom reads is in the metadata as pydicom would encode it, but for
    the documented differences (see `expected_json`)."""
    deflated = UID(parsed.transfer_syntax_uid).is_deflated
    for tag in sorted(ref.keys()):  # the tags: iterating a Dataset decodes its elements
        key = f"{tag:08X}"
        if not tag & 0xFFFF or (deflated and not prefix and tag == 0x7FE00010):
            continue
        got = metadata[key]
        if "BulkDataURI" in got:
            assert got["BulkDataURI"] == f"{BULK_BASE}/bulkdata/{prefix}{key}"
            assert f"{prefix}{key}" in parsed.bulk
            continue
        elem = ref[tag]
        if elem.VR == "SQ":
            items = got.get("Value", [])
            assert got["vr"] == "SQ"
            assert len(items) == len(elem.value)
            for index, (item_json, item) in enumerate(zip(items, elem.value, strict=True)):
                check_metadata(item_json, item, parsed, name, f"{prefix}{key}/{index}/")
            continue
        try:
            expected = expected_json(elem, ref)
        except ValueError:
            assert (name, key) in PYDICOM_JSON_FAILS
            assert all(isinstance(v, str | int | float) for v in got["Value"])
            continue
        assert got == expected, f"{prefix}{key}"


def expected_json(elem: DataElement, ds: Dataset) -> dict[str, Any]:
    """pydicom's to_json_dict with the points where PS3.18 Annex F says otherwise:
    empty values in a list are null and PN groups only present when non-empty (F.2.5,
    F.2.2), FL/FD NaN is null, InlineBinary is little endian."""
    expected: dict[str, Any] = elem.to_json_dict(None, 1 << 62)
    if "Value" in expected:
        expected["Value"] = [_expected_value(v, elem.VR) for v in expected["Value"]]
    if "InlineBinary" in expected and ds.original_encoding[1] is False:
        width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(elem.VR)
        if width:
            data = base64.b64decode(expected["InlineBinary"])
            swapped = b"".join(data[i : i + width][::-1] for i in range(0, len(data), width))
            expected["InlineBinary"] = base64.b64encode(swapped).decode()
    return expected


def _expected_value(value: Any, vr: str) -> Any:
    if value == "":
        return None
    if isinstance(value, dict):
        name = {k: v for k, v in value.items() if v}
        return name or None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def check_bulk(parsed: ParsedInstance, path: Path) -> None:
    """Each range holds the bytes pydicom reads for that element (plus the sequence
    delimiter for an encapsulated value)."""
    data = path.read_bytes()
    ref = reference(path)  # fresh: elements not decoded yet
    for key, rng in parsed.bulk.items():
        parts = key.split("/")
        ds: Dataset = ref
        for sequence, index in zip(parts[0:-1:2], parts[1:-1:2], strict=True):
            ds = ds[int(sequence, 16)].value[int(index)]
        elem = ds.get_item(int(parts[-1], 16))
        value = elem.value if isinstance(elem, RawDataElement) else ds[int(parts[-1], 16)].value
        stored = data[rng.offset : rng.offset + rng.length]
        if elem.length == 0xFFFFFFFF:
            assert stored[-8:] == SEQUENCE_DELIMITER
            stored = stored[:-8]
        assert stored == value, key


def check_frames(parsed: ParsedInstance, ref: pydicom.FileDataset, path: Path) -> None:
    pixel_tags = [tag for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010) if tag in ref]
    if not pixel_tags:
        assert parsed.frames == ()
        return
    if path.name in UNINDEXED:
        assert parsed.frames == ()
        assert UNINDEXED[path.name] in parsed.warnings
        return
    try:
        count = int(ref.get("NumberOfFrames") or 1)
    except ValueError:  # badVR.dcm: '1A'
        count = 1
    assert len(parsed.frames) == count
    key = f"{pixel_tags[0]:08X}"
    if not parsed.encapsulated:
        ref.NumberOfFrames = count
        size = get_expected_length(ref, "bytes") // count
        start = parsed.bulk[key].offset
        assert parsed.frames == tuple(((start + i * size, size),) for i in range(count))
        return
    extended = None
    if "ExtendedOffsetTable" in ref:
        extended = (ref.ExtendedOffsetTable, ref.ExtendedOffsetTableLengths)
    value = ref[pixel_tags[0]].value
    expected = list(generate_frames(value, number_of_frames=count, extended_offsets=extended))
    assert frame_bytes(path, parsed) == expected


# -- headers that parse only in part (issue 10: stored with 200, unreadable afterwards) ---


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path


def test_an_unknown_vr_in_the_dataset_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, image())
    _patched(path, b"\x10\x00\x10\x00PN", b"\x10\x00\x10\x00HZ")  # PatientName's VR
    with pytest.raises(DicomParseError, match=r"\(0010,0010\) has an unknown value repr"):
        parse_instance(path)


def test_an_unknown_vr_in_the_file_meta_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, image())
    _patched(path, b"\x02\x00\x10\x00UI", b"\x02\x00\x10\x00GG")  # TransferSyntaxUID's VR
    with pytest.raises(DicomParseError, match=r"\(0002,0010\) has an unknown value repr"):
        parse_instance(path)


def test_a_binary_value_of_a_partial_length_is_refused(tmp_path: Path) -> None:
    ds = image()
    ds.SmallestImagePixelValue = 7  # (0028,0106) US
    path = write(tmp_path, ds)
    _patched(path, b"\x28\x00\x06\x01US\x02\x00\x07\x00", b"\x28\x00\x06\x01US\x03\x00\x07\x00\x00")
    with pytest.raises(DicomParseError, match=r"\(0028,0106\) has 3 bytes, not a whole number"):
        parse_instance(path)


def test_an_implicit_group_length_of_a_partial_length_is_refused(tmp_path: Path) -> None:
    # pydicom decodes (gggg,0000) as UL though its dictionary has no entry for the group.
    path = write(tmp_path, image(), ImplicitVRLittleEndian)
    pixel_tag = b"\xe0\x7f\x10\x00"
    group_length = b"\x42\x4f\x00\x00\x06\x00\x00\x00" + bytes(6)  # (4F42,0000)
    _patched(path, pixel_tag, group_length + pixel_tag)
    with pytest.raises(DicomParseError, match=r"\(4F42,0000\) has 6 bytes"):
        parse_instance(path)
