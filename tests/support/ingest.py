"""The store service on real parts (a SQLite index, a folder blob store, the audit service)
with faults injected at its ports, and received data sets as the DIMSE layer writes them."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from app.audit.event import AuditEvent
from app.audit.query import AuditQuery
from app.auth.principal import Access, Principal
from app.index.sqlite import SqliteIndex
from app.services.audit import AuditService
from app.services.ports import BlobStore, Index
from app.services.spool import Received, ReceivedSink
from app.services.store import StoreService
from app.storage.filesystem import FolderBlobStore

WRITER = Access(Principal("modality", frozenset({"write", "read"}), None))  # type: ignore[arg-type]
STORAGE_FULL = OSError(errno.ENOSPC, "No space left on device")
BACKEND_DOWN = OSError(errno.EIO, "Input/output error")


class FaultyBlobs:
    """The folder store, whose `put` raises `fault` when one is set."""

    def __init__(self, inner: BlobStore, fault: Exception | None) -> None:
        self.inner, self.fault = inner, fault

    async def put(self, key: str, source: Path) -> None:
        if self.fault is not None:
            raise self.fault
        await self.inner.put(key, source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FaultyIndex:
    """The SQLite index, whose `add_instance` and `add_instances` raise `fault` when one
    is set."""

    def __init__(self, inner: Index, fault: Exception | None) -> None:
        self.inner, self.fault = inner, fault

    async def add_instance(self, *args: Any, **kwargs: Any) -> Any:
        if self.fault is not None:
            raise self.fault
        return await self.inner.add_instance(*args, **kwargs)

    async def add_instances(self, *args: Any, **kwargs: Any) -> Any:
        if self.fault is not None:
            raise self.fault
        return await self.inner.add_instances(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Ingest:
    service: StoreService
    index: Index
    data: Path

    def spool_files(self) -> list[Path]:
        return sorted((self.data / "spool").iterdir())

    def blob_files(self) -> list[Path]:
        return sorted(p for p in (self.data / "blobs").rglob("*") if p.is_file())

    async def audit_events(self) -> list[AuditEvent]:
        await self.service.audit.close()  # writes what is queued
        return await self.index.search_audit("default", AuditQuery())


@asynccontextmanager
async def ingest(
    data: Path,
    *,
    put_fault: Exception | None = None,
    index_fault: Exception | None = None,
    index_class: type[SqliteIndex] = SqliteIndex,
) -> AsyncIterator[Ingest]:
    index = await index_class.open(data / "index.sqlite")
    try:
        faulty = FaultyIndex(index, index_fault)
        blobs = FaultyBlobs(FolderBlobStore(data / "blobs"), put_fault)
        audit = AuditService(index)
        service = StoreService(faulty, blobs, data / "spool", audit)  # type: ignore[arg-type]
        yield Ingest(service, index, data)
        await audit.close()
    finally:
        await index.close()


def received_sink(
    service: StoreService, part10: bytes, source_ae: str = "MODALITY", fragment: int = 16384
) -> ReceivedSink:
    """A sink of `service` holding `part10`'s data set as the DIMSE layer writes it while
    receiving a C-STORE: the data set bytes alone (no PS3.10 header), in fragments of
    `fragment` bytes (DCMTK's storescu sends PDUs of 16 KB)."""
    sink = service.open_received(received_of(part10, source_ae))
    view = memoryview(part10)
    for start in range(data_set_offset(part10), len(part10), fragment):
        sink.write(view[start : start + fragment])
    return sink


def received_of(part10: bytes, source_ae: str = "MODALITY") -> Received:
    """What a C-STORE request carrying `part10`'s data set says of it."""
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    return Received(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        source_ae=source_ae,
    )


def data_set_offset(part10: bytes) -> int:
    """Where the data set of a PS3.10 file starts: after the preamble, 'DICM' and the file
    meta group (whose length its first element gives)."""
    offset = part10.index(b"DICM") + 4
    return offset + 12 + int.from_bytes(part10[offset + 8 : offset + 12], "little")
