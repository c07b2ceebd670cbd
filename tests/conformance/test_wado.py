"""WADO-RS (PS3.18 10.4) over HTTP against a running `pacs serve`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    DICOM,
    DICOM_JSON,
    EXPLICIT_VR_LE,
    Stored,
    error_message,
    parse_multipart,
    reuid_testdata,
    stow_ok,
    token,
)
from tests.support.dicom_factory import make_file
from tests.support.server import running_server

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@dataclass
class Corpus:
    study: str
    series: list[str]
    single: Stored  # series 0, one frame
    multi: Stored  # series 0, three frames
    other: Stored  # series 1
    j2k: Stored  # JPEG 2000, own study
    jpeg: Stored  # JPEG baseline RGB, own study

    @property
    def native(self) -> list[Stored]:
        return [self.single, self.multi, self.other]


@pytest.fixture(scope="module")
def corpus(server: str) -> Iterator[Corpus]:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    patient = token()

    def native(series_uid: str, number: int, **kw: Any) -> Stored:
        sop = generate_uid()
        data = make_file(
            study=study,
            series=series_uid,
            sop=sop,
            PatientID=patient,
            PatientName="WADO^TEST",
            InstanceNumber=number,
            **kw,
        )
        return Stored(study, series_uid, sop, data)

    single = native(series[0], 1, seed=11)
    multi = native(series[0], 2, frames=3, rows=4, columns=6, seed=12)
    other = native(series[1], 1, seed=13, Modality="MR", SeriesNumber=2)
    compressed = []
    for name in ("JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        data, ds = reuid_testdata(name, PatientID=patient)
        compressed.append(
            Stored(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, data)
        )
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as http:
        stow_ok(http, [i.data for i in (single, multi, other, *compressed)])
    yield Corpus(study, series, single, multi, other, compressed[0], compressed[1])


def _pixel_data(instance: Stored) -> bytes:
    pixels: bytes = instance.dataset.PixelData
    return pixels


def _frame_size(instance: Stored) -> int:
    ds = instance.dataset
    return int(ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8)


# --- instances --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [None, MULTIPART_DICOM, f"{MULTIPART_DICOM}; transfer-syntax=*", "multipart/related"],
    ids=["no-accept", "multipart-dicom", "any-syntax", "bare-multipart"],
)
def test_retrieve_study_series_instance(
    http: httpx.Client, corpus: Corpus, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    cases = [
        (f"/studies/{corpus.study}", corpus.native),
        (f"/studies/{corpus.study}/series/{corpus.series[0]}", [corpus.single, corpus.multi]),
        (f"/studies/{corpus.study}/series/{corpus.series[1]}", [corpus.other]),
        (corpus.multi.path, [corpus.multi]),
    ]
    for url, expected in cases:
        response = http.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
        content_type = response.headers["content-type"]
        parts = parse_multipart(response)
        assert 'type="application/dicom"' in content_type or "type=application/dicom" in (
            content_type
        ), content_type
        assert sorted(p.content for p in parts) == sorted(i.data for i in expected), url
        for part in parts:
            assert part.media_type == DICOM
            assert part.params.get("transfer-syntax") == EXPLICIT_VR_LE


def test_retrieve_compressed_instance_as_stored(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(
        corpus.j2k.path, headers={"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}
    )
    assert response.status_code == 200, response.text
    [part] = parse_multipart(response)
    assert part.content == corpus.j2k.data
    assert part.params.get("transfer-syntax") == "1.2.840.10008.1.2.4.91"


@pytest.mark.parametrize("accept", [DICOM, f"{DICOM}; transfer-syntax={EXPLICIT_VR_LE}"])
def test_single_instance_as_application_dicom(
    http: httpx.Client, corpus: Corpus, accept: str
) -> None:
    response = http.get(corpus.single.path, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0].strip() == DICOM
    assert response.content == corpus.single.data


@pytest.mark.parametrize(
    "accept",
    [
        f"{MULTIPART_DICOM}; transfer-syntax={JPEG_BASELINE}",  # 16-bit data
        "multipart/related; type=application/dicom+xml",
        "image/png",
    ],
)
def test_unproducible_representation_is_406(
    http: httpx.Client, corpus: Corpus, accept: str
) -> None:
    response = http.get(corpus.single.path, headers={"Accept": accept})
    assert response.status_code == 406, response.text
    error_message(response)


def test_unknown_uids_are_404(http: httpx.Client, corpus: Corpus) -> None:
    urls = [
        f"/studies/{generate_uid()}",
        f"/studies/{generate_uid()}/metadata",
        f"/studies/{corpus.study}/series/{generate_uid()}",
        f"/studies/{corpus.study}/series/{generate_uid()}/metadata",
        f"/studies/{corpus.study}/series/{corpus.series[0]}/instances/{generate_uid()}",
        f"/studies/{corpus.study}/series/{corpus.series[0]}/instances/{generate_uid()}/frames/1",
        # A real instance, but under the wrong series.
        f"/studies/{corpus.study}/series/{corpus.series[1]}/instances/{corpus.single.sop}",
    ]
    for url in urls:
        response = http.get(url)
        assert response.status_code == 404, (url, response.text)
        error_message(response)


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("/studies/abc", "StudyInstanceUID"),
        ("/studies/abc/metadata", "StudyInstanceUID"),
        ("/studies/1.2.3..4", "StudyInstanceUID"),
        ("/studies/{study}/series/x.y", "SeriesInstanceUID"),
        ("/studies/{study}/series/{series}/instances/1.2.abc", "SOPInstanceUID"),
        ("/studies/{study}/series/{series}/instances/1.2.abc/frames/1", "SOPInstanceUID"),
    ],
)
def test_malformed_uid_in_path_is_400(
    http: httpx.Client, corpus: Corpus, template: str, needle: str
) -> None:
    url = template.format(study=corpus.study, series=corpus.series[0])
    response = http.get(url)
    assert response.status_code == 400, (url, response.text)
    assert needle in error_message(response)


# --- metadata ---------------------------------------------------------------------------------


def _by_sop(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["00080018"]["Value"][0]: item for item in found}


def test_metadata_levels(http: httpx.Client, corpus: Corpus) -> None:
    cases = [
        (f"/studies/{corpus.study}/metadata", corpus.native),
        (
            f"/studies/{corpus.study}/series/{corpus.series[0]}/metadata",
            [corpus.single, corpus.multi],
        ),
        (f"{corpus.other.path}/metadata", [corpus.other]),
    ]
    for url, expected in cases:
        response = http.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(DICOM_JSON)
        found = response.json()
        assert isinstance(found, list)
        assert sorted(_by_sop(found)) == sorted(i.sop for i in expected), url


def test_metadata_matches_pydicom(http: httpx.Client, corpus: Corpus, dicomweb: str) -> None:
    for instance in corpus.native:
        [meta] = http.get(f"{instance.path}/metadata").json()
        reference = instance.dataset.to_json_dict()
        for tag in ("00100010", "00100020", "00280010", "00280011", "0020000D", "0020000E"):
            assert meta[tag] == reference[tag], tag
        # Every non-bulk attribute of the file is there, with the same value.
        for tag, element in reference.items():
            if tag == "7FE00010" or "InlineBinary" in element:
                continue
            assert meta.get(tag) == element, tag
        pixel = meta["7FE00010"]
        assert pixel["vr"] in ("OW", "OB")
        assert "InlineBinary" not in pixel and "Value" not in pixel
        uri = pixel["BulkDataURI"]
        assert uri.startswith(f"{dicomweb}/studies/{instance.study}/series/{instance.series}/")


@pytest.mark.parametrize("which", ["single", "multi"])
def test_pixel_data_bulkdata(http: httpx.Client, corpus: Corpus, which: str) -> None:
    instance: Stored = getattr(corpus, which)
    [meta] = http.get(f"{instance.path}/metadata").json()
    uri = meta["7FE00010"]["BulkDataURI"]
    expected = _pixel_data(instance)

    bare = httpx.get(uri, headers={"Accept": "application/octet-stream"}, timeout=30)
    assert bare.status_code == 200, bare.text
    assert bare.headers["content-type"].split(";")[0].strip() == "application/octet-stream"
    assert bare.content == expected

    multi = httpx.get(
        uri, headers={"Accept": "multipart/related; type=application/octet-stream"}, timeout=30
    )
    assert multi.status_code == 200, multi.text
    parts = parse_multipart(multi)
    assert all(p.media_type == "application/octet-stream" for p in parts)
    assert b"".join(p.content for p in parts) == expected


def test_compressed_metadata_has_bulkdata_uri(http: httpx.Client, corpus: Corpus) -> None:
    [meta] = http.get(f"{corpus.j2k.path}/metadata").json()
    assert meta["7FE00010"]["vr"] == "OB"
    assert meta["7FE00010"]["BulkDataURI"].startswith("http")
    assert "InlineBinary" not in meta["7FE00010"]


# --- frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "multipart/related; type=application/octet-stream",
        'multipart/related; type="application/octet-stream"',
        OHIF_FRAMES,
        f"multipart/related; type=application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}",
    ],
    ids=["no-accept", "octet", "octet-quoted", "ohif", "explicit-le"],
)
def test_native_frames(http: httpx.Client, corpus: Corpus, accept: str | None) -> None:
    instance = corpus.multi
    pixels = _pixel_data(instance)
    size = _frame_size(instance)
    assert len(pixels) == 3 * size
    headers = {"Accept": accept} if accept else {}
    for number in (1, 2, 3):
        response = http.get(f"{instance.path}/frames/{number}", headers=headers)
        assert response.status_code == 200, response.text
        [part] = parse_multipart(response)
        assert part.media_type == "application/octet-stream"
        assert part.content == pixels[(number - 1) * size : number * size], number
    response = http.get(f"{instance.path}/frames/2,3", headers=headers)
    assert response.status_code == 200, response.text
    parts = parse_multipart(response)
    assert [p.content for p in parts] == [pixels[size : 2 * size], pixels[2 * size :]]
    response = http.get(f"{instance.path}/frames/3,1", headers=headers)
    parts = parse_multipart(response)
    assert [p.content for p in parts] == [pixels[2 * size :], pixels[:size]]


def test_single_frame_instance_frame_1(http: httpx.Client, corpus: Corpus) -> None:
    response = http.get(f"{corpus.single.path}/frames/1", headers={"Accept": OHIF_FRAMES})
    assert response.status_code == 200, response.text
    [part] = parse_multipart(response)
    assert part.content == _pixel_data(corpus.single)


def test_bare_octet_stream_frame(http: httpx.Client, corpus: Corpus) -> None:
    pixels = _pixel_data(corpus.multi)
    size = _frame_size(corpus.multi)
    response = http.get(
        f"{corpus.multi.path}/frames/2", headers={"Accept": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/octet-stream"
    assert response.content == pixels[size : 2 * size]


@pytest.mark.parametrize(
    ("frames", "status"),
    [("0", 400), ("x", 400), ("1,x", 400), ("-1", 400), ("99", 404), ("1,4", 404)],
)
def test_bad_frame_numbers(http: httpx.Client, corpus: Corpus, frames: str, status: int) -> None:
    response = http.get(f"{corpus.multi.path}/frames/{frames}", headers={"Accept": OHIF_FRAMES})
    assert response.status_code == status, response.text
    error_message(response)


@pytest.mark.parametrize(
    ("which", "media_type", "syntax"),
    [("j2k", "image/jp2", "1.2.840.10008.1.2.4.91"), ("jpeg", "image/jpeg", JPEG_BASELINE)],
)
def test_compressed_frames(
    http: httpx.Client, corpus: Corpus, which: str, media_type: str, syntax: str
) -> None:
    instance: Stored = getattr(corpus, which)
    ds = instance.dataset
    expected = list(
        generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)))
    )
    assert len(expected) == 1
    for accept in (
        OHIF_FRAMES,
        f"multipart/related; type={media_type}",
        f"multipart/related; type={media_type}; transfer-syntax={syntax}",
        f'multipart/related; type="{media_type}"; transfer-syntax=*',
    ):
        response = http.get(f"{instance.path}/frames/1", headers={"Accept": accept})
        assert response.status_code == 200, (accept, response.text)
        [part] = parse_multipart(response)
        assert part.media_type == media_type, accept
        assert part.params.get("transfer-syntax") == syntax, accept
        assert part.content == expected[0], accept


@pytest.mark.parametrize(
    "accept",
    [
        # lossy JPEG 2000 stored: a lossless encoding of it would pretend to be the original
        "multipart/related; type=image/jls",
        "multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90",
        "multipart/related; type=image/png",
    ],
)
def test_frames_that_cannot_be_produced(http: httpx.Client, corpus: Corpus, accept: str) -> None:
    response = http.get(f"{corpus.j2k.path}/frames/1", headers={"Accept": accept})
    assert response.status_code == 406, response.text
    error_message(response)


def test_missing_blob_is_a_clear_error_not_a_cut_off_stream(tmp_path: Path) -> None:
    """A blob lost behind the archive's back gives a 500 naming the instance, before any
    body byte is sent (regression: the stream used to start and then break)."""
    data = tmp_path / "data"
    blob = make_file()
    with running_server(data) as url, httpx.Client(base_url=f"{url}/dicomweb") as client:
        stored = client.post(
            "/studies", content=blob, headers={"Content-Type": "application/dicom"}
        )
        assert stored.status_code == 200
        retrieve_url = stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        for path in (data / "blobs").rglob("*"):
            if path.is_file():
                path.unlink()
        for accept in ("application/dicom", 'multipart/related; type="application/dicom"'):
            response = client.get(retrieve_url, headers={"Accept": accept})
            assert response.status_code == 500
            assert "missing from storage" in response.json()["error"]
        frames = client.get(retrieve_url + "/frames/1")
        assert frames.status_code == 500
