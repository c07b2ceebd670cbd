"""Store damaged files into a running server, then ask every retrieval route for each one.

Used by the regression test (`tests/e2e/test_damaged_serving.py`, a fixed seed and a small
budget) and by `load-tests/damaged_files.py` (the full 3,000). What is checked of each answer:
no 5xx, and every 200 body complete: a multipart body parses to its closing boundary with
every DICOM part readable by pydicom, an application/dicom body is read by pydicom, an image
opens with Pillow, a ZIP's members pass their CRC check.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import httpx
import pydicom
from PIL import Image

from tests.e2e.corpus import quiet
from tests.e2e.multipart import encode_multipart, parse_multipart
from tests.support.mutations import Mutant

EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
_DICOM_PARTS = 'multipart/related; type="application/dicom"'
_FRAME_PARTS = 'multipart/related; type="application/octet-stream"'


# 501: an object that cannot be decoded or rendered; 503: the imaging queue is full.
_CLEAR_REFUSALS = (501, 503)


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sop: str


@dataclass(frozen=True)
class Route:
    name: str
    path: Callable[[Stored], str]  # after /dicomweb
    accept: str
    check: Callable[[httpx.Response], None]
    series_level: bool = False  # asked once per series, not per instance


@dataclass
class Report:
    stored: int = 0
    refused: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"stored {self.stored}, refused {self.refused}"]
        routes = sorted({name for name, _ in self.statuses})
        for name in routes:
            counts = {s: n for (r, s), n in sorted(self.statuses.items()) if r == name}
            lines.append(f"  {name}: " + ", ".join(f"{s}: {n}" for s, n in counts.items()))
        return "\n".join(lines)


# warnings.catch_warnings (in quiet()) changes process-wide state: one reader at a time.
_QUIET = threading.Lock()


def _read_dicom(data: bytes) -> None:
    with _QUIET, quiet():
        ds = pydicom.dcmread(io.BytesIO(data))
        # A file cut short only shows when its last elements are read.
        for elem in ds.iterall():
            _ = elem.value


def _dicom_parts(response: httpx.Response) -> None:
    parts = parse_multipart(response.headers["content-type"], response.content)
    if not parts:
        raise ValueError("no parts")
    for part in parts:
        length = part.headers.get("content-length")
        if length is not None and int(length) != len(part.body):
            raise ValueError(f"part of {len(part.body)} bytes says Content-Length {length}")
        _read_dicom(part.body)


def _frame_parts(response: httpx.Response) -> None:
    if not parse_multipart(response.headers["content-type"], response.content):
        raise ValueError("no parts")


def _single_dicom(response: httpx.Response) -> None:
    _read_dicom(response.content)


def _image(response: httpx.Response) -> None:
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()


def _zip(response: httpx.Response) -> None:
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its CRC")
        for name in archive.namelist():
            if name.endswith(".dcm") or "DICOMDIR" in name:
                _read_dicom(archive.read(name))


def _instance(s: Stored) -> str:
    return f"/studies/{s.study}/series/{s.series}/instances/{s.sop}"


def _series(s: Stored) -> str:
    return f"/studies/{s.study}/series/{s.series}"


def _uri(s: Stored, extra: str) -> str:
    return (
        f"/wado?requestType=WADO&studyUID={s.study}&seriesUID={s.series}&objectUID={s.sop}{extra}"
    )


ROUTES: tuple[Route, ...] = (
    Route("instance as stored", _instance, _DICOM_PARTS, _dicom_parts),
    Route(
        "instance transcoded (explicit LE)",
        _instance,
        f"{_DICOM_PARTS}; transfer-syntax={EXPLICIT_LE}",
        _dicom_parts,
    ),
    Route(
        "instance transcoded (RLE)",
        _instance,
        f"{_DICOM_PARTS}; transfer-syntax={RLE}",
        _dicom_parts,
    ),
    Route(
        "single part transcoded (JPEG-LS)",
        _instance,
        f"application/dicom; transfer-syntax={JPEG_LS_LOSSLESS}",
        _single_dicom,
    ),
    Route(
        "series transcoded (explicit LE)",
        _series,
        f"{_DICOM_PARTS}; transfer-syntax={EXPLICIT_LE}",
        _dicom_parts,
        series_level=True,
    ),
    Route("series zip", _series, "application/zip", _zip, series_level=True),
    Route(
        "metadata", lambda s: _instance(s) + "/metadata", "application/dicom+json", lambda r: None
    ),
    Route(
        "frame 1 as stored",
        lambda s: _instance(s) + "/frames/1",
        f"{_FRAME_PARTS}; transfer-syntax=*",
        _frame_parts,
    ),
    Route(
        "frame 1 transcoded",
        lambda s: _instance(s) + "/frames/1",
        f"{_FRAME_PARTS}; transfer-syntax={EXPLICIT_LE}",
        _frame_parts,
    ),
    Route("rendered", lambda s: _instance(s) + "/rendered", "image/jpeg", _image),
    Route("frame 1 rendered", lambda s: _instance(s) + "/frames/1/rendered", "image/png", _image),
    Route("thumbnail", lambda s: _instance(s) + "/thumbnail", "image/jpeg", _image),
    Route(
        "series thumbnail",
        lambda s: _series(s) + "/thumbnail",
        "image/png",
        _image,
        series_level=True,
    ),
    Route(
        "WADO-URI transcoded",
        lambda s: _uri(s, f"&contentType=application/dicom&transferSyntax={EXPLICIT_LE}"),
        "*/*",
        _single_dicom,
    ),
    Route("WADO-URI jpeg", lambda s: _uri(s, "&contentType=image/jpeg"), "*/*", _image),
)


def store(
    client: httpx.Client, mutants: Iterable[Mutant], group: int = 4
) -> tuple[list[Stored], int]:
    """STOW the mutants, `group` to a request (to /studies: a request is just a batch); the
    stored instances, and how many were refused."""
    stored: list[Stored] = []
    refused = 0
    pending = iter(mutants)
    while batch := list(islice(pending, group)):
        content_type, body = encode_multipart([m.data for m in batch])
        response = client.post("/studies", content=body, headers={"content-type": content_type})
        if response.status_code >= 500:
            raise AssertionError(f"STOW answered {response.status_code}: {response.text[:300]}")
        answer = response.json() if response.content else {}
        found = answer.get("00081199", {}).get("Value", [])
        for item in found:
            url = item["00081190"]["Value"][0]
            parts = url.split("/")
            stored.append(Stored(parts[-5], parts[-3], parts[-1]))
        refused += len(batch) - len(found)
    return stored, refused


def _ask(client: httpx.Client, route: Route, item: Stored) -> tuple[str, int, str | None]:
    try:
        response = client.get(route.path(item), headers={"accept": route.accept})
    except httpx.HTTPError as exc:  # a body that broke off, or a dropped connection
        return route.name, 0, f"{route.name} {route.path(item)}: {type(exc).__name__}: {exc}"
    status = response.status_code
    problem = None
    if status >= 500 and status not in _CLEAR_REFUSALS:
        problem = f"{route.name} {route.path(item)}: {status} {response.text[:300]}"
    elif status == 200:
        try:
            route.check(response)
        except Exception as exc:  # any failure to read the body is the finding
            problem = f"{route.name} {route.path(item)}: incomplete 200 body: {exc!r}"
    return route.name, status, problem


def _requests(stored: Sequence[Stored]) -> Iterator[tuple[Route, Stored]]:
    series_seen: set[tuple[str, str]] = set()
    for item in stored:
        first_of_series = (item.study, item.series) not in series_seen
        series_seen.add((item.study, item.series))
        for route in ROUTES:
            if not route.series_level or first_of_series:
                yield route, item


def check_routes(base_url: str, stored: Sequence[Stored], report: Report, threads: int = 4) -> None:
    """Ask every route for every stored instance, `threads` requests in flight."""
    with (
        httpx.Client(base_url=f"{base_url}/dicomweb", timeout=120) as client,
        ThreadPoolExecutor(threads) as pool,
    ):
        for name, status, problem in pool.map(lambda pair: _ask(client, *pair), _requests(stored)):
            report.statuses[(name, status)] += 1
            if problem:
                report.failures.append(problem)


def run(base_url: str, mutants: Iterable[Mutant], threads: int = 4) -> Report:
    report = Report()
    with httpx.Client(base_url=f"{base_url}/dicomweb", timeout=120) as client:
        stored, report.refused = store(client, mutants)
    report.stored = len(stored)
    check_routes(base_url, stored, report, threads)
    return report
