#!/usr/bin/env python3
"""Viewer-grade retrieval, ours vs Orthanc: rendered images, thumbnails, frames decompressed and
transcoded, whole instances transcoded, and WADO-URI, on the same generated CT corpus.

For each server in turn (a fresh `pacs serve`, a fresh Orthanc with the DICOMweb plugin; never
both at once) the corpus is stored with STOW-RS, then each phase sends `--requests` GETs with
`--concurrency` in flight:

1. rendered JPEG of an uncompressed instance (`/rendered?window=40,400,linear`);
2. the same of a compressed instance (decode + render);
3. frame 1 of a compressed instance as application/octet-stream (decompressed);
4. frame 1 of an uncompressed instance transcoded (`--target`: JPEG-LS lossless by default);
5. instance thumbnail (`/thumbnail`);
6. WADO-URI `contentType=image/jpeg`;
7. a compressed instance as a whole PS3.10 file in Explicit VR Little Endian.

The corpus is `--instances` CT-like slices (512x512, 12 bits stored in 16, air, fat, soft
tissue, lungs, liver and bone with a smooth texture and noise; every slice different), each
stored twice: uncompressed and compressed lossless (`--compressed`: JPEG-LS, encoded with
CharLS through imagecodecs, or JPEG 2000, encoded by pydicom with OpenJPEG). Every compressed
file is decoded back by pydicom (pylibjpeg) and compared with the source pixels before use.

Every response is checked after its phase (so that the checks do not take CPU from the server
while it is timed): images must be JPEG of the right size whose grey levels match the stored
pixels under the 40/400 window; frames must hold exactly the source pixels (compressed ones are
decoded); files must decode to the source pixels. A request Orthanc refuses (its first request
in the phase is not a 200) is reported as n/a with its words; wrong answers fail, and so does
any phase our server refuses or cannot run (a 500 or a 406 is a bug of ours, not a figure to
leave out): the exit status is then 1.

A phase that other work on the machine disturbed (it used more than a fifth of a CPU while the
phase was timed) is run again once the machine is quiet (`--retries`, `--quiet-wait`).

    .venv/bin/python load-tests/viewer_retrieval.py --instances 200 --rounds 3
    # JPEG 2000: Orthanc decodes it only with its GDCM plugin, which crashes it on JPEG-LS and
    # JPEG lossless output and on concurrent JPEG 2000 decompression; hence one at a time.
    .venv/bin/python load-tests/viewer_retrieval.py --orthanc-gdcm --compressed j2k --target j2k \
        --concurrency 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compare_orthanc as compare
import httpx
import imagecodecs
import numpy as np
import servers
import stow_qido_wado as workload
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    generate_uid,
)

ROWS = COLUMNS = 512
FRAME_SIZE = ROWS * COLUMNS * 2
INTERCEPT = -1024  # stored value = HU + 1024
WINDOW = (40, 400)  # soft tissue: the instances' VOI, and what rendered requests ask for
GDCM_PLUGIN = "/usr/share/orthanc/plugins/libOrthancGdcm.so"
JSON_ACCEPT = "application/dicom+json"
OURS = "ours"  # servers.pacs_server's name: the server whose every phase must run
# Mean absolute difference (grey levels) allowed between a returned image and the windowed
# source: JPEG at the servers' default quality stays near 1; a thumbnail is also resampled.
IMAGE_TOLERANCE = 4.0
THUMBNAIL_TOLERANCE = 12.0

Pixels = NDArray[np.uint16]


@dataclass(frozen=True)
class Codec:
    """A lossless transfer syntax: how the client encodes a corpus in it and decodes frames."""

    uid: UID
    media_type: str  # of its frames (PS3.18 Table 8.7.3-2)
    decode: Callable[[bytes], NDArray[Any]]


CODECS = {
    "jls": Codec(JPEGLSLossless, "image/jls", imagecodecs.jpegls_decode),
    "j2k": Codec(JPEG2000Lossless, "image/jp2", imagecodecs.jpeg2k_decode),
    "jpeg-lossless": Codec(JPEGLosslessSV1, "image/jpeg", imagecodecs.ljpeg_decode),
}
COMPRESSED_SOURCES = ("jls", "j2k")  # what the corpus can be stored in


# -- corpus ---------------------------------------------------------------------------------


def ct_slice(index: int, count: int) -> Pixels:
    """A CT-like axial slice in stored values; organs change size along the series."""
    z = index / max(count - 1, 1)
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float32)

    def inside(cx: float, cy: float, rx: float, ry: float) -> NDArray[np.bool_]:
        mask: NDArray[np.bool_] = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
        return mask

    hu = np.full((ROWS, COLUMNS), -1000.0, dtype=np.float32)
    body = inside(256, 262, 215 + 10 * math.sin(3 * z), 160)
    hu[body] = -100  # subcutaneous fat
    hu[inside(256, 262, 198 + 10 * math.sin(3 * z), 143)] = 40  # soft tissue
    lung = 35 + 28 * math.sin(math.pi * z)
    hu[inside(176, 240, lung, 1.5 * lung) | inside(336, 240, lung, 1.5 * lung)] = -850
    hu[inside(300, 318, 70 * (1 - z) + 10, 40 * (1 - z) + 8)] = 60  # liver
    hu[inside(256, 372, 24, 22)] = 700  # vertebra
    texture = 25 * np.sin(x / 37 + 3 * z) * np.cos(y / 29)
    hu[body] += texture[body]
    hu += np.random.default_rng(index).normal(0, 12, hu.shape).astype(np.float32)
    return np.clip(hu - INTERCEPT, 0, 4095).astype(np.uint16)


def slice_dataset(
    pixels: Pixels, study: str, series: str, number: int, series_number: int
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = "VIEWER^BENCH", "VB-1"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "VB"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", series_number, number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness, ds.PixelSpacing = 1.0, [0.7, 0.7]
    ds.ImagePositionPatient = [-179.2, -179.2, -1.0 * number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = WINDOW
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def compress(ds: Dataset, pixels: Pixels, codec: str) -> bytes:
    """The dataset with its pixels in `codec`, checked by decoding the file back with pydicom
    (pylibjpeg: libjpeg for JPEG-LS, i.e. not the CharLS that encoded it)."""
    if codec == "jls":
        ds.PixelData = encapsulate([bytes(imagecodecs.jpegls_encode(pixels))])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    else:
        # Keep the SOP Instance UID: pydicom makes a new one by default.
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    data = to_bytes(ds)
    decoded = dcmread(io.BytesIO(data)).pixel_array
    if not np.array_equal(decoded, pixels):
        raise RuntimeError(f"the {codec} encoding of {ds.SOPInstanceUID} does not decode back")
    return data


@dataclass(frozen=True)
class Slice:
    """One slice stored twice: uncompressed (`native`) and compressed lossless."""

    native: workload.Instance
    compressed: workload.Instance

    @property
    def frame(self) -> bytes:
        """The uncompressed frame: Pixel Data is the last element of the native file."""
        return self.native.data[-FRAME_SIZE:]

    @property
    def pixels(self) -> Pixels:
        return np.frombuffer(self.frame, dtype="<u2").reshape(ROWS, COLUMNS)


def generate(count: int, studies: int, codec: str) -> list[Slice]:
    t0 = time.perf_counter()
    study_uids = [generate_uid() for _ in range(studies)]
    series_uids = {s: (generate_uid(), generate_uid()) for s in study_uids}
    corpus = []
    for index in range(count):
        study = study_uids[index % studies]
        native_series, compressed_series = series_uids[study]
        pixels = ct_slice(index, count)
        number = index // studies + 1
        native = slice_dataset(pixels, study, native_series, number, 1)
        native_data = to_bytes(native)
        assert native_data.endswith(pixels.tobytes())
        packed = slice_dataset(pixels, study, compressed_series, number, 2)
        packed_data = compress(packed, pixels, codec)
        corpus.append(
            Slice(
                workload.Instance(study, native_series, native.SOPInstanceUID, native_data),
                workload.Instance(study, compressed_series, packed.SOPInstanceUID, packed_data),
            )
        )
    size = sum(len(s.native.data) for s in corpus) / 1e6
    packed_size = sum(len(s.compressed.data) for s in corpus) / 1e6
    print(
        f"generated {count} slices {ROWS}x{COLUMNS} 16-bit over {studies} studies: "
        f"{size:.0f} MB uncompressed + {packed_size:.1f} MB {CODECS[codec].uid.name} "
        f"(ratio {size / packed_size:.1f}:1), checked, in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return corpus


# -- checks ---------------------------------------------------------------------------------

# A check raises workload.Failure for a wrong answer, or returns a remark (a defect that does
# not make the answer unusable, e.g. a wrong Content-Type on a right image).
Check = Callable[[httpx.Response], str | None]


def windowed(pixels: Pixels) -> NDArray[np.float32]:
    """Grey levels 0-255 of the stored pixels under the linear VOI window (PS3.3 C.11.2.1.2.1)."""
    center, width = WINDOW
    values = pixels.astype(np.float32) + INTERCEPT
    grey: NDArray[np.float32] = np.clip(
        ((values - (center - 0.5)) / (width - 1) + 0.5) * 255, 0, 255
    )
    return grey


def media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def check_image(item: Slice, *, thumbnail: bool = False) -> Check:
    def check(response: httpx.Response) -> str | None:
        try:
            image = Image.open(io.BytesIO(response.content))
            image.load()
        except OSError as exc:
            raise workload.Failure(f"the body is not a decodable image: {exc}") from None
        if image.format != "JPEG" or image.mode != "L":
            raise workload.Failure(f"a {image.format} {image.mode} image, not a grey JPEG")
        expected = windowed(item.pixels)
        if thumbnail:
            if max(image.size) > ROWS // 2:
                raise workload.Failure(f"a thumbnail of {image.size[0]}x{image.size[1]}")
            small = Image.fromarray(expected, mode="F").resize(image.size, Image.Resampling.BOX)
            expected = np.asarray(small, dtype=np.float32)
        elif image.size != (COLUMNS, ROWS):
            raise workload.Failure(f"an image of {image.size[0]}x{image.size[1]}")
        error = float(np.abs(np.asarray(image, dtype=np.float32) - expected).mean())
        if error > (THUMBNAIL_TOLERANCE if thumbnail else IMAGE_TOLERANCE):
            raise workload.Failure(
                f"the image is not the windowed slice: {error:.1f} grey levels off on average"
            )
        declared = media_type(response.headers.get("content-type", ""))
        return None if declared == "image/jpeg" else f"JPEG labelled Content-Type: {declared}"

    return check


def single_part(response: httpx.Response) -> tuple[str, bytes]:
    """The media type and payload of a multipart/related body holding exactly one part."""
    header = response.headers.get("content-type", "")
    found = re.search(r'boundary="?([^";]+)"?', header)
    if media_type(header) != "multipart/related" or not found:
        raise workload.Failure(f"not a multipart/related answer: Content-Type {header!r}")
    parts = response.content.split(b"--" + found.group(1).encode())
    if len(parts) != 3 or not parts[2].startswith(b"--"):
        raise workload.Failure(f"{len(parts) - 2} parts, not 1")
    head, _, payload = parts[1].partition(b"\r\n\r\n")
    if not payload.endswith(b"\r\n"):
        raise workload.Failure("a part not followed by CRLF and the delimiter")
    part_type = next(
        (
            line.split(b":", 1)[1].decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-type:")
        ),
        "",
    )
    return media_type(part_type), payload[:-2]


def check_frame(item: Slice) -> Check:
    def check(response: httpx.Response) -> str | None:
        part_type, payload = single_part(response)
        if part_type != "application/octet-stream":
            raise workload.Failure(f"a {part_type} part, not application/octet-stream")
        if payload != item.frame:
            raise workload.Failure(f"{len(payload)} bytes that are not the source frame")
        return None

    return check


def check_encoded_frame(item: Slice, codec: Codec) -> Check:
    def check(response: httpx.Response) -> str | None:
        part_type, payload = single_part(response)
        if part_type != codec.media_type:
            raise workload.Failure(f"a {part_type} part, not {codec.media_type}")
        try:
            decoded = codec.decode(payload)
        except Exception as exc:  # imagecodecs raises its own error class per codec
            raise workload.Failure(f"the {part_type} frame does not decode: {exc}") from None
        if not np.array_equal(decoded, item.pixels):
            raise workload.Failure(f"the {part_type} frame does not decode to the source pixels")
        return None

    return check


def check_instance(item: Slice, syntax: str) -> Check:
    def check(response: httpx.Response) -> str | None:
        part_type, payload = single_part(response)
        if part_type != "application/dicom":
            raise workload.Failure(f"a {part_type} part, not application/dicom")
        ds = dcmread(io.BytesIO(payload))
        if ds.file_meta.TransferSyntaxUID != syntax:
            raise workload.Failure(f"a file in {ds.file_meta.TransferSyntaxUID}, not {syntax}")
        if not np.array_equal(ds.pixel_array, item.pixels):
            raise workload.Failure("the file's pixels are not the source pixels")
        return None

    return check


# -- phases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Get:
    url: str
    accept: str
    check: Check


@dataclass(frozen=True)
class Urls:
    """Where a server answers: its DICOMweb root and its origin (for WADO-URI at /wado)."""

    root: str
    origin: str

    @classmethod
    def of(cls, server: servers.Server) -> Urls:
        parts = urlsplit(server.url)
        return cls(server.url, f"{parts.scheme}://{parts.netloc}")

    def instance(self, inst: workload.Instance) -> str:
        return f"{self.root}/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str
    request: Callable[[Urls, Slice, Codec], Get]


def _rendered(which: str) -> Callable[[Urls, Slice, Codec], Get]:
    def request(urls: Urls, item: Slice, _: Codec) -> Get:
        # The window is asked for explicitly: without it Orthanc's DICOMweb 1.7 stretches the
        # full pixel range instead of applying the stored VOI window. With it, both servers
        # do the same work (and here produce byte-identical JPEGs).
        center, width = WINDOW
        inst = item.native if which == "native" else item.compressed
        url = f"{urls.instance(inst)}/rendered?window={center},{width},linear"
        return Get(url, "image/jpeg", check_image(item))

    return request


def _decompressed(urls: Urls, item: Slice, _: Codec) -> Get:
    accept = 'multipart/related; type="application/octet-stream"'
    return Get(f"{urls.instance(item.compressed)}/frames/1", accept, check_frame(item))


def _transcoded(urls: Urls, item: Slice, target: Codec) -> Get:
    accept = f'multipart/related; type="{target.media_type}"; transfer-syntax={target.uid}'
    url = f"{urls.instance(item.native)}/frames/1"
    return Get(url, accept, check_encoded_frame(item, target))


def _thumbnail(urls: Urls, item: Slice, _: Codec) -> Get:
    return Get(
        f"{urls.instance(item.native)}/thumbnail", "image/jpeg", check_image(item, thumbnail=True)
    )


def _wado_uri(urls: Urls, item: Slice, _: Codec) -> Get:
    inst = item.native
    # Written out, not built from a dict: Orthanc 1.10 does not percent-decode the query, and
    # httpx would send image%2Fjpeg. The stored VOI window applies (both servers use it).
    url = (
        f"{urls.origin}/wado?requestType=WADO&studyUID={inst.study}&seriesUID={inst.series}"
        f"&objectUID={inst.sop}&contentType=image/jpeg"
    )
    return Get(url, "*/*", check_image(item))


def _instance_decompressed(urls: Urls, item: Slice, _: Codec) -> Get:
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    )
    return Get(urls.instance(item.compressed), accept, check_instance(item, ExplicitVRLittleEndian))


MEASURES = [
    Measure("rendered", "1 rendered JPEG, uncompressed", "img", _rendered("native")),
    Measure("rendered_compressed", "2 rendered JPEG, compressed", "img", _rendered("compressed")),
    Measure("decompressed", "3 frame decompressed", "frame", _decompressed),
    Measure("transcoded", "4 frame transcoded", "frame", _transcoded),
    Measure("thumbnail", "5 thumbnail", "img", _thumbnail),
    Measure("wado_uri", "6 WADO-URI JPEG", "img", _wado_uri),
    Measure("instance", "7 instance decompressed", "inst", _instance_decompressed),
]


@dataclass
class Result:
    """One phase on one server in one round."""

    key: str
    status: str  # "ok", "n/a" (Orthanc refused) or "FAILED" (wrong answers, refused by ours, died)
    reason: str = ""
    phase: workload.Phase | None = None
    remarks: dict[str, int] = field(default_factory=dict)  # remark -> responses
    # CPU seconds the rest of the machine used while the phase was timed (other work competing).
    foreign_cpu: float = 0.0
    attempts: int = 1  # a phase disturbed by other work is run again (--retries)

    def figures(self) -> dict[str, float]:
        phase = self.phase
        if self.status != "ok" or phase is None:
            return {k: float("nan") for k in ("p50", "p95", "rate", "cpu")}
        cpu = phase.server_cpu / phase.ok * 1000 if phase.server_cpu is not None else math.nan
        return {
            "p50": phase.percentile(0.5),
            "p95": phase.percentile(0.95),
            "rate": phase.rate,
            "cpu": cpu,
        }


def _refusal(response: httpx.Response) -> str:
    """The status and the server's own words (Orthanc answers JSON with Message/Details)."""
    text = " ".join(response.text.split())
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        words = [str(body[k]) for k in ("Message", "Details", "error", "detail") if k in body]
        text = "; ".join(words) or text
    return f"HTTP {response.status_code}: {text[:300]}"


def _validate(get: Get, response: httpx.Response, result: Result) -> str | None:
    """A failure message for a wrong answer, else None (remarks are counted)."""
    try:
        remark = get.check(response)
    except workload.Failure as exc:
        return str(exc)
    except Exception as exc:  # a body that breaks a decoder is a wrong answer too
        return f"{type(exc).__name__}: {exc}"
    if remark:
        result.remarks[remark] = result.remarks.get(remark, 0) + 1
    return None


async def measure(
    client: httpx.AsyncClient,
    server: servers.Server,
    spec: Measure,
    gets: Sequence[Get],
    concurrency: int,
) -> Result:
    result = Result(spec.key, "ok")
    # An untimed first request: refusals are found here (n/a), and first-use costs (codec
    # imports, caches) stay out of the figures.
    try:
        first = await client.get(gets[0].url, headers={"Accept": gets[0].accept})
    except httpx.TransportError as exc:
        return Result(spec.key, "FAILED", f"{type(exc).__name__} {exc}; {_exit(server)}")
    if first.status_code != 200:
        return Result(spec.key, _not_done(server), _refusal(first))
    wrong = _validate(gets[0], first, result)
    if wrong:
        return Result(spec.key, "FAILED", f"first answer wrong: {wrong}")

    received: list[tuple[Get, httpx.Response]] = []

    def job(get: Get) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            response = await client.get(get.url, headers={"Accept": get.accept})
            workload.check(response, f"GET {get.url}")
            received.append((get, response))
            return len(response.content)

        return run

    phase = workload.Phase(spec.key, spec.label, unit=spec.unit)
    busy0, own0, cpu0 = servers.busy_seconds(), servers.own_seconds(), server.cpu_seconds()
    result.phase = await workload.run_phase(
        phase, [job(g) for g in gets], concurrency, server.cpu_seconds
    )
    used = servers.own_seconds() - own0 + (server.cpu_seconds() - cpu0)
    result.foreign_cpu = max(0.0, servers.busy_seconds() - busy0 - used)
    for get, response in received:
        wrong = _validate(get, response, result)
        if wrong:
            phase.errors.append(f"GET {get.url}: {wrong}")
    if phase.errors:
        result.status = "FAILED"
        result.reason = f"{len(phase.errors)}/{len(gets)} wrong or failed, first: {phase.errors[0]}"
        if not server.alive():
            result.reason = f"{_exit(server)}; {result.reason}"
    return result


def _not_done(server: servers.Server) -> str:
    """The status of a phase a server refused or could not run: n/a for Orthanc (a feature it
    lacks leaves a figure out), a failure for ours, which serves every phase."""
    return "FAILED" if server.name == OURS else "n/a"


def _exit(server: servers.Server) -> str:
    code = server.process.poll()
    if code is None:
        return "server still running"
    return f"server exited with {'signal ' + str(-code) if code < 0 else 'code ' + str(code)}"


async def upload(
    client: httpx.AsyncClient, server: servers.Server, corpus: Sequence[Slice], concurrency: int
) -> workload.Phase:
    def job(inst: workload.Instance) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            content_type, body = workload.multipart(inst.data)
            response = await client.post(
                f"{server.url}/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": JSON_ACCEPT},
            )
            workload.check(response, f"STOW {inst.sop}")
            return len(inst.data)

        return run

    instances = [i for s in corpus for i in (s.native, s.compressed)]
    phase = workload.Phase("stow", "STOW-RS corpus", unit="inst")
    await workload.run_phase(phase, [job(i) for i in instances], concurrency, server.cpu_seconds)
    if phase.errors:
        raise RuntimeError(f"{server.name} did not store the corpus: {phase.errors[0]}")
    # Every instance must be found, so that a 404 later on means a refused resource.
    series: dict[tuple[str, str], set[str]] = {}
    for inst in instances:
        series.setdefault((inst.study, inst.series), set()).add(inst.sop)
    for (study, uid), sops in series.items():
        response = await client.get(
            f"{server.url}/studies/{study}/series/{uid}/instances?limit={len(sops) + 10}",
            headers={"Accept": JSON_ACCEPT},
        )
        workload.check(response, f"QIDO instances of series {uid}")
        found = {r.get("00080018", {}).get("Value", [None])[0] for r in response.json()}
        if found != sops:
            raise RuntimeError(f"{server.name} lists {len(found & sops)}/{len(sops)} of {uid}")
    return phase


async def run_measures(
    server: servers.Server, corpus: Sequence[Slice], args: argparse.Namespace
) -> tuple[workload.Phase, dict[str, Result], float]:
    urls, target = Urls.of(server), CODECS[args.target]
    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"Accept-Encoding": "identity"}  # Orthanc gzips multipart answers otherwise
    results: dict[str, Result] = {}
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits, headers=headers) as client:
        stow = await upload(client, server, corpus, args.concurrency)
        rss_after_upload = float(server.peak_rss())
        for number, spec in enumerate(m for m in MEASURES if m.key in args.phases):
            if not server.alive():
                results[spec.key] = Result(spec.key, _not_done(server), f"not run: {_exit(server)}")
                continue
            order = random.Random(args.seed + number)
            items = [corpus[i % len(corpus)] for i in range(args.requests)]
            order.shuffle(items)
            gets = [spec.request(urls, item, target) for item in items]
            for attempt in range(args.retries + 1):
                result = await measure(client, server, spec, gets, args.concurrency)
                result.attempts = attempt + 1
                print(f"  {spec.label}: {describe(result)}", file=sys.stderr, flush=True)
                if not disturbed(result) or attempt == args.retries:
                    break
                # Other work on the machine competed with this phase: once it stops, again.
                await asyncio.to_thread(wait_for_quiet, args.quiet_wait)
            results[spec.key] = result
    return stow, results, rss_after_upload


def describe(result: Result) -> str:
    if result.status != "ok" or result.phase is None:
        return f"{result.status} ({result.reason})"
    f = result.figures()
    return (
        f"p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, {f['rate']:.1f} {result.phase.unit}/s, "
        f"server CPU {f['cpu']:.1f} ms/{result.phase.unit}, {result.phase.ok} checked; "
        f"rest of the machine {result.foreign_cpu:.1f} CPU s in {result.phase.seconds:.1f} s"
    )


def disturbed(result: Result) -> bool:
    """Whether other work took more than a fifth of a CPU while the phase was timed."""
    return result.phase is not None and result.foreign_cpu > 0.2 * result.phase.seconds


def wait_for_quiet(limit: float) -> None:
    """Wait (up to `limit` seconds) until the rest of the machine uses under a tenth of a CPU,
    so that a server is not measured while other work runs on a shared machine."""
    if limit <= 0:
        return
    deadline = time.monotonic() + limit
    while True:
        busy0, own0 = servers.busy_seconds(), servers.own_seconds()
        time.sleep(2.0)
        others = (servers.busy_seconds() - busy0 - (servers.own_seconds() - own0)) / 2.0
        if others < 0.1:
            return
        if time.monotonic() > deadline:
            print(f"machine still busy ({others:.2f} CPUs used by others)", file=sys.stderr)
            return


# -- servers, rounds, table -----------------------------------------------------------------


@dataclass
class Run:
    server: str
    round: int
    results: dict[str, Result]
    extra: dict[str, float]


@contextmanager
def orthanc(args: argparse.Namespace) -> Iterator[servers.Server]:
    """Orthanc with the DICOMweb plugin and, with --orthanc-gdcm, its GDCM plugin: Orthanc
    loads every plugin in a folder named in "Plugins", so both are linked into one."""
    if not args.orthanc_gdcm:
        with servers.orthanc_server(args.orthanc, args.plugin, keep=args.keep) as server:
            yield server
        return
    with tempfile.TemporaryDirectory(prefix="bench-plugins-") as folder:
        for plugin in (args.plugin, args.orthanc_gdcm):
            os.symlink(plugin, Path(folder) / Path(plugin).name)
        with servers.orthanc_server(args.orthanc, folder, keep=args.keep) as server:
            yield server


def run_one(
    name: str,
    start: Callable[[], AbstractContextManager[servers.Server]],
    corpus: Sequence[Slice],
    args: argparse.Namespace,
    number: int,
) -> Run:
    print(f"\n== round {number}: {name}", file=sys.stderr, flush=True)
    wait_for_quiet(args.quiet_wait)
    with start() as server:
        t0, busy0, own0, cpu0 = (
            time.perf_counter(),
            servers.busy_seconds(),
            servers.own_seconds(),
            server.cpu_seconds(),
        )
        stow, results, rss_after_upload = asyncio.run(run_measures(server, corpus, args))
        server_cpu, client_cpu = server.cpu_seconds() - cpu0, servers.own_seconds() - own0
        if math.isnan(server_cpu):  # the server died: its CPU time is gone with it
            server_cpu = 0.0
        extra = {
            "seconds": time.perf_counter() - t0,
            "stow_seconds": stow.seconds,
            "rss_after_upload": rss_after_upload,
            "peak_rss": float(server.peak_rss()) or math.nan,
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            # Whatever else ran on the machine meanwhile: it competed with the measurement.
            "foreign_cpu": max(0.0, servers.busy_seconds() - busy0 - server_cpu - client_cpu),
        }
        print(
            f"{name}: pid {server.pid}, STOW of the corpus {stow.seconds:.1f} s, peak RSS "
            f"{extra['rss_after_upload'] / 2**20:.0f} MiB after it, "
            f"{extra['peak_rss'] / 2**20:.0f} MiB at the end; CPU: server {server_cpu:.1f} s, "
            f"client {client_cpu:.1f} s, rest of the machine {extra['foreign_cpu']:.1f} s, "
            f"in {extra['seconds']:.1f} s",
            file=sys.stderr,
        )
    return Run(name, number, results, extra)


@dataclass(frozen=True)
class Figure:
    label: str
    better: str
    read: Callable[[Run], float | str]  # a number, or the status of a phase without one
    digits: int = 1


def _phase_figure(key: str, name: str) -> Callable[[Run], float | str]:
    def read(run: Run) -> float | str:
        result = run.results.get(key)
        if result is None:
            return "-"
        return result.figures()[name] if result.status == "ok" else result.status

    return read


def figures(args: argparse.Namespace) -> list[Figure]:
    found: list[Figure] = []
    for spec in MEASURES:
        if spec.key not in args.phases:
            continue
        label = spec.label
        if spec.key == "transcoded":
            label += f" to {args.target}"
        elif spec.key in ("rendered_compressed", "decompressed", "instance"):
            label += f" ({args.compressed})"
        found += [
            Figure(f"{label} p50 ms", "lower", _phase_figure(spec.key, "p50")),
            Figure(f"{label} p95 ms", "lower", _phase_figure(spec.key, "p95")),
            Figure(f"{label} {spec.unit}/s", "higher", _phase_figure(spec.key, "rate")),
            Figure(f"{label} CPU ms/{spec.unit}", "lower", _phase_figure(spec.key, "cpu")),
        ]
    return [
        *found,
        Figure(
            "peak RSS after STOW MiB", "lower", lambda r: r.extra["rss_after_upload"] / 2**20, 0
        ),
        Figure("peak RSS at the end MiB", "lower", lambda r: r.extra["peak_rss"] / 2**20, 0),
        Figure("CPU s outside server+client", "", lambda r: r.extra["foreign_cpu"]),
    ]


def cell(runs: Sequence[Run], server: str, figure: Figure) -> tuple[float, str]:
    """The median over the rounds in which the figure exists, and how to print it."""
    values = [figure.read(r) for r in runs if r.server == server]
    numbers = [v for v in values if isinstance(v, float) and not math.isnan(v)]
    if numbers and len(numbers) == len(values):
        median = statistics.median(numbers)
        return median, compare.fmt(median, figure.digits)
    statuses = sorted({v for v in values if isinstance(v, str)})
    return math.nan, "/".join(statuses) or "-"


def table(runs: Sequence[Run], args: argparse.Namespace) -> list[list[str]]:
    head = "ours" if args.rounds == 1 else f"ours (median of {args.rounds})"
    rows = [["figure", head, "Orthanc", "ours/Orthanc", "better"]]
    for figure in figures(args):
        (ours, ours_text), (theirs, theirs_text) = (
            cell(runs, "ours", figure),
            cell(runs, "Orthanc", figure),
        )
        ratio = "-"
        if figure.better and theirs and not math.isnan(ours) and not math.isnan(theirs):
            ratio = f"{ours / theirs:.2f}"
        rows.append([figure.label, ours_text, theirs_text, ratio, figure.better or "-"])
    return rows


def notes(runs: Sequence[Run]) -> list[str]:
    """Why a figure is missing, and remarks on answers that passed, once per server and phase."""
    labels = {m.key: m.label for m in MEASURES}
    found: dict[str, None] = {}
    for run in runs:
        for key, result in run.results.items():
            if result.status != "ok":
                found[f"{run.server}, {labels[key]}: {result.status}: {result.reason}"] = None
            for remark in result.remarks:
                found[f"{run.server}, {labels[key]}: {remark}"] = None
            if disturbed(result) and result.phase is not None:
                found[
                    f"{run.server} round {run.round}, {labels[key]}: the rest of the machine used "
                    f"{result.foreign_cpu:.1f} CPU s in the {result.phase.seconds:.1f} s timed"
                ] = None
    return list(found)


def order(args: argparse.Namespace) -> Iterator[tuple[int, list[str]]]:
    for number, names in compare.order(args.rounds, args.first):
        yield number, [n for n in names if n in args.servers]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=200, help="slices (each stored twice)")
    parser.add_argument("--studies", type=int, default=10, help="studies to spread them over")
    parser.add_argument("--rounds", type=int, default=1, help="fresh servers per round")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--requests", type=int, help="requests per phase (default --instances)")
    parser.add_argument("--compressed", choices=COMPRESSED_SOURCES, default="jls")
    parser.add_argument("--target", choices=sorted(CODECS), default="jls", help="phase 4")
    parser.add_argument(
        "--phases",
        default=",".join(m.key for m in MEASURES),
        help="comma-separated subset of: " + ", ".join(m.key for m in MEASURES),
    )
    parser.add_argument("--servers", default="ours,Orthanc", help="ours, Orthanc or both")
    parser.add_argument("--first", choices=["ours", "Orthanc"], default="ours")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    parser.add_argument("--orthanc", default=servers.ORTHANC_BINARY, help="Orthanc executable")
    parser.add_argument("--plugin", default=servers.DICOMWEB_PLUGIN, help="DICOMweb plugin .so")
    parser.add_argument(
        "--orthanc-gdcm",
        nargs="?",
        const=GDCM_PLUGIN,
        help=f"also load Orthanc's GDCM plugin (JPEG 2000), default path {GDCM_PLUGIN}",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each server, wait up to this many seconds for other work on the machine "
        "to stop (0: do not wait)",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="runs again a phase that other work disturbed"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    parser.add_argument("--json", type=Path, help="also write every figure of every run here")
    args = parser.parse_args(argv)
    args.requests = args.requests or args.instances
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.phases) - {m.key for m in MEASURES}
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if set(args.servers) - {"ours", "Orthanc"} or not args.servers:
        parser.error("--servers lists ours and/or Orthanc")
    if args.instances < 1 or args.studies < 1 or args.concurrency < 1:
        parser.error("--instances, --studies and --concurrency must be at least 1")
    return args


def write_json(
    path: Path, args: argparse.Namespace, runs: Sequence[Run], rows: list[list[str]]
) -> None:
    path.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "args": {k: str(v) for k, v in vars(args).items()},
                "revision": servers.revision(),
                "orthanc": servers.orthanc_version(args.orthanc),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "table": rows,
                "notes": notes(runs),
                "runs": [
                    {
                        "server": r.server,
                        "round": r.round,
                        **r.extra,
                        "phases": {
                            key: {
                                "status": res.status,
                                "reason": res.reason,
                                **res.figures(),
                                "requests": len(res.phase.latencies) if res.phase else 0,
                                "ok": res.phase.ok if res.phase else 0,
                                "seconds": res.phase.seconds if res.phase else 0.0,
                                "bytes": res.phase.bytes if res.phase else 0,
                                "errors": res.phase.errors[:5] if res.phase else [],
                                "remarks": res.remarks,
                                "foreign_cpu": res.foreign_cpu,
                                "attempts": res.attempts,
                            }
                            for key, res in r.results.items()
                        },
                    }
                    for r in runs
                ],
            },
            indent=2,
            default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    starters: dict[str, Callable[[], AbstractContextManager[servers.Server]]] = {
        "ours": lambda: servers.pacs_server(args.pacs, keep=args.keep),
        "Orthanc": lambda: orthanc(args),
    }
    corpus = generate(args.instances, args.studies, args.compressed)
    runs = [
        run_one(name, starters[name], corpus, args, number)
        for number, names in order(args)
        for name in names
    ]
    gdcm = " + GDCM plugin" if args.orthanc_gdcm else ""
    print(
        f"\n{args.instances} slices {ROWS}x{COLUMNS} 16-bit, uncompressed and "
        f"{CODECS[args.compressed].uid.name}; {args.requests} requests per phase, "
        f"{args.concurrency} in flight; ours at {servers.revision()}, "
        f"{servers.orthanc_version(args.orthanc)}{gdcm}; {platform.node()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, client on the same machine\n"
    )
    rows = table(runs, args)
    compare.print_table(rows)
    found = notes(runs)
    if found:
        print("\n" + "\n".join(f"- {n}" for n in found))
    if args.json:
        write_json(args.json, args, runs, rows)
    failed = any(r.status == "FAILED" for run in runs for r in run.results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
