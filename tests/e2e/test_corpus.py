"""Acceptance test: every file of the pydicom and pydicom-data corpora through STOW, WADO, QIDO.

Each corpus file is sent in its own STOW-RS request (multipart/related; type="application/dicom",
one part). pydicom, not the archive, decides what should happen to it (see `corpus.py`):

- a file that is not a PS3.10 file with a TransferSyntaxUID and valid SOP Instance, Study and
  Series Instance UIDs, or that is truncated, must be refused: 409 with a FailedSOPSequence item,
  FailureReason C000 and an ErrorComment that says what is wrong. `KNOWN_REJECTED` lists them by
  name so that any change in the corpus or in pydicom's verdict shows up in review;
- every other file must be stored: 200, and then come back byte for byte from WADO-RS, with
  metadata equal to pydicom's reading of it and every frame of its pixel data.

Duplicate SOP Instance UIDs. Many corpus files are the same instance in several encodings
(MR_small.dcm, MR_small_RLE.dcm, MR_small_bigendian.dcm, ... share one SOPInstanceUID). The
files are stored in label order into one archive ("main", default settings), so the expected
outcome of each is known in advance from (SOPInstanceUID, sha256): the first valid file of a UID
is stored; a later file with the same bytes is accepted again (200, nothing changes); a later
file with different bytes is refused with FailureReason 0111. That checks the duplicate rule
on real data, but would leave those later variants (big endian, RLE, JPEG-LS ... of the same
image) unverified. So each of them is then sent, in the same order, to a second archive started
with `--overwrite` and checked right after it is stored, before the next variant of the same UID
replaces it. Every valid file is thus verified exactly once, and "main" holds a known set of
instances for the QIDO check.

Every image is then also retrieved decoded: as Explicit VR Little Endian, every frame
decompressed, and rendered as PNG and JPEG. The reference is pydicom's own decoding of the
original file (`pixel_array`, same decoder plugins as the server, so even lossy sources must give
equal values). Where the data cannot be decoded at all (`NOT_DECODABLE`, each one checked to
defeat pydicom too) the archive must say so: 501 or 406 with a message, never a 500.

All HTTP traffic happens in the module fixture, which records what came back; the tests then
compare those records with pydicom, one test per file and aspect, so a failure names the file.
Decoded bodies are too big to keep for ~150 images, so they are judged as they arrive and only
the verdict (status, error text, list of problems) is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image as PILImage
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID

from tests.e2e.corpus import (
    PYDICOM_DATA_ROOT,
    CorpusFile,
    Image,
    Problem,
    corpus,
    decoded_pixels,
    encapsulated_frames,
    image_info,
    little_endian_bytes,
    native_frame,
    native_frame_length,
    native_pixel_data,
    quiet,
    shows_detail,
)
from tests.e2e.multipart import encode_multipart, media_type_params, parse_multipart
from tests.support.dcmtk import check, require_dcmtk
from tests.support.server import running_server

# --- what must be refused, and why (pydicom's verdict, checked by test_known_rejected) -------

_PART10 = r"part ?10|DICM|preamble|file meta"
_TRUNCATED = r"truncat|end of (the )?file|ends (early|inside|before)"

# label -> (problem, pattern the ErrorComment must match, case-insensitive)
KNOWN_REJECTED: dict[str, tuple[Problem, str]] = {
    # not DICOM at all, or a dataset without the PS3.10 header
    "pydicom-data/OT-PAL-8-face.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/ExplVR_BigEndNoMeta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/ExplVR_LitEndNoMeta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/no_meta.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/rtstruct.dcm": (Problem.NOT_PART10, _PART10),
    "pydicom/README.txt": (Problem.NOT_PART10, _PART10),
    "pydicom/crayons.icc": (Problem.NOT_PART10, _PART10),
    "pydicom/dicomdirtests/README.txt": (Problem.NOT_PART10, _PART10),
    "pydicom/dicomdirtests/TINY_ALPHA/README": (Problem.NOT_PART10, _PART10),
    "pydicom/rtplan.dump": (Problem.NOT_PART10, _PART10),
    "pydicom/rtstruct.dump": (Problem.NOT_PART10, _PART10),
    "pydicom/test1.json": (Problem.NOT_PART10, _PART10),
    "pydicom/test_PN.json": (Problem.NOT_PART10, _PART10),
    "pydicom/zipMR.gz": (Problem.NOT_PART10, _PART10),
    # file meta without (0002,0010)
    "pydicom/meta_missing_tsyntax.dcm": (Problem.NO_TRANSFER_SYNTAX, r"TransferSyntaxUID"),
    # the data ends inside an element
    "pydicom/MR_truncated.dcm": (Problem.TRUNCATED, _TRUNCATED),
    "pydicom/rtplan_truncated.dcm": (Problem.TRUNCATED, _TRUNCATED),
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": (Problem.TRUNCATED, _TRUNCATED),
    # valid PS3.10 files that are no storable instance: the comment names a missing UID
    "pydicom/JPEGLSNearLossless_08.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/JPEGLSNearLossless_16.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/SC_rgb_jls_lossy_line.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/SC_rgb_jls_lossy_sample.dcm": (Problem.MISSING_UID, r"StudyInstanceUID"),
    "pydicom/UN_sequence.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/empty_charset_LEI.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/nested_priv_SQ.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/no_meta_group_length.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/priv_SQ.dcm": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    # media storage directories (DICOMDIR) are PS3.10 files but not instances
    "pydicom/dicomdirtests/DICOMDIR": (Problem.MISSING_UID, r"(SOP|Study|Series)InstanceUID"),
    "pydicom/dicomdirtests/DICOMDIR-bigEnd": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-empty.dcm": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-implicit": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    # Its last Directory Record item declares 248 bytes where 224 are left (the offsets were
    # removed without fixing the item lengths): pydicom reads on, a strict parser may call it
    # truncated first. Either reason is right.
    "pydicom/dicomdirtests/DICOMDIR-nooffset": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID|" + _TRUNCATED,
    ),
    "pydicom/dicomdirtests/DICOMDIR-nopatient": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/DICOMDIR-reordered": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    "pydicom/dicomdirtests/TINY_ALPHA/DICOMDIR": (
        Problem.MISSING_UID,
        r"(SOP|Study|Series)InstanceUID",
    ),
    # UIDs that are 64 hex digits, not digits and dots
    "pydicom-data/bad_sequence.dcm": (Problem.INVALID_UID, r"(SOP|Study|Series)InstanceUID"),
}

# Images pydicom cannot decode but the archive can (a second decoder where pydicom's refuse):
# the reference is then DCMTK's decompressor, another decoder again. label -> (tool, why)
DECODED_BY_DCMTK: dict[str, tuple[str, str]] = {
    "pydicom/JPEG-lossy.dcm": (
        "dcmdjpeg",
        "the 12-bit JPEG Extended codestream has a misplaced marker segment (scan start must "
        "be 0 and scan stop 63 in sequential modes): libjpeg refuses it, Pillow has no 12-bit "
        "JPEG; libjpeg-turbo (imagecodecs) in the archive and IJG libjpeg in DCMTK read it",
    ),
}

# Images whose pixel data cannot be decoded, by pydicom (test_not_decodable_defeats_pydicom)
# nor by the archive: decoded retrieval must answer 501 or 406 with a message saying so.
# label -> why
NOT_DECODABLE: dict[str, str] = {
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": (
        "a parser test, not an image: the 250-byte JPEG 2000 codestream carries the bytes of a "
        "Sequence Delimitation Item in its SIZ marker segment, which then declares 3.8e12 "
        "pixels; OpenJPEG cannot read the header"
    ),
}

FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
AS_EXPLICIT_VR_LITTLE_ENDIAN = f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
DECOMPRESSED_FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"'
RENDERED_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}  # media type -> Pillow format
BULK_ACCEPT = "multipart/related; type=application/octet-stream"
C000, DUPLICATE = 0xC000, 0x0111
LITTLE_ENDIAN_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
BIG_ENDIAN_SYNTAX = "1.2.840.10008.1.2.2"
_PIXEL_DATA = "7FE00010"


# --- the expected outcome of each STOW on "main" ---------------------------------------------


class Outcome(Enum):
    STORED = "stored"  # first valid file with its SOPInstanceUID
    IDENTICAL = "identical"  # same bytes as a file stored before: accepted, nothing changes
    DUPLICATE = "duplicate"  # different bytes, SOPInstanceUID already stored: 0111
    REJECTED = "rejected"  # not a storable PS3.10 file: C000


def expected_outcomes() -> dict[str, Outcome]:
    first: dict[str, str] = {}  # SOPInstanceUID -> sha256 of the file stored for it
    outcomes: dict[str, Outcome] = {}
    for f in corpus():
        if not f.valid:
            outcomes[f.label] = Outcome.REJECTED
            continue
        assert f.sop_instance_uid
        if f.sop_instance_uid not in first:
            first[f.sop_instance_uid] = f.sha256
            outcomes[f.label] = Outcome.STORED
        elif first[f.sop_instance_uid] == f.sha256:
            outcomes[f.label] = Outcome.IDENTICAL
        else:
            outcomes[f.label] = Outcome.DUPLICATE
    return outcomes


OUTCOMES = expected_outcomes()
FILES = {f.label: f for f in corpus()}
# Verified on "main" (STORED) or on the overwrite archive (DUPLICATE): every distinct valid file.
VERIFIED = [label for label, o in OUTCOMES.items() if o in (Outcome.STORED, Outcome.DUPLICATE)]


# --- what came back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartDigest:
    content_type: str
    length: int
    sha256: str


@dataclass(frozen=True)
class Fetched:
    """A GET: status, Content-Type, the parts of a multipart answer, or the error text."""

    url: str
    status: int
    content_type: str
    parts: tuple[PartDigest, ...] = ()
    single: PartDigest | None = None  # a 200 that is not multipart
    text: str = ""

    def describe(self) -> str:
        return f"GET {self.url} -> {self.status} {self.content_type!r} {self.text[:300]!r}"


@dataclass(frozen=True)
class Judged:
    """A request for decoded pixels, judged when it came back (the bodies are not kept)."""

    request: str  # "GET <url> (Accept: ...)"
    status: int  # 0: no complete response
    content_type: str
    error: str = ""  # the "error" member of an error's JSON body
    text: str = ""  # an error's body, for the failure message
    problems: tuple[str, ...] = ()  # what is wrong with the content of a 200
    shown: str = ""  # rendered images: digest of the decoded picture (mode, size, pixels)

    def describe(self) -> str:
        lines = [f"{self.request} -> {self.status} {self.content_type!r} {self.text[:300]!r}"]
        return "\n".join(lines + list(self.problems))


@dataclass
class Observation:
    label: str
    archive: str  # "main" or "overwrite"
    base: str  # the archive's DICOMweb root
    stow_status: int = 0
    stow_body: Any = None
    instance: Fetched | None = None
    metadata: Any = None
    metadata_fetch: Fetched | None = None
    frames: dict[int, Fetched] = field(default_factory=dict)
    frame_after_last: Fetched | None = None
    bulk: dict[str, Fetched] = field(default_factory=dict)  # BulkDataURI -> answer
    # decoded retrieval (images only), judged on arrival
    pydicom_error: str = ""  # why pydicom could not decode the original ("" when it could)
    first_frame: str = ""  # digest of pydicom's decoding of frame 1 (dtype, shape, values)
    explicit_vr_little_endian: Judged | None = None
    frames_decompressed: Judged | None = None
    rendered: dict[str, Judged] = field(default_factory=dict)  # media type -> verdict


def _digest(content_type: str, data: bytes) -> PartDigest:
    return PartDigest(content_type, len(data), hashlib.sha256(data).hexdigest())


def fetch(client: httpx.Client, url: str, accept: str) -> Fetched:
    response = client.get(url, headers={"Accept": accept})
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200:
        return Fetched(url, response.status_code, content_type, text=response.text)
    if not content_type.lower().startswith("multipart/"):
        return Fetched(url, 200, content_type, single=_digest(content_type, response.content))
    try:
        parts = parse_multipart(content_type, response.content)
    except ValueError as exc:
        return Fetched(url, 200, content_type, text=f"malformed multipart body: {exc}")
    return Fetched(
        url, 200, content_type, parts=tuple(_digest(p.content_type, p.body) for p in parts)
    )


def instance_path(f: CorpusFile) -> str:
    return (
        f"/studies/{f.study_instance_uid}/series/{f.series_instance_uid}"
        f"/instances/{f.sop_instance_uid}"
    )


def stow(client: httpx.Client, f: CorpusFile, obs: Observation) -> None:
    content_type, body = encode_multipart([f.path.read_bytes()])
    response = client.post("/studies", content=body, headers={"Content-Type": content_type})
    obs.stow_status = response.status_code
    try:
        obs.stow_body = response.json()
    except json.JSONDecodeError:
        obs.stow_body = response.text


def _bulk_uris(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "BulkDataURI":
                yield item
            else:
                yield from _bulk_uris(item)
    elif isinstance(value, list):
        for item in value:
            yield from _bulk_uris(item)


def observe(client: httpx.Client, f: CorpusFile, obs: Observation) -> None:
    """Everything WADO-RS says about a stored file."""
    try:
        _observe(client, f, obs)
    except httpx.TimeoutException as exc:
        # A request that hangs usually holds a worker, so the rest would hang as well: stop,
        # naming the file (httpx's message names neither file nor request).
        raise RuntimeError(f"{f.label}: the server did not answer {exc.request.url}") from exc


def _observe(client: httpx.Client, f: CorpusFile, obs: Observation) -> None:
    path = instance_path(f)
    obs.instance = fetch(client, path, 'multipart/related; type="application/dicom"')
    response = client.get(path + "/metadata", headers={"Accept": "application/dicom+json"})
    obs.metadata_fetch = Fetched(
        response.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        text="" if response.status_code == 200 else response.text,
    )
    if response.status_code == 200:
        obs.metadata = response.json()
        for uri in _bulk_uris(obs.metadata):
            if not uri.endswith("/bulkdata/" + _PIXEL_DATA):  # pixel data: see frames
                obs.bulk[uri] = fetch(client, uri, BULK_ACCEPT)
    ds = f.read()
    image = image_info(ds)
    if image is None:
        return
    for number in range(1, image.frames + 1):
        obs.frames[number] = fetch(client, f"{path}/frames/{number}", FRAME_ACCEPT)
    obs.frame_after_last = fetch(client, f"{path}/frames/{image.frames + 1}", FRAME_ACCEPT)
    observe_decoded(client, f, ds, image, obs)


# --- decoded retrieval, judged as it arrives ---------------------------------------------------

# Attributes that may differ once the pixel data is decoded: its encoding (PS3.5 8.2: a YBR
# JPEG decodes to RGB, planar RLE data to pixel-interleaved), lossy compression history
# (PS3.3 C.7.6.1.1.5), the offset tables that only encapsulated data has, and trailing
# padding, which has no meaning (PS3.10 7.2) and need not be rewritten.
_DECODING_MAY_CHANGE = {
    "DataSetTrailingPadding",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "PixelData",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"}


def _checked(check: Callable[[], list[str]]) -> list[str]:
    """Run a judge; a judge that cannot even run (e.g. pydicom fails) is a problem too."""
    try:
        return check()
    except Exception as exc:  # any failure is reported for the file, not raised
        return [f"could not be checked: {type(exc).__name__}: {exc}"]


def judge(
    client: httpx.Client, url: str, accept: str, check: Callable[[bytes, str], list[str]]
) -> Judged:
    request = f"GET {url} (Accept: {accept})"
    try:
        response = client.get(url, headers={"Accept": accept})
    except httpx.RemoteProtocolError as exc:  # e.g. a 200 whose body breaks off
        return Judged(request, 0, "", text=f"no complete response: {type(exc).__name__}: {exc}")
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = str(body.get("error") or "") if isinstance(body, dict) else ""
        return Judged(request, response.status_code, content_type, error, response.text)
    problems = _checked(lambda: check(response.content, content_type))
    return Judged(request, 200, content_type, problems=tuple(problems), shown=_shown(response))


def _shown(response: httpx.Response) -> str:
    if not response.headers.get("content-type", "").startswith("image/"):
        return ""
    try:
        with PILImage.open(io.BytesIO(response.content)) as image:
            image.load()
            header = f"{image.mode} {image.size}".encode()
            return hashlib.sha256(header + image.tobytes()).hexdigest()
    except OSError:
        return ""  # not an image: judge_rendered says so


def _differences(actual: NDArray[Any], expected: NDArray[Any], what: str) -> list[str]:
    if actual.shape != expected.shape:
        return [f"{what}: shape {actual.shape}, pydicom decodes {expected.shape}"]
    if (actual.dtype.kind, actual.dtype.itemsize) != (expected.dtype.kind, expected.dtype.itemsize):
        return [f"{what}: samples are {actual.dtype}, pydicom decodes {expected.dtype}"]
    unequal = np.flatnonzero(actual != expected)
    if unequal.size:
        first = int(unequal[0])
        return [
            f"{what}: {unequal.size} of {actual.size} samples differ from pydicom's decoding "
            f"(first at flat index {first}: {actual.flat[first]} != {expected.flat[first]})"
        ]
    return []


def _attribute_changes(original: Dataset, converted: Dataset) -> list[str]:
    """Top-level attributes that the conversion lost, added or altered (textual VRs compared
    by value; binary ones and sequences only for presence)."""
    problems = []

    def compared(ds: Dataset) -> set[BaseTag]:
        return {
            tag
            for tag in ds.keys()  # noqa: SIM118 (iterating would decode every element)
            if tag.element != 0 and keyword_for_tag(tag) not in _DECODING_MAY_CHANGE
        }

    keep, have = compared(original), compared(converted)
    problems += [f"{tag} is missing from the converted instance" for tag in sorted(keep - have)]
    problems += [f"{tag} was added by the conversion" for tag in sorted(have - keep)]
    with quiet():
        for tag in sorted(keep & have):
            before, after = original[tag], converted[tag]
            if after.VR in _BINARY_VRS or before.VR in _BINARY_VRS:
                continue
            if before.value != after.value:
                problems.append(f"{tag} {after.VR}: {after.value!r} was {before.value!r}")
    return problems


def judge_explicit_vr_little_endian(
    body: bytes, content_type: str, original: Dataset, reference: NDArray[Any] | None
) -> list[str]:
    """The answer must be a PS3.10 file in Explicit VR Little Endian with native pixel data
    that pydicom decodes to the same values as the original, other attributes unchanged."""
    problems = []
    media_type, params = media_type_params(content_type)
    if media_type != "application/dicom":
        problems.append(f"Content-Type {content_type!r} is not application/dicom")
    if params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN) != EXPLICIT_VR_LITTLE_ENDIAN:
        problems.append(f"Content-Type {content_type!r} names another transfer syntax")
    with quiet():
        converted = dcmread(io.BytesIO(body))  # not forced: must be a PS3.10 file
    syntax = converted.file_meta.get("TransferSyntaxUID")
    if syntax != EXPLICIT_VR_LITTLE_ENDIAN:
        return [*problems, f"the file's TransferSyntaxUID is {syntax}"]
    # rtdose.dcm's file meta names another instance; keeping what was received is no fault
    media_uids = {original.SOPInstanceUID, original.file_meta.get("MediaStorageSOPInstanceUID")}
    if converted.file_meta.get("MediaStorageSOPInstanceUID") not in media_uids:
        problems.append("MediaStorageSOPInstanceUID is not the instance's SOPInstanceUID")
    if "PixelData" not in converted:
        return [*problems, "the converted instance has no Pixel Data"]
    element = converted["PixelData"]
    image = image_info(original)
    assert image is not None
    expected_length = image.frames * native_frame_length(converted)
    lengths = {expected_length, expected_length + expected_length % 2}
    if not image.encapsulated:
        with quiet():
            lengths.add(len(original.PixelData))  # native data beyond the last frame may stay
    if element.is_undefined_length or len(element.value) not in lengths:
        problems.append(
            f"Pixel Data is not native: {len(element.value)} bytes"
            f"{' of undefined length' if element.is_undefined_length else ''}, "
            f"{image.frames} frame(s) of {native_frame_length(converted)} bytes expected"
        )
    problems += _attribute_changes(original, converted)
    if reference is not None:
        return problems + _differences(decoded_pixels(converted), reference, "pixel data")
    if image.encapsulated:
        return [*problems, "pydicom cannot decode the original: nothing to compare with"]
    # Native data pydicom will not decode (badVR.dcm: NumberOfFrames '1A'): nothing to decode,
    # so the value itself must come through, in little-endian order.
    with quiet():
        if bytes(element.value) != native_pixel_data(original, little_endian=True):
            problems.append("Pixel Data is not the original native value in little endian")
    return problems


def expected_decompressed_frames(
    original: Dataset, image: Image, reference: NDArray[Any] | None
) -> list[bytes]:
    """Native data is served as stored (little endian); compressed data as pydicom decodes it."""
    if not image.encapsulated:
        with quiet():
            return [native_frame(original, i, little_endian=True) for i in range(image.frames)]
    if reference is None:
        raise ValueError("pydicom cannot decode the original: nothing to compare with")
    return [little_endian_bytes(frame) for frame in reference]


def judge_decompressed_frames(body: bytes, content_type: str, expected: list[bytes]) -> list[str]:
    """One part per frame, in order, each the frame's native little-endian bytes."""
    parts = parse_multipart(content_type, body)
    if len(parts) != len(expected):
        return [f"{len(parts)} parts for {len(expected)} frames"]
    problems = []
    for number, (part, frame) in enumerate(zip(parts, expected, strict=True), start=1):
        media_type, params = media_type_params(part.content_type)
        if media_type != "application/octet-stream":
            problems.append(f"frame {number}: part is {part.content_type!r}")
        if params.get("transfer-syntax") != EXPLICIT_VR_LITTLE_ENDIAN:
            problems.append(f"frame {number}: part {part.content_type!r} is not labelled EVRLE")
        if part.body != frame:
            problems.append(
                f"frame {number}: {len(part.body)} bytes, expected {len(frame)}"
                + (" (same length, different content)" if len(part.body) == len(frame) else "")
            )
    return problems


def judge_rendered(
    body: bytes,
    content_type: str,
    media_type: str,
    original: Dataset,
    reference: NDArray[Any] | None,
) -> list[str]:
    """One image of the requested format, the object's size, grey or RGB as the object is,
    and not blank when pydicom's display of the first frame is not."""
    problems = []
    if media_type_params(content_type)[0] != media_type:
        problems.append(f"Content-Type {content_type!r} for {media_type}")
    with PILImage.open(io.BytesIO(body)) as image:
        image.load()
        with quiet():
            size = (int(original.Columns), int(original.Rows))
            grey = str(original.PhotometricInterpretation).startswith("MONOCHROME")
        if image.format != RENDERED_FORMATS[media_type]:
            problems.append(f"{image.format} image for {media_type}")
        if image.size != size:
            problems.append(f"{image.size[0]}x{image.size[1]}, the object is {size[0]}x{size[1]}")
        if image.mode != ("L" if grey else "RGB"):
            problems.append(f"mode {image.mode} for {'grey' if grey else 'colour'} data")
        shown = np.asarray(image)
        blank = bool(np.all(shown == shown[0, 0]))
    if blank and reference is not None and shows_detail(original, reference[0]):
        problems.append("the image is one flat shade, pydicom's display of frame 1 is not")
    return problems


def dcmtk_decoded(f: CorpusFile, tool: str) -> NDArray[Any]:
    """Every frame as DCMTK's decompressor `tool` decodes the file, frames first."""
    require_dcmtk((tool,))
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "native.dcm"
        check(tool, f.path, target)
        return decoded_pixels(dcmread(target))


def observe_decoded(
    client: httpx.Client, f: CorpusFile, ds: Dataset, image: Image, obs: Observation
) -> None:
    """The image decoded: as Explicit VR Little Endian, every frame decompressed (one request)
    and rendered as PNG and JPEG, each judged against pydicom's decoding of the original."""
    reference: NDArray[Any] | None = None
    try:
        reference = decoded_pixels(f.read())
    except Exception as exc:  # whatever the decoder raises is pydicom's verdict
        obs.pydicom_error = f"{type(exc).__name__}: {exc}"
        if f.label in DECODED_BY_DCMTK:
            reference = dcmtk_decoded(f, DECODED_BY_DCMTK[f.label][0])
    else:
        first = reference[0]
        header = f"{first.dtype.kind}{first.dtype.itemsize} {first.shape}".encode()
        obs.first_frame = hashlib.sha256(header + little_endian_bytes(first)).hexdigest()
    path = instance_path(f)
    obs.explicit_vr_little_endian = judge(
        client,
        path,
        AS_EXPLICIT_VR_LITTLE_ENDIAN,
        lambda body, ct: judge_explicit_vr_little_endian(body, ct, ds, reference),
    )
    numbers = ",".join(str(n) for n in range(1, image.frames + 1))
    obs.frames_decompressed = judge(
        client,
        f"{path}/frames/{numbers}",
        DECOMPRESSED_FRAMES_ACCEPT,
        lambda body, ct: judge_decompressed_frames(
            body, ct, expected_decompressed_frames(ds, image, reference)
        ),
    )
    for media_type in RENDERED_FORMATS:
        obs.rendered[media_type] = judge(
            client,
            f"{path}/rendered",
            media_type,
            partial(judge_rendered, media_type=media_type, original=ds, reference=reference),
        )


@dataclass
class Run:
    main: dict[str, Observation]  # every corpus file, stored in label order
    overwrite: dict[str, Observation]  # the DUPLICATE files, on the --overwrite archive
    studies_status: int  # QIDO /studies on "main"
    studies: Any


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    main: dict[str, Observation] = {}
    with running_server(tmp_path_factory.mktemp("corpus-main")) as url:
        base = f"{url}/dicomweb"
        with httpx.Client(base_url=base, timeout=60) as client:
            for f in corpus():
                stow(client, f, main.setdefault(f.label, Observation(f.label, "main", base)))
            for label, outcome in OUTCOMES.items():
                if outcome is Outcome.STORED:
                    observe(client, FILES[label], main[label])
            response = client.get("/studies", params={"limit": "1000"})
            studies = response.json() if response.status_code == 200 else response.text
            studies_status = response.status_code
    overwrite: dict[str, Observation] = {}
    with running_server(tmp_path_factory.mktemp("corpus-overwrite"), "--overwrite") as url:
        base = f"{url}/dicomweb"
        with httpx.Client(base_url=base, timeout=60) as client:
            for label, outcome in OUTCOMES.items():
                if outcome is Outcome.DUPLICATE:
                    # stored and checked before the next variant of its UID replaces it
                    obs = overwrite[label] = Observation(label, "overwrite", base)
                    stow(client, FILES[label], obs)
                    if obs.stow_status == 200:
                        observe(client, FILES[label], obs)
    return Run(main, overwrite, studies_status, studies)


def verified(run: Run, label: str) -> Observation:
    """The record of the archive a valid file was checked on; it must have been stored."""
    obs = run.overwrite[label] if OUTCOMES[label] is Outcome.DUPLICATE else run.main[label]
    assert obs.stow_status == 200, (
        f"{label} was not stored on the {obs.archive} archive ({obs.stow_status}): {obs.stow_body}"
    )
    return obs


# --- pydicom's verdict ---------------------------------------------------------------------


def test_corpus_is_complete() -> None:
    labels = set(FILES)
    data = {f"pydicom-data/{p.name}" for p in PYDICOM_DATA_ROOT.glob("*.dcm")}
    assert len(data) >= 60 and data <= labels
    assert len(labels - data) >= 170  # pydicom's own files (176 with pydicom 3.0)
    assert "pydicom/dicomdirtests/DICOMDIR" in labels  # names without .dcm are included


def test_known_rejected() -> None:
    """The explicit table above is exactly what pydicom says cannot be stored."""
    computed = {f.label: f.problem for f in corpus() if f.problem is not None}
    assert computed == {label: problem for label, (problem, _) in KNOWN_REJECTED.items()}


def test_duplicate_groups_are_known() -> None:
    """The corpus really has same-UID variants; the expectation depends on them."""
    outcomes = Counter(OUTCOMES.values())
    assert outcomes[Outcome.DUPLICATE] > 40
    assert outcomes[Outcome.IDENTICAL] >= 2  # e.g. US1_J2KR.dcm == examples_jpeg2k.dcm
    assert OUTCOMES["pydicom/MR_small.dcm"] is Outcome.STORED
    assert OUTCOMES["pydicom/MR_small_bigendian.dcm"] is Outcome.DUPLICATE


# --- STOW ------------------------------------------------------------------------------------


def _items(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return list(body.get(tag, {}).get("Value", []))


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


@pytest.mark.parametrize("label", list(OUTCOMES))
def test_stow(run: Run, label: str) -> None:
    f = FILES[label]
    outcome = OUTCOMES[label]
    obs = run.main[label]
    failed = _items(obs.stow_body, "00081198")
    stored = _items(obs.stow_body, "00081199")
    if outcome in (Outcome.STORED, Outcome.IDENTICAL):
        assert (obs.stow_status, failed) == (200, []), obs.stow_body
        assert [_value(i, "00081155") for i in stored] == [f.sop_instance_uid]
        assert _value(stored[0], "00081150"), "ReferencedSOPClassUID missing"
        return
    assert obs.stow_status == 409, obs.stow_body
    assert stored == []
    assert len(failed) == 1, obs.stow_body
    reason = _value(failed[0], "00081197")
    comment = _value(failed[0], "00000902")
    assert isinstance(comment, str) and comment.strip(), f"no ErrorComment: {failed[0]}"
    if outcome is Outcome.DUPLICATE:
        assert reason == DUPLICATE, failed[0]
        assert _value(failed[0], "00081155") == f.sop_instance_uid
        assert f.sop_instance_uid in comment
    else:
        assert reason == C000, failed[0]
        _, pattern = KNOWN_REJECTED[label]
        assert re.search(pattern, comment, re.IGNORECASE), (
            f"ErrorComment {comment!r} does not say why {label} is refused "
            f"({f.problem.value if f.problem else ''}: {f.detail}); expected /{pattern}/"
        )


@pytest.mark.parametrize("label", VERIFIED)
def test_stow_retrieve_url(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    (item,) = _items(obs.stow_body, "00081199")
    assert _value(item, "00081190") == obs.base + instance_path(f)
    assert _value(obs.stow_body, "00081190") == f"{obs.base}/studies/{f.study_instance_uid}"


@pytest.mark.parametrize("label", [k for k, o in OUTCOMES.items() if o is Outcome.DUPLICATE])
def test_overwrite_archive_stores_variant(run: Run, label: str) -> None:
    obs = run.overwrite[label]
    assert obs.stow_status == 200, obs.stow_body
    assert [_value(i, "00081155") for i in _items(obs.stow_body, "00081199")] == [
        FILES[label].sop_instance_uid
    ]


# --- WADO-RS instance -------------------------------------------------------------------------


@pytest.mark.parametrize("label", VERIFIED)
def test_instance_is_byte_identical(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    fetched = obs.instance
    assert fetched is not None and fetched.status == 200, fetched and fetched.describe()
    assert media_type_params(fetched.content_type)[1].get("type") == "application/dicom"
    assert len(fetched.parts) == 1, fetched.describe()
    (part,) = fetched.parts
    assert media_type_params(part.content_type)[0] == "application/dicom"
    assert (part.length, part.sha256) == (f.path.stat().st_size, f.sha256)


# --- WADO-RS metadata ---------------------------------------------------------------------------

# Differences from pydicom's `to_json_dict` that are deliberate, applied to pydicom's side:
# - Group Length elements (gggg,0000) are left out: they describe the file's encoding, not
#   the dataset (they are retired, and wrong once a sequence is re-encoded).
# - Binary values of big-endian files are given in little-endian order (JSON carries values,
#   not a byte stream; PS3.18 F.2.7 via the default Explicit VR Little Endian).
# - PS3.18 F.2.5 for empty values, which pydicom writes as "" and [] (see `_normalised`).
# - Values larger than the archive's bulk threshold may be a BulkDataURI instead of the
#   InlineBinary/Value pydicom writes; the URI must resolve to exactly the value's bytes
#   (checked in test_bulkdata).
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


def _swap(data: bytes, width: int) -> bytes:
    usable = len(data) - len(data) % width
    out = bytearray(data)
    for k in range(width):
        out[k:usable:width] = data[width - 1 - k : usable : width]
    return bytes(out)


def _normalised(value: dict[str, Any]) -> dict[str, Any]:
    """PS3.18 F.2.5 where pydicom's to_json_dict differs: an attribute without a value has no
    "Value" (pydicom writes [] for an empty sequence), and an empty value inside a
    multi-valued attribute is null (pydicom writes "")."""
    if value.get("Value") == []:
        del value["Value"]
    if value.get("vr") != "SQ" and "Value" in value:
        value["Value"] = [None if v in ("", {}) else v for v in value["Value"]]
    return value


def _undecodable(elem: DataElement) -> dict[str, Any]:
    """What an element pydicom cannot write as JSON must look like: badVR.dcm's IS '1A' is no
    number, so it stays text (F.2.3 allows no other lossless form)."""
    values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
    return {"vr": elem.VR, "Value": [str(v).strip() or None for v in values]}


def pydicom_json(ds: Dataset, big_endian: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with quiet():
        for elem in ds:
            if elem.tag.element == 0:
                continue
            try:
                value = elem.to_json_dict(None, 1 << 40)
            except ValueError:
                value = _undecodable(elem)
            if big_endian and "InlineBinary" in value and elem.VR in _WORD:
                raw = base64.b64decode(value["InlineBinary"])
                value["InlineBinary"] = base64.b64encode(_swap(raw, _WORD[elem.VR])).decode()
            if elem.VR == "SQ" and value.get("Value"):
                value["Value"] = [pydicom_json(item, big_endian) for item in elem.value]
            out[f"{elem.tag:08X}"] = _normalised(value)
    return out


def compare_json(
    actual: Any, expected: Any, where: str, problems: list[str], bulk: set[str]
) -> None:
    if isinstance(actual, dict) and "BulkDataURI" in actual:
        if not isinstance(expected, dict) or actual.get("vr") != expected.get("vr"):
            problems.append(f"{where}: {actual} but pydicom has {str(expected)[:200]}")
        bulk.add(actual["BulkDataURI"])
        return
    if isinstance(actual, dict) and isinstance(expected, dict):
        for key in sorted(set(actual) | set(expected)):
            if key not in actual:
                problems.append(f"{where}/{key}: missing (pydicom: {str(expected[key])[:200]})")
            elif key not in expected:
                problems.append(f"{where}/{key}: unexpected {str(actual[key])[:200]}")
            else:
                compare_json(actual[key], expected[key], f"{where}/{key}", problems, bulk)
        return
    if isinstance(actual, list) and isinstance(expected, list) and len(actual) == len(expected):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            compare_json(a, e, f"{where}[{index}]", problems, bulk)
        return
    if actual != expected:
        problems.append(f"{where}: {str(actual)[:200]} != pydicom {str(expected)[:200]}")


@pytest.mark.parametrize("label", VERIFIED)
def test_metadata_matches_pydicom(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    assert obs.metadata_fetch is not None and obs.metadata_fetch.status == 200, (
        obs.metadata_fetch and obs.metadata_fetch.describe()
    )
    assert isinstance(obs.metadata, list) and len(obs.metadata) == 1
    ds = f.read()
    expected = pydicom_json(ds, big_endian=not UID(f.transfer_syntax_uid).is_little_endian)
    if UID(f.transfer_syntax_uid).is_deflated:
        # Deflated objects have no byte offsets to serve pixel data from, so the archive
        # leaves Pixel Data out of their metadata rather than give a URI it cannot serve
        # (README, limitations).
        assert _PIXEL_DATA not in obs.metadata[0]
        expected.pop(_PIXEL_DATA, None)
    problems: list[str] = []
    bulk: set[str] = set()
    compare_json(obs.metadata[0], expected, "", problems, bulk)
    assert not problems, "\n".join(problems)
    prefix = obs.base + instance_path(f) + "/bulkdata/"
    assert all(uri.startswith(prefix) for uri in bulk), sorted(bulk)


def _element_at(ds: Dataset, path: str) -> RawDataElement | Any:
    """The element a bulkdata path names: '00880200/0/7FE00010' -> ds[0x00880200][0][...]."""
    parts = path.split("/")
    current: Any = ds
    for index, part in enumerate(parts):
        if index % 2:
            current = current[int(part)]
        else:
            with quiet():
                current = current[int(part, 16)]
            if index < len(parts) - 1:
                current = current.value
    return current


@pytest.mark.parametrize("label", VERIFIED)
def test_bulkdata(run: Run, label: str) -> None:
    """Every BulkDataURI (pixel data aside) serves exactly the element's value."""
    obs = verified(run, label)
    f = FILES[label]
    ds = f.read()
    prefix = obs.base + instance_path(f) + "/bulkdata/"
    problems = []
    for uri, fetched in sorted(obs.bulk.items()):
        if fetched.status != 200 or len(fetched.parts) != 1:
            problems.append(fetched.describe())
            continue
        elem = _element_at(ds, uri.removeprefix(prefix))
        with quiet():
            raw = bytes(elem.value) if isinstance(elem.value, bytes | bytearray) else None
        if raw is None:
            continue  # a non-binary VR (long text, numbers): the encoded value is compared above
        (part,) = fetched.parts
        syntax = media_type_params(part.content_type)[1].get("transfer-syntax")
        if syntax in LITTLE_ENDIAN_SYNTAXES and not UID(f.transfer_syntax_uid).is_little_endian:
            raw = _swap(raw, _WORD.get(elem.VR, 1))
        if (part.length, part.sha256) != (len(raw), hashlib.sha256(raw).hexdigest()):
            problems.append(
                f"{uri}: {part.length} bytes ({part.content_type}) differ from the "
                f"{len(raw)}-byte value of {elem.tag} {elem.VR}"
            )
    assert not problems, "\n".join(problems)


# --- WADO-RS frames --------------------------------------------------------------------------


@pytest.mark.parametrize("label", VERIFIED)
def test_frames(run: Run, label: str) -> None:
    obs = verified(run, label)
    f = FILES[label]
    ds = f.read()
    image = image_info(ds)
    if image is None:
        assert obs.frames == {}
        return
    expected_parts: list[bytes] | None = None
    if image.encapsulated:
        expected_parts = encapsulated_frames(ds, image.frames)
        assert len(expected_parts) == image.frames
    problems = []
    for number, fetched in sorted(obs.frames.items()):
        if fetched.status != 200 or len(fetched.parts) != 1:
            problems.append(fetched.describe() + f" ({len(fetched.parts)} parts)")
            continue
        (part,) = fetched.parts
        media_type, params = media_type_params(part.content_type)
        syntax = params.get("transfer-syntax")
        if expected_parts is not None:
            expected = expected_parts[number - 1]
            if syntax != f.transfer_syntax_uid:
                problems.append(
                    f"frame {number}: part {part.content_type!r} is not labelled "
                    f"with the stored syntax {f.transfer_syntax_uid}"
                )
        else:
            if media_type != "application/octet-stream":
                problems.append(f"frame {number}: native frame sent as {part.content_type!r}")
            if syntax not in LITTLE_ENDIAN_SYNTAXES | {BIG_ENDIAN_SYNTAX}:
                problems.append(
                    f"frame {number}: part {part.content_type!r} names no native syntax"
                )
            little = syntax != BIG_ENDIAN_SYNTAX
            expected = native_frame(ds, number - 1, little_endian=little)
            assert len(expected) == native_frame_length(ds)
        if (part.length, part.sha256) != (len(expected), hashlib.sha256(expected).hexdigest()):
            problems.append(
                f"frame {number}: {part.length} bytes labelled {part.content_type!r}, "
                f"expected {len(expected)} bytes"
                + (" (same length, different content)" if part.length == len(expected) else "")
            )
    after = obs.frame_after_last
    if after is None or after.status != 404:
        problems.append(f"frame {image.frames + 1} should be 404: {after and after.describe()}")
    assert not problems, "\n".join(problems)


# --- decoded retrieval ------------------------------------------------------------------------

IMAGES = [label for label in VERIFIED if image_info(FILES[label].read()) is not None]
# What a refusal to decode must say (besides naming the instance or frame).
_CANNOT_DECODE = r"cannot be (decoded|converted|rendered|read|sent)"


def assert_decoded(obs: Observation, judged: Judged | None) -> None:
    """200 with the right content; for NOT_DECODABLE, a 501 or 406 that says why."""
    label = obs.label
    assert judged is not None, f"{label}: no decoded retrieval was requested"
    if label in NOT_DECODABLE:
        assert judged.status in (406, 501), (
            f"{label} cannot be decoded ({NOT_DECODABLE[label]}): expected 501 or 406\n"
            + judged.describe()
        )
        assert re.search(_CANNOT_DECODE, judged.error, re.IGNORECASE), (
            f"the JSON error does not say what cannot be done: {judged.describe()}"
        )
        return
    assert judged.status == 200, judged.describe()
    because = f"\n(pydicom: {obs.pydicom_error})" if obs.pydicom_error else ""
    assert not judged.problems, judged.describe() + because


def test_not_decodable_are_images() -> None:
    assert set(NOT_DECODABLE) | set(DECODED_BY_DCMTK) <= set(IMAGES)
    assert len(IMAGES) > 140  # pydicom 3.0 and pydicom-data hold about 150 distinct images


@pytest.mark.parametrize("label", sorted(NOT_DECODABLE) + sorted(DECODED_BY_DCMTK))
def test_not_decodable_defeats_pydicom(label: str) -> None:
    """Only data pydicom cannot decode either may be refused; the converse (everything else
    decodes) is checked by the per-file tests below, which compare with pydicom's decoding."""
    with pytest.raises(Exception):  # noqa: B017 (whatever the decoder raises)
        decoded_pixels(FILES[label].read())


@pytest.mark.parametrize("label", IMAGES)
def test_as_explicit_vr_little_endian(run: Run, label: str) -> None:
    obs = verified(run, label)
    assert_decoded(obs, obs.explicit_vr_little_endian)


@pytest.mark.parametrize("label", IMAGES)
def test_frames_decompressed(run: Run, label: str) -> None:
    obs = verified(run, label)
    assert_decoded(obs, obs.frames_decompressed)


@pytest.mark.parametrize("label", IMAGES)
def test_rendered_png(run: Run, label: str) -> None:
    obs = verified(run, label)
    assert_decoded(obs, obs.rendered.get("image/png"))


@pytest.mark.parametrize("label", IMAGES)
def test_rendered_jpeg(run: Run, label: str) -> None:
    obs = verified(run, label)
    assert_decoded(obs, obs.rendered.get("image/jpeg"))


@pytest.mark.parametrize("media_type", list(RENDERED_FORMATS))
def test_rendered_alike_for_same_pixels(run: Run, media_type: str) -> None:
    """Encodings of one instance with the same decoded pixels (MR_small.dcm, its big-endian,
    RLE, JPEG-LS ... variants) render to the same picture: what the rendering shows must not
    depend on how the pixels were stored (byte order of the data and of its LUTs, planar
    configuration, compression)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for label in IMAGES:
        obs = verified(run, label)
        judged = obs.rendered.get(media_type)
        if obs.first_frame and judged is not None and judged.shown:
            key = (str(FILES[label].sop_instance_uid), obs.first_frame)
            groups.setdefault(key, {})[label] = judged.shown
    assert sum(len(g) > 1 for g in groups.values()) >= 15  # the corpus has many such groups
    unlike = [
        ", ".join(f"{label} ({shown[:8]})" for label, shown in sorted(group.items()))
        for group in groups.values()
        if len(set(group.values())) > 1
    ]
    assert not unlike, "rendered differently:\n" + "\n".join(unlike)


# --- QIDO-RS ---------------------------------------------------------------------------------


def test_qido_studies_counts(run: Run) -> None:
    """/studies on "main" lists each stored study once with its exact instance count."""
    expected: Counter[str] = Counter()
    for label, outcome in OUTCOMES.items():
        if outcome is Outcome.STORED:
            expected[str(FILES[label].study_instance_uid)] += 1
    assert run.studies_status == 200, run.studies
    found = [_value(s, "0020000D") for s in run.studies]
    assert sorted(found) == sorted(expected), "each stored study exactly once"
    counts = {_value(s, "0020000D"): _value(s, "00201208") for s in run.studies}
    assert counts == dict(expected)
