"""Storage failures through both ingest protocols, provoked for real: a STOW-RS request and a
C-STORE from DCMTK's storescu get the statuses PS3.4 and PS3.18 name, with a comment saying why,
and nothing of the refused instance is kept.

- A700 "Refused: out of resources": the data folder (spool and blobs) is a small tmpfs, full
  before the instance is. Mounting needs root (CAP_SYS_ADMIN): a skip elsewhere, a failure in
  CI.
- 0110 "Processing failure": the blob store is an S3 bucket (moto) deleted under the running
  server; the upload gets NoSuchBucket.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    ERROR_COMMENT,
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_SEQUENCE,
    items,
    stow,
    token,
    value,
)
from tests.support import moto
from tests.support.dcmtk import require_dcmtk, run
from tests.support.dicom_factory import make_file
from tests.support.production import require_moto, s3_client
from tests.support.server import free_port, running_server

OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
DISK = 2 * 1024 * 1024  # the tmpfs; the large instance is 3 MiB, the small one 8 KiB


def _large(patient: str) -> bytes:
    return make_file(study=generate_uid(), rows=1024, columns=1536, PatientID=patient)


def _small(patient: str) -> bytes:
    return make_file(study=generate_uid(), rows=64, columns=64, PatientID=patient)


@contextmanager
def _tmpfs(where: Path, size: int) -> Iterator[Path]:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs (root needed): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@contextmanager
def _archive(data: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """`pacs serve` with DIMSE on; yields (DICOMweb root, DIMSE port)."""
    port = free_port()
    args = ("--dimse-port", str(port), "--ae-title", "PACS")
    with running_server(data, *args, env=env, log=log) as url:
        yield f"{url}/dicomweb", port


def _stow_failure(dicomweb: str, data: bytes) -> dict[str, Any]:
    """STOW one instance that must fail: the FailedSOPSequence item."""
    with httpx.Client(base_url=dicomweb, timeout=60) as http:
        response = stow(http, [data])
    assert response.status_code == 409, response.text
    body = response.json()
    assert REFERENCED_SOP_SEQUENCE not in body or not items(body, REFERENCED_SOP_SEQUENCE)
    [failed] = items(body, FAILED_SOP_SEQUENCE)
    return failed


def _storescu(port: int, data: bytes, folder: Path) -> tuple[int, str]:
    """C-STORE `data` with storescu: (the response's status, its Error Comment)."""
    path = folder / f"{uuid.uuid4().hex}.dcm"
    path.write_bytes(data)
    done = run("storescu", "-d", "-aet", "STORESCU", "-aec", "PACS", "127.0.0.1", str(port), path)
    path.unlink()
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", done.stdout)
    assert status, done.stdout
    comment = re.search(r"\(0000,0902\) LO \[([^\]]*)\]", done.stdout)
    return int(status.group(1), 16), comment.group(1) if comment else ""


def _found(dicomweb: str, patient: str) -> int:
    response = httpx.get(f"{dicomweb}/instances", params={"PatientID": patient}, timeout=30)
    assert response.status_code in (200, 204), response.text
    return len(response.json()) if response.status_code == 200 else 0


def test_full_storage_is_a700_on_stow_and_c_store(tmp_path: Path) -> None:
    require_dcmtk()
    patient = token()
    env = {"PACS_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite'}"}
    with (
        _tmpfs(tmp_path / "disk", DISK) as disk,
        _archive(disk, tmp_path / "server.log", env) as (dicomweb, port),
    ):
        failed = _stow_failure(dicomweb, _large(patient))
        assert value(failed, FAILURE_REASON) == OUT_OF_RESOURCES
        assert "storage is full" in value(failed, ERROR_COMMENT)

        status, comment = _storescu(port, _large(patient), tmp_path)
        assert status == OUT_OF_RESOURCES
        assert comment == "storage is full"

        assert _found(dicomweb, patient) == 0
        assert not [p for p in disk.rglob("*") if p.is_file()], "a refused upload left a file"
        # The refusals freed what they had written: an instance that fits is stored.
        with httpx.Client(base_url=dicomweb, timeout=60) as http:
            assert stow(http, [_small(patient)]).status_code == 200
        assert _storescu(port, _small(patient), tmp_path) == (0, "")
        assert _found(dicomweb, patient) == 2


def test_failing_blob_store_is_0110_on_stow_and_c_store(tmp_path: Path) -> None:
    require_dcmtk()
    require_moto()
    patient = token()
    with moto.running_moto(tmp_path) as endpoint:
        bucket = f"pacs-{uuid.uuid4().hex[:12]}"
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=bucket)
        env = {
            "PACS_STORAGE_URL": f"s3://{bucket}/blobs",
            "PACS_S3_ENDPOINT_URL": endpoint,
            "PACS_S3_REGION": moto.REGION,
            "PACS_S3_ACCESS_KEY_ID": moto.ACCESS_KEY_ID,
            "PACS_S3_SECRET_ACCESS_KEY": moto.SECRET_ACCESS_KEY,
        }
        with _archive(tmp_path / "data", tmp_path / "server.log", env) as (dicomweb, port):
            s3.delete_bucket(Bucket=bucket)  # under the running server: uploads now fail

            failed = _stow_failure(dicomweb, _small(patient))
            assert value(failed, FAILURE_REASON) == PROCESSING_FAILURE
            assert "nothing was stored" in value(failed, ERROR_COMMENT)

            status, comment = _storescu(port, _small(patient), tmp_path)
            assert status == PROCESSING_FAILURE
            assert "nothing was stored" in comment

            assert _found(dicomweb, patient) == 0
