"""The PostgreSQL index: the production backend, shared by any number of server processes.

A pool of connections; each write is one READ COMMITTED transaction that takes its locks
in one order: an advisory lock on the SOP Instance UID (so two uploads of one instance,
from any process, decide IDENTICAL/CONFLICT one after the other), then the patient, study
and series rows (an overwrite locks the old and the new patient together first), and last,
just before the commit, the tenant's change-log counter (app/index/postgres_changes.py). Uploads
of one study therefore queue on its rows instead of deadlocking, and commit its instances
in pk order. Between them and the counter come the rows marking the studies and series
that received an instance (app/index/postgres_stable.py), once per batch. A delete
(`_delete_scope`) takes the same order: the patient, the study, its series, the counter.
The parents' rows are rewritten only when what they hold changes: instance
counts once per FOLD_AT instances (a search counts the newer ones: `compile_counted_search`;
updating them per instance left a dead study and series row version behind each one), the
series count and modalities once per series, the patient's once per study. Should a
deadlock still happen (inconsistent data, such as one study under two patients),
PostgreSQL aborts one of the transactions and it is retried whole, a bounded number of
times.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from app.dicom.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from app.index import (
    postgres_audit,
    postgres_changes,
    postgres_cursors,
    postgres_forward_rules,
    postgres_jobs,
    postgres_stable,
    postgres_webhooks,
)
from app.index.change_rows import change_of
from app.index.delete_rows import DELETE_COLUMNS, counted, deleted_changes
from app.index.migrations import IndexUnavailable, SchemaError, latest_version, migrations
from app.index.rows import (
    FOLD_AT,
    INSTANCE_COLUMNS,
    bulk_text,
    dumps,
    frames_text,
    modalities_text,
    search_hit,
    stored_instance,
    subset,
)
from app.query.columns import column_values
from app.query.model import Query
from app.query.sql import POSTGRES, compile_counted_search
from app.services.ports import (
    Adding,
    AddResult,
    AuditEvent,
    AuditFor,
    AuditQuery,
    Change,
    DeadLetter,
    DeleteAuditFor,
    DeleteResult,
    InstanceRecord,
    Job,
    JobState,
    Json,
    NewJob,
    Outcome,
    SearchHit,
    StoredInstance,
    StoredMetadata,
    StoredRule,
    Webhook,
    WebhookStatus,
)

log = logging.getLogger(__name__)

# Advisory lock keys. The migration lock is a bigint key, the per-instance locks are
# (class, hash) pairs: PostgreSQL keeps the two kinds apart.
MIGRATION_LOCK = 0x7061_6373_0001  # "pacs" 1
INSTANCE_LOCK_CLASS = 0x7061_6373  # "pacs"
# The lock of one SOP Instance UID ($3) in one tenant ($2).
INSTANCE_LOCK = "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))"

_T = TypeVar("_T")
_ATTEMPTS = 5
_RETRYABLE = (
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.SerializationError,  # 40001
    asyncpg.UniqueViolationError,  # a row another transaction inserted first: start again
)


async def _retried(what: str, once: Callable[[], Awaitable[_T]]) -> _T:
    """`once()` (a whole write transaction), run again when PostgreSQL aborted it for a
    deadlock or a row another transaction inserted first, up to _ATTEMPTS times with a
    growing random pause."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await once()
        except _RETRYABLE as exc:
            if attempt == _ATTEMPTS:
                raise
            log.info("retrying %s (%s)", what, type(exc).__name__)
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


_METADATA_COLUMNS = """
    study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid,
    instance.metadata::text, study.patient_id
"""
# As in SQLite, which sorts NULL first: instances without a number come first.
_ORDER = (
    "series.series_number NULLS FIRST, series.pk, instance.instance_number NULLS FIRST, instance.pk"
)

_SERVER_SETTINGS = {
    "application_name": "pacs",
    # Searches differ mostly by their values (a wildcard, a date range); a plan made for
    # one value can be a sequential scan for another, so plan each execution.
    "plan_cache_mode": "force_custom_plan",
    # JIT compilation costs more than these short queries save.
    "jit": "off",
}


class PostgresIndex:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10) -> PostgresIndex:
        """Connect, apply pending migrations and return the index.

        Raises `IndexUnavailable` if the database cannot be reached and `SchemaError` if
        its schema is newer than this code or a migration fails.
        """
        pool = await _create_pool(url, pool_size)
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    # -- writes ------------------------------------------------------------------------

    async def add_instance(
        self,
        tenant: str,
        record: InstanceRecord,
        *,
        overwrite: bool,
        audit: AuditFor | None = None,
        allow_patient_mismatch: bool = False,
    ) -> AddResult:
        adding = Adding(tenant, record, overwrite, audit, allow_patient_mismatch)
        (added,) = await self.add_instances((adding,))
        if isinstance(added, Exception):
            raise added
        return added

    async def add_instances(self, batch: Sequence[Adding]) -> list[AddResult | Exception]:
        # Added in one order, whatever the order of arrival: two batches (of two processes)
        # that share studies lock their rows in the same order rather than deadlocking.
        order = sorted(range(len(batch)), key=lambda i: _lock_order(batch[i]))
        storable = [_storable(item.record.metadata) for item in batch]

        async def once() -> list[AddResult | Exception]:
            async with self._pool.acquire() as conn, conn.transaction():
                done = {i: await _add_item(conn, batch[i], *storable[i]) for i in order}
                changes = [c for i in order if (c := change_of(batch[i], done[i]))]
                await postgres_stable.record_arrivals(conn, changes)
                # Last: the tenants' counters stay locked until the commit.
                await postgres_changes.record_changes(conn, changes)
            return [done[i] for i in range(len(batch))]

        return await _retried(f"a batch of {len(batch)}", once)

    async def delete(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
        *,
        audit: DeleteAuditFor | None = None,
    ) -> DeleteResult:
        scope = (tenant, study_instance_uid, series_instance_uid, sop_instance_uid)

        async def once() -> DeleteResult:
            async with self._pool.acquire() as conn, conn.transaction():
                return await _delete_scope(conn, *scope, audit=audit)

        return await _retried("a delete", once)

    async def blobs_to_delete(self, limit: int) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT blob_key FROM blob_deletion ORDER BY queued_at, blob_key LIMIT $1", limit
        )
        return [row[0] for row in rows]

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        if keys:
            await self._pool.execute(
                "DELETE FROM blob_deletion WHERE blob_key = ANY($1::text[])", list(keys)
            )

    # -- reads -------------------------------------------------------------------------

    async def search(self, tenant: str, query: Query) -> list[SearchHit]:
        compiled = compile_counted_search(tenant, query, POSTGRES)
        rows = await self._pool.fetch(compiled.sql, *compiled.params)
        return [search_hit(query.level, row) for row in rows]

    async def instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        sql, params = retrieval_sql(
            INSTANCE_COLUMNS, tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        rows = await self._pool.fetch(sql, *params)
        return [stored_instance(row) for row in rows]

    async def metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredMetadata]:
        sql, params = retrieval_sql(
            _METADATA_COLUMNS, tenant, study_instance_uid, series_instance_uid, sop_instance_uid
        )
        rows = await self._pool.fetch(sql, *params)
        return [StoredMetadata(r[0], r[1], r[2], r[3].encode(), patient_id=r[4]) for r in rows]

    async def referenced_blob_keys(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        rows = await self._pool.fetch(
            """SELECT blob_key FROM instance WHERE blob_key = ANY($1::text[])
               UNION SELECT blob_key FROM blob_deletion WHERE blob_key = ANY($1::text[])""",
            list(keys),
        )
        return {row["blob_key"] for row in rows}

    # -- change log (app/index/postgres_changes.py) -----------------------------------

    async def changes(
        self, tenant: str, after: int, limit: int, *, metadata: bool = False
    ) -> list[Change]:
        return await postgres_changes.read_changes(
            self._pool, tenant, after, limit, metadata=metadata
        )

    async def latest_change(self, tenant: str, *, metadata: bool = False) -> Change | None:
        return await postgres_changes.latest_change(self._pool, tenant, metadata=metadata)

    # -- consumers' cursors (app/index/postgres_cursors.py) ----------------------------

    async def pending_tenants(self, consumer: str, owner: str) -> list[str]:
        return await postgres_cursors.pending_tenants(self._pool, consumer, owner)

    async def claim_cursor(
        self, consumer: str, tenant: str, owner: str, lease: float
    ) -> int | None:
        return await postgres_cursors.claim_cursor(self._pool, consumer, tenant, owner, lease)

    async def advance_cursor(
        self, consumer: str, tenant: str, owner: str, last_seq: int, lease: float
    ) -> bool:
        return await postgres_cursors.advance_cursor(
            self._pool, consumer, tenant, owner, last_seq=last_seq, lease=lease
        )

    async def release_cursor(self, consumer: str, tenant: str, owner: str) -> None:
        await postgres_cursors.release_cursor(self._pool, consumer, tenant, owner)

    # -- forwarding jobs (app/index/postgres_jobs.py) ----------------------------------

    async def start_cursors(self, consumer: str) -> bool:
        return await postgres_jobs.start_cursors(self._pool, consumer)

    async def enqueue_jobs(self, jobs: Sequence[NewJob]) -> int:
        return await postgres_jobs.enqueue_jobs(self._pool, jobs)

    async def claim_job(self, owner: str, lease: float) -> Job | None:
        return await postgres_jobs.claim_job(self._pool, owner, lease)

    async def renew_job(self, job_id: int, owner: str, lease: float) -> bool:
        return await postgres_jobs.renew_job(self._pool, job_id, owner, lease)

    async def job_done(self, job_id: int, owner: str) -> bool:
        return await postgres_jobs.job_done(self._pool, job_id, owner)

    async def job_failed(
        self, job_id: int, owner: str, reason: str, retry_in: float | None
    ) -> bool:
        return await postgres_jobs.job_failed(self._pool, job_id, owner, reason, retry_in)

    async def jobs(self, tenant: str, state: JobState | None, limit: int) -> list[Job]:
        return await postgres_jobs.jobs(self._pool, tenant, state, limit)

    async def retry_job(self, tenant: str, job_id: int) -> Job | None:
        return await postgres_jobs.retry_job(self._pool, tenant, job_id)

    async def announce_stable(self, quiet: float, limit: int) -> dict[str, int]:
        return await _retried(
            "an announcement", lambda: postgres_stable.announce_stable(self._pool, quiet, limit)
        )

    # -- forwarding rules of the admin API (app/index/postgres_forward_rules.py) --------

    async def create_forward_rule(self, rule: StoredRule) -> bool:
        return await postgres_forward_rules.create_forward_rule(self._pool, rule)

    async def forward_rules(
        self, tenant: str | None = None, name: str | None = None
    ) -> list[StoredRule]:
        return await postgres_forward_rules.forward_rules(self._pool, tenant, name)

    async def delete_forward_rule(self, tenant: str, name: str) -> bool:
        return await postgres_forward_rules.delete_forward_rule(self._pool, tenant, name)

    # -- webhook subscriptions (app/index/postgres_webhooks.py) -----------------------

    async def create_webhook(self, webhook: Webhook) -> None:
        await postgres_webhooks.create_webhook(self._pool, webhook)

    async def webhooks(self, tenant: str, webhook_id: str | None = None) -> list[WebhookStatus]:
        return await postgres_webhooks.webhooks(self._pool, tenant, webhook_id)

    async def active_webhooks(self) -> list[Webhook]:
        return await postgres_webhooks.active_webhooks(self._pool)

    async def delete_webhook(self, tenant: str, webhook_id: str) -> bool:
        return await postgres_webhooks.delete_webhook(self._pool, tenant, webhook_id)

    async def webhook_failed(self, tenant: str, webhook_id: str, reason: str) -> None:
        await postgres_webhooks.webhook_failed(self._pool, tenant, webhook_id, reason)

    async def add_dead_letter(self, tenant: str, webhook_id: str, letter: DeadLetter) -> None:
        await postgres_webhooks.add_dead_letter(self._pool, tenant, webhook_id, letter)

    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, *, retry_only: bool = False
    ) -> list[DeadLetter]:
        return await postgres_webhooks.dead_letters(
            self._pool, tenant, webhook_id, limit, retry_only
        )

    async def retry_dead_letters(
        self, tenant: str, webhook_id: str, sequence: int | None = None
    ) -> int:
        return await postgres_webhooks.retry_dead_letters(self._pool, tenant, webhook_id, sequence)

    async def remove_dead_letter(self, tenant: str, webhook_id: str, sequence: int) -> None:
        await postgres_webhooks.remove_dead_letter(self._pool, tenant, webhook_id, sequence)

    # -- audit trail (app/index/postgres_audit.py) -------------------------------------

    async def add_audit_events(self, events: Sequence[AuditEvent]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await postgres_audit.insert_audit_events(conn, events)

    async def search_audit(self, tenant: str, query: AuditQuery) -> list[AuditEvent]:
        return await postgres_audit.search_audit(self._pool, tenant, query)


# -- connecting and migrating ----------------------------------------------------------


def describe(url: str) -> str:
    """Where `url` points, for messages: user@host:port/database, never the password."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    user = parts.username or query.get("user", [""])[0]
    database = parts.path.lstrip("/") or query.get("dbname", [user])[0] or "(default)"
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or query.get("port", ["5432"])[0]
    return f"{user + '@' if user else ''}{host}:{port}/{database}"


async def _create_pool(url: str, pool_size: int) -> asyncpg.Pool:
    if pool_size < 1:
        raise ValueError(f"the database pool size must be at least 1, not {pool_size}")
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=10,
            server_settings=_SERVER_SETTINGS,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        cause = str(exc) or type(exc).__name__
        raise IndexUnavailable(f"cannot connect to PostgreSQL at {describe(url)}: {cause}") from exc
    return pool


async def _schema_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise SchemaError(
            f"index schema version {current} is newer than this code supports ({latest})"
        )


async def _migrate(conn: asyncpg.Connection) -> None:
    """Apply pending migrations in one transaction; safe from several processes at once."""
    latest = latest_version("postgres")
    current = await _schema_version(conn)
    _check_not_newer(current, latest)
    if current == latest:
        return
    async with conn.transaction():
        # Another process may be migrating: wait for it, then look again.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        current = await _schema_version(conn)
        _check_not_newer(current, latest)
        for migration in migrations("postgres")[current:]:
            log.info("applying index migration %s", migration.path.name)
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise SchemaError(f"index migration {migration.path.name} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO schema_version (version) VALUES ($1)", migration.version
            )


# -- adding an instance ----------------------------------------------------------------


def _storable(metadata: Json) -> tuple[Json, str]:
    """`metadata` and its JSON text, without the NUL characters that PostgreSQL text and
    jsonb cannot hold (a rare defect of some files; SQLite keeps them)."""
    text = dumps(metadata)
    if "\\u0000" not in text:
        return metadata, text
    cleaned: Json = _without_nul(metadata)
    return cleaned, dumps(cleaned)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _lock_order(item: Adding) -> tuple[str, str, str]:
    return (item.tenant, item.record.study_instance_uid, item.record.sop_instance_uid)


async def _add_item(
    conn: asyncpg.Connection, item: Adding, meta: Json, meta_json: str
) -> AddResult | Exception:
    """One instance of a batch in a savepoint: an error of its own undoes it alone and is
    returned; one worth retrying (a deadlock, a row inserted by another transaction)
    retries the whole batch (see `PostgresIndex.add_instances`)."""
    try:
        async with conn.transaction():
            added = await _add_or_refuse(
                conn,
                item.tenant,
                item.record,
                meta,
                meta_json,
                overwrite=item.overwrite,
                allow_patient_mismatch=item.allow_patient_mismatch,
            )
            if item.audit is None:
                return added
            event = item.audit(added)
            await postgres_audit.insert_audit_event(conn, event)
            return replace(added, audit=event)
    except _RETRYABLE:
        raise
    except (asyncpg.PostgresError, ValueError) as exc:
        return exc


class _Refused(Exception):
    """Leaves the savepoint of `_add_or_refuse`, undoing what the refused add wrote."""

    def __init__(self, added: AddResult) -> None:
        super().__init__(added.outcome)
        self.added = added


async def _add_or_refuse(
    conn: asyncpg.Connection,
    tenant: str,
    record: InstanceRecord,
    meta: Json,
    meta_json: str,
    *,
    overwrite: bool,
    allow_patient_mismatch: bool,
) -> AddResult:
    """`_add` in a savepoint: a refused instance undoes what was written before the
    refusal (a replaced instance's removal, the patient row), and the transaction keeps
    only its audit event."""
    try:
        async with conn.transaction():
            added = await _add(
                conn,
                tenant,
                record,
                meta,
                meta_json,
                overwrite=overwrite,
                allow_patient_mismatch=allow_patient_mismatch,
            )
            if added.outcome is Outcome.PATIENT_MISMATCH:
                raise _Refused(added)
    except _Refused as refused:
        return refused.added
    return added


async def _add(
    conn: asyncpg.Connection,
    tenant: str,
    record: InstanceRecord,
    meta: Json,
    meta_json: str,
    *,
    overwrite: bool,
    allow_patient_mismatch: bool,
) -> AddResult:
    await conn.execute(
        INSTANCE_LOCK,
        INSTANCE_LOCK_CLASS,
        tenant,
        record.sop_instance_uid,
    )
    existing = await conn.fetchrow(
        "SELECT pk, sha256, blob_key, series_fk, study_fk FROM instance"
        " WHERE tenant = $1 AND sop_instance_uid = $2",
        tenant,
        record.sop_instance_uid,
    )
    orphan: str | None = None
    if existing is not None:
        if existing["sha256"] == record.sha256:
            return AddResult(Outcome.IDENTICAL)
        if not overwrite:
            return AddResult(Outcome.CONFLICT)
        orphan = existing["blob_key"]
        await _lock_patients(conn, tenant, existing["study_fk"], meta)
        await _delete_instance(conn, existing["pk"], existing["series_fk"], existing["study_fk"])

    patient_fk = await _upsert_patient(conn, tenant, meta)
    # Locked by _ensure: a concurrent first instance of the study has committed its patient.
    study_fk, new_study = await _ensure_study(conn, tenant, record, meta, patient_fk)
    mismatch = not new_study and (
        await conn.fetchval("SELECT patient_fk FROM study WHERE pk = $1", study_fk) != patient_fk
    )
    if mismatch and not allow_patient_mismatch:
        return AddResult(Outcome.PATIENT_MISMATCH)  # undone by _add_or_refuse's savepoint
    series_fk, new_series = await _ensure_series(conn, tenant, record, meta, study_fk)
    row = _instance_row(record, meta, meta_json, series_fk, study_fk)
    await _insert(conn, "instance", {"tenant": tenant, **row})
    await conn.execute(_FOLD.format(table="series", fk="series_fk"), series_fk, FOLD_AT)
    await conn.execute(_FOLD.format(table="study", fk="study_fk"), study_fk, FOLD_AT)
    if new_series:
        await _series_changed(conn, study_fk, 1)
    if new_study:
        await conn.execute(
            "UPDATE patient SET num_studies = num_studies + 1 WHERE pk = $1", patient_fk
        )
    outcome = Outcome.REPLACED if orphan else Outcome.STORED
    return AddResult(outcome, orphan, patient_mismatch=mismatch)


def _instance_row(
    record: InstanceRecord, meta: Json, meta_json: str, series_fk: int, study_fk: int
) -> dict[str, Any]:
    return {
        "series_fk": series_fk,
        "study_fk": study_fk,
        "sop_instance_uid": record.sop_instance_uid,
        "sop_class_uid": record.sop_class_uid,
        "instance_number": column_values("instance", meta)["instance_number"],
        "transfer_syntax_uid": record.transfer_syntax_uid,
        "blob_key": record.blob_key,
        "size": record.size,
        "sha256": record.sha256,
        "encapsulated": record.encapsulated,
        "frames": frames_text(record),
        "bulk": bulk_text(record),
        "metadata": meta_json,
    }


async def _upsert_patient(conn: asyncpg.Connection, tenant: str, meta: Json) -> int:
    """The patient's pk, its row created or updated with this instance's attributes; the
    row stays locked until commit (first in the lock order).

    The row is rewritten only if an attribute differs: ON CONFLICT locks the row whether
    or not its WHERE holds, and then returns nothing, so the pk is read again.
    """
    cols = column_values("patient", meta)
    key = (tenant, cols["patient_id"] or "", cols["issuer_of_patient_id"] or "")
    pk = await conn.fetchval(
        """INSERT INTO patient (tenant, patient_id, issuer_of_patient_id, patient_name,
               patient_birth_date, patient_sex, attrs)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (tenant, patient_id, issuer_of_patient_id) DO UPDATE SET
               patient_name = excluded.patient_name,
               patient_birth_date = excluded.patient_birth_date,
               patient_sex = excluded.patient_sex, attrs = excluded.attrs
           WHERE (patient.patient_name, patient.patient_birth_date, patient.patient_sex,
                  patient.attrs)
               IS DISTINCT FROM (excluded.patient_name, excluded.patient_birth_date,
                  excluded.patient_sex, excluded.attrs)
           RETURNING pk""",
        *key,
        cols["patient_name"],
        cols["patient_birth_date"],
        cols["patient_sex"],
        dumps(subset(meta, PATIENT_TAGS)),
    )
    if pk is None:
        pk = await conn.fetchval(
            "SELECT pk FROM patient"
            " WHERE tenant = $1 AND patient_id = $2 AND issuer_of_patient_id = $3",
            *key,
        )
    return int(pk)


async def _ensure_study(
    conn: asyncpg.Connection, tenant: str, record: InstanceRecord, meta: Json, patient_fk: int
) -> tuple[int, bool]:
    """The study's pk, locked, and whether this transaction created it."""
    values: dict[str, Any] = {
        "tenant": tenant,
        "patient_fk": patient_fk,
        **column_values("study", meta),
        "attrs": dumps(subset(meta, PATIENT_TAGS | STUDY_TAGS)),
    }
    return await _ensure(conn, "study", "study_instance_uid", record.study_instance_uid, values)


async def _ensure_series(
    conn: asyncpg.Connection, tenant: str, record: InstanceRecord, meta: Json, study_fk: int
) -> tuple[int, bool]:
    values: dict[str, Any] = {
        "tenant": tenant,
        "study_fk": study_fk,
        **column_values("series", meta),
        "attrs": dumps(subset(meta, SERIES_TAGS)),
    }
    return await _ensure(conn, "series", "series_instance_uid", record.series_instance_uid, values)


async def _ensure(
    conn: asyncpg.Connection, table: str, uid_column: str, uid: str, values: dict[str, Any]
) -> tuple[int, bool]:
    """Find (and lock) or create the row of `table` with `uid` in the tenant of `values`;
    True if created.

    Usually the row exists. A concurrent transaction may be creating it (the INSERT waits
    for that one and then does nothing) or deleting it (the locking SELECT finds nothing),
    hence the loop. Names come from our own code.
    """
    find = f"SELECT pk FROM {table} WHERE tenant = $1 AND {uid_column} = $2 FOR NO KEY UPDATE"
    conflict = f"(tenant, {uid_column}) DO NOTHING"
    for _ in range(_ATTEMPTS):
        pk = await conn.fetchval(find, values["tenant"], uid)
        if pk is not None:
            return int(pk), False
        pk = await _insert(conn, table, values, on_conflict=conflict)
        if pk is not None:
            return pk, True
    raise asyncpg.SerializationError(f"{table} {uid} keeps changing")


async def _insert(
    conn: asyncpg.Connection, table: str, row: dict[str, Any], *, on_conflict: str = ""
) -> int | None:
    """Insert a row and return its pk (None if `on_conflict` skipped it)."""
    names = ", ".join(row)
    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    conflict = f" ON CONFLICT {on_conflict}" if on_conflict else ""
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks}){conflict} RETURNING pk"
    pk = await conn.fetchval(sql, *row.values())
    return None if pk is None else int(pk)


async def _series_changed(conn: asyncpg.Connection, study_fk: int, added: int) -> None:
    """A series of the (locked) study was added (1) or removed (-1): one new version of
    the study row with its series count and ModalitiesInStudy."""
    rows = await conn.fetch(
        "SELECT DISTINCT modality FROM series WHERE study_fk = $1 AND modality IS NOT NULL",
        study_fk,
    )
    await conn.execute(
        """UPDATE study SET num_series = num_series + $1, modalities_in_study = $2,
               updated_at = now() WHERE pk = $3""",
        added,
        modalities_text([r[0] for r in rows]),
        study_fk,
    )


async def _lock_patients(
    conn: asyncpg.Connection, tenant: str, old_study_fk: int, meta: Json
) -> None:
    """Lock the replaced instance's patient and the new one's, lowest pk first.

    An overwrite touches two patients' rows. Taken one after the other, two overwrites
    moving instances between the same patients in opposite directions would each hold
    one and wait for the other; taken together in pk order, the second one waits.
    """
    cols = column_values("patient", meta)
    await conn.execute(
        """SELECT pk FROM patient
           WHERE pk = (SELECT patient_fk FROM study WHERE pk = $1)
              OR (tenant = $4 AND patient_id = $2 AND issuer_of_patient_id = $3)
           ORDER BY pk FOR UPDATE""",
        old_study_fk,
        cols["patient_id"] or "",
        cols["issuer_of_patient_id"] or "",
        tenant,
    )


_HAS_INSTANCES = "SELECT EXISTS (SELECT 1 FROM instance WHERE {} = $1)"
# Fold the instances of a (locked) parent above its counted_pk into its num_instances
# once there are at least $2 of them; otherwise leave the row as it is.
_FOLD = """UPDATE {table} SET num_instances = num_instances + newer.n, counted_pk = newer.top
    FROM (SELECT count(*) AS n, max(instance.pk) AS top FROM instance
          WHERE instance.{fk} = $1
            AND instance.pk > (SELECT counted_pk FROM {table} WHERE pk = $1)) AS newer
    WHERE {table}.pk = $1 AND newer.n >= $2"""
# An instance removed from a (locked) parent: counted in num_instances if folded.
_UNFOLD = "UPDATE {} SET num_instances = num_instances - 1 WHERE pk = $1 AND counted_pk >= $2"


async def _delete_instance(
    conn: asyncpg.Connection, instance_pk: int, series_fk: int, study_fk: int
) -> None:
    """Remove an instance row, keeping counts exact and dropping emptied parents.

    Parents are locked top-down first, in the order every writer uses.
    """
    patient_fk = await conn.fetchval("SELECT patient_fk FROM study WHERE pk = $1", study_fk)
    await conn.execute("SELECT 1 FROM patient WHERE pk = $1 FOR UPDATE", patient_fk)
    await conn.execute("SELECT 1 FROM study WHERE pk = $1 FOR UPDATE", study_fk)
    await conn.execute("SELECT 1 FROM series WHERE pk = $1 FOR UPDATE", series_fk)
    await conn.execute("DELETE FROM instance WHERE pk = $1", instance_pk)
    await conn.execute(_UNFOLD.format("series"), series_fk, instance_pk)
    await conn.execute(_UNFOLD.format("study"), study_fk, instance_pk)
    # The locks make these answers final: every writer of the study waits for us.
    if not await conn.fetchval(_HAS_INSTANCES.format("series_fk"), series_fk):
        await conn.execute("DELETE FROM series WHERE pk = $1", series_fk)
        await _series_changed(conn, study_fk, -1)
    if not await conn.fetchval(_HAS_INSTANCES.format("study_fk"), study_fk):
        await conn.execute("DELETE FROM study WHERE pk = $1", study_fk)
        await conn.execute(
            "UPDATE patient SET num_studies = num_studies - 1 WHERE pk = $1", patient_fk
        )
        await conn.execute("DELETE FROM patient WHERE pk = $1 AND num_studies = 0", patient_fk)


async def _delete_scope(
    conn: asyncpg.Connection,
    tenant: str,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    *,
    audit: DeleteAuditFor | None,
) -> DeleteResult:
    """`Index.delete` in the transaction `conn` holds. Locks in the writers' order (see the
    module's header): the patient, the study (FOR UPDATE: a store into it, which locks it
    FOR NO KEY UPDATE, waits for the commit, then finds it gone or shrunk), its series in
    pk order, and the change-log counter last. Under the study's lock the instances read
    are final: none can join or leave the study until the commit."""
    study = await conn.fetchrow(
        "SELECT pk, patient_fk FROM study WHERE tenant = $1 AND study_instance_uid = $2",
        tenant,
        study_uid,
    )
    if study is None:
        return DeleteResult()
    study_pk = study["pk"]
    await conn.execute("SELECT 1 FROM patient WHERE pk = $1 FOR UPDATE", study["patient_fk"])
    locked = await conn.fetchrow(
        "SELECT patient_fk, counted_pk FROM study WHERE pk = $1 FOR UPDATE", study_pk
    )
    if locked is None:
        return DeleteResult()  # deleted meanwhile, by a delete that committed first
    if locked["patient_fk"] != study["patient_fk"]:
        raise asyncpg.SerializationError(f"study {study_pk} changed patient")  # retried
    sql, params = retrieval_sql(DELETE_COLUMNS, tenant, study_uid, series_uid, sop_uid)
    rows = await conn.fetch(sql, *params)
    if not rows:
        return DeleteResult()
    series_fks = sorted({row["series_fk"] for row in rows})
    series_counted = {
        row["pk"]: row["counted_pk"]
        for row in await conn.fetch(
            "SELECT pk, counted_pk FROM series WHERE pk = ANY($1::bigint[]) ORDER BY pk FOR UPDATE",
            series_fks,
        )
    }
    await conn.execute(
        "DELETE FROM instance WHERE pk = ANY($1::bigint[])", [r["instance_pk"] for r in rows]
    )
    by_series = counted([(r["series_fk"], r["instance_pk"]) for r in rows], series_counted)
    if by_series:
        await conn.executemany(
            "UPDATE series SET num_instances = num_instances - $1 WHERE pk = $2",
            [(n, pk) for pk, n in by_series.items()],
        )
    in_study = counted(
        [(study_pk, r["instance_pk"]) for r in rows], {study_pk: locked["counted_pk"]}
    )
    if in_study:
        await conn.execute(
            "UPDATE study SET num_instances = num_instances - $1 WHERE pk = $2",
            in_study[study_pk],
            study_pk,
        )
    emptied = await conn.fetch(
        """DELETE FROM series WHERE pk = ANY($1::bigint[])
               AND NOT EXISTS (SELECT 1 FROM instance WHERE series_fk = series.pk)
           RETURNING series_instance_uid""",
        series_fks,
    )
    if emptied:
        await _series_changed(conn, study_pk, -len(emptied))
    study_gone = not await conn.fetchval(_HAS_INSTANCES.format("study_fk"), study_pk)
    if study_gone:
        patient_fk = study["patient_fk"]
        await conn.execute("DELETE FROM study WHERE pk = $1", study_pk)
        await conn.execute(
            "UPDATE patient SET num_studies = num_studies - 1 WHERE pk = $1", patient_fk
        )
        await conn.execute("DELETE FROM patient WHERE pk = $1 AND num_studies = 0", patient_fk)
    removed = [stored_instance(row) for row in rows]
    await conn.execute(
        """INSERT INTO blob_deletion (blob_key, tenant)
           SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING""",
        [i.blob_key for i in removed],
        tenant,
    )
    events = audit(removed) if audit is not None else []
    for event in events:
        await postgres_audit.insert_audit_event(conn, event)
    gone = {row[0] for row in emptied}
    # Last: the tenant's counter stays locked until the commit.
    await postgres_changes.record_changes(conn, deleted_changes(tenant, removed, gone, study_gone))
    return DeleteResult(tuple(removed), tuple(events))


def retrieval_sql(
    columns: str, tenant: str, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> tuple[str, list[str]]:
    """The query of instances() and metadata() (and of their plan test).

    Every table is filtered by tenant (a child has its parent's): whichever table the
    planner starts from, its (tenant, uid) key finds the rows.
    """
    clauses = [
        "study.tenant = $1",
        "series.tenant = $1",
        "instance.tenant = $1",
        "study.study_instance_uid = $2",
    ]
    params = [tenant, study_uid]
    if series_uid is not None:
        params.append(series_uid)
        clauses.append(f"series.series_instance_uid = ${len(params)}")
    if sop_uid is not None:
        params.append(sop_uid)
        clauses.append(f"instance.sop_instance_uid = ${len(params)}")
    sql = f"""SELECT {columns} FROM instance
              JOIN series ON series.pk = instance.series_fk
              JOIN study ON study.pk = instance.study_fk
              WHERE {" AND ".join(clauses)} ORDER BY {_ORDER}"""
    return sql, params
