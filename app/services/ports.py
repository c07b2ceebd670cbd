"""The two ports of the archive: the index (metadata, queries) and the blob store (files).

Services depend on these protocols only; `app/index/` and `app/storage/` implement them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# Re-exported ("as"): the index reaches the audit model through this module only
# (DESIGN: index imports dicom, query and services.ports).
from app.audit.event import AuditEvent as AuditEvent  # noqa: PLC0414
from app.audit.query import AuditQuery as AuditQuery  # noqa: PLC0414
from app.auth.principal import check_tenant
from app.dicom.instance import PIXEL_DATA_PATHS, BulkRange, FrameRanges
from app.query.model import Query

Json = dict[str, Any]


@dataclass(frozen=True)
class StoredInstance:
    """An indexed instance as retrieval needs it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    encapsulated: bool
    frames: tuple[FrameRanges, ...]
    bulk: dict[str, BulkRange]
    # The study's Patient ID, for the audit trail (None when the index did not say).
    patient_id: str | None = field(default=None, kw_only=True)

    @property
    def pixel_data(self) -> BulkRange | None:
        """Where the top-level (Float, Double Float) Pixel Data value lies; None if none."""
        return next((self.bulk[p] for p in PIXEL_DATA_PATHS if p in self.bulk), None)


@dataclass(frozen=True)
class InstanceRecord(StoredInstance):
    """Everything the index keeps about one instance, as prepared by the store service."""

    # Full DICOM JSON of the instance, bulk data as BulkDataURI placeholders.
    metadata: Json


@dataclass(frozen=True)
class StoredMetadata:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    # DICOM JSON as stored (UTF-8), BulkDataURI placeholders unresolved.
    json: bytes
    patient_id: str | None = field(default=None, kw_only=True)


class Outcome(StrEnum):
    STORED = "stored"  # new instance
    IDENTICAL = "identical"  # same SOP Instance UID and same bytes were already stored
    CONFLICT = "conflict"  # same SOP Instance UID with other content; nothing changed
    REPLACED = "replaced"  # same SOP Instance UID with other content, overwritten
    # The study it would join belongs to another patient (its Patient ID or Issuer of
    # Patient ID differ) and the caller did not allow that: nothing changed.
    PATIENT_MISMATCH = "patient_mismatch"


@dataclass(frozen=True)
class AddResult:
    outcome: Outcome
    # Blob that is no longer referenced and may be deleted (the replaced one).
    orphan_blob_key: str | None = None
    # The audit event kept in the same transaction (see `Index.add_instance`).
    audit: AuditEvent | None = None
    # Stored (as allowed by the caller) into a study that belongs to another patient.
    patient_mismatch: bool = False


# What the index keeps as the audit event of storing an instance, for what it made of it
# (app/services/audit.py: audit_outcome): decided by the service, kept by the index in the
# instance's transaction.
AuditFor = Callable[["AddResult"], AuditEvent]


@dataclass(frozen=True)
class Adding:
    """One instance for `Index.add_instances`: the arguments of `Index.add_instance`."""

    tenant: str
    record: InstanceRecord
    overwrite: bool
    audit: AuditFor | None = None
    allow_patient_mismatch: bool = False


class ChangeAction(StrEnum):
    """What a change-log entry records. Extensible: consumers skip actions they do not
    know."""

    INSTANCE_STORED = "instance.stored"  # a new instance
    INSTANCE_REPLACED = "instance.replaced"  # another object under a stored SOP Instance UID
    INSTANCE_DELETED = "instance.deleted"  # removed by a delete (one entry per instance)
    # A delete removed the series' or study's last instance: the whole of it is gone
    # (after the entries of its instances; no SOP Instance UID, and no series for a study).
    SERIES_DELETED = "series.deleted"
    STUDY_DELETED = "study.deleted"
    # No instance arrived in the series or study for the quiet time (`Index.announce_stable`),
    # with its counts at that moment in `Change.detail`; again after the next quiet period.
    SERIES_STABLE = "series.stable"
    STUDY_STABLE = "study.stable"


class ChangeState(StrEnum):
    """Whether the object a change made is still there, as the change feed says (State)."""

    CURRENT = "current"  # the version this change stored is the stored one
    REPLACED = "replaced"  # a later change replaced it
    DELETED = "deleted"  # nothing is stored under its SOP Instance UID any more


@dataclass(frozen=True)
class Change:
    """One entry of a tenant's change log, numbered from 1 without gaps (see
    `Index.changes`)."""

    sequence: int
    # A ChangeAction, or (written by a newer version of the archive sharing the index) an
    # action this version does not know yet: passed on, for consumers to skip.
    action: ChangeAction | str
    timestamp: datetime
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    state: ChangeState
    # DICOM JSON as stored (BulkDataURI placeholders unresolved), when asked for and the
    # state is current.
    metadata: bytes | None = None
    # What the entry says beyond its UIDs, by DICOM keyword: the counts of a series.stable
    # (NumberOfSeriesRelatedInstances) or study.stable (NumberOfStudyRelatedSeries,
    # NumberOfStudyRelatedInstances); None for other actions.
    detail: Json | None = None


class ChangeConsumer(Protocol):
    """A consumer of the change log that the outbox (app/services/outbox.py) feeds: the
    broker publisher, webhooks, forwarding. It gets each tenant's entries in sequence order,
    at least once: a batch whose delivery failed or was cut short by a crash comes again,
    so `deliver` must be idempotent (or its receivers must be)."""

    # The key of its cursors in the index: stable across restarts and versions; a new name
    # starts from the beginning of every tenant's log.
    name: str
    # Whether it gets the entries with the instance's metadata (e.g. to filter on its
    # attributes), as `Index.changes(metadata=True)` gives them.
    metadata: bool

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> int | None:
        """Deliver `changes` (consecutive entries of `tenant`'s log); return only once every
        one is safely delivered, raise otherwise (the batch is tried again later). A
        consumer that got through only a first part (a webhook stopping before the outbox
        cuts it off) returns the last sequence it delivered; the rest comes again at once.
        It raises when it delivered none."""
        ...

    async def close(self) -> None: ...


class JobState(StrEnum):
    """Where a forwarding job is (app/services/forwarding.py)."""

    QUEUED = "queued"  # waits for its next attempt
    RUNNING = "running"  # a node works on it, under a lease
    DONE = "done"
    FAILED = "failed"  # for good, with its reason; can be queued again (`Index.retry_job`)


@dataclass(frozen=True)
class NewJob:
    """A forwarding job to make from one change-log entry and rule (`Index.enqueue_jobs`)."""

    tenant: str
    rule: str
    destination: str
    change_seq: int
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    priority: int


@dataclass(frozen=True)
class Job(NewJob):
    """A forwarding job as the index keeps it."""

    id: int
    state: JobState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@runtime_checkable
class TenantConsumer(ChangeConsumer, Protocol):
    """A consumer of one tenant's log only (a webhook subscription): the outbox does not
    claim its cursors in other tenants' logs."""

    tenant: str


@dataclass(frozen=True)
class Webhook:
    """A webhook subscription of a tenant (app/services/webhooks.py): change-log entries of
    the `events` actions that match `filter` (keyword -> exact value; on what:
    app/services/entry_attributes.py) are
    POSTed to `url`, signed with `secret`."""

    tenant: str
    id: str
    url: str
    events: tuple[str, ...]
    filter: tuple[tuple[str, str], ...]
    secret: str = field(repr=False)
    active: bool
    created: datetime

    @property
    def consumer(self) -> str:
        """The name of its cursor into the change log."""
        return f"webhook:{self.id}"


@dataclass(frozen=True)
class StoredRule:
    """A forwarding rule of a tenant created through the admin API
    (app/services/forward_rule_store.py): `rule` is its JSON as given, in
    app/services/forward_rules.py's form."""

    tenant: str
    name: str
    rule: Json
    created: datetime


@dataclass(frozen=True)
class WebhookStatus:
    """A subscription and how its delivery goes."""

    webhook: Webhook
    last_delivered: int  # the sequence its cursor has reached
    failures: int  # failed attempts so far
    last_error: str | None
    dead_letters: int


@dataclass(frozen=True)
class DeadLetter:
    """An entry a subscription's receiver refused, or that failed every attempt."""

    sequence: int
    action: str
    reason: str  # no patient data: a status code or an error's kind
    attempts: int
    failed_at: datetime
    retry: bool  # a retry was asked for and has not been made yet


@dataclass(frozen=True)
class SearchHit:
    """One QIDO/C-FIND result row: the stored attributes of each level it spans."""

    patient: Json | None = None
    study: Json | None = None
    series: Json | None = None
    instance: Json | None = None
    # Attributes the index computes (ModalitiesInStudy, NumberOf*Related*), keyed by tag.
    computed: dict[int, Any] = field(default_factory=dict)


# What the index keeps as the audit events of a delete, from the instances it removed
# (app/services/delete.py): kept in the delete's own transaction.
DeleteAuditFor = Callable[[Sequence[StoredInstance]], list[AuditEvent]]


@dataclass(frozen=True)
class DeleteResult:
    """What `Index.delete` removed, committed: nothing (empty) when nothing was in scope."""

    instances: tuple[StoredInstance, ...] = ()
    # The audit events kept with it (see `Index.delete`).
    audit: tuple[AuditEvent, ...] = ()


class Index(Protocol):
    """Every method takes the tenant first and sees only that tenant's rows: the same UIDs
    may be stored in several tenants as different objects. There is no default tenant
    here; protocol layers decide which tenant a request acts on."""

    async def add_instance(
        self,
        tenant: str,
        record: InstanceRecord,
        *,
        overwrite: bool,
        audit: AuditFor | None = None,
        allow_patient_mismatch: bool = False,
    ) -> AddResult:
        """Index an instance of `tenant` whose blob is already stored, atomically with its
        counts. `audit`, when given, makes the event of the outcome, which is kept in the
        same transaction whatever the outcome (committed with the instance or not at
        all); the result carries the event as kept.

        An instance whose patient (Patient ID and Issuer of Patient ID) differs from the
        patient of the study it joins is PATIENT_MISMATCH, nothing changed; with
        `allow_patient_mismatch` it is stored into the study (which keeps its patient) and
        the result says `patient_mismatch`. Decided in the write transaction, so two
        concurrent first instances of one study cannot both create it for their patient."""
        ...

    async def add_instances(self, batch: Sequence[Adding]) -> list[AddResult | Exception]:
        """Index several instances in one transaction and one commit (a group commit), each
        as `add_instance` would, in order. An instance that fails alone (a constraint of
        its own rows) is undone alone and its exception returned in its place; the others
        stand. An exception raised, not returned, means nothing of the batch was kept (the
        commit failed, the connection broke)."""
        ...

    async def search(self, tenant: str, query: Query) -> list[SearchHit]: ...

    async def instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        """Instances in a study, series or one instance, ordered by series and number."""
        ...

    async def metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredMetadata]:
        """Stored DICOM JSON of the instances in scope, in retrieval order."""
        ...

    async def referenced_blob_keys(self, keys: Sequence[str]) -> set[str]:
        """Of `keys`, those an instance row or a blob-deletion record (`blobs_to_delete`)
        refers to, in any tenant: the orphan sweep's question (app/services/orphans.py);
        a blob awaiting its deletion is known, not an orphan. The one method without a
        tenant: it answers about the archive's own storage, a subset of what it is asked,
        never data."""
        ...

    async def delete(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        audit: DeleteAuditFor | None = None,
    ) -> DeleteResult:
        """Remove a study, series or one instance of `tenant` in one transaction: the
        instance rows, the series, study and patient rows left empty, the computed
        attributes of what remains (counts, ModalitiesInStudy), a change-log entry per
        instance (and per whole series and study removed), the events `audit` makes of
        the removed instances, and a blob-deletion record per blob (`blobs_to_delete`),
        so that a blob whose deletion fails after the commit is retried, never leaked.
        No reader ever sees part of it. Nothing in scope: an empty result, nothing
        written."""
        ...

    async def blobs_to_delete(self, limit: int) -> list[str]:
        """At most `limit` keys of blobs whose rows a delete removed and whose deletion
        from the blob store is not yet confirmed (`blobs_deleted`), oldest first. Like
        `referenced_blob_keys`, about the archive's own storage, in every tenant."""
        ...

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        """Forget the blob-deletion records of `keys`: their blobs are gone from the
        store."""
        ...

    async def changes(
        self, tenant: str, after: int, limit: int, *, metadata: bool = False
    ) -> list[Change]:
        """The change-log entries of `tenant` with a sequence above `after`, in sequence
        order, at most `limit`. Every write of `add_instances` that stored or replaced an
        instance made one entry in its own transaction. Sequences have no gaps a reader can
        see: once n is visible, every sequence below it is and always will be, so reading
        on from the last sequence seen never misses an entry, from any node."""
        ...

    async def latest_change(self, tenant: str, *, metadata: bool = False) -> Change | None:
        """The entry with the highest sequence of `tenant`; None while its log is empty."""
        ...

    # Consumers' cursors into the change log (app/services/outbox.py). Like
    # `referenced_blob_keys`, `pending_tenants` answers about the archive's own machinery
    # (which tenants' logs a consumer has not delivered yet), never about data.

    async def pending_tenants(self, consumer: str, owner: str) -> list[str]:
        """Tenants whose change log has entries beyond `consumer`'s cursor, and whose cursor
        no owner other than `owner` holds an unexpired lease on."""
        ...

    async def claim_cursor(
        self, consumer: str, tenant: str, owner: str, lease: float
    ) -> int | None:
        """Claim (or renew) `consumer`'s cursor in `tenant`'s log for `owner` for `lease`
        seconds, creating it at 0; its last delivered sequence, or None when another owner
        holds an unexpired lease."""
        ...

    async def advance_cursor(
        self, consumer: str, tenant: str, owner: str, last_seq: int, lease: float
    ) -> bool:
        """Record `last_seq` as delivered (never moving back) and renew the lease, if
        `owner` still holds the cursor; False when another owner has taken it."""
        ...

    async def release_cursor(self, consumer: str, tenant: str, owner: str) -> None:
        """Give up `owner`'s lease, if it still holds it, for another owner to take now."""
        ...

    async def announce_stable(self, quiet: float, limit: int) -> dict[str, int]:
        """Announce up to `limit` series and studies, of any tenant, in which no instance
        has arrived (been stored or replaced) for `quiet` seconds and which were not
        announced since: one `series.stable` / `study.stable` change-log entry each, with
        its counts at that moment, written in the transaction that marks them announced.
        Each quiet period is announced once, whichever of the processes sharing the index
        calls this (they claim different ones); a later arrival starts a new one. A series
        or study no longer stored is not announced. Returns the number of entries written
        per tenant; while they add up to `limit`, more may be waiting."""
        ...

    async def start_cursors(self, consumer: str) -> bool:
        """On `consumer`'s first start (ever, on any node), place its cursor in each
        tenant's log at the latest entry, so that it gets the changes made from now on
        rather than the whole history (a tenant without entries yet gets them all); True
        then, False (nothing done) on every later start."""
        ...

    # Forwarding jobs (app/services/forwarding.py). `claim_job`, `job_done`, `job_failed`
    # and `renew_job` serve the workers of every tenant, like `pending_tenants`.

    async def enqueue_jobs(self, jobs: Sequence[NewJob]) -> int:
        """Queue `jobs`, due now; one whose (tenant, rule, change_seq) was queued before is
        skipped (the outbox may deliver an entry twice). The number queued."""
        ...

    async def claim_job(self, owner: str, lease: float) -> Job | None:
        """The best due job (highest priority, then oldest), now running for `owner` for
        `lease` seconds, its attempts counted; a running job whose lease ran out (its node
        died) is due again. None when nothing is due. Two claims never get one job."""
        ...

    async def renew_job(self, job_id: int, owner: str, lease: float) -> bool:
        """Extend `owner`'s lease on a running job; False when it is no longer its own."""
        ...

    async def job_done(self, job_id: int, owner: str) -> bool:
        """Mark `owner`'s running job done; False when it is no longer its own."""
        ...

    async def job_failed(
        self, job_id: int, owner: str, reason: str, retry_in: float | None
    ) -> bool:
        """Record why `owner`'s running job failed: queued again in `retry_in` seconds, or
        failed for good when None. False when it is no longer its own."""
        ...

    async def jobs(self, tenant: str, state: JobState | None, limit: int) -> list[Job]:
        """`tenant`'s jobs (in `state` if given), newest first, at most `limit`."""
        ...

    async def retry_job(self, tenant: str, job_id: int) -> Job | None:
        """Queue `tenant`'s failed job again, due now, its attempts from 0; None when no
        failed job of `tenant` has that id."""
        ...

    # Webhook subscriptions (app/services/webhooks.py, app/broker/webhooks.py).

    async def create_webhook(self, webhook: Webhook) -> None:
        """Keep a new subscription, with its cursor at the tenant's latest entry (it gets
        the changes made from now on), in one transaction."""
        ...

    async def webhooks(self, tenant: str, webhook_id: str | None = None) -> list[WebhookStatus]:
        """`tenant`'s subscriptions (or the one `webhook_id`), oldest first, with status."""
        ...

    async def active_webhooks(self) -> list[Webhook]:
        """Every tenant's active subscriptions (the archive's own machinery)."""
        ...

    async def delete_webhook(self, tenant: str, webhook_id: str) -> bool:
        """Remove a subscription, its dead letters and its cursor; False when unknown."""
        ...

    async def webhook_failed(self, tenant: str, webhook_id: str, reason: str) -> None:
        """Count a failed attempt of the subscription and keep its reason."""
        ...

    async def add_dead_letter(self, tenant: str, webhook_id: str, letter: DeadLetter) -> None:
        """Keep (or replace) the dead letter of the subscription's entry `letter.sequence`."""
        ...

    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, *, retry_only: bool = False
    ) -> list[DeadLetter]:
        """The subscription's dead letters by sequence (only those to retry)."""
        ...

    async def retry_dead_letters(
        self, tenant: str, webhook_id: str, sequence: int | None = None
    ) -> int:
        """Ask for the dead letters (or the one `sequence`) to be retried; how many."""
        ...

    async def remove_dead_letter(self, tenant: str, webhook_id: str, sequence: int) -> None: ...

    # Forwarding rules of the admin API (app/services/forward_rule_store.py).

    async def create_forward_rule(self, rule: StoredRule) -> bool:
        """Keep a new rule; False when the tenant has one of that name."""
        ...

    async def forward_rules(
        self, tenant: str | None = None, name: str | None = None
    ) -> list[StoredRule]:
        """The rules of `tenant` (None: of every tenant), or its one `name`, oldest first."""
        ...

    async def delete_forward_rule(self, tenant: str, name: str) -> bool:
        """Remove a rule; False when unknown."""
        ...

    async def add_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """Keep audit events, all in one transaction of their own."""
        ...

    async def search_audit(self, tenant: str, query: AuditQuery) -> list[AuditEvent]:
        """Audit events of `tenant` that `query` matches, newest first."""
        ...

    async def close(self) -> None: ...


_BLOB_ID = re.compile(r"[0-9a-f]{32}")


def blob_key(tenant: str, blob_id: str) -> str:
    """The key of a new blob: its tenant's segment and an internal id (a uuid4 hex), so two
    tenants' objects never share a key and an operator sees whose data a blob is. Keys
    written before tenants existed are a bare id; they stay valid (the index records them)."""
    if not _BLOB_ID.fullmatch(blob_id):
        raise ValueError(f"invalid blob id {blob_id!r}")
    return f"{check_tenant(tenant)}/{blob_id}"


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob as a listing sees it."""

    key: str
    size: int
    # Seconds since it was written, by the store's own clock (the S3 service's, not this
    # machine's), so a sweep judges ages without trusting two clocks to agree.
    age: float


class BlobStore(Protocol):
    """Blobs by key. Keys are internal ids, optionally under one tenant segment
    (`<tenant>/<id>`, see `app/storage/keys.py`), never paths made of request values."""

    async def put(self, key: str, source: Path) -> None:
        """Store the complete local file `source` under `key`; `source` is consumed.

        Ingest always spools to a local file first (it must be parsed), so the store
        takes the file: the folder store renames it into place, S3 uploads it.
        """
        ...

    def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, start + length) of a blob (to its end if length is None)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """Where the blob is as a file on this machine, for senders that read files
        (C-MOVE, C-GET); None when it is not on a local file system (S3): the caller copies
        it with `read`. Existence is not checked."""
        ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...

    def list_blobs(self, page_size: int = 1000) -> AsyncIterator[list[BlobInfo]]:
        """Every blob of the store, in pages of at most `page_size`, quarantined ones left
        out. Memory stays bounded whatever the number of blobs."""
        ...

    async def quarantine(self, key: str) -> None:
        """Move a blob out of the store's keys to its quarantine area (a folder or prefix
        named `.quarantine` beside the tenants' ones, same layout), where nothing reads it
        and an operator can inspect, restore or purge it. A key already gone is no error:
        another node may have moved it first."""
        ...

    async def close(self) -> None: ...
