"""The change feed service on the archive as `pacs serve` composes it (real SQLite index and
folder store): the read permission and tenant are enforced, a store of this process wakes a
waiting reader at once, and a change made by another process (another index object on the
same file) is seen by the poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.auth.principal import Access, Forbidden, Permission, Principal
from app.index.sqlite import SqliteIndex
from app.services.archive import Archive
from app.settings import Settings
from app.storage.filesystem import FolderBlobStore
from tests.support.dicom_factory import make_file
from tests.support.records import Records

TENANT = "clinic-a"
READER = Access(Principal("ai", frozenset({Permission.READ}), frozenset({TENANT})), TENANT)
WRITER = Access(Principal("ct", frozenset({Permission.WRITE}), None), TENANT)


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[Archive]:
    # A poll far beyond the test's bounds: only the in-process signal can wake a reader.
    settings = Settings(data=tmp_path, changefeed_poll_ms=60_000)
    index = await SqliteIndex.open(settings.sqlite_path)
    built = Archive.build(settings, index, FolderBlobStore(settings.blob_root))
    try:
        yield built
    finally:
        await built.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_reading_needs_the_read_permission_on_the_tenant(archive: Archive) -> None:
    with pytest.raises(Forbidden, match="read permission"):
        await archive.changefeed.read(WRITER, 0, 10, metadata=False)
    elsewhere = Access(READER.principal, "clinic-b")
    with pytest.raises(Forbidden, match="clinic-b"):
        await archive.changefeed.latest(elsewhere, metadata=False)
    assert await archive.changefeed.read(READER, 0, 10, metadata=False) == []


async def test_a_store_in_this_process_wakes_a_waiting_reader_at_once(archive: Archive) -> None:
    waiting = asyncio.create_task(archive.changefeed.read(READER, 0, 10, metadata=False, wait=20))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    event = AuditEvent.of(WRITER, AuditAction.INSTANCES_TRANSFERRED, AuditProtocol.DICOMWEB)
    result = await archive.store.store_stream(WRITER, _chunks(make_file()), audit=event)
    assert result.ok
    stored = time.monotonic()
    found = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - stored < 0.5
    assert [(c.sequence, c.sop_instance_uid) for c in found] == [(1, result.sop_instance_uid)]


async def test_a_change_by_another_process_is_seen_by_polling(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path, changefeed_poll_ms=100)
    index = await SqliteIndex.open(settings.sqlite_path)
    other = await SqliteIndex.open(settings.sqlite_path)  # another node on the same file
    archive = Archive.build(settings, index, FolderBlobStore(settings.blob_root))
    try:
        waiting = asyncio.create_task(
            archive.changefeed.read(READER, 0, 10, metadata=True, wait=20)
        )
        await asyncio.sleep(0.2)
        record = Records(tmp_path / "records").make()
        await other.add_instance(TENANT, record, overwrite=False)
        found = await asyncio.wait_for(waiting, 2)
        assert [c.sop_instance_uid for c in found] == [record.sop_instance_uid]
        assert found[0].metadata is not None
    finally:
        await archive.close()
        await other.close()


async def test_a_wait_without_changes_ends_empty(archive: Archive) -> None:
    started = time.monotonic()
    assert await archive.changefeed.read(READER, 0, 10, metadata=False, wait=1) == []
    assert 0.9 < time.monotonic() - started < 3
