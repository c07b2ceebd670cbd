"""The orphan sweep (app/services/orphans.py) on each blob store with each index backend:
blobs no row refers to are quarantined once older than the grace, never a blob an
instance row names, nor a young one that may be an upload in flight on another node."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from app.index.sqlite import SqliteIndex
from app.services.orphans import sweep_orphans, sweep_periodically
from app.services.ports import BlobStore, Index, blob_key
from app.storage.filesystem import FolderBlobStore
from tests.integration.conftest import TENANT, Records
from tests.integration.test_blob_contract import (  # noqa: F401 (fixtures)
    read_all,
    s3_endpoint,
    spool,
    store,
    write,
)

# Old blobs are written, then the sweep waits this long before writing the young one: S3
# dates objects to the second, so the two sides of the grace are a second apart at least.
AGE_GAP = 2.1
GRACE = 1.5


async def put(blobs: BlobStore, folder: Path, key: str, data: bytes) -> str:
    await blobs.put(key, write(folder, data))
    return key


async def test_sweep_quarantines_old_orphans_and_keeps_the_rest(
    store: BlobStore,  # noqa: F811
    index: Index,
    records: Records,
    spool: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    indexed = []
    for tenant in (TENANT, "other"):
        record = records.make()
        key = await put(store, spool, blob_key(tenant, uuid.uuid4().hex), b"indexed")
        await index.add_instance(tenant, replace(record, blob_key=key), overwrite=False)
        indexed.append(key)
    # Left by a process killed between put and commit; the bare key is from before tenants.
    orphans = {blob_key(TENANT, uuid.uuid4().hex): b"orphan!", uuid.uuid4().hex: b"old-style"}
    for key, data in orphans.items():
        await put(store, spool, key, data)
    await asyncio.sleep(AGE_GAP)
    # Another node's upload in flight: its blob is written, its row not yet committed.
    in_flight = await put(store, spool, blob_key("other", uuid.uuid4().hex), b"in flight")

    with caplog.at_level(logging.INFO, logger="app.services.orphans"):
        result = await sweep_orphans(index, store, grace=GRACE, page_size=2)

    assert (result.blobs, result.quarantined, result.young) == (5, 2, 1)
    assert result.quarantined_bytes == sum(len(data) for data in orphans.values())
    listed = {blob.key async for page in store.list_blobs() for blob in page}
    assert listed == {*indexed, in_flight}
    for key in indexed:
        assert await read_all(store, key) == b"indexed"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key, data in orphans.items():
        assert not await store.exists(key)
        # The line an operator finds: key and size, nothing from inside the blob.
        assert any(f"blob {key} ({len(data)} bytes" in m for m in messages), messages

    # The in-flight upload commits afterwards: its blob is there and served.
    await index.add_instance("other", replace(records.make(), blob_key=in_flight), overwrite=False)
    assert await read_all(store, in_flight) == b"in flight"
    again = await sweep_orphans(index, store, grace=GRACE)
    assert (again.blobs, again.quarantined, again.young) == (3, 0, 0)


async def test_periodic_sweep_runs_at_start_and_survives_a_failing_run(
    tmp_path: Path,
    spool: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed run (here a listing that raises) is logged and the next one still runs."""
    # The loop is the same whatever the backends: the embedded ones.
    blobs = FolderBlobStore(tmp_path / "blobs")
    index = await SqliteIndex.open(tmp_path / "index.sqlite")
    orphan = await put(blobs, spool, blob_key(TENANT, uuid.uuid4().hex), b"orphan")
    real = blobs.list_blobs
    calls = 0

    def failing_once(page_size: int = 1000):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("listing failed")
        return real(page_size)

    monkeypatch.setattr(blobs, "list_blobs", failing_once)
    with caplog.at_level(logging.INFO, logger="app.services.orphans"):
        task = asyncio.create_task(sweep_periodically(index, blobs, grace=0, interval=0.05))
        for _ in range(100):
            if not await blobs.exists(orphan):
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await index.close()
    assert not await blobs.exists(orphan)
    assert any(
        "orphan sweep failed: OSError: listing failed" in r.getMessage() for r in caplog.records
    )
