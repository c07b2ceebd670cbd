"""Small, app-independent helpers for the PS3.18 conformance tests.

The multipart reader here is deliberately written from RFC 2046 and does not use the
app's own reader, so a bug in `app.dicom.multipart` cannot hide itself.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, generate_uid

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"

# STOW-RS response attributes (PS3.18 Table 10.5.3-1).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"
ERROR_COMMENT = "00000902"

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

# Rendered media types and the Pillow format each must decode as.
JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}


def token() -> str:
    """A short unique upper-case token for PatientIDs, accession numbers and names."""
    return uuid.uuid4().hex[:12].upper()


# --- multipart --------------------------------------------------------------------------------


def multipart_body(
    parts: Sequence[bytes], boundary: str, content_type: str | None = DICOM
) -> bytes:
    """A multipart/related body with one part per item (CRLF line breaks, close delimiter)."""
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\n".encode())
        if content_type is not None:
            out.write(f"Content-Type: {content_type}\r\n".encode())
        out.write(b"\r\n")
        out.write(part)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """Media type (lower-case) and parameters (names lower-case, values unquoted)."""
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in re.finditer(r';?\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', ";" + rest):
        name, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(name, raw)
    return media_type.strip().lower(), params


@dataclass
class BodyPart:
    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def media_type(self) -> str:
        return media_params(self.content_type)[0]

    @property
    def params(self) -> dict[str, str]:
        return media_params(self.content_type)[1]


def parse_multipart(response: httpx.Response) -> list[BodyPart]:
    """The parts of a multipart/related response; asserts that it is one."""
    media_type, params = media_params(response.headers.get("content-type", ""))
    assert media_type == "multipart/related", response.headers.get("content-type")
    boundary = params.get("boundary")
    assert boundary, f"no boundary in {response.headers.get('content-type')!r}"
    return split_multipart(response.content, boundary)


def split_multipart(body: bytes, boundary: str) -> list[BodyPart]:
    delimiter = b"--" + boundary.encode()
    # The first boundary may start the body; every later one is preceded by CRLF.
    if body.startswith(delimiter):
        body = b"\r\n" + body
    pieces = body.split(b"\r\n" + delimiter)
    assert len(pieces) >= 2, "no boundary in the multipart body"
    parts: list[BodyPart] = []
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            closed = True
            break
        line_end = piece.index(b"\r\n")
        assert piece[:line_end].strip(b" \t") == b"", f"junk after boundary: {piece[:line_end]!r}"
        rest = piece[line_end + 2 :]
        if rest.startswith(b"\r\n"):  # no headers at all
            head, content = b"", rest[2:]
        else:
            head, sep, content = rest.partition(b"\r\n\r\n")
            assert sep, "part without the empty line that ends its headers"
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            assert int(headers["content-length"]) == len(content), "Content-Length mismatch"
        parts.append(BodyPart(headers, content))
    assert closed, "multipart body has no close delimiter"
    return parts


# --- STOW -------------------------------------------------------------------------------------


def stow(
    http: httpx.Client,
    files: Iterable[bytes],
    *,
    study: str | None = None,
    boundary: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    boundary = boundary or f"b-{uuid.uuid4().hex}"
    url = f"/studies/{study}" if study else "/studies"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return http.post(
        url,
        content=multipart_body(list(files), boundary),
        headers={"Content-Type": content_type, **(headers or {})},
    )


def stow_ok(http: httpx.Client, files: Iterable[bytes], **kwargs: Any) -> dict[str, Any]:
    response = stow(http, files, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def items(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = body.get(tag)
    if not element:
        return []
    found: list[dict[str, Any]] = element.get("Value", [])
    return found


def value(attrs: dict[str, Any], tag: str) -> Any:
    """The first value of an attribute in DICOM JSON (None when absent or empty)."""
    values = attrs.get(tag, {}).get("Value")
    return values[0] if values else None


def values(attrs: dict[str, Any], tag: str) -> list[Any]:
    found: list[Any] = attrs.get(tag, {}).get("Value", [])
    return found


def person(attrs: dict[str, Any], tag: str = "00100010") -> str | None:
    found = value(attrs, tag)
    return None if found is None else found.get("Alphabetic")


def error_message(response: httpx.Response) -> str:
    """The error text of a JSON error response (asserts there is one)."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type"),
        response.text,
    )
    body = response.json()
    message = body.get("error") or body.get("message")
    assert isinstance(message, str) and message.strip(), body
    return message


# --- test files -------------------------------------------------------------------------------


def reuid_testdata(name: str, **attrs: Any) -> tuple[bytes, pydicom.Dataset]:
    """One of pydicom's test files with fresh study/series/instance UIDs (pixel data as is)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, val in attrs.items():
        setattr(ds, key, val)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data, pydicom.dcmread(io.BytesIO(data))


# --- retrieved instances and images -------------------------------------------------------------


@dataclass
class Stored:
    """One instance as uploaded: its UIDs and its PS3.10 bytes."""

    study: str
    series: str
    sop: str
    data: bytes

    @property
    def path(self) -> str:
        """Its WADO-RS path below the DICOMweb root."""
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def dataset(self) -> pydicom.Dataset:
        return read_dicom(self.data)


def stored(data: bytes) -> Stored:
    """A PS3.10 file's UIDs and bytes."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Stored(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, data)


def read_dicom(data: bytes) -> pydicom.Dataset:
    """A PS3.10 file from bytes (as a client would read a retrieved instance)."""
    return pydicom.dcmread(io.BytesIO(data))


def pixels(ds: pydicom.Dataset) -> NDArray[Any]:
    """All frames of a dataset as a numpy array (colour as RGB), decoded by pydicom."""
    values: NDArray[Any] = np.asarray(ds.pixel_array)
    return values


# Image Pixel module attributes a frame needs to be decoded on its own (PS3.3 C.7.6.3).
_IMAGE_PIXEL = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)


def frame_pixels(frame: bytes, like: pydicom.Dataset, transfer_syntax: str) -> NDArray[Any]:
    """One retrieved frame decoded by pydicom: a dataset is built around it with the
    Image Pixel attributes of `like` (the instance's metadata) and `transfer_syntax`."""
    syntax = UID(transfer_syntax)
    ds = pydicom.Dataset()
    for keyword in _IMAGE_PIXEL:
        if keyword in like:
            setattr(ds, keyword, like[keyword].value)
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame]) if syntax.is_compressed else frame
    ds["PixelData"].VR = "OB" if syntax.is_compressed or ds.BitsAllocated <= 8 else "OW"
    return pixels(ds)


def open_image(content: bytes, image_format: str | None = None) -> Image.Image:
    """A rendered image decoded by Pillow (asserting its format when given)."""
    picture: Image.Image = Image.open(io.BytesIO(content))
    if image_format is not None:
        assert picture.format == image_format, (picture.format, image_format)
    picture.load()
    return picture
