"""STOW-RS (PS3.18 10.5) over HTTP against a running `pacs serve`."""

from __future__ import annotations

import asyncio
import io
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, generate_uid

from tests.conformance.helpers import (
    DICOM_JSON,
    ERROR_COMMENT,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_CLASS,
    REFERENCED_SOP_INSTANCE,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    WARNING_REASON,
    error_message,
    items,
    multipart_body,
    stow,
    stow_ok,
    token,
    value,
    values,
)
from tests.support.dicom_factory import make_dataset, make_file
from tests.support.server import running_server

MULTIPART_DICOM = "multipart/related; type=application/dicom"
CANNOT_UNDERSTAND = 0xC000
STUDY_UID_MISMATCH = 0xC409
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PATIENT_MISMATCH = 0xC40A
COERCION_OF_DATA_ELEMENTS = 0xB000
DUPLICATE_SOP_INSTANCE = 0x0111


def _get_instance(http: httpx.Client, study: str, series: str, sop: str) -> httpx.Response:
    return http.get(
        f"/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom"},
    )


def _study_counts(http: httpx.Client, study: str) -> dict[str, object]:
    response = http.get("/studies", params={"StudyInstanceUID": study})
    assert response.status_code == 200, response.text
    found = response.json()
    assert len(found) == 1, found
    return {
        "series": value(found[0], "00201206"),
        "instances": value(found[0], "00201208"),
        "modalities": sorted(values(found[0], "00080061")),
    }


def _failed(body: dict[str, Any]) -> list[dict[str, Any]]:
    return items(body, FAILED_SOP_SEQUENCE)


def _referenced(body: dict[str, Any]) -> list[dict[str, Any]]:
    return items(body, REFERENCED_SOP_SEQUENCE)


def _error_comment(item: dict[str, Any]) -> str:
    comment = value(item, ERROR_COMMENT)
    assert isinstance(comment, str) and comment.strip(), item
    return comment


# --- accepted request forms -------------------------------------------------------------------


def test_single_application_dicom_body(http: httpx.Client, dicomweb: str) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_file(study=study, series=series, sop=sop, PatientID=token())
    response = http.post("/studies", content=data, headers={"Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    body = response.json()
    assert value(body, RETRIEVE_URL) == f"{dicomweb}/studies/{study}"
    assert FAILED_SOP_SEQUENCE not in body or not _failed(body)
    [item] = _referenced(body)
    assert value(item, REFERENCED_SOP_CLASS) == CTImageStorage
    assert value(item, REFERENCED_SOP_INSTANCE) == sop
    assert (
        value(item, RETRIEVE_URL) == f"{dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    )
    retrieved = _get_instance(http, study, series, sop)
    assert retrieved.status_code == 200
    assert retrieved.content == data


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary={b}',
        'multipart/related; type=application/dicom; boundary="{b}"',
        "multipart/related; type=application/dicom; boundary={b}",
        'multipart/related; boundary="{b}"; type="application/dicom"',
        'multipart/related; type="application/dicom"; boundary={b}; transfer-syntax=*',
        'multipart/related;type="application/dicom";boundary={b};start="<part1>"',
        'Multipart/Related; Type="Application/DICOM"; Boundary={b}',
    ],
    ids=[
        "quoted-type",
        "quoted-boundary",
        "unquoted",
        "boundary-first",
        "transfer-syntax-param",
        "no-spaces-start-param",
        "mixed-case",
    ],
)
def test_multipart_content_type_variants(
    http: httpx.Client, dicomweb: str, content_type: str
) -> None:
    study, series = generate_uid(), generate_uid()
    patient = token()
    sops = [generate_uid() for _ in range(2)]
    files = [
        make_file(study=study, series=series, sop=s, InstanceNumber=i, PatientID=patient)
        for i, s in enumerate(sops, 1)
    ]
    boundary = f"DICOMwebBoundary-{token()}"
    response = http.post(
        "/studies",
        content=multipart_body(files, boundary),
        headers={"Content-Type": content_type.format(b=boundary)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(body)) == sorted(sops)
    assert not _failed(body)
    for sop, data in zip(sops, files, strict=True):
        assert _get_instance(http, study, series, sop).content == data


def test_orthancs_73_character_boundary_is_accepted(http: httpx.Client) -> None:
    # Orthanc's DICOMweb client joins two UUIDs: 73 characters, over RFC 2046's 70.
    boundary = f"{uuid.uuid4()}-{uuid.uuid4()}"
    assert len(boundary) == 73
    data = make_file(PatientID=token())
    response = http.post(
        "/studies",
        content=multipart_body([data], boundary),
        headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    assert len(_referenced(response.json())) == 1


def test_boundary_over_256_characters_is_400_naming_the_limit(http: httpx.Client) -> None:
    boundary = "b" * 257
    response = http.post(
        "/studies",
        content=multipart_body([make_file()], boundary),
        headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
    )
    assert response.status_code == 400, response.text
    message = error_message(response)
    assert "256" in message and boundary not in message


def test_post_to_study_url_with_matching_study(http: httpx.Client, dicomweb: str) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_file(study=study, series=series, sop=sop, PatientID=token())
    body = stow_ok(http, [data], study=study)
    assert value(body, RETRIEVE_URL) == f"{dicomweb}/studies/{study}"
    [item] = _referenced(body)
    assert value(item, REFERENCED_SOP_INSTANCE) == sop


def test_post_to_study_url_rejects_instances_of_another_study(
    http: httpx.Client, dicomweb: str
) -> None:
    study, other_study, series = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    good_sop, bad_sop = generate_uid(), generate_uid()
    good = make_file(study=study, series=series, sop=good_sop, PatientID=patient)
    bad = make_file(study=other_study, sop=bad_sop, PatientID=patient)
    response = stow(http, [good, bad], study=study)
    assert response.status_code == 202, response.text
    body = response.json()
    [stored] = _referenced(body)
    assert value(stored, REFERENCED_SOP_INSTANCE) == good_sop
    [failed] = _failed(body)
    assert value(failed, REFERENCED_SOP_INSTANCE) == bad_sop
    assert value(failed, FAILURE_REASON) == STUDY_UID_MISMATCH == 50185
    assert RETRIEVE_URL not in failed
    _error_comment(failed)
    # Nothing of the refused instance is visible.
    assert http.get(f"/studies/{other_study}").status_code == 404
    found = http.get("/instances", params={"SOPInstanceUID": bad_sop})
    assert found.status_code in (200, 204)
    assert found.status_code == 204 or found.json() == []


# --- failures in a multipart body -------------------------------------------------------------


def test_non_dicom_part_among_good_ones(http: httpx.Client, dicomweb: str) -> None:
    study, series = generate_uid(), generate_uid()
    patient = token()
    sops = [generate_uid(), generate_uid()]
    files = [
        make_file(study=study, series=series, sop=s, InstanceNumber=i, PatientID=patient)
        for i, s in enumerate(sops, 1)
    ]
    garbage = b"this is not a DICOM file at all\x00\x01\x02" * 20
    response = stow(http, [files[0], garbage, files[1]])
    assert response.status_code == 202, response.text
    body = response.json()
    referenced = _referenced(body)
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced] == sops
    for item, sop in zip(referenced, sops, strict=True):
        url = value(item, RETRIEVE_URL)
        assert url == f"{dicomweb}/studies/{study}/series/{series}/instances/{sop}"
        assert FAILURE_REASON not in item
    [failed] = _failed(body)
    assert value(failed, FAILURE_REASON) == CANNOT_UNDERSTAND == 49152
    _error_comment(failed)
    assert _study_counts(http, study)["instances"] == 2


def test_more_parts_than_are_stored_at_once_are_all_answered_in_order(
    http: httpx.Client,
) -> None:
    """Parts are stored while the next ones arrive, at most 16 at a time (app/web/stow.py):
    40 parts, every seventh not DICOM, are each answered, in the order sent, and stored."""
    study, series = generate_uid(), generate_uid()
    patient = token()
    sops = [generate_uid() for _ in range(40)]
    garbage = b"not DICOM " * 50
    parts = [
        garbage
        if n % 7 == 3
        else make_file(study=study, series=series, sop=sop, InstanceNumber=n, PatientID=patient)
        for n, sop in enumerate(sops)
    ]
    response = stow(http, parts)
    assert response.status_code == 202, response.text
    body = response.json()
    good = [sop for n, sop in enumerate(sops) if n % 7 != 3]
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(body)] == good
    failed = _failed(body)
    assert [value(f, ERROR_COMMENT).split(":")[0] for f in failed] == [
        f"part {n + 1}" for n in range(40) if n % 7 == 3
    ]
    assert _study_counts(http, study)["instances"] == len(good)


def test_truncated_dicom_part_fails(http: httpx.Client) -> None:
    study, series = generate_uid(), generate_uid()
    patient = token()
    good_sop, cut_sop = generate_uid(), generate_uid()
    good = make_file(study=study, series=series, sop=good_sop, PatientID=patient)
    whole = make_file(study=study, series=series, sop=cut_sop, PatientID=patient, rows=64)
    response = stow(http, [good, whole[: len(whole) // 2]])
    assert response.status_code == 202, response.text
    body = response.json()
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(body)] == [good_sop]
    [failed] = _failed(body)
    assert value(failed, FAILURE_REASON) == CANNOT_UNDERSTAND
    _error_comment(failed)
    assert _get_instance(http, study, series, cut_sop).status_code == 404
    assert _study_counts(http, study)["instances"] == 1


def test_truncated_file_cut_in_its_header_fails(http: httpx.Client) -> None:
    data = make_file(PatientID=token())
    response = http.post(
        "/studies", content=data[:200], headers={"Content-Type": "application/dicom"}
    )
    assert response.status_code == 409, response.text
    [failed] = _failed(response.json())
    assert value(failed, FAILURE_REASON) == CANNOT_UNDERSTAND
    _error_comment(failed)


def test_all_parts_bad_is_409(http: httpx.Client) -> None:
    whole = make_file(PatientID=token(), rows=64)
    response = stow(http, [b"garbage" * 50, whole[: len(whole) // 2], b""])
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(DICOM_JSON)
    body = response.json()
    assert not _referenced(body)
    failed = _failed(body)
    assert len(failed) == 3
    for item in failed:
        assert value(item, FAILURE_REASON) == CANNOT_UNDERSTAND
        _error_comment(item)


def _file_in_syntax(syntax: str, **attrs: Any) -> bytes:
    """A Part 10 file whose meta names `syntax`; the dataset is explicit VR little endian."""
    ds = make_dataset(**attrs)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def test_unknown_transfer_syntax_is_refused_not_stored(http: httpx.Client) -> None:
    # It was stored with 200; its thumbnail then answered 501 and C-GET could not send it.
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    unknown = _file_in_syntax("1.2.3.4.5", study=study, series=series, sop=sop, PatientID=patient)
    alone = http.post("/studies", content=unknown, headers={"Content-Type": "application/dicom"})
    assert alone.status_code == 409, alone.text
    [failed] = _failed(alone.json())
    assert value(failed, FAILURE_REASON) == TRANSFER_SYNTAX_NOT_SUPPORTED == 49442
    assert "1.2.3.4.5" in _error_comment(failed)
    # Beside a good instance: 202, the good one stored, the other listed as failed.
    good_sop = generate_uid()
    good = make_file(study=study, series=series, sop=good_sop, PatientID=patient)
    response = stow(http, [unknown, good])
    assert response.status_code == 202, response.text
    body = response.json()
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(body)] == [good_sop]
    [failed] = _failed(body)
    assert value(failed, REFERENCED_SOP_INSTANCE) == sop
    assert value(failed, FAILURE_REASON) == TRANSFER_SYNTAX_NOT_SUPPORTED
    assert _get_instance(http, study, series, sop).status_code == 404
    assert _study_counts(http, study)["instances"] == 1
    thumbnail = http.get(f"/studies/{study}/thumbnail", headers={"Accept": "image/jpeg"})
    assert thumbnail.status_code == 200, thumbnail.text


def test_body_that_breaks_after_a_stored_part_keeps_it(http: httpx.Client) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    good = make_file(study=study, series=series, sop=sop, PatientID=patient)
    broken = make_file(study=study, series=series, PatientID=patient)
    boundary = "brk" + token()
    content = (
        multipart_body([good], boundary).removesuffix(f"--{boundary}--\r\n".encode())
        + f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + broken[: len(broken) // 2]
    )
    response = http.post(
        "/studies",
        content=content,
        headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(body)] == [sop]
    failed = _failed(body)
    assert failed
    for item in failed:
        assert value(item, FAILURE_REASON) == CANNOT_UNDERSTAND
        _error_comment(item)
    assert _get_instance(http, study, series, sop).content == good


# --- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "status", "needle"),
    [
        # A multipart body in which the boundary never occurs.
        ('multipart/related; type="application/dicom"; boundary=NOPE', "file", 400, "boundary"),
        # The Content-Type has no boundary parameter.
        ('multipart/related; type="application/dicom"', "multipart", 400, "boundary"),
        # A body with only the close delimiter holds no parts.
        ('multipart/related; type="application/dicom"; boundary=EMPTY', "empty", 400, ""),
        ("text/plain", "file", 415, ""),
        ("application/json", "file", 415, ""),
        ('multipart/related; type="application/dicom+json"; boundary=XYZ', "multipart", 415, ""),
        ("multipart/related; type=application/dicom+xml; boundary=XYZ", "multipart", 415, ""),
    ],
    ids=[
        "no-boundary-in-body",
        "no-boundary-param",
        "no-parts",
        "text-plain",
        "json",
        "dicom-json-parts",
        "dicom-xml-parts",
    ],
)
def test_malformed_or_unsupported_requests(
    http: httpx.Client, content_type: str, body: str, status: int, needle: str
) -> None:
    data = make_file(PatientID=token())
    content = {
        "file": data,
        "multipart": multipart_body([data], "XYZ"),
        "empty": b"--EMPTY--\r\n",
    }[body]
    response = http.post("/studies", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    message = error_message(response)
    assert needle.lower() in message.lower()


def test_no_content_type_is_415(http: httpx.Client) -> None:
    request = http.build_request("POST", "/studies", content=make_file(PatientID=token()))
    assert "content-type" not in request.headers
    response = http.send(request)
    assert response.status_code == 415, response.text
    error_message(response)


# --- duplicates and overwrite -----------------------------------------------------------------


def test_identical_resend_succeeds_once(http: httpx.Client, dicomweb: str) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_file(study=study, series=series, sop=sop, PatientID=token())
    stow_ok(http, [data])
    body = stow_ok(http, [data])
    [item] = _referenced(body)
    assert value(item, REFERENCED_SOP_INSTANCE) == sop
    assert (
        value(item, RETRIEVE_URL) == f"{dicomweb}/studies/{study}/series/{series}/instances/{sop}"
    )
    single = http.post("/studies", content=data, headers={"Content-Type": "application/dicom"})
    assert single.status_code == 200, single.text
    assert _study_counts(http, study) == {"series": 1, "instances": 1, "modalities": ["CT"]}
    assert _get_instance(http, study, series, sop).content == data


def test_different_content_with_stored_sop_uid_is_refused(http: httpx.Client) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    original = make_file(study=study, series=series, sop=sop, PatientID=patient, seed=1)
    changed = make_file(study=study, series=series, sop=sop, PatientID=patient, seed=2)
    assert original != changed
    stow_ok(http, [original])
    response = http.post("/studies", content=changed, headers={"Content-Type": "application/dicom"})
    assert response.status_code == 409, response.text
    body = response.json()
    assert not _referenced(body)
    [failed] = _failed(body)
    assert value(failed, REFERENCED_SOP_INSTANCE) == sop
    assert value(failed, FAILURE_REASON) == DUPLICATE_SOP_INSTANCE == 273
    _error_comment(failed)
    retrieved = _get_instance(http, study, series, sop)
    assert retrieved.status_code == 200
    assert retrieved.content == original
    assert _study_counts(http, study)["instances"] == 1


def test_instance_of_another_patient_is_refused_from_the_study(http: httpx.Client) -> None:
    # It was stored with 200, no warning: the study then held two patients' images.
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    owner, intruder = token(), token()
    stow_ok(http, [make_file(study=study, series=series, PatientID=owner)])
    other = make_file(study=study, series=series, sop=sop, PatientID=intruder)
    response = http.post("/studies", content=other, headers={"Content-Type": "application/dicom"})
    assert response.status_code == 409, response.text
    [failed] = _failed(response.json())
    assert value(failed, REFERENCED_SOP_INSTANCE) == sop
    assert value(failed, FAILURE_REASON) == PATIENT_MISMATCH
    comment = _error_comment(failed)
    assert "another patient" in comment
    assert owner not in comment  # the stored patient is not the sender's to learn
    assert _get_instance(http, study, series, sop).status_code == 404
    assert _study_counts(http, study)["instances"] == 1
    assert http.get("/studies", params={"PatientID": intruder}).json() == []


def test_instance_of_another_patient_is_stored_with_a_warning_when_configured(
    tmp_path: Path,
) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    with (
        running_server(tmp_path / "data", env={"PACS_PATIENT_MISMATCH": "warn"}) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        stow_ok(http, [make_file(study=study, series=series, PatientID="OWNER")])
        other = make_file(study=study, series=series, sop=sop, PatientID="INTRUDER")
        response = stow(http, [other])
        assert response.status_code == 200, response.text
        [item] = _referenced(response.json())
        assert value(item, REFERENCED_SOP_INSTANCE) == sop
        assert value(item, WARNING_REASON) == COERCION_OF_DATA_ELEMENTS
        assert "another patient" in _error_comment(item)
        assert _get_instance(http, study, series, sop).content == other
        assert _study_counts(http, study)["instances"] == 2


def _blob_files(data: Path) -> list[Path]:
    return [p for p in (data / "blobs").rglob("*") if p.is_file()]


def _spool_files(data: Path) -> list[Path]:
    spool = data / "tmp"
    return [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []


def test_overwrite_replaces_the_stored_instance(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    original = make_file(study=study, series=series, sop=sop, PatientID="OVR", seed=1)
    changed = make_file(
        study=study, series=series, sop=sop, PatientID="OVR", seed=2, SeriesDescription="new"
    )
    with (
        running_server(data_dir, "--overwrite") as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        stow_ok(http, [original])
        response = http.post(
            "/studies", content=changed, headers={"Content-Type": "application/dicom"}
        )
        assert response.status_code == 200, response.text
        [item] = _referenced(response.json())
        assert value(item, REFERENCED_SOP_INSTANCE) == sop
        assert _get_instance(http, study, series, sop).content == changed
        found = http.get(f"/studies/{study}/series", params={"includefield": "SeriesDescription"})
        assert [value(s, "0008103E") for s in found.json()] == ["new"]
        assert _study_counts(http, study)["instances"] == 1
    # The replaced file is gone: one stored instance, one blob.
    assert len(_blob_files(data_dir)) == 1
    assert _spool_files(data_dir) == []


def test_request_larger_than_the_limit_is_413(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    small = make_file(PatientID="SMALL")
    big = make_file(PatientID="BIG", rows=64, columns=64)
    limit = len(small) + 1000
    assert len(big) > limit

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    with (
        running_server(data_dir, env={"PACS_MAX_REQUEST_BYTES": str(limit)}) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        ok = http.post("/studies", content=small, headers={"Content-Type": "application/dicom"})
        assert ok.status_code == 200, ok.text
        too_big = http.post("/studies", content=big, headers={"Content-Type": "application/dicom"})
        assert too_big.status_code == 413, too_big.text
        assert str(limit) in error_message(too_big)
        # Chunked: no Content-Length to refuse early; the limit applies while streaming.
        streamed = http.post(
            "/studies", content=chunks(), headers={"Content-Type": "application/dicom"}
        )
        assert streamed.status_code == 413, streamed.text
        error_message(streamed)
        found = http.get("/instances", params={"PatientID": "BIG"})
        assert found.status_code == 200
        assert found.json() == []
    assert _spool_files(data_dir) == []
    assert len(_blob_files(data_dir)) == 1


def _empty_parts(boundary: str, count: int) -> bytes:
    return f"--{boundary}\r\n\r\n\r\n".encode() * count


def test_empty_parts_over_the_part_limit_are_413_and_one_log_line_at_most(tmp_path: Path) -> None:
    # 550 KB of empty parts once meant 50,000 store attempts, response items and log lines.
    data_dir = tmp_path / "data"
    boundary = "e" + token()
    body = _empty_parts(boundary, 1000) + f"--{boundary}--\r\n".encode()
    with (
        running_server(data_dir, env={"PACS_MAX_STOW_PARTS": "50"}) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        response = http.post(
            "/studies",
            content=body,
            headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        message = error_message(response)
        assert "50 parts" in message and "PACS_MAX_STOW_PARTS" in message
        # Under the limit, empty parts are failures of their own, logged as one summary.
        few = _empty_parts(boundary, 3) + multipart_body([make_file()], boundary)
        response = http.post(
            "/studies",
            content=few,
            headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
        )
        assert response.status_code == 202, response.text
        comments = [_error_comment(i) for i in _failed(response.json())]
        assert comments == [f"part {n} is empty" for n in (1, 2, 3)]
    log = (data_dir / "server.log").read_text()
    assert len([line for line in log.splitlines() if "STOW" in line]) == 1, log


def test_parts_over_the_limit_after_stored_ones_are_listed_not_lost(tmp_path: Path) -> None:
    boundary = "l" + token()
    body = multipart_body([make_file(PatientID=token()) for _ in range(6)], boundary)
    with (
        running_server(tmp_path / "data", env={"PACS_MAX_STOW_PARTS": "4"}) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        response = http.post(
            "/studies",
            content=body,
            headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
        )
        assert response.status_code == 202, response.text
        assert len(_referenced(response.json())) == 4
        # Part 5 is over the limit and ends the request: one failure says so.
        failed = _failed(response.json())
        assert len(failed) == 1, failed
        assert "more than 4 parts" in _error_comment(failed[0])


OUT_OF_RESOURCES = 0xA700


def test_chunked_request_over_the_limit_lists_the_parts_it_stored(tmp_path: Path) -> None:
    # It answered 413 although the parts before the limit were stored: the client never
    # learned of them. Now they are listed (202) and the part cut off is named as failed.
    data_dir = tmp_path / "data"
    study, patient = generate_uid(), "OVER-LIMIT"
    files = [make_file(study=study, PatientID=patient, rows=128, columns=128) for _ in range(5)]
    sops = [pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID for f in files]
    boundary = "lim" + token()
    body = multipart_body(files, boundary)
    limit = len(body) * 5 // 11  # inside the third part
    content_type = f"multipart/related; type=application/dicom; boundary={boundary}"

    def chunks(
        data: bytes,
    ) -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    with (
        running_server(data_dir, env={"PACS_MAX_REQUEST_BYTES": str(limit)}) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        response = http.post(
            "/studies", content=chunks(body), headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, response.text
        result = response.json()
        stored = [value(i, REFERENCED_SOP_INSTANCE) for i in _referenced(result)]
        # Exactly the parts that end within the limit, however the body arrived.
        assert stored == sops[:2]
        [failed] = _failed(result)
        assert value(failed, FAILURE_REASON) == OUT_OF_RESOURCES
        comment = _error_comment(failed)
        assert str(limit) in comment
        assert "part 3 and any after it" in comment
        found = http.get("/instances", params={"PatientID": patient}).json()
        assert sorted(value(i, "00080018") for i in found) == sorted(stored)
        # Over the limit from its first part: nothing stored, a plain 413.
        first_big = multipart_body(
            [make_file(PatientID="FIRST-BIG", rows=256, columns=256)], boundary
        )
        assert len(first_big) > limit
        refused = http.post(
            "/studies", content=chunks(first_big), headers={"Content-Type": content_type}
        )
        assert refused.status_code == 413, refused.text
        assert str(limit) in error_message(refused)
        assert http.get("/instances", params={"PatientID": "FIRST-BIG"}).json() == []
    assert _spool_files(data_dir) == []
    assert len(_blob_files(data_dir)) == len(stored)


# --- nothing lost, nothing left behind --------------------------------------------------------


def _abandoned_upload(url: str, data: bytes) -> None:
    """Send headers and half a body, then hang up."""
    parts = urlsplit(url)
    boundary = "gone"
    body = multipart_body([data], boundary)
    head = (
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: multipart/related; type=application/dicom; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.2)


def _wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_failed_requests_leave_no_spool_files_and_no_orphan_blobs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    study, series = generate_uid(), generate_uid()
    patient = "LOSE-NOTHING"

    def new(sop: str | None = None, **kw: object) -> bytes:
        return make_file(study=study, series=series, sop=sop, PatientID=patient, **kw)

    dup_sop = generate_uid()
    with (
        running_server(data_dir) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        stored = 0
        # Good, garbage and truncated parts in one request.
        whole = new(rows=64)
        response = stow(http, [new(), b"junk" * 100, whole[: len(whole) // 2], new()])
        assert response.status_code == 202, response.text
        stored += 2
        # A study mismatch and a duplicate with different content.
        response = stow(http, [new(sop=dup_sop, seed=1)], study=study)
        assert response.status_code == 200, response.text
        stored += 1
        response = stow(http, [new(sop=dup_sop, seed=2), make_file()], study=study)
        assert response.status_code == 409, response.text
        # Identical re-send: stored once.
        response = stow(http, [new(sop=dup_sop, seed=1)])
        assert response.status_code == 200, response.text
        # Malformed and unsupported requests.
        bad = http.post(
            "/studies",
            content=new(),
            headers={"Content-Type": "multipart/related; type=application/dicom; boundary=X"},
        )
        assert bad.status_code == 400, bad.text
        assert (
            http.post("/studies", content=new(), headers={"Content-Type": "text/plain"})
        ).status_code == 415
        # A body that breaks after its first part: that part stays.
        boundary = "brk"
        content = (
            multipart_body([new()], boundary).removesuffix(b"--brk--\r\n")
            + b"--brk\r\nContent-Type: application/dicom\r\n\r\n"
            + whole[:300]
        )
        response = http.post(
            "/studies",
            content=content,
            headers={
                "Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"
            },
        )
        assert response.status_code == 202, response.text
        stored += 1
        # A client that hangs up in the middle of its upload.
        _abandoned_upload(url, new(rows=256, columns=256))

        found = http.get("/instances", params={"PatientID": patient})
        assert found.status_code == 200
        assert len(found.json()) == stored
        assert _study_counts(http, study)["instances"] == stored
        assert _wait_for(lambda: _spool_files(data_dir) == []), _spool_files(data_dir)
        assert len(_blob_files(data_dir)) == stored


# --- concurrency ------------------------------------------------------------------------------


@pytest.fixture
def concurrent_study() -> Iterator[tuple[str, list[str], list[str], list[bytes]]]:
    study = generate_uid()
    patient = token()
    series = [generate_uid() for _ in range(4)]
    modalities = ["CT", "MR", "US", "CT"]
    files = [
        make_file(
            study=study,
            series=series[i % 4],
            Modality=modalities[i % 4],
            SeriesNumber=i % 4 + 1,
            InstanceNumber=i // 4 + 1,
            PatientID=patient,
            seed=i,
        )
        for i in range(40)
    ]
    yield study, series, modalities, files


async def test_concurrent_stow_counts_are_exact(
    dicomweb: str, concurrent_study: tuple[str, list[str], list[str], list[bytes]]
) -> None:
    study, series, modalities, files = concurrent_study
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    async with httpx.AsyncClient(base_url=dicomweb, timeout=60, limits=limits) as client:

        async def send(index: int, data: bytes) -> httpx.Response:
            if index % 2:
                return await client.post(
                    "/studies", content=data, headers={"Content-Type": "application/dicom"}
                )
            boundary = f"c{index}"
            return await client.post(
                "/studies",
                content=multipart_body([data], boundary),
                headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"},
            )

        responses = await asyncio.gather(*(send(i, f) for i, f in enumerate(files)))
        assert [r.status_code for r in responses] == [200] * 40, [r.text for r in responses]

        found = await client.get("/studies", params={"StudyInstanceUID": study})
        [attrs] = found.json()
        assert value(attrs, "00201208") == 40
        assert value(attrs, "00201206") == 4
        assert sorted(values(attrs, "00080061")) == sorted(set(modalities))

        found = await client.get(f"/studies/{study}/series")
        assert found.status_code == 200
        by_series = {value(s, "0020000E"): s for s in found.json()}
        assert set(by_series) == set(series)
        for uid, attrs in by_series.items():
            assert value(attrs, "00201209") == 10, uid
            assert value(attrs, "00080060") == modalities[series.index(uid)]
        found = await client.get(f"/studies/{study}/instances", params={"limit": "100"})
        assert len(found.json()) == 40
