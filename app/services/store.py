"""Store use case: spool an incoming object, parse it, put its blob, index it.

Shared by STOW-RS and C-STORE: STOW-RS hands over a stream (`store_stream`), C-STORE a
sink of this service's spool that it wrote the data set into as it arrived
(`open_received`, `store_received`); from there on, spooling, hashing, the fsync,
parsing, storing, indexing, auditing and the mapping of failures to reasons
(`failure_reason_of`) are one path. The order makes partial writes invisible: the
blob is stored under a fresh key first and only then indexed in one transaction; any
failure before the commit deletes the blob, so no query ever sees a half-stored object.

Every object offered is audited (DICOM Instances Transferred, one event per instance): the
protocol layer passes an event naming the caller, the service adds what was stored. A
stored (or refused duplicate) instance's event is kept in the index transaction of the
instance itself; an object that never reached the index (unreadable, wrong study, storage
full) is recorded through the audit service.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.audit.event import AuditEvent, EventOutcome
from app.auth.principal import Access, Permission
from app.dicom.instance import ParsedInstance
from app.dicom.parse import DicomParseError, UnsupportedTransferSyntax, parse_instance
from app.services.audit import AuditService, audit_outcome
from app.services.group_commit import GroupCommit
from app.services.ports import Adding, BlobStore, Index, InstanceRecord, Outcome, blob_key
from app.services.spool import (
    SPOOL_BATCH,
    Received,
    ReceivedSink,
    Spooled,
    spool_path,
    write_chunks,
)

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

log = logging.getLogger(__name__)


class FailureReason(IntEnum):
    """Status codes used as STOW-RS FailureReason / WarningReason (PS3.4 Annex B, GG)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    CANNOT_UNDERSTAND = 0xC000
    # "Referenced Transfer Syntax not supported" (PS3.18 STOW-RS failure reasons).
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    STUDY_UID_MISMATCH = 0xC409
    # The study belongs to another patient. A Cxxx ("Cannot understand") code, like C409:
    # a permanent error a sender must not retry (A7xx would invite a retry).
    PATIENT_MISMATCH = 0xC40A
    # Warnings
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006


@dataclass
class StoreResult:
    ok: bool
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    reason: FailureReason | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)


class StoreService:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        spool_dir: Path,
        audit: AuditService,
        *,
        overwrite: bool = False,
        allow_patient_mismatch: bool = False,
        index_batch: int = 64,
        index_linger: float = 0.0,
        changed: Callable[[str], None] | None = None,
    ) -> None:
        self.index = index
        # Told the tenant of each committed change (app/services/changefeed.py: wakes the
        # change feed's waiting readers).
        self.changed = changed
        # Concurrent ingests share index commits (app/services/group_commit.py). A
        # cancelled caller (a client gone) leaves its blob to the batch: if the batch did
        # not keep it, the orphan sweep removes it later.
        self.commits = GroupCommit(index, index_batch, index_linger)
        self._storing: set[asyncio.Task[StoreResult]] = set()
        self.blobs = blobs
        self.audit = audit
        self.spool_dir = spool_dir
        self.overwrite = overwrite
        # PACS_PATIENT_MISMATCH=warn: store into a study of another patient, with a warning.
        self.allow_patient_mismatch = allow_patient_mismatch
        spool_dir.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        """Wait for the stores still running (parts whose request went away), so that
        none is cut off by the index closing."""
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)

    def discard_stale_spool(self) -> int:
        """Remove spool files left by a previous process that stopped mid-upload.

        They were never acknowledged, so removing them loses nothing. Call at start only:
        the spool folder belongs to this process.
        """
        stale = list(self.spool_dir.glob("*.part"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    async def spool(self, chunks: AsyncIterable[bytes]) -> Spooled:
        """Write a stream to a local file, hashing it on the way; the caller owns the file.

        If the stream fails (truncated upload), the partial file is removed and the error
        propagates.
        """
        spooled, _ = await self._receive(chunks, parse=False)
        return spooled

    async def _receive(
        self, chunks: AsyncIterable[bytes], *, parse: bool
    ) -> tuple[Spooled, Parsed | None]:
        """Spool a stream, and parse it in the same worker call when `parse` is set.

        Every hand-off to a worker thread costs more than writing a small instance, so
        chunks are gathered in memory up to SPOOL_BATCH and the last write and the parse
        happen in one call: a typical instance takes a single hand-off (the fsync comes
        later, in the blob store's put, beside the receiving of the next object). The
        chunks are hashed there too, off the event loop (0.3-0.9 ms per 512 KB that the
        loop, which receives every request, no longer spends).
        """
        path = spool_path(self.spool_dir)
        digest = hashlib.sha256()
        size = 0
        handle: BinaryIO | None = None
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= SPOOL_BATCH:
                    handle = await asyncio.to_thread(write_chunks, handle, path, pending, digest)
                    pending, pending_size = [], 0
            parsed = await asyncio.to_thread(_finish, handle, path, pending, digest, parse)
        except BaseException:
            if handle is not None:
                handle.close()
            path.unlink(missing_ok=True)
            raise
        return Spooled(path, size, digest.hexdigest()), parsed

    async def store_stream(
        self,
        access: Access,
        chunks: AsyncIterable[bytes],
        *,
        study_instance_uid: str | None = None,
        audit: AuditEvent,
    ) -> StoreResult:
        """Store one streamed object; `audit` names the caller (see the module text)."""
        storing = await self.receive_stream(
            access, chunks, study_instance_uid=study_instance_uid, audit=audit
        )
        return await storing

    async def receive_stream(
        self,
        access: Access,
        chunks: AsyncIterable[bytes],
        *,
        study_instance_uid: str | None = None,
        audit: AuditEvent,
    ) -> asyncio.Future[StoreResult]:
        """Receive one streamed object (spooled and parsed when this returns, the
        stream consumed) and go on storing it meanwhile: the result comes with the future.
        A caller reading several objects from one stream (the parts of a STOW-RS body)
        receives the next while this one is stored and indexed, so they can share an
        index commit. The store runs to its end even if nobody awaits it."""
        access.require(Permission.WRITE)
        try:
            spooled, parsed = await self._receive(chunks, parse=True)
        except OSError as exc:
            done: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
            done.set_result(self._refused(audit, failure_of(exc)))
            return done
        assert parsed is not None
        task = asyncio.create_task(
            self._store(access.tenant, spooled, parsed, study_instance_uid, audit)
        )
        # A strong reference until it ends: the event loop keeps only weak ones.
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        return task

    def open_received(self, received: Received) -> ReceivedSink:
        """A sink for the data set of a C-STORE request, in this service's spool: the
        DIMSE layer writes the fragments into it as they arrive, then hands it to
        `store_received` (or discards it)."""
        return ReceivedSink(spool_path(self.spool_dir), received)

    async def store_received(
        self, access: Access, sink: ReceivedSink, *, audit: AuditEvent
    ) -> StoreResult:
        """Store a data set received into `sink`, which is consumed whatever the outcome
        (unless the caller may not write: Forbidden, and the sink is still the caller's).

        Writing what is still held, hashing and parsing happen in one worker call, as for
        a stream; a write that failed while receiving (a full disk) is answered here, with
        the reasons of every other failure.
        """
        access.require(Permission.WRITE)
        sink.consumed = True  # ours from here: removed by _finish_received or _store
        received = sink.received
        try:
            spooled, parsed = await asyncio.to_thread(_finish_received, sink)
        except Exception as exc:  # e.g. the spool folder's disk is full
            named = StoreResult(
                False,
                sop_class_uid=received.sop_class_uid,
                sop_instance_uid=received.sop_instance_uid,
            )
            return self._refused(audit, failure_of(exc, named))
        return await self._store(access.tenant, spooled, parsed, None, audit)

    async def store_file(
        self,
        access: Access,
        spooled: Spooled,
        *,
        study_instance_uid: str | None = None,
        audit: AuditEvent,
    ) -> StoreResult:
        """Store a spooled Part 10 file; the file is consumed whatever the outcome."""
        try:
            access.require(Permission.WRITE)
            parsed = await asyncio.to_thread(_parse, spooled.path)
        except BaseException:
            await asyncio.to_thread(spooled.path.unlink, True)
            raise
        return await self._store(access.tenant, spooled, parsed, study_instance_uid, audit)

    def _refused(
        self, audit: AuditEvent, result: StoreResult, patient_id: str | None = None
    ) -> StoreResult:
        """Record an object that did not reach the index, and return its result."""
        serious = result.reason in (
            FailureReason.OUT_OF_RESOURCES,
            FailureReason.PROCESSING_FAILURE,
        )
        self.audit.record(
            replace(
                audit,
                outcome=EventOutcome.SERIOUS_FAILURE if serious else EventOutcome.MINOR_FAILURE,
                # Our own texts: parse errors and UID mismatches name no patient data.
                reason=result.message,
                study_instance_uid=result.study_instance_uid,
                series_instance_uids=_one(result.series_instance_uid),
                sop_instance_uids=_one(result.sop_instance_uid),
                # Paired with the instance: no class without its instance.
                sop_class_uids=_one(result.sop_class_uid) if result.sop_instance_uid else (),
                patient_id=patient_id,
            )
        )
        return result

    async def _store(
        self,
        tenant: str,
        spooled: Spooled,
        parsed: Parsed,
        study_instance_uid: str | None,
        audit: AuditEvent,
    ) -> StoreResult:
        moved = False
        # On its way to the index from here: a batch being committed may wait for it.
        arrived = self.commits.coming()
        try:
            if isinstance(parsed, UnsupportedTransferSyntax):
                refused = StoreResult(
                    False,
                    sop_class_uid=parsed.sop_class_uid,
                    sop_instance_uid=parsed.sop_instance_uid,
                    reason=FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
                    message=str(parsed),
                )
                return self._refused(audit, refused)
            if isinstance(parsed, DicomParseError):
                return self._refused(
                    audit,
                    StoreResult(False, reason=FailureReason.CANNOT_UNDERSTAND, message=str(parsed)),
                )
            result = _result_for(parsed)
            patient_id = _patient_id(parsed)
            if study_instance_uid is not None and parsed.study_instance_uid != study_instance_uid:
                result.ok = False
                result.reason = FailureReason.STUDY_UID_MISMATCH
                result.message = (
                    f"StudyInstanceUID {parsed.study_instance_uid} does not match "
                    f"the study {study_instance_uid} of the request URL"
                )
                return self._refused(audit, result, patient_id)
            # Under the tenant's segment (app/storage/keys.py): tenants never share a blob.
            key = blob_key(tenant, uuid.uuid4().hex)
            try:
                # Durable when put returns (the folder store syncs the file and its folder
                # after renaming it; S3 keeps it once the upload completes), so a streamed
                # part is not synced while received: that runs beside the next part.
                await self.blobs.put(key, spooled.path)
            except Exception as exc:
                return self._refused(audit, failure_of(exc, result), patient_id)
            moved = True
            event = replace(
                audit,
                study_instance_uid=parsed.study_instance_uid,
                series_instance_uids=(parsed.series_instance_uid,),
                sop_instance_uids=(parsed.sop_instance_uid,),
                sop_class_uids=(parsed.sop_class_uid,),
                patient_id=patient_id,
            )
            arrived()  # no await before _index adds it: a lingering batch finds it there
            await self._index(tenant, parsed, spooled, key, result, event=event)
            return result
        finally:
            arrived()
            if not moved:
                await asyncio.to_thread(spooled.path.unlink, True)

    async def _index(
        self,
        tenant: str,
        parsed: ParsedInstance,
        spooled: Spooled,
        key: str,
        result: StoreResult,
        *,
        event: AuditEvent,
    ) -> None:
        record = InstanceRecord(
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            blob_key=key,
            size=spooled.size,
            sha256=spooled.sha256,
            encapsulated=parsed.encapsulated,
            frames=parsed.frames,
            bulk=parsed.bulk,
            metadata=parsed.metadata,
            patient_id=event.patient_id,
        )
        adding = Adding(
            tenant,
            record,
            overwrite=self.overwrite,
            audit=partial(audit_outcome, event),
            allow_patient_mismatch=self.allow_patient_mismatch,
        )
        try:
            added = await self.commits.add(adding)
        except Exception as exc:
            await self.blobs.delete(key)
            # The index failed: nothing was kept, not even the event; say so elsewhere.
            self.audit.record(
                replace(
                    event,
                    outcome=EventOutcome.SERIOUS_FAILURE,
                    reason=f"the index failed ({type(exc).__name__}); nothing was stored",
                )
            )
            failure_of(exc, result)
            return
        if added.audit is not None:
            self.audit.forward(added.audit)
        if self.changed is not None and added.outcome in (Outcome.STORED, Outcome.REPLACED):
            self.changed(tenant)
        if added.outcome in (Outcome.IDENTICAL, Outcome.CONFLICT, Outcome.PATIENT_MISMATCH):
            await self.blobs.delete(key)
        if added.orphan_blob_key:
            await self.blobs.delete(added.orphan_blob_key)
        if added.outcome is Outcome.CONFLICT:
            result.ok = False
            result.reason = FailureReason.DUPLICATE_SOP_INSTANCE
            result.message = (
                f"an instance with SOPInstanceUID {parsed.sop_instance_uid} and different "
                "content is already stored"
            )
        elif added.outcome is Outcome.PATIENT_MISMATCH:
            result.ok = False
            result.reason = FailureReason.PATIENT_MISMATCH
            # Neither patient's values: the stored one is not the sender's to learn.
            result.message = (
                f"the study {parsed.study_instance_uid} belongs to another patient: this "
                "instance's PatientID or IssuerOfPatientID differs from the study's"
            )
        elif added.outcome is Outcome.REPLACED:
            result.warnings.append("replaced the instance stored with this SOPInstanceUID")
        if added.patient_mismatch:
            result.warnings.append(
                "stored into a study of another patient (PatientID or IssuerOfPatientID "
                "differs from the study's)"
            )
        log.debug("store %s: %s", parsed.sop_instance_uid, added.outcome)


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def _patient_id(parsed: ParsedInstance) -> str | None:
    values = parsed.metadata.get("00100020", {}).get("Value")
    return str(values[0]) if values else None


# A parse outcome: what ingest learned, or why the object cannot be stored.
Parsed = ParsedInstance | DicomParseError


def _finish(
    handle: BinaryIO | None, path: Path, chunks: list[bytes], digest: Hash, parse: bool
) -> Parsed | None:
    """Write (and hash) the last chunks, close the file (the blob store syncs it), and
    parse it if asked to."""
    write_chunks(handle, path, chunks, digest).close()
    return _parse(path) if parse else None


def _finish_received(sink: ReceivedSink) -> tuple[Spooled, Parsed]:
    spooled = sink.finish()
    try:
        return spooled, _parse(spooled.path)
    except BaseException:
        spooled.path.unlink(missing_ok=True)
        raise


def _parse(path: Path) -> Parsed:
    try:
        return parse_instance(path)
    except DicomParseError as exc:
        return exc


def _result_for(parsed: ParsedInstance) -> StoreResult:
    return StoreResult(
        True,
        sop_class_uid=parsed.sop_class_uid,
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        series_instance_uid=parsed.series_instance_uid,
        warnings=list(parsed.warnings),
    )


def failure_of(exc: Exception, result: StoreResult | None = None) -> StoreResult:
    """The failed result of an object the archive could not keep because of `exc` (a
    spool, blob store or index failure): A700 when the storage is full, a retry being
    worth it once space is freed; 0110 for any other fault of the archive. The one place
    where these are decided, for STOW-RS and C-STORE alike."""
    result = result or StoreResult(False)
    result.ok = False
    result.reason, result.message = failure_reason_of(exc)
    if result.reason is FailureReason.OUT_OF_RESOURCES:
        log.warning("store refused: %s", exc)
    else:
        # The archive's fault, not the sender's: ERROR, with the traceback.
        log.error("store failed (%s)", type(exc).__name__, exc_info=exc)
    return result


def failure_reason_of(exc: Exception) -> tuple[FailureReason, str]:
    """The reason, and its words for the sender, of a failure raised while storing."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FailureReason.OUT_OF_RESOURCES, "storage is full"
    return FailureReason.PROCESSING_FAILURE, "the archive failed; nothing was stored"
