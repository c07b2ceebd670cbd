"""The delete service (app/services/delete.py) on each blob store with each index backend:
a delete's blobs are gone from the store once it answers, a deletion the store refuses
stays recorded and is retried until the blob is gone, and the orphan sweep leaves such a
blob to the retry instead of quarantining it."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.auth.principal import Access, Forbidden, Permission, Principal, anonymous
from app.services.audit import AuditService
from app.services.delete import DeleteService, retry_blob_deletions
from app.services.errors import NotFound
from app.services.orphans import sweep_orphans
from app.services.ports import BlobStore, Index, blob_key
from app.storage.filesystem import FolderBlobStore
from tests.integration.conftest import TENANT, Records
from tests.integration.test_blob_contract import (  # noqa: F401 (fixtures)
    s3_endpoint,
    spool,
    store,
    write,
)

ACCESS = Access(anonymous(), TENANT)


def _event(access: Access = ACCESS) -> AuditEvent:
    return AuditEvent.of(access, AuditAction.INSTANCES_ACCESSED, AuditProtocol.DICOMWEB)


async def _stored_study(
    index: Index,
    blobs: BlobStore,
    records: Records,
    folder: Path,
    count: int,
) -> tuple[str, list[str]]:
    study, keys = generate_uid(), []
    for _ in range(count):
        key = blob_key(TENANT, uuid.uuid4().hex)
        await blobs.put(key, write(folder, b"blob of " + key.encode()))
        record = replace(records.make(study=study), blob_key=key)
        await index.add_instance(TENANT, record, overwrite=False)
        keys.append(key)
    return study, keys


async def test_a_delete_removes_its_blobs_and_their_records(
    store: BlobStore,  # noqa: F811
    index: Index,
    records: Records,
    spool: Path,  # noqa: F811
) -> None:
    study, keys = await _stored_study(index, store, records, spool, 3)
    audit = AuditService(index)
    service = DeleteService(index, store, audit)
    # Without the permission: refused before anything is looked at or removed.
    reader = Principal("reader", frozenset({Permission.READ, Permission.WRITE}), None)
    with pytest.raises(Forbidden, match="delete permission"):
        await service.delete(Access(reader, TENANT), study, event=_event())
    assert all([await store.exists(key) for key in keys])

    done = await service.delete(ACCESS, study, event=_event())
    assert sorted(i.blob_key for i in done.instances) == sorted(keys)
    assert not any([await store.exists(key) for key in keys])
    assert await index.blobs_to_delete(10) == []
    assert await index.instances(TENANT, study) == []
    with pytest.raises(NotFound, match=f"no study {study} is stored"):
        await service.delete(ACCESS, study, event=_event())
    await audit.close()


@contextmanager
def immutable(folder: Path) -> Iterator[None]:
    """`folder` refuses to lose its entries, even to root (ext4's immutable attribute): a
    store that refuses deletions, as a read-only or failing volume would."""
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


async def test_a_refused_blob_deletion_is_retried_and_never_swept(
    tmp_path: Path,
    index: Index,
    records: Records,
    spool: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    blobs = FolderBlobStore(tmp_path / "blobs")
    study, keys = await _stored_study(index, blobs, records, spool, 2)
    stuck = keys[0]
    audit = AuditService(index)
    service = DeleteService(index, blobs, audit)
    path = blobs.local_path(stuck)
    assert path is not None
    with immutable(path.parent):
        with caplog.at_level(logging.WARNING, logger="app.services.delete"):
            await service.delete(ACCESS, study, event=_event())
        # The rows are gone at once; the refused blob is still there and still recorded.
        assert await index.instances(TENANT, study) == []
        assert await blobs.exists(stuck)
        assert not await blobs.exists(keys[1])
        assert await index.blobs_to_delete(10) == [stuck]
        assert any(f"deleting blob {stuck} failed" in r.getMessage() for r in caplog.records)
        # No row names it, and it is old enough: still not an orphan to quarantine.
        swept = await sweep_orphans(index, blobs, grace=0)
        assert (swept.blobs, swept.quarantined) == (1, 0)
        # The store still refuses: the retry fails and keeps the record.
        result = await retry_blob_deletions(index, blobs)
        assert (result.deleted, result.failed) == (0, 1)
        assert await index.blobs_to_delete(10) == [stuck]
    # The store accepts again: the next retry deletes it and forgets it.
    result = await retry_blob_deletions(index, blobs)
    assert (result.deleted, result.failed) == (1, 0)
    assert not await blobs.exists(stuck)
    assert await index.blobs_to_delete(10) == []
    assert (await retry_blob_deletions(index, blobs)).deleted == 0
    await audit.close()
