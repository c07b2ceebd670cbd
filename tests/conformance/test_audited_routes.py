"""Every DICOMweb route that touches patient data leaves exactly one audit event per request
(per study), of the PS3.15 type the route calls for, against `pacs serve`: each request
below runs in a fresh tenant, so the tenant's trail holds that request's events only."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_file
from tests.support.server import running_server

TRANSFERRED, ACCESSED, QUERY = "instances-transferred", "instances-accessed", "query"


def trail(http: httpx.Client, tenant: str) -> list[dict[str, Any]]:
    """The tenant's events, without the searches of the trail itself."""
    answer = http.get(f"tenants/{tenant}/audit", params={"limit": "100"})
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json() if e["action"] != "audit-log-used"]


def events(http: httpx.Client, tenant: str, count: int) -> list[dict[str, Any]]:
    """Exactly `count` events: waited for (reads are written in the background), then
    looked at once more a moment later, so that an extra one would be seen."""
    deadline = time.monotonic() + 10
    while len(found := trail(http, tenant)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} events after 10 s"
        time.sleep(0.05)
    time.sleep(0.3)
    found = trail(http, tenant)
    assert len(found) == count, found
    return found


def stored(http: httpx.Client) -> tuple[str, str, str, str, str]:
    """A fresh tenant holding one two-frame instance: (tenant, study, series, sop, patient)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = f"PAT-{uuid.uuid4().hex[:8]}"
    data = make_file(study=study, series=series, sop=sop, frames=2, PatientID=patient)
    response = http.post(
        f"tenants/{tenant}/studies",
        content=data,
        headers={"Content-Type": "application/dicom"},
    )
    assert response.status_code == 200, response.text
    return tenant, study, series, sop, patient


READS = [
    # (path below the instance's study/series/instance, Accept, action)
    ("{study}", 'multipart/related; type="application/dicom"', TRANSFERRED),
    ("{series}", 'multipart/related; type="application/dicom"', TRANSFERRED),
    ("{instance}", "application/dicom", TRANSFERRED),
    ("{study}", "application/zip", TRANSFERRED),
    ("{study}/metadata", "application/dicom+json", ACCESSED),
    ("{instance}/metadata", "application/dicom+json", ACCESSED),
    ("{instance}/frames/1,2", 'multipart/related; type="application/octet-stream"', ACCESSED),
    ("{instance}/bulkdata/7FE00010", "application/octet-stream", ACCESSED),
    ("{study}/rendered", "image/png", ACCESSED),
    ("{instance}/rendered", "image/jpeg", ACCESSED),
    ("{instance}/frames/2/rendered", "image/png", ACCESSED),
    ("{study}/thumbnail", "image/jpeg", ACCESSED),
    ("{instance}/frames/1/thumbnail", "image/jpeg", ACCESSED),
    (
        "wado?requestType=WADO&studyUID={s}&seriesUID={se}&objectUID={o}"
        "&contentType=application/dicom",
        "*/*",
        TRANSFERRED,
    ),
    # Without a contentType WADO-URI answers image/jpeg (PS3.18 9.1.2.1.5).
    ("wado?requestType=WADO&studyUID={s}&seriesUID={se}&objectUID={o}", "*/*", ACCESSED),
    (
        "wado?requestType=WADO&studyUID={s}&seriesUID={se}&objectUID={o}&contentType=image/jpeg",
        "*/*",
        ACCESSED,
    ),
]


@pytest.mark.parametrize(("path", "accept", "action"), READS)
def test_each_read_is_one_event(http: httpx.Client, path: str, accept: str, action: str) -> None:
    tenant, study, series, sop, patient = stored(http)
    study_path = f"studies/{study}"
    series_path = f"{study_path}/series/{series}"
    url = path.format(
        study=study_path,
        series=series_path,
        instance=f"{series_path}/instances/{sop}",
        s=study,
        se=series,
        o=sop,
    )
    answer = http.get(f"tenants/{tenant}/{url}", headers={"Accept": accept})
    assert answer.status_code == 200, answer.text
    stow_event, read = sorted(events(http, tenant, 2), key=lambda e: e["time"])
    assert (stow_event["action"], stow_event["eventActionCode"]) == (TRANSFERRED, "C")
    assert read["action"] == action
    assert read["eventActionCode"] == "R"
    assert read["outcome"] == 0
    assert read["studyInstanceUID"] == study
    assert read["seriesInstanceUIDs"] == [series]
    assert read["sopInstanceUIDs"] == [sop]
    assert read["patientID"] == patient
    assert read["called"] == f"/dicomweb/tenants/{tenant}/{url.partition('?')[0]}"
    assert read["address"] == "127.0.0.1"


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
def test_each_search_is_one_query_event(http: httpx.Client, level: str) -> None:
    tenant, study, _, _, patient = stored(http)
    answer = http.get(f"tenants/{tenant}/{level}", params={"PatientID": patient})
    assert answer.status_code == 200, answer.text
    query = max(events(http, tenant, 2), key=lambda e: e["time"])
    assert (query["action"], query["outcome"]) == (QUERY, 0)
    assert query["query"] == f"PatientID={patient}"
    assert query["called"] == f"/dicomweb/tenants/{tenant}/{level}"
    # Within a study: the study is named.
    answer = http.get(f"tenants/{tenant}/studies/{study}/instances")
    assert answer.status_code == 200, answer.text
    query = max(events(http, tenant, 3), key=lambda e: e["time"])
    assert query["studyInstanceUID"] == study


def test_a_bad_search_is_a_failed_query(http: httpx.Client) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    answer = http.get(f"tenants/{tenant}/studies", params={"StudyDate": "yesterday"})
    assert answer.status_code == 400, answer.text
    (query,) = events(http, tenant, 1)
    assert (query["action"], query["outcome"]) == (QUERY, 4)
    assert query["reason"] == answer.json()["error"]


def test_every_stored_offer_is_recorded(http: httpx.Client) -> None:
    """Stored, stored again (identical), a conflict, an unreadable part and a part of the
    wrong study: one event each, with its outcome."""
    tenant, study, series, sop, patient = stored(http)
    base = f"tenants/{tenant}/studies"
    same = make_file(study=study, series=series, sop=sop, frames=2, PatientID=patient)
    headers = {"Content-Type": "application/dicom"}
    assert http.post(base, content=same, headers=headers).status_code == 200
    other = make_file(study=study, series=series, sop=sop, seed=7, PatientID=patient)
    assert http.post(base, content=other, headers=headers).status_code == 409
    assert http.post(base, content=b"not DICOM", headers=headers).status_code == 409
    elsewhere = make_file(PatientID=patient)
    assert http.post(f"{base}/{study}", content=elsewhere, headers=headers).status_code == 409
    found = sorted(events(http, tenant, 5), key=lambda e: e["time"])
    assert [(e["action"], e["eventActionCode"], e["outcome"]) for e in found] == [
        (TRANSFERRED, "C", 0),
        (TRANSFERRED, "C", 0),
        (TRANSFERRED, "C", 4),
        (TRANSFERRED, "C", 4),
        (TRANSFERRED, "C", 4),
    ]
    assert [e["patientID"] for e in found] == [patient, patient, patient, None, patient]
    assert found[1]["reason"] == "already stored with the same content"
    assert "nothing changed" in found[2]["reason"]
    assert found[4]["studyInstanceUID"] != study  # the object's own study, refused


NOT_FOUND = [
    # (path below the study that is not stored, Accept, action)
    ("", 'multipart/related; type="application/dicom"', TRANSFERRED),
    ("/metadata", "application/dicom+json", ACCESSED),
    ("/series/{uid}/instances/{uid}/frames/1", "multipart/related", ACCESSED),
    ("/rendered", "image/png", ACCESSED),
]


@pytest.mark.parametrize(("path", "accept", "action"), NOT_FOUND)
def test_a_read_of_nothing_stored_is_a_failed_read(
    http: httpx.Client, path: str, accept: str, action: str
) -> None:
    """Regression: a 404 left no event (record_read ran only once instances were found)."""
    tenant, study = f"t-{uuid.uuid4().hex[:12]}", generate_uid()
    url = f"tenants/{tenant}/studies/{study}{path.format(uid=generate_uid())}"
    answer = http.get(url, headers={"Accept": accept})
    assert answer.status_code == 404, answer.text
    (read,) = events(http, tenant, 1)
    assert (read["action"], read["eventActionCode"], read["outcome"]) == (action, "R", 4)
    assert read["studyInstanceUID"] == study
    assert read["reason"] == answer.json()["error"]


def test_a_wado_uri_read_of_nothing_stored_is_a_failed_read(http: httpx.Client) -> None:
    """Regression: a WADO-URI 404 left no event."""
    tenant, study, series, sop = f"t-{uuid.uuid4().hex[:12]}", *(generate_uid() for _ in "123")
    wado = f"tenants/{tenant}/wado"
    uids = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    answer = http.get(wado, params={**uids, "contentType": "application/dicom"})
    assert answer.status_code == 404, answer.text
    (read,) = events(http, tenant, 1)
    assert (read["action"], read["outcome"], read["studyInstanceUID"]) == (TRANSFERRED, 4, study)


def test_a_response_cut_off_midway_is_a_failed_read(tmp_path: Path) -> None:
    """Regression: a WADO-RS stream that failed after it started (a blob the store could
    not read) stayed "success" in the trail."""
    tenant, study, series = f"t-{uuid.uuid4().hex[:12]}", generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(2)]
    with (
        running_server(tmp_path / "data") as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        for number, sop in enumerate(sops, start=1):
            data = make_file(study=study, series=series, sop=sop, InstanceNumber=number)
            stored = http.post(
                f"tenants/{tenant}/studies",
                content=data,
                headers={"Content-Type": "application/dicom"},
            )
            assert stored.status_code == 200, stored.text
        # The second instance's blob is gone: the first part is sent, then the stream fails.
        blobs = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and tenant in str(p)]
        [second] = [p for p in blobs if sops[1].encode() in p.read_bytes()]
        second.unlink()
        accept = 'multipart/related; type="application/dicom"'
        with pytest.raises(httpx.HTTPError):
            answer = http.get(f"tenants/{tenant}/studies/{study}", headers={"Accept": accept})
            answer.raise_for_status()
        found = sorted(events(http, tenant, 4), key=lambda e: (e["time"], e["outcome"]))
    reads = [(e["action"], e["outcome"]) for e in found if e["eventActionCode"] == "R"]
    assert reads == [(TRANSFERRED, 0), (TRANSFERRED, 8)]
    [failed] = [e for e in found if e["outcome"] == 8]
    assert failed["studyInstanceUID"] == study and failed["sopInstanceUIDs"] == sops
    assert failed["reason"].startswith("the response stopped after ")
