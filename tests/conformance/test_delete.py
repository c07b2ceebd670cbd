"""DELETE of studies, series and instances against `pacs serve`: 204, and at once nothing of
it is left, as QIDO, WADO, C-FIND and the blob store see it (folder and S3), with the
change feed and the audit trail saying what went; 404 for what is not stored (a second
delete), 400 for a malformed UID, 403 without the `delete` permission; the counts and
modalities of what remains stay exact."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conformance.helpers import stow_ok
from tests.support.dcmtk import require_dcmtk, run
from tests.support.dicom_factory import make_file
from tests.support.oidc import OpenIdProvider
from tests.support.production import bucket_object_names, production_backends
from tests.support.server import free_port, running_server

# The tenant of the calling AE title FINDER (--dimse-ae-policy): one test's only.
DIMSE_TENANT = "delete-dimse"


@dataclass(frozen=True)
class Archive:
    url: str  # the DICOMweb root
    data: Path
    dimse_port: int


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """An archive on the embedded backends (SQLite, folder) with DIMSE on."""
    require_dcmtk(("findscu",))
    data, port = tmp_path_factory.mktemp("delete") / "data", free_port()
    policy = f"FINDER=find@{DIMSE_TENANT}"
    with running_server(data, "--dimse-port", str(port), "--dimse-ae-policy", policy) as url:
        yield Archive(f"{url}/dicomweb", data, port)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _client(root: str, tenant: str | None = None) -> httpx.Client:
    base = f"{root}/tenants/{tenant}" if tenant else root
    return httpx.Client(base_url=base, timeout=60)


def _stored_study(http: httpx.Client, study: str) -> dict[str, list[str]]:
    """A CT series of two instances and an MR series of one: series UID -> SOP UIDs."""
    ct, mr = generate_uid(), generate_uid()
    files = [make_file(study=study, series=ct, seed=n, InstanceNumber=n + 1) for n in range(2)]
    files.append(make_file(study=study, series=mr, Modality="MR"))
    body = stow_ok(http, files)
    sops = [item["00081155"]["Value"][0] for item in body["00081199"]["Value"]]
    return {ct: sops[:2], mr: sops[2:]}


def _blobs(data: Path, tenant: str) -> list[Path]:
    return [p for p in (data / "blobs" / tenant).rglob("*") if p.is_file()]


def _study_counts(http: httpx.Client, study: str) -> tuple[Any, ...] | None:
    found = http.get("studies", params={"StudyInstanceUID": study, "includefield": "all"})
    assert found.status_code == 200, found.text
    if not found.json():
        return None
    (attrs,) = found.json()
    return tuple(attrs[tag].get("Value") for tag in ("00080061", "00201206", "00201208"))


def _feed(http: httpx.Client) -> list[tuple[str, str | None, str | None, str]]:
    answer = http.get("changefeed", params={"includemetadata": "false", "limit": "100"})
    assert answer.status_code == 200, answer.text
    return [
        (e["Action"], e.get("SeriesInstanceUid"), e.get("SopInstanceUid"), e["State"])
        for e in answer.json()
    ]


def _c_find(port: int, study: str, folder: Path) -> list[str]:
    """The StudyInstanceUIDs a C-FIND for `study` answers."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    done = run(
        "findscu",
        "-aet",
        "FINDER",
        "-aec",
        "PACS",
        "-S",
        "-X",
        "-od",
        folder,
        *keys,
        "127.0.0.1",
        str(port),
    )
    assert done.returncode == 0, done.stderr
    return [dcmread(p).StudyInstanceUID for p in sorted(folder.glob("rsp*.dcm"))]


def test_deletes_leave_no_row_blob_or_hit_and_keep_what_remains_exact(
    archive: Archive, tmp_path: Path
) -> None:
    tenant, study = DIMSE_TENANT, generate_uid()
    with _client(archive.url, tenant) as http:
        series = _stored_study(http, study)
        (ct, (first, second)), (mr, (only,)) = series.items()
        assert len(_blobs(archive.data, tenant)) == 3
        assert _study_counts(http, study) == (["CT", "MR"], [2], [3])

        # One instance: the rest of its series and study stays, counted exactly.
        instance = f"studies/{study}/series/{ct}/instances/{first}"
        answer = http.delete(instance)
        assert answer.status_code == 204, answer.text
        assert http.get(instance).status_code == 404
        assert http.get(f"{instance}/metadata").status_code == 404
        assert http.get(f"studies/{study}/series/{ct}/instances/{second}").status_code == 200
        assert _study_counts(http, study) == (["CT", "MR"], [2], [2])
        assert len(_blobs(archive.data, tenant)) == 2
        # Deleting twice: nothing is stored there any more.
        again = http.delete(instance)
        assert again.status_code == 404
        assert first in again.json()["error"]

        # A whole series: the study's series count and modalities follow.
        assert http.delete(f"studies/{study}/series/{mr}").status_code == 204
        assert _study_counts(http, study) == (["CT"], [1], [1])
        assert http.get(f"studies/{study}/series/{mr}").status_code == 404

        # DIMSE sees the study until its delete, and not from the delete's answer on.
        assert _c_find(archive.dimse_port, study, tmp_path / "before") == [study]
        assert http.delete(f"studies/{study}").status_code == 204
        assert _c_find(archive.dimse_port, study, tmp_path / "after") == []
        assert _study_counts(http, study) is None
        assert http.get(f"studies/{study}").status_code == 404
        assert http.get("instances", params={"StudyInstanceUID": study}).json() == []
        assert _blobs(archive.data, tenant) == []
        assert http.delete(f"studies/{study}").status_code == 404

        gone = "deleted"
        assert _feed(http)[3:] == [
            ("instance.deleted", ct, first, gone),
            ("instance.deleted", mr, only, gone),
            ("series.deleted", mr, None, gone),
            ("instance.deleted", ct, second, gone),
            ("series.deleted", ct, None, gone),
            ("study.deleted", None, None, gone),
        ]
        # Each delete is in the trail (kept with it): Instances Accessed, action D.
        deletes = _audited_deletes(http, 3)
        assert [sorted(e["sopInstanceUIDs"]) for e in deletes] == [[second], [only], [first]]
        assert {e["studyInstanceUID"] for e in deletes} == {study}


def _audited_deletes(http: httpx.Client, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        events = http.get("audit", params={"limit": "100"}).json()
        found = [e for e in events if e["eventActionCode"] == "D" and e["outcome"] == 0]
        if len(found) >= count or time.monotonic() > deadline:
            return found


def test_malformed_uids_are_400_and_unknown_ones_404(archive: Archive) -> None:
    study = generate_uid()
    with _client(archive.url) as http:  # the default tenant, without the tenant prefix
        series = _stored_study(http, study)
        ct = next(iter(series))
        for path, name in [
            ("studies/1.2.x", "StudyInstanceUID"),
            (f"studies/{study}/series/01.2", "SeriesInstanceUID"),
            (f"studies/{study}/series/{ct}/instances/{'1' * 65}", "SOPInstanceUID"),
        ]:
            answer = http.delete(path)
            assert answer.status_code == 400, (path, answer.text)
            assert name in answer.json()["error"]
        unknown = generate_uid()
        for path in [
            f"studies/{unknown}",
            f"studies/{study}/series/{unknown}",
            f"studies/{study}/series/{ct}/instances/{unknown}",
            # The series exists, but in another study than the URL names.
            f"studies/{unknown}/series/{ct}",
        ]:
            answer = http.delete(path)
            assert answer.status_code == 404, (path, answer.text)
            assert unknown in answer.json()["error"]
        # Nothing was removed by the refused deletes; another tenant's delete is its own.
        assert _study_counts(http, study) == (["CT", "MR"], [2], [3])
    with _client(archive.url, _tenant()) as other:
        assert other.delete(f"studies/{study}").status_code == 404
    with _client(archive.url) as http:
        assert _study_counts(http, study) == (["CT", "MR"], [2], [3])
        assert http.delete(f"studies/{study}").status_code == 204


def test_a_delete_needs_the_delete_permission(
    oidc_provider: OpenIdProvider, tmp_path: Path
) -> None:
    study = generate_uid()
    with running_server(tmp_path / "data", env=oidc_provider.archive_env()) as url:
        everything_else = oidc_provider.token(scopes=["pacs:read", "pacs:write", "pacs:admin"])
        deleter = oidc_provider.token(scopes=["pacs:delete"])
        with httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http:
            http.headers["Authorization"] = f"Bearer {everything_else}"
            _stored_study(http, study)
            for token in (
                everything_else,
                oidc_provider.token(scopes=["pacs:delete"], tenants=["x"]),
            ):
                refused = http.delete(
                    f"studies/{study}", headers={"Authorization": f"Bearer {token}"}
                )
                assert refused.status_code == 403, refused.text
                assert "insufficient_scope" in refused.headers["www-authenticate"]
            assert _study_counts(http, study) == (["CT", "MR"], [2], [3])
            done = http.delete(f"studies/{study}", headers={"Authorization": f"Bearer {deleter}"})
            assert done.status_code == 204, done.text
            assert _study_counts(http, study) is None


def test_a_blob_the_store_refused_to_delete_is_deleted_by_the_retry(tmp_path: Path) -> None:
    """The running server's retry (PACS_BLOB_DELETE_RETRY_INTERVAL): a blob whose folder
    refuses deletions (immutable, even to root) outlives its DELETE, logged, and goes once
    the folder accepts again."""
    tenant, study, data = _tenant(), generate_uid(), tmp_path / "data"
    env = {"PACS_BLOB_DELETE_RETRY_INTERVAL": "1"}
    with running_server(data, env=env) as url, _client(f"{url}/dicomweb", tenant) as http:
        stow_ok(http, [make_file(study=study)])
        (blob,) = _blobs(data, tenant)
        subprocess.run(["chattr", "+i", str(blob.parent)], check=True)
        try:
            assert http.delete(f"studies/{study}").status_code == 204
            assert http.get(f"studies/{study}").status_code == 404
            time.sleep(1.5)  # a retry or more, refused too
            assert blob.exists()
        finally:
            subprocess.run(["chattr", "-i", str(blob.parent)], check=True)
        deadline = time.monotonic() + 10
        while blob.exists():
            assert time.monotonic() < deadline, "the blob was not deleted by the retry"
            time.sleep(0.1)
    log = (data / "server.log").read_text()
    assert "it stays recorded and is retried" in log
    assert "blob deletion retry: 1 deleted" in log


def test_a_delete_on_postgresql_and_s3_leaves_no_object_in_the_bucket(tmp_path: Path) -> None:
    tenant, study = _tenant(), generate_uid()
    with (
        production_backends(tmp_path) as env,
        running_server(tmp_path / "data", env=env) as url,
        _client(f"{url}/dicomweb", tenant) as http,
    ):
        series = _stored_study(http, study)
        other = generate_uid()
        stow_ok(http, [make_file(study=other)])
        assert len(bucket_object_names(env)) == 4
        ct = next(iter(series))
        assert http.delete(f"studies/{study}/series/{ct}").status_code == 204
        assert len(bucket_object_names(env)) == 2
        assert http.delete(f"studies/{study}").status_code == 204
        assert len(bucket_object_names(env)) == 1
        assert _study_counts(http, other) == (["CT"], [1], [1])
        assert [a for a, *_ in _feed(http)][4:] == [
            "instance.deleted",
            "instance.deleted",
            "series.deleted",
            "instance.deleted",
            "series.deleted",
            "study.deleted",
        ]
