"""SIGKILL in the middle of an upload: acknowledged instances survive, the instance in
flight never becomes visible, and a restart leaves no half-written data behind: spool files
are removed, and a blob stored but never indexed goes to the quarantine."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from app.storage.keys import QUARANTINE
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.large import LargeInstance
from tests.support.production import bucket_object_names, production_backends
from tests.support.server import PIDS, running_server

KILL_AFTER_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


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
    live, _ = _blobs(data, env)
    return len(live)


def _blobs(data: Path, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Names of the stored objects: (in the store's keys, in its quarantine)."""
    if env:
        names = bucket_object_names(env)
    else:
        root = data / "blobs"
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    quarantined = [n for n in names if f"{QUARANTINE}/" in n]
    return [n for n in names if n not in quarantined], quarantined


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


@contextmanager
def _index_writes_held(data: Path, env: dict[str, str]) -> Iterator[None]:
    """Hold the index's write lock from outside, so that an instance's blob is stored and
    its index transaction waits: the window a kill -9 must hit to leave an orphan blob.
    Reads go on (the other node's sweep reads the index meanwhile)."""
    if not env:
        db = sqlite3.connect(data / "index.sqlite", isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(step: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(step, loop).result(timeout=30)

    conn = run(asyncpg.connect(env["PACS_DATABASE_URL"]))
    try:
        run(conn.execute("BEGIN"))
        # EXCLUSIVE: other transactions may read the table, none may write it.
        run(conn.execute("LOCK TABLE instance IN EXCLUSIVE MODE"))
        yield
    finally:
        run(conn.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["embedded", "production"])
def test_sigkill_between_blob_and_index_commit_quarantines_the_orphan_blob(
    tmp_path: Path, kind: str
) -> None:
    """The process dies after storing an instance's blob and before its index commit: the
    blob has no row. At restart the sweep moves it to the quarantine, logs its key and
    size, and every acknowledged instance is still served. With production backends a
    second node starts meanwhile: its sweep must keep the blob of the upload in flight."""
    with _backends(kind, tmp_path) as env:
        data = tmp_path / "data"
        study = make_dataset().StudyInstanceUID
        acknowledged: dict[str, bytes] = {}
        in_flight = to_bytes(make_dataset(study=study, InstanceNumber=99))
        with (
            running_server(data, env=env) as url,
            httpx.Client(base_url=f"{url}/dicomweb") as client,
            ThreadPoolExecutor(1) as pool,
        ):
            for number in range(5):
                ds = make_dataset(study=study, InstanceNumber=number + 1)
                assert _stow(client, to_bytes(ds)).status_code == 200
                acknowledged[ds.SOPInstanceUID] = to_bytes(ds)
            with _index_writes_held(data, env):
                upload = pool.submit(_stow, client, in_flight)
                _wait_for(lambda: _blob_count(data, env) == 6, "the in-flight blob")
                if env:
                    _second_node_keeps_the_blob_in_flight(tmp_path / "node-b", env)
                os.kill(PIDS[url], signal.SIGKILL)
                with pytest.raises(httpx.TransportError):
                    upload.result(timeout=30)
        live, quarantined = _blobs(data, env)
        assert (len(live), quarantined) == (6, [])

        restart = {**env, "PACS_ORPHAN_GRACE": "0"}
        with (
            running_server(data, env=restart) as url,
            httpx.Client(base_url=f"{url}/dicomweb") as client,
        ):
            _wait_for(lambda: len(_blobs(data, env)[1]) == 1, "the orphan's quarantine")
            live, [moved] = _blobs(data, env)
            assert len(live) == len(acknowledged)
            tenant, *_, name = moved.split(f"{QUARANTINE}/")[1].split("/")
            key = f"{tenant}/{name}"
            log = (data / "server.log").read_text()
            assert f"quarantined blob {key} ({len(in_flight)} bytes" in log
            found = client.get("/instances", params={"StudyInstanceUID": study}).json()
            assert {item["00080018"]["Value"][0] for item in found} == set(acknowledged)
            for item in found:
                got = client.get(
                    item["00081190"]["Value"][0], headers={"Accept": "application/dicom"}
                )
                assert got.content == acknowledged[item["00080018"]["Value"][0]]


def _second_node_keeps_the_blob_in_flight(data: Path, env: dict[str, str]) -> None:
    """Another node starts while the upload is in flight (blob stored, row not committed):
    its sweep at start sees the blob without a row and keeps it, as younger than the grace."""
    with running_server(data, env={**env, "PACS_ORPHAN_GRACE": "60"}):
        _wait_for(lambda: "orphan sweep:" in (data / "server.log").read_text(), "node B's sweep")
        log = (data / "server.log").read_text()
        assert "6 blobs, 0 quarantined (0 bytes), 1 without a row kept" in log, log
