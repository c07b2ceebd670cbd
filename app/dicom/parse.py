"""Parse a stored DICOM Part 10 file into what ingest records (`ParsedInstance`).

Bulk values are never read: a file may be gigabytes of pixel data. `reader.py` walks the
dataset, locating bulk values rather than reading them, and `frames.py` locates the frames of
the top-level pixel data; this module reads the file meta information, chooses the encoding
from the transfer syntax and checks the UIDs that identify the instance. Each bulk value gets
a BulkDataURI in the metadata and a `BulkRange` under the same path.

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
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, TextIO

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import STANDARD_VR

from app.dicom.frames import locate_frames
from app.dicom.instance import BULK_BASE, BulkRange, FrameRanges, ParsedInstance
from app.dicom.json import NOT_PLAIN, decoding_path, describe_path, encode_dataset, plain_value
from app.dicom.reader import UNDEFINED_LENGTH, DicomParseError, Reader, get_decoded, label
from app.dicom.transfer_syntax import is_storable
from app.dicom.uid import is_valid_uid

__all__ = ["DicomParseError", "UnsupportedTransferSyntax", "parse_instance"]


class UnsupportedTransferSyntax(DicomParseError):
    """The file is encoded in a transfer syntax the archive does not store (see
    `transfer_syntax.STORABLE`): distinct from other parse errors because STOW-RS has a
    failure reason of its own for it (0xC122). The dataset is not read, so the instance is
    named from the file meta information (Media Storage SOP Class/Instance UID), if valid."""

    def __init__(self, message: str, meta: Dataset) -> None:
        super().__init__(message)
        self.sop_class_uid = _valid_uid(meta, _MEDIA_SOP_CLASS_UID)
        self.sop_instance_uid = _valid_uid(meta, _MEDIA_SOP_INSTANCE_UID)


MAX_INFLATED_SIZE = 1 << 28  # 256 MiB

_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
_STUDY_INSTANCE_UID = 0x0020000D
_SERIES_INSTANCE_UID = 0x0020000E
_MEDIA_SOP_CLASS_UID = 0x00020002
_MEDIA_SOP_INSTANCE_UID = 0x00020003
_TRANSFER_SYNTAX_UID = 0x00020010

_INVALID_VALUE = re.compile(r"Invalid value for VR (\w+): (.*?)\. Please see", re.DOTALL)
_TOO_LONG = re.compile(
    r"The value length \((\d+)\) exceeds the maximum length of (\d+) allowed for VR (\w+)"
)
# pydicom repeats the invalid IS message in a second wording.
_REPEATED = re.compile(r'Value ".*" is not valid for elements with a VR of IS')


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
        reader = Reader(io.BytesIO(data), len(data), None, notes)
    else:
        reader = Reader(fp, size, bulk_threshold, notes)
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
        frames = locate_frames(ds, pixel, reader.pread, notes)

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
        encapsulated=pixel is not None and not deflated and pixel.encapsulated,
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
            raise DicomParseError(f"truncated: file ends inside element {label(tag)}")
        if isinstance(raw, RawDataElement) and raw.VR not in STANDARD_VR:
            raise DicomParseError(f"element {label(tag)} has an unknown value representation")
    return meta


def _end_of_meta(tag: BaseTag, _vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002 or length == UNDEFINED_LENGTH


def _transfer_syntax(meta: Dataset) -> str:
    value = plain_value(meta, _TRANSFER_SYNTAX_UID)  # without pydicom's decoding
    if value is NOT_PLAIN:
        elem = meta.get(_TRANSFER_SYNTAX_UID)
        value = elem.value if elem is not None else None
    if not value:
        raise DicomParseError("missing TransferSyntaxUID in the file meta information")
    if not isinstance(value, str) or not is_valid_uid(value):
        raise DicomParseError(f"invalid TransferSyntaxUID {str(value)!r}")
    if not is_storable(value):
        # Checked before the dataset is read: its encoding is unknown.
        raise UnsupportedTransferSyntax(
            f"TransferSyntaxUID {value} is not a standard transfer syntax this archive stores",
            meta,
        )
    return str(value)


@lru_cache(maxsize=64)
def _encoding_of(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) of the dataset."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        # Storable syntaxes newer than pydicom (JPEG XL, Deflated Image Frame Compression):
        # explicit VR little endian, as PS3.5 A.4 requires of every encapsulated one.
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


def _valid_uid(ds: Dataset, tag: int) -> str | None:
    value = _uid_value(ds, tag)
    return value if value is not None and is_valid_uid(value) else None


def _uid_value(ds: Dataset, tag: int) -> str | None:
    value = plain_value(ds, tag)  # a valid UID, without pydicom's decoding (most of the cost)
    if value is not NOT_PLAIN:
        return str(value)
    elem = get_decoded(ds, tag)
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


def _summary(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
