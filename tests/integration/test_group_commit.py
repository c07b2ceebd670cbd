"""Group commit in the store service (app/services/group_commit.py), on real parts (SQLite
index, folder blob store): ingests arriving while an index commit runs share the next one,
and each is answered only by the outcome of its own batch's commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.index.sqlite import SqliteIndex
from app.services.ports import Adding, AddResult
from app.services.store import FailureReason, StoreResult
from tests.support.dicom_factory import make_file
from tests.support.fsync import Synced
from tests.support.ingest import WRITER, Ingest, ingest
from tests.support.poison import poison
from tests.unit.services.test_store_failures import PATHS, Store, _event

ARRIVING = 7  # ingests that arrive while the first one's commit runs


class GatedIndex(SqliteIndex):
    """The SQLite index, counting its batches; the first one says it `entered` and waits
    for `gate`."""

    batches: list[int]
    entered: asyncio.Event
    gate: asyncio.Event

    async def add_instances(self, batch: Sequence[Adding]) -> list[AddResult | Exception]:
        self.batches.append(len(batch))
        if len(self.batches) == 1:
            self.entered.set()
            await self.gate.wait()
        return await super().add_instances(batch)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store_while_first_commits(
    setup: Ingest, index: GatedIndex, files: list[bytes]
) -> list[StoreResult]:
    """Store files[0], and the others while its commit is held; then let it go."""
    index.batches, index.entered, index.gate = [], asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(
        setup.service.store_stream(WRITER, _chunks(files[0]), audit=_event())
    )
    async with asyncio.timeout(30):
        await index.entered.wait()
    others = [
        asyncio.create_task(setup.service.store_stream(WRITER, _chunks(f), audit=_event()))
        for f in files[1:]
    ]
    for _ in range(3000):  # until all of them wait for the next batch (30 s at most)
        if setup.service.commits.waiting == len(others):
            break
        await asyncio.sleep(0.01)
    index.gate.set()
    return [await first, *[await task for task in others]]


async def test_concurrent_ingests_share_one_index_commit(tmp_path: Path) -> None:
    study = generate_uid()
    files = [make_file(study=study) for _ in range(1 + ARRIVING)]
    async with ingest(tmp_path / "data", index_class=GatedIndex) as setup:
        index = setup.index
        assert isinstance(index, GatedIndex)
        results = await _store_while_first_commits(setup, index, files)
        assert all(r.ok for r in results), [r.message for r in results]
        # Eight ingests, two commits: the first alone, the seven that waited together.
        assert index.batches == [1, ARRIVING]
        assert len(await index.instances("default", study)) == len(files)
        assert len(setup.blob_files()) == len(files) and setup.spool_files() == []


async def test_a_failed_commit_fails_every_instance_of_its_batch_and_keeps_none(
    tmp_path: Path,
) -> None:
    study = generate_uid()
    poisoned = generate_uid()
    files = [make_file(study=study, sop=poisoned if i == 3 else None) for i in range(1 + ARRIVING)]
    async with ingest(tmp_path / "data", index_class=GatedIndex) as setup:
        index = setup.index
        assert isinstance(index, GatedIndex)
        await poison("sqlite", str(tmp_path / "data" / "index.sqlite"), poisoned, at_commit=True)
        results = await _store_while_first_commits(setup, index, files)
        assert index.batches == [1, ARRIVING]
        assert results[0].ok  # its own batch, committed before
        for result in results[1:]:  # answered failed, every one, not only the poisoned one
            assert (result.ok, result.reason) == (False, FailureReason.PROCESSING_FAILURE)
        stored = await index.instances("default", study)
        assert [s.sop_instance_uid for s in stored] == [results[0].sop_instance_uid]
        assert len(setup.blob_files()) == 1 and setup.spool_files() == []


@pytest.mark.parametrize("store", PATHS)
async def test_an_acknowledged_instance_is_synced_with_its_folder(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool file's sync moved out of the receiving (it runs beside the next part):
    still, when the store answers, the blob's bytes and its folder entry are on disk."""
    synced = Synced(monkeypatch)
    async with ingest(tmp_path / "data") as setup:
        result = await store(setup, make_file(), tmp_path)
        assert result.ok
        (blob,) = setup.blob_files()
        for path in (blob, blob.parent):
            assert path in synced, path
