"""The DICOM test corpora shipped by pydicom and pydicom-data, and what pydicom says of each file.

Everything here is computed with pydicom alone, independently of the archive's own parser, so
that the acceptance test compares the server with a second opinion.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import data_store
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.data import get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

PYDICOM_ROOT = Path(pydicom.__file__).parent / "data" / "test_files"
PYDICOM_DATA_ROOT = Path(data_store.__file__).parent / "data"

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UNDEFINED = 0xFFFFFFFF
REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


@contextmanager
def quiet() -> Iterator[None]:
    """pydicom warns about the corpus's deliberately odd files; the suite turns warnings into
    errors, so every pydicom read or conversion of a corpus file goes through here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Problem(Enum):
    """Why pydicom says a file is not a storable PS3.10 file (None: it is one)."""

    NOT_PART10 = "not a PS3.10 file (no preamble/'DICM'/file meta)"
    NO_TRANSFER_SYNTAX = "file meta has no TransferSyntaxUID"
    TRUNCATED = "truncated (an element's value runs past the end of the file)"
    MISSING_UID = "a required UID is missing"
    INVALID_UID = "a required UID is not a valid UID (PS3.5 9.1)"


@dataclass(frozen=True)
class CorpusFile:
    label: str  # "pydicom/<path under test_files>" or "pydicom-data/<name>"
    path: Path
    sha256: str
    problem: Problem | None
    detail: str  # what exactly is wrong (empty when nothing is)
    bad_uids: tuple[str, ...]  # keywords of the missing or invalid required UIDs
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax_uid: str | None

    @property
    def valid(self) -> bool:
        return self.problem is None

    def read(self) -> Dataset:
        with quiet():
            return pydicom.dcmread(self.path)


def corpus_paths() -> dict[str, Path]:
    """Label -> file for every regular file of both corpora (directories skipped)."""
    found: dict[str, Path] = {}
    for name in get_testdata_files():
        path = Path(name).resolve()
        if not path.is_file():
            continue
        if path.is_relative_to(PYDICOM_ROOT):
            found[f"pydicom/{path.relative_to(PYDICOM_ROOT).as_posix()}"] = path
        elif path.is_relative_to(PYDICOM_DATA_ROOT):
            found[f"pydicom-data/{path.relative_to(PYDICOM_DATA_ROOT).as_posix()}"] = path
    for path in sorted(PYDICOM_DATA_ROOT.glob("*.dcm")):
        found.setdefault(f"pydicom-data/{path.name}", path.resolve())
    return dict(sorted(found.items()))


def _truncation(ds: Dataset, size: int, caught: list[warnings.WarningMessage]) -> str | None:
    for message in caught:
        text = str(message.message)
        if "End of file reached" in text:
            return text
    for tag in ds.keys():  # noqa: SIM118 (iterating ds would decode every element)
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED
            and raw.value is not None
            and len(raw.value) < raw.length
        ):
            return (
                f"{tag} declares {raw.length} bytes at offset {raw.value_tell}, "
                f"the file has {size} bytes"
            )
    return None


def _classify(label: str, path: Path) -> CorpusFile:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    def result(problem: Problem | None, detail: str = "", **kw: object) -> CorpusFile:
        fields: dict[str, object] = {
            "bad_uids": (),
            "sop_instance_uid": None,
            "study_instance_uid": None,
            "series_instance_uid": None,
            "transfer_syntax_uid": None,
        }
        fields.update(kw)
        return CorpusFile(label, path, digest, problem, detail, **fields)  # type: ignore[arg-type]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            return result(Problem.NOT_PART10, f"{type(exc).__name__}: {exc}")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        return result(Problem.NO_TRANSFER_SYNTAX)
    truncated = _truncation(ds, len(data), caught)
    with quiet():
        uids = {k: ds.get(k) for k in REQUIRED_UIDS}
    values = {
        "sop_instance_uid": uids["SOPInstanceUID"],
        "study_instance_uid": uids["StudyInstanceUID"],
        "series_instance_uid": uids["SeriesInstanceUID"],
        "transfer_syntax_uid": str(syntax),
    }
    if truncated:
        return result(Problem.TRUNCATED, truncated, **values)
    missing = tuple(k for k, v in uids.items() if not v)
    if missing:
        return result(Problem.MISSING_UID, ", ".join(missing), bad_uids=missing, **values)
    invalid = tuple(
        k for k, v in uids.items() if not (_UID.fullmatch(str(v)) and len(str(v)) <= 64)
    )
    if invalid:
        detail = ", ".join(f"{k}={uids[k]!r}" for k in invalid)
        return result(Problem.INVALID_UID, detail, bad_uids=invalid, **values)
    return result(None, **{k: str(v) for k, v in values.items()})


@cache
def corpus() -> tuple[CorpusFile, ...]:
    """Every corpus file, sorted by label (the order they are stored in)."""
    return tuple(_classify(label, path) for label, path in corpus_paths().items())


# --- pixel data, as pydicom sees it ------------------------------------------------------


@dataclass(frozen=True)
class Image:
    frames: int
    encapsulated: bool
    deflated: bool
    big_endian: bool


def image_info(ds: Dataset) -> Image | None:
    """Frame count and encoding of an image (None: no top-level Pixel Data)."""
    if "PixelData" not in ds:
        return None
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    with quiet():
        raw = ds.get("NumberOfFrames")
    try:
        frames = int(raw) if raw not in (None, "") else 1
    except ValueError:
        frames = 1  # not an IS (badVR.dcm's '1A'): one frame, as PS3.3 says when absent
    return Image(
        frames=max(frames, 1),
        encapsulated=syntax.is_encapsulated,
        deflated=syntax.is_deflated,
        big_endian=not syntax.is_little_endian,
    )


def native_frame_length(ds: Dataset) -> int:
    """Bytes in one native frame: Rows*Columns*SamplesPerPixel*BitsAllocated/8, except that
    YBR_FULL_422 has two chroma samples per two pixels (PS3.3 C.7.6.3.1.2)."""
    with quiet():
        bits = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated
        if ds.SamplesPerPixel == 3 and ds.PhotometricInterpretation == "YBR_FULL_422":
            bits = bits // 3 * 2
    return math.ceil(bits / 8)


def native_pixel_data(ds: Dataset, little_endian: bool) -> bytes:
    """The whole native Pixel Data value in the requested byte order."""
    data = bytes(ds.PixelData)
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if little_endian and not syntax.is_little_endian:
        # Big endian: OW (and OB-as-words) values are 16-bit words, 32-bit samples swap in 4s.
        width = 4 if ds.BitsAllocated == 32 else 2
        if ds.BitsAllocated > 8 or ds["PixelData"].VR == "OW":
            usable = len(data) - len(data) % width
            swapped = bytearray(usable)
            for k in range(width):
                swapped[k::width] = data[width - 1 - k : usable : width]
            data = bytes(swapped) + data[usable:]
    return data


def native_frame(ds: Dataset, index: int, little_endian: bool) -> bytes:
    """Frame `index` (0-based) of native pixel data in the requested byte order."""
    length = native_frame_length(ds)
    return native_pixel_data(ds, little_endian)[index * length : (index + 1) * length]


def encapsulated_frames(ds: Dataset, frames: int) -> list[bytes]:
    with quiet():
        return list(generate_frames(ds.PixelData, number_of_frames=frames))


def decoded_pixels(ds: Dataset) -> NDArray[Any]:
    """pydicom's decoding of every frame, frames first: (frames, rows, columns[, samples]).

    This is `pixel_array` as a viewer built on pydicom would see it: YBR colour from a JPEG
    codestream comes back as RGB, planar data interleaved, 1-bit data one byte per pixel.
    Raises whatever the decoder raises when it cannot decode the data."""
    image = image_info(ds)
    if image is None:
        raise ValueError("the dataset has no Pixel Data")
    with quiet():
        pixels: NDArray[Any] = ds.pixel_array
    return pixels if image.frames > 1 else pixels[np.newaxis]


def shows_detail(ds: Dataset, frame: NDArray[Any]) -> bool:
    """Whether a display of `frame` (one decoded frame) is not a single flat shade: grey data
    after pydicom's Modality and VOI LUTs (a window can saturate every pixel), colour data
    (palette indices, RGB, YBR) as decoded."""
    with quiet():
        if str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
            frame = apply_voi_lut(apply_modality_lut(frame, ds), ds)
    return bool(np.ptp(frame) > 0)


def little_endian_bytes(pixels: NDArray[Any]) -> bytes:
    """The samples of `pixels` as little-endian bytes of the same width (native order, PS3.5)."""
    return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
