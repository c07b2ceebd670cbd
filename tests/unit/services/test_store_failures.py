"""One ingest path: STOW-RS (a stream) and C-STORE (a sink of the spool) reach the same spool,
parse, store and index, and the same failure reasons: A700 when the storage is full, 0110
when the archive fails. Real SQLite index and folder blob store, faults injected at the
ports; each case leaves no spool file and no blob behind."""

from __future__ import annotations

import errno
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pydicom
import pynetdicom
import pytest

from app.audit.event import AuditAction, AuditEvent, AuditProtocol, EventOutcome
from app.dimse.store import store_status
from app.services import spool
from app.services.store import FailureReason, StoreResult, failure_reason_of
from app.web.stow import _item
from tests.support.dicom_factory import make_file
from tests.support.fsync import Synced
from tests.support.ingest import (
    BACKEND_DOWN,
    STORAGE_FULL,
    WRITER,
    Ingest,
    data_set_offset,
    ingest,
    received_of,
    received_sink,
)

Store = Callable[[Ingest, bytes, Path], Awaitable[StoreResult]]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


async def by_stow(setup: Ingest, data: bytes, work: Path) -> StoreResult:
    return await setup.service.store_stream(WRITER, _chunks(data), audit=_event())


async def by_cstore(setup: Ingest, data: bytes, work: Path) -> StoreResult:
    sink = received_sink(setup.service, data)
    return await setup.service.store_received(WRITER, sink, audit=_event())


def _event() -> AuditEvent:
    return AuditEvent.of(WRITER, AuditAction.INSTANCES_TRANSFERRED, AuditProtocol.DIMSE)


PATHS = [pytest.param(by_stow, id="stow"), pytest.param(by_cstore, id="cstore")]


@pytest.mark.parametrize(
    ("error", "reason", "comment"),
    [
        (OSError(errno.ENOSPC, "full"), FailureReason.OUT_OF_RESOURCES, "storage is full"),
        (OSError(errno.EDQUOT, "quota"), FailureReason.OUT_OF_RESOURCES, "storage is full"),
        (OSError(errno.EIO, "io"), FailureReason.PROCESSING_FAILURE, "the archive failed"),
        (RuntimeError("S3 said 503"), FailureReason.PROCESSING_FAILURE, "the archive failed"),
    ],
)
def test_what_a_failure_means(error: Exception, reason: FailureReason, comment: str) -> None:
    found, words = failure_reason_of(error)
    assert found is reason
    assert words.startswith(comment)


@pytest.mark.parametrize("store", PATHS)
async def test_a_full_blob_store_is_a700_on_both_paths(store: Store, tmp_path: Path) -> None:
    async with ingest(tmp_path / "data", put_fault=STORAGE_FULL) as setup:
        result = await store(setup, make_file(), tmp_path)
        assert (result.ok, result.reason, result.message) == (
            False,
            FailureReason.OUT_OF_RESOURCES,
            "storage is full",
        )
        assert setup.spool_files() == [] and setup.blob_files() == []
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SERIOUS_FAILURE
        assert event.sop_instance_uids == (result.sop_instance_uid,)
    _answers(result, 0xA700, "storage is full")


@pytest.mark.parametrize("store", PATHS)
async def test_a_failing_blob_store_is_0110_on_both_paths(store: Store, tmp_path: Path) -> None:
    async with ingest(tmp_path / "data", put_fault=BACKEND_DOWN) as setup:
        result = await store(setup, make_file(), tmp_path)
        assert (result.ok, result.reason) == (False, FailureReason.PROCESSING_FAILURE)
        assert setup.spool_files() == [] and setup.blob_files() == []
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SERIOUS_FAILURE
    _answers(result, 0x0110, "the archive failed; nothing was stored")


@pytest.mark.parametrize("store", PATHS)
async def test_a_spool_that_cannot_be_written_is_0110_on_both_paths(
    store: Store, tmp_path: Path
) -> None:
    async with ingest(tmp_path / "data") as setup:
        spool = setup.service.spool_dir
        spool.rmdir()
        spool.write_bytes(b"")  # not a folder: creating a spool file fails (ENOTDIR)
        result = await store(setup, make_file(), tmp_path)
        assert (result.ok, result.reason) == (False, FailureReason.PROCESSING_FAILURE)
        assert setup.blob_files() == []
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SERIOUS_FAILURE
    _answers(result, 0x0110, "the archive failed; nothing was stored")


@pytest.mark.parametrize("store", PATHS)
async def test_a_failing_index_is_0110_not_an_exception(store: Store, tmp_path: Path) -> None:
    # It escaped as an exception: a 500 on STOW-RS, and C-STORE mapped it on its own.
    async with ingest(tmp_path / "data", index_fault=RuntimeError("database is locked")) as setup:
        result = await store(setup, make_file(), tmp_path)
        assert (result.ok, result.reason) == (False, FailureReason.PROCESSING_FAILURE)
        assert setup.spool_files() == [] and setup.blob_files() == []  # the blob was removed
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SERIOUS_FAILURE
        assert "the index failed (RuntimeError)" in (event.reason or "")
    _answers(result, 0x0110, "the archive failed; nothing was stored")


@pytest.mark.parametrize("store", PATHS)
async def test_both_paths_keep_the_object_and_consume_the_spool(
    store: Store, tmp_path: Path
) -> None:
    data = make_file(rows=64, columns=64)
    async with ingest(tmp_path / "data") as setup:
        result = await store(setup, data, tmp_path)
        assert result.ok, result.message
        assert setup.spool_files() == []
        [blob] = setup.blob_files()
        kept = pydicom.dcmread(blob)
        sent = pydicom.dcmread(io.BytesIO(data))
        assert kept.SOPInstanceUID == sent.SOPInstanceUID
        assert kept.PixelData == sent.PixelData
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SUCCESS


async def test_a_received_file_gets_our_file_meta_and_its_bytes_unchanged(
    tmp_path: Path,
) -> None:
    data = make_file(rows=64, columns=64)
    async with ingest(tmp_path / "data") as setup:
        result = await by_cstore(setup, data, tmp_path)
        assert result.ok, result.message
        [blob] = setup.blob_files()
        stored = blob.read_bytes()
        meta = pydicom.dcmread(blob).file_meta
        assert meta.SourceApplicationEntityTitle == "MODALITY"
        assert meta.ImplementationClassUID != pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        assert meta.ImplementationClassUID != pynetdicom.PYNETDICOM_IMPLEMENTATION_UID
        # The dataset bytes exactly as received, after our header.
        sent_offset = 132 + 12 + int.from_bytes(data[140:144], "little")
        assert stored.endswith(data[sent_offset:])
        # The size and hash recorded are the stored file's.
        assert result.study_instance_uid is not None
        [row] = await setup.index.instances("default", result.study_instance_uid)
        assert (row.size, row.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())


def _answers(result: StoreResult, code: int, comment: str) -> None:
    """The same result answered by both protocols: a STOW-RS failed item, a C-STORE status."""
    item = _item(result, "http://archive")
    assert item["00081197"]["Value"] == [code]
    assert item["00000902"]["Value"][0].startswith(comment)
    status = store_status(result)
    assert isinstance(status, pydicom.Dataset)
    assert status.Status == code
    assert status.ErrorComment.startswith(comment[:40])


async def test_a_disk_that_fills_while_a_cstore_is_received_is_a700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DIMSE layer mapped this itself; the store service decides it, as for STOW-RS.
    monkeypatch.setattr(spool, "SPOOL_BATCH", 4096)  # written while received
    data = make_file(rows=64, columns=64)
    async with ingest(tmp_path / "data") as setup:
        sink = setup.service.open_received(received_of(data))
        sink.path.symlink_to("/dev/full")  # every write: ENOSPC, from the kernel
        view = memoryview(data)
        for start in range(data_set_offset(data), len(data), 1000):
            sink.write(view[start : start + 1000])
        result = await setup.service.store_received(WRITER, sink, audit=_event())
        assert setup.spool_files() == [] and setup.blob_files() == []
        [event] = await setup.audit_events()
        assert event.outcome is EventOutcome.SERIOUS_FAILURE
    assert result.sop_instance_uid == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    _answers(result, 0xA700, "storage is full")


async def test_an_acknowledged_cstore_instance_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spool file is no longer synced before the blob store takes it: the blob store's
    # put must sync the blob and the folder it was renamed into before the result.
    synced = Synced(monkeypatch)
    async with ingest(tmp_path / "data") as setup:
        result = await by_cstore(setup, make_file(rows=64, columns=64), tmp_path)
        assert result.ok, result.message
        [blob] = setup.blob_files()
        assert blob in synced and blob.parent in synced
