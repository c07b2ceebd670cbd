"""Downloads over HTTP against a running `pacs serve`: studies, series and instances as a ZIP
file (Accept: application/zip, optionally a PS3.10 file-set with a DICOMDIR), and byte ranges
(RFC 9110 14) of single-part instances and bulk data.
"""

from __future__ import annotations

import gc
import io
import re
import subprocess
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    DICOM,
    Stored,
    error_message,
    media_params,
    reuid_testdata,
    stored,
    stow_ok,
    token,
)
from tests.support.dcmtk import require_dcmtk
from tests.support.dicom_factory import make_file

ZIP = "application/zip"
OCTET = "application/octet-stream"
FILE_ID = re.compile(r"^DICOM/ST\d{6}/SE\d{6}/IM\d{6}$")


@dataclass
class Corpus:
    study: str
    series: list[str]
    instances: list[Stored]  # by series: 2 generated CT, then MR_small + MR_small_RLE, then SR
    other: Stored  # MR_small in a study of its own (for ranges)

    def in_series(self, series: str) -> list[Stored]:
        return [i for i in self.instances if i.series == series]


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    study = generate_uid()
    series = [str(generate_uid()) for _ in range(3)]
    patient = token()
    common = {"StudyInstanceUID": study, "PatientID": patient, "PatientName": "ZIP^TEST"}

    def load(name: str, series_uid: str) -> Stored:
        return stored(reuid_testdata(name, SeriesInstanceUID=series_uid, **common)[0])

    def generated(number: int) -> Stored:
        return stored(
            make_file(
                study=study,
                series=series[0],
                PatientID=patient,
                InstanceNumber=number,
                seed=number,
            )
        )

    instances = [
        generated(1),
        generated(2),
        load("MR_small.dcm", series[1]),
        load("MR_small_RLE.dcm", series[1]),
        load("test-SR.dcm", series[2]),
    ]
    other = stored(reuid_testdata("MR_small.dcm", PatientID=patient)[0])
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        stow_ok(http, [i.data for i in (*instances, other)])
    yield Corpus(study, series, instances, other)


def _zip(http: httpx.Client, url: str, **params: str) -> zipfile.ZipFile:
    response = http.get(url, headers={"Accept": ZIP}, params=params)
    assert response.status_code == 200, response.text
    assert media_params(response.headers["content-type"])[0] == ZIP
    disposition = response.headers.get("content-disposition", "")
    assert disposition.startswith("attachment"), disposition
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None  # every member's CRC is right
    return archive


def _by_name(instances: list[Stored]) -> dict[str, bytes]:
    return {f"{i.study}/{i.series}/{i.sop}.dcm": i.data for i in instances}


# --- ZIP --------------------------------------------------------------------------------------


def test_study_zip_holds_stored_files(http: httpx.Client, corpus: Corpus) -> None:
    archive = _zip(http, f"/studies/{corpus.study}")
    expected = _by_name(corpus.instances)
    assert sorted(archive.namelist()) == sorted(expected)
    for name, data in expected.items():
        assert archive.read(name) == data, name


def test_series_and_instance_zip(http: httpx.Client, corpus: Corpus) -> None:
    for series in corpus.series:
        archive = _zip(http, f"/studies/{corpus.study}/series/{series}")
        expected = _by_name(corpus.in_series(series))
        assert sorted(archive.namelist()) == sorted(expected)
        assert all(archive.read(n) == d for n, d in expected.items())
    instance = corpus.instances[3]
    archive = _zip(http, instance.path)
    assert archive.namelist() == list(_by_name([instance]))
    assert archive.read(archive.namelist()[0]) == instance.data


def test_dicomdir_false_is_the_plain_layout(http: httpx.Client, corpus: Corpus) -> None:
    archive = _zip(http, f"/studies/{corpus.study}/series/{corpus.series[1]}", dicomdir="false")
    assert sorted(archive.namelist()) == sorted(_by_name(corpus.in_series(corpus.series[1])))


@dataclass
class Record:
    """What a DICOMDIR says about one referenced instance."""

    sop: str
    study: str
    series: str
    patient: str
    path: Path


def _records(dicomdir: Path) -> list[Record]:
    """The instances a DICOMDIR references, read with pydicom's FileSet."""
    file_set = FileSet(pydicom.dcmread(dicomdir))
    found = [
        Record(i.SOPInstanceUID, i.StudyInstanceUID, i.SeriesInstanceUID, i.PatientID, Path(i.path))
        for i in file_set.find()
    ]
    # A FileSet stages writes in a TemporaryDirectory that warns when it is collected
    # without having been cleaned up; nothing was staged here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del file_set
        gc.collect()
    return found


def _file_set(http: httpx.Client, url: str, folder: Path) -> tuple[list[str], list[Record]]:
    """A study or series as a file-set: the ZIP's member names and the DICOMDIR's records."""
    archive = _zip(http, url, dicomdir="true")
    names = archive.namelist()
    assert "DICOMDIR" in names
    for name in names:
        assert name == "DICOMDIR" or FILE_ID.match(name), name
    archive.extractall(folder)
    return names, _records(folder / "DICOMDIR")


def test_dicomdir_file_set(http: httpx.Client, corpus: Corpus, tmp_path: Path) -> None:
    names, records = _file_set(http, f"/studies/{corpus.study}", tmp_path)
    files = [n for n in names if n != "DICOMDIR"]
    assert len(files) == len(corpus.instances)
    by_sop = {i.sop: i for i in corpus.instances}
    assert sorted(r.sop for r in records) == sorted(by_sop)
    for record in records:
        original = by_sop[record.sop]
        # The record's file is the stored file, byte for byte.
        assert record.path.read_bytes() == original.data
        assert record.study == corpus.study
        assert record.series == original.series
        assert record.patient == original.dataset.PatientID
    # One study folder; one series folder per series, holding only that series.
    folders: dict[str, set[str]] = {}
    for name in files:
        series = pydicom.dcmread(tmp_path / name, stop_before_pixels=True).SeriesInstanceUID
        folders.setdefault(name.rsplit("/", 1)[0], set()).add(series)
    assert len({f.split("/")[1] for f in folders}) == 1
    assert len(folders) == len(corpus.series)
    assert all(len(s) == 1 for s in folders.values())


def test_dicomdir_for_a_series(http: httpx.Client, corpus: Corpus, tmp_path: Path) -> None:
    series = corpus.series[1]
    _, records = _file_set(http, f"/studies/{corpus.study}/series/{series}", tmp_path)
    assert sorted(r.sop for r in records) == sorted(i.sop for i in corpus.in_series(series))


def test_dicomdir_reads_with_dcmdump(http: httpx.Client, corpus: Corpus, tmp_path: Path) -> None:
    require_dcmtk(("dcmdump",))  # a skip outside CI, a failure in CI (which installs DCMTK)
    _file_set(http, f"/studies/{corpus.study}", tmp_path)
    done = subprocess.run(
        ["dcmdump", str(tmp_path / "DICOMDIR")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "E:" not in done.stderr, done.stderr
    for instance in corpus.instances:
        assert instance.sop in done.stdout
    assert "(0004,1500)" in done.stdout  # ReferencedFileID


@pytest.mark.parametrize("flag", ["maybe", "2"])
def test_bad_dicomdir_flag_is_400(http: httpx.Client, corpus: Corpus, flag: str) -> None:
    response = http.get(
        f"/studies/{corpus.study}", headers={"Accept": ZIP}, params={"dicomdir": flag}
    )
    assert response.status_code == 400, response.text
    assert "dicomdir" in error_message(response)


def test_unknown_study_zip_is_404(http: httpx.Client) -> None:
    response = http.get(f"/studies/{generate_uid()}", headers={"Accept": ZIP})
    assert response.status_code == 404, response.text
    error_message(response)


# --- byte ranges: instances -------------------------------------------------------------------


def _get(http: httpx.Client, url: str, accept: str, **headers: str) -> httpx.Response:
    return http.get(url, headers={"Accept": accept, **headers})


def test_instance_without_range(http: httpx.Client, corpus: Corpus) -> None:
    response = _get(http, corpus.other.path, DICOM)
    assert response.status_code == 200, response.text
    assert response.content == corpus.other.data
    assert response.headers.get("accept-ranges") == "bytes"
    assert response.headers.get("etag", "").strip('W/"')


@pytest.mark.parametrize(
    ("spec", "piece"),
    [
        ("bytes=0-99", slice(0, 100)),
        ("bytes=128-131", slice(128, 132)),
        ("bytes=1000-", slice(1000, None)),
        ("bytes=-50", slice(-50, None)),
        ("bytes=0-", slice(0, None)),
        ("bytes=-999999999", slice(0, None)),  # a suffix longer than the file: all of it
        ("bytes=10-999999999", slice(10, None)),  # a last position past the end: cut there
    ],
)
def test_instance_range(http: httpx.Client, corpus: Corpus, spec: str, piece: slice) -> None:
    data = corpus.other.data
    total = len(data)
    expected = data[piece]
    first = total - len(expected) if piece.start is None or piece.start < 0 else piece.start
    response = _get(http, corpus.other.path, DICOM, Range=spec)
    assert response.status_code == 206, response.text
    assert response.content == expected
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{total}"
    assert int(response.headers["content-length"]) == len(expected)
    assert media_params(response.headers["content-type"])[0] == DICOM


@pytest.mark.parametrize("spec", ["bytes={total}-", "bytes={total}-{end}", "bytes=999999999-"])
def test_range_beyond_the_end_is_416(http: httpx.Client, corpus: Corpus, spec: str) -> None:
    total = len(corpus.other.data)
    response = _get(http, corpus.other.path, DICOM, Range=spec.format(total=total, end=total + 10))
    assert response.status_code == 416, response.text
    assert response.headers["content-range"] == f"bytes */{total}"


def test_if_range(http: httpx.Client, corpus: Corpus) -> None:
    etag = _get(http, corpus.other.path, DICOM).headers["etag"]
    matching = _get(http, corpus.other.path, DICOM, Range="bytes=0-9", **{"If-Range": etag})
    assert matching.status_code == 206
    assert matching.content == corpus.other.data[:10]
    stale = _get(http, corpus.other.path, DICOM, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == corpus.other.data


def test_etag_identifies_the_content(http: httpx.Client, corpus: Corpus) -> None:
    tags = {_get(http, i.path, DICOM).headers.get("etag") for i in corpus.instances[:3]}
    assert None not in tags
    assert len(tags) == 3
    again = _get(http, corpus.instances[0].path, DICOM).headers.get("etag")
    assert again in tags


# --- byte ranges: bulk data -------------------------------------------------------------------


@pytest.fixture
def pixel_uri(http: httpx.Client, corpus: Corpus) -> str:
    response = http.get(f"{corpus.other.path}/metadata")
    assert response.status_code == 200, response.text
    uri: str = response.json()[0]["7FE00010"]["BulkDataURI"]
    return uri


def test_bulkdata_without_range(pixel_uri: str, corpus: Corpus) -> None:
    response = httpx.get(pixel_uri, headers={"Accept": OCTET}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == corpus.other.dataset.PixelData
    assert response.headers.get("accept-ranges") == "bytes"


@pytest.mark.parametrize(
    ("spec", "piece"),
    [
        ("bytes=0-127", slice(0, 128)),
        ("bytes=4000-", slice(4000, None)),
        ("bytes=-64", slice(-64, None)),
    ],
)
def test_bulkdata_range(pixel_uri: str, corpus: Corpus, spec: str, piece: slice) -> None:
    pixels: bytes = corpus.other.dataset.PixelData
    total = len(pixels)
    expected = pixels[piece]
    first = total - len(expected) if piece.start < 0 else piece.start
    response = httpx.get(pixel_uri, headers={"Accept": OCTET, "Range": spec}, timeout=30)
    assert response.status_code == 206, response.text
    assert response.content == expected
    assert response.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{total}"


def test_bulkdata_range_beyond_the_end_is_416(pixel_uri: str, corpus: Corpus) -> None:
    total = len(corpus.other.dataset.PixelData)
    response = httpx.get(
        pixel_uri, headers={"Accept": OCTET, "Range": f"bytes={total}-"}, timeout=30
    )
    assert response.status_code == 416, response.text
    assert response.headers["content-range"] == f"bytes */{total}"
