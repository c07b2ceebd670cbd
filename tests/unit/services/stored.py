"""A small multi-frame CT stored in a folder blob store, as the index records it, for the
services' unit tests (no index: the services under test do not ask it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

from app.dicom.parse import parse_instance
from app.services.ports import BlobStore, Index, StoredInstance
from app.services.retrieve import RetrieveService
from app.storage.filesystem import FolderBlobStore
from tests.support.dicom_factory import make_dataset, to_bytes


async def stored_instance(
    tmp_path: Path, *, pixels: bool = True, blobs: BlobStore | None = None
) -> tuple[RetrieveService, StoredInstance]:
    """A 2-frame 16x16 CT in Explicit VR Little Endian, stored in `blobs` (a folder store
    under `tmp_path` by default)."""
    ds = make_dataset(rows=16, columns=16, frames=2, WindowCenter=2048, WindowWidth=4096)
    if not pixels:
        del ds.PixelData
    data = to_bytes(ds)
    spooled = tmp_path / "in.dcm"
    spooled.write_bytes(data)
    parsed = parse_instance(spooled)
    blobs = blobs or FolderBlobStore(tmp_path / "blobs")
    key = "default/" + hashlib.md5(data).hexdigest()
    await blobs.put(key, spooled)
    instance = StoredInstance(
        parsed.study_instance_uid,
        parsed.series_instance_uid,
        parsed.sop_instance_uid,
        parsed.sop_class_uid,
        parsed.transfer_syntax_uid,
        key,
        len(data),
        hashlib.sha256(data).hexdigest(),
        parsed.encapsulated,
        parsed.frames,
        parsed.bulk,
    )
    return RetrieveService(cast(Index, None), blobs), instance
