"""The local file C-MOVE and C-GET send, on both blob stores: the folder store's own file
(no copy), an S3 object copied to the spool folder and checked against its SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import cast

import pytest

from app.auth.principal import Access, Permission, Principal
from app.services.delivery import Delivery
from app.services.errors import StorageInconsistent
from app.services.imaging import ImagingService
from app.services.plan import Planner
from app.services.ports import BlobStore, Index, StoredInstance
from app.services.retrieve import RetrieveService
from app.storage.filesystem import FolderBlobStore
from tests.integration.test_blob_contract import s3_endpoint, spool, store, write
from tests.support.dicom_factory import make_file

__all__ = ["s3_endpoint", "spool", "store"]  # fixtures used here

READER = Access(Principal("r", frozenset({Permission.READ}), None))
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def delivery(blobs: BlobStore, spool: Path) -> Delivery:
    retrieve = RetrieveService(cast(Index, None), blobs)  # the index is not asked
    return Delivery(Planner(retrieve, ImagingService(retrieve)), spool)


async def stored(blobs: BlobStore, spool: Path, data: bytes, sha256: str = "") -> StoredInstance:
    key = "default/" + hashlib.md5(data).hexdigest()
    await blobs.put(key, write(spool, data))
    return StoredInstance(
        "1.2.3",
        "1.2.3.4",
        "1.2.3.4.5",
        "1.2.840.10008.5.1.4.1.1.2",
        EXPLICIT_LE,
        key,
        len(data),
        sha256 or hashlib.sha256(data).hexdigest(),
        False,
        (),
        {},
    )


async def test_the_stored_file_is_handed_over_as_it_is(store: BlobStore, spool: Path) -> None:
    data = make_file()
    instance = await stored(store, spool, data)
    local = await delivery(store, spool).local_file(READER, instance, [EXPLICIT_LE])
    assert local.path.read_bytes() == data
    assert local.transfer_syntax_uid == EXPLICIT_LE
    # The folder store's own file is sent, never copied; an S3 object is copied once.
    assert local.temporary is not isinstance(store, FolderBlobStore)
    local.discard()
    assert local.path.exists() is isinstance(store, FolderBlobStore)
    assert not os.listdir(spool)  # nothing left behind


async def test_a_missing_or_damaged_stored_file_is_storage_inconsistent(
    store: BlobStore, spool: Path
) -> None:
    data = make_file()
    damaged = await stored(store, spool, data, sha256="0" * 64)
    missing = await stored(store, spool, make_file(PatientID="OTHER"))
    await store.delete(missing.blob_key)
    send = delivery(store, spool)
    with pytest.raises(StorageInconsistent, match="missing"):
        await send.local_file(READER, missing, [EXPLICIT_LE])
    if not isinstance(store, FolderBlobStore):  # a copy is checked on the way
        with pytest.raises(StorageInconsistent, match="checksum"):
            await send.local_file(READER, damaged, [EXPLICIT_LE])
    assert not os.listdir(spool)
