"""SIGKILL in the middle of a large upload: acknowledged instances survive, the instance in
flight never becomes visible, and a restart leaves no half-written data behind."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.large import LargeInstance
from tests.support.production import bucket_object_count, production_backends
from tests.support.server import PIDS, running_server

KILL_AFTER_BYTES = 64 * 1024 * 1024


def _stow(client: httpx.Client, blob: bytes) -> httpx.Response:
    return client.post("/studies", content=blob, headers={"Content-Type": "application/dicom"})


def _killing_upload(instance: LargeInstance, pid: int) -> Iterator[bytes]:
    """The instance's bytes; the server is killed once KILL_AFTER_BYTES have been sent."""
    sent = 0
    for chunk in instance.chunks():
        yield chunk
        sent += len(chunk)
        if sent >= KILL_AFTER_BYTES:
            os.kill(pid, signal.SIGKILL)
            yield chunk  # keep sending: the connection breaks under the client


def _blob_count(data: Path, env: dict[str, str]) -> int:
    if env:
        return bucket_object_count(env)
    return sum(1 for p in (data / "blobs").rglob("*") if p.is_file())


@contextmanager
def _backends(kind: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    if kind == "production":
        with production_backends(tmp_path) as env:
            yield env
    else:
        yield {}


@pytest.mark.parametrize("kind", ["embedded", "production"])
def test_sigkill_during_large_upload_loses_nothing_acknowledged(tmp_path: Path, kind: str) -> None:
    with _backends(kind, tmp_path) as env:
        _crash_and_recover(tmp_path / "data", env)


def _crash_and_recover(data: Path, env: dict[str, str]) -> None:
    study = make_dataset().StudyInstanceUID
    acknowledged: dict[str, bytes] = {}
    large = LargeInstance(frames=400, study=study)  # 200 MiB, killed a third of the way in

    with running_server(data, env=env) as url, httpx.Client(base_url=f"{url}/dicomweb") as client:
        for number in range(20):
            ds = make_dataset(study=study, InstanceNumber=number + 1)
            blob = to_bytes(ds)
            assert _stow(client, blob).status_code == 200
            acknowledged[ds.SOPInstanceUID] = blob
        with pytest.raises(httpx.TransportError):
            client.post(
                "/studies",
                content=_killing_upload(large, PIDS[url]),
                headers={"Content-Type": "application/dicom"},
                timeout=60,
            )

    # The killed process left its partial spool file; nothing about it is indexed.
    with running_server(data, env=env) as url, httpx.Client(base_url=f"{url}/dicomweb") as client:
        assert not list((data / "tmp").iterdir()), "unfinished upload not cleaned at start"
        found = client.get("/instances", params={"StudyInstanceUID": study, "limit": 1000})
        uids = {item["00080018"]["Value"][0] for item in found.json()}
        assert uids == set(acknowledged)
        studies = client.get("/studies", params={"StudyInstanceUID": study}).json()
        assert studies[0]["00201208"]["Value"] == [len(acknowledged)]
        ds = large.dataset
        missing = client.get(
            f"/studies/{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )
        assert missing.status_code == 404
        for sop, blob in acknowledged.items():
            item = next(i for i in found.json() if i["00080018"]["Value"][0] == sop)
            got = client.get(item["00081190"]["Value"][0], headers={"Accept": "application/dicom"})
            assert got.content == blob
        assert _blob_count(data, env) == len(acknowledged)
