"""Issue 10: only what can be served is stored, and what is stored is served without failing.

Seeded mutants of the pydicom corpora (tests/support/mutations.py) are stored by STOW into a
real server, then every retrieval route is asked for each one stored: no answer may be a
5xx other than 501 (cannot be decoded) or 503, and every 200 body must be complete. The full
3,000 run is `load-tests/damaged_files.py`; CI runs a fixed seed and budget
(PACS_DAMAGED_FILES overrides the count).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.conformance.helpers import parse_multipart, read_dicom, stow, stow_ok
from tests.support.dicom_factory import make_dataset, make_file
from tests.support.mutations import mutants
from tests.support.server import running_server
from tests.support.serving import EXPLICIT_LE, run

SEED = 1
COUNT = int(os.environ.get("PACS_DAMAGED_FILES", "300"))
SERIES_LE = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("damaged")
    # Mutants in one series come from files of different patients.
    with running_server(data, env={"PACS_PATIENT_MISMATCH": "warn"}) as url:
        yield url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as client:
        yield client


def test_damaged_files_are_refused_or_served_by_every_route(server: str) -> None:
    started = time.monotonic()
    report = run(server, mutants(SEED, COUNT))
    assert not report.failures, "\n".join([report.summary(), *report.failures[:20]])
    # The run exercised both outcomes and the refusals of undecodable objects.
    assert report.stored > COUNT // 10 and report.refused > COUNT // 10, report.summary()
    assert sum(n for (_, status), n in report.statuses.items() if status == 501), report.summary()
    assert time.monotonic() - started < 60 * max(1, COUNT // 300)


def _damaged_rle(study: str, series: str, number: int) -> bytes:
    """An RLE image whose segment data is cut short: its header parses, only decoding
    finds the damage."""
    ds = make_dataset(study=study, series=series, rows=32, columns=32, InstanceNumber=number)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(RLELossless)
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame[:80]])
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_series_whose_second_instance_cannot_be_transcoded_omits_it(
    http: httpx.Client,
) -> None:
    # Issue 10: the 200 broke off mid-body when instance k > 1 failed to decode.
    study, series = generate_uid(), generate_uid()
    good = make_file(study=study, series=series, InstanceNumber=1)
    stow_ok(http, [good, _damaged_rle(study, series, 2)])
    response = http.get(f"/studies/{study}/series/{series}", headers={"accept": SERIES_LE})
    assert response.status_code == 200
    parts = parse_multipart(response)  # up to the closing boundary
    assert len(parts) == 1
    assert read_dicom(parts[0].content).InstanceNumber == 1


def test_an_instance_that_cannot_be_transcoded_is_an_error_before_the_body(
    http: httpx.Client,
) -> None:
    study, series = generate_uid(), generate_uid()
    stow_ok(http, [_damaged_rle(study, series, 1)])
    for accept in (SERIES_LE, f"application/dicom; transfer-syntax={EXPLICIT_LE}"):
        response = http.get(f"/studies/{study}", headers={"accept": accept})
        assert response.status_code == 501, response.text
        assert "cannot be" in response.json()["error"]
    for path in ("rendered", "thumbnail"):
        response = http.get(f"/studies/{study}/{path}", headers={"accept": "image/jpeg"})
        assert response.status_code == 501, response.text


def test_an_instance_with_fewer_frames_than_number_of_frames_is_served_only_as_stored(
    http: httpx.Client,
) -> None:
    # An offset table of 2 frames, NumberOfFrames 3: a transcoded file would contradict itself.
    ds = make_dataset(rows=16, columns=16, frames=3)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(RLELossless)
    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    ds.PixelData = encapsulate(frames[:2], has_bot=True)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    stow_ok(http, [buffer.getvalue()])
    path = f"/studies/{ds.StudyInstanceUID}"
    assert http.get(path, headers={"accept": SERIES_LE}).status_code == 501
    stored = http.get(path, headers={"accept": 'multipart/related; type="application/dicom"'})
    assert stored.status_code == 200
    assert len(parse_multipart(stored)) == 1


def test_an_unknown_vr_is_refused_at_stow(http: httpx.Client) -> None:
    # Issue 10: stored with 200, then unreadable by every client and by transcoding.
    data = bytearray(make_file())
    at = data.index(b"\x08\x00\x30\x10LO")  # StudyDescription's explicit VR
    data[at + 4 : at + 6] = b"HZ"
    response = stow(http, [bytes(data)])
    assert response.status_code == 409, response.text
    failed = response.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xC000]


def test_rendering_beyond_the_imaging_queue_answers_503_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Issue 10: concurrent expensive operations had no bound: every request waited.
    data = tmp_path_factory.mktemp("queue")
    env = {"PACS_MAX_QUEUED_IMAGING": "0"}  # no waiting: busy workers refuse at once
    with (
        running_server(data, env=env) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=120) as client,
    ):
        study = generate_uid()
        stow_ok(client, [make_file(study=study, rows=512, columns=512, frames=8)])
        path = f"/studies/{study}/rendered"

        def render(_: int) -> httpx.Response:
            return client.get(path, headers={"accept": "image/gif"})

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(render, range(24)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) == {200, 503}, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "2"
    assert "PACS_MAX_QUEUED_IMAGING" in refused.json()["error"]
