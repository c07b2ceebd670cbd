"""The audit trail service: every audited event goes to the index and to the collector.

Services and protocol layers call `record(event)`; it never blocks and never fails the
request. A background task writes queued events to the index in batches (each batch one
transaction), retrying a failed write; an event that still cannot be written is counted
and logged (without patient data; one line a minute at most), never dropped silently.
Writes of data record their event in the data's own transaction (`insert_audit_event` of
the index backend) and call `forward(event)` afterwards, which only sends it to the
collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from app.audit.event import AuditEvent, EventActionCode, EventOutcome
from app.audit.query import AuditQuery
from app.audit.syslog import SyslogSender
from app.auth.principal import Access, Permission
from app.services.ports import AddResult, Index, Outcome, StoredInstance, StoredMetadata

log = logging.getLogger(__name__)

BATCH = 200
# Index write attempts per batch and the pause before each retry, in seconds.
RETRY_PAUSES = (0.2, 1.0, 5.0)
# How long the writer waits for more events before writing a batch, in seconds.
LINGER = 0.05
# At most one log line about lost events per this many seconds: refused callers can make
# events faster than a failing index loses them, and must not flood the log.
LOSS_LOG_INTERVAL = 60.0


def per_study(
    template: AuditEvent, found: Iterable[StoredInstance | StoredMetadata]
) -> list[AuditEvent]:
    """`template` once per study of `found`, each naming that study's series, instances,
    SOP classes and patient (PS3.15 A.5.3: one study per message)."""
    studies: dict[str, list[StoredInstance | StoredMetadata]] = {}
    for item in found:
        studies.setdefault(item.study_instance_uid, []).append(item)
    events = []
    for study, items in studies.items():
        # Each instance's class, when every one is known (metadata does not say).
        classes = [i.sop_class_uid for i in items if isinstance(i, StoredInstance)]
        events.append(
            replace(
                template,
                study_instance_uid=study,
                series_instance_uids=tuple(dict.fromkeys(i.series_instance_uid for i in items)),
                sop_instance_uids=tuple(i.sop_instance_uid for i in items),
                sop_class_uids=tuple(classes) if len(classes) == len(items) else (),
                patient_id=next((i.patient_id for i in items if i.patient_id), None),
            )
        )
    return events


# Our own words: neither names the patients (the event names the instance's own).
PATIENT_MISMATCH_REFUSED = (
    "the study belongs to another patient (Patient ID or Issuer of Patient ID differ); "
    "nothing changed"
)
PATIENT_MISMATCH_ACCEPTED = (
    "stored into a study of another patient (Patient ID or Issuer of Patient ID differ), "
    "as PACS_PATIENT_MISMATCH=warn allows"
)


def audit_outcome(event: AuditEvent, added: AddResult) -> AuditEvent:
    """The audit event of storing an instance, for what the index made of it: a
    replacement is an update, a conflict or a study of another patient a failure; storing
    identical bytes again changes nothing but is still a transfer that succeeded."""
    outcome = added.outcome
    if outcome is Outcome.PATIENT_MISMATCH:
        return replace(
            event,
            outcome=EventOutcome.MINOR_FAILURE,
            reason=PATIENT_MISMATCH_REFUSED,
        )
    if added.patient_mismatch:
        event = replace(event, reason=PATIENT_MISMATCH_ACCEPTED)
    if outcome is Outcome.REPLACED:
        return replace(event, action_code=EventActionCode.UPDATE)
    if outcome is Outcome.CONFLICT:
        return replace(
            event,
            outcome=EventOutcome.MINOR_FAILURE,
            reason="another object with this SOP Instance UID is stored; nothing changed",
        )
    if outcome is Outcome.IDENTICAL:
        return replace(event, reason="already stored with the same content")
    return event


class AuditService:
    def __init__(
        self,
        index: Index,
        sender: SyslogSender | None = None,
        *,
        queue_size: int = 100_000,
        retry_pauses: tuple[float, ...] = RETRY_PAUSES,
        linger: float = LINGER,
    ) -> None:
        self._index = index
        self.sender = sender
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(queue_size)
        self._retry_pauses = retry_pauses
        self._linger = linger
        # The loop the service is built on (the server's); threads hand events to it.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        # Events that could not be kept in the index (logged, LOSS_LOG_INTERVAL apart).
        self.lost = 0
        self._loss_logged = -LOSS_LOG_INTERVAL

    def record(self, event: AuditEvent) -> None:
        """Keep `event` in the index and send it to the collector; returns at once.

        Safe from any thread (DIMSE handlers run on threads of their own)."""
        if not self._on_loop(self.record, event):
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write_batches())
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._lose([event], "the audit queue is full")
        self.forward(event)

    def forward(self, event: AuditEvent) -> None:
        """Send an event the index already holds (written with the data) to the collector.

        Safe from any thread."""
        if self.sender is not None and self._on_loop(self.forward, event):
            self.sender.send(event)

    def _on_loop(self, method: Callable[[AuditEvent], None], event: AuditEvent) -> bool:
        """True on the service's event loop; elsewhere hand `method(event)` to it."""
        running: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            running = asyncio.get_running_loop()
        self._loop = self._loop or running
        if running is not None and running is self._loop:
            return True
        if self._loop is None:
            raise RuntimeError("AuditService: no event loop to hand the event to")
        self._loop.call_soon_threadsafe(method, event)
        return False

    async def search(self, access: Access, query: AuditQuery) -> list[AuditEvent]:
        """The audit trail of the caller's tenant, newest first (admin only)."""
        access.require(Permission.ADMIN)
        return await self._index.search_audit(access.tenant, query)

    async def flush(self) -> None:
        """Wait until every event recorded so far is in the index (or logged as lost)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.sender is not None:
            await self.sender.close()

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger and self._queue.qsize() < BATCH:
                # Let the events of the next requests join: one index transaction (one
                # fsync) per batch instead of per request, off every request's path.
                await asyncio.sleep(self._linger)
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[AuditEvent]) -> None:
        for attempt, pause in enumerate((*self._retry_pauses, None), start=1):
            try:
                await self._index.add_audit_events(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The error's type only: a driver's message may quote the values.
                cause = type(exc).__name__
                if pause is None:
                    self._lose(batch, f"the index write failed {attempt} times ({cause})")
                    return
                log.warning("audit: index write failed (%s); retrying in %.1f s", cause, pause)
                await asyncio.sleep(pause)

    def _lose(self, events: list[AuditEvent], why: str) -> None:
        self.lost += len(events)
        now = time.monotonic()
        if now - self._loss_logged < LOSS_LOG_INTERVAL:
            return
        self._loss_logged = now
        log.error(
            "audit: event not kept in the index, %s: %s (%d lost so far; "
            "one line per %.0f s at most)",
            why,
            events[-1].summary(),
            self.lost,
            LOSS_LOG_INTERVAL,
        )
