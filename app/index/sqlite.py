"""The SQLite index: the embedded default.

One writer connection on a thread of its own, each write one `BEGIN IMMEDIATE`
transaction so counts stay exact, and a few reader connections beside it (WAL mode).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app.dicom.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from app.index import (
    sqlite_audit,
    sqlite_changes,
    sqlite_cursors,
    sqlite_forward_rules,
    sqlite_jobs,
    sqlite_stable,
    sqlite_webhooks,
)
from app.index.change_rows import change_of
from app.index.delete_rows import DELETE_COLUMNS, counted, deleted_changes
from app.index.migrations import SchemaError, latest_version, migrations
from app.index.rows import (
    FOLD_AT,
    INSTANCE_COLUMNS,
    ORDER_COLUMNS,
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
from app.query.sql import SQLITE, compile_counted_search, install_sqlite_functions
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

# SQLite sorts NULL first: instances without a number come before the numbered ones.
_ORDER = ", ".join(ORDER_COLUMNS)


_WAL_ATTEMPTS = 200  # 10 s
READERS = 4
# A search first runs on the event loop, on a connection of its own, for up to this many
# steps of SQLite's virtual machine (checked every _STEPS_PER_CHECK): a lookup by key takes
# a few hundred, some 20 us, where the hop to a reader thread and back costs 50-150 us of
# CPU and a wake-up. A longer search is interrupted there (after a fraction of a
# millisecond) and run again on a reader thread, as every other read is.
INLINE_STEPS = 10_000
_STEPS_PER_CHECK = 1_000
# Blob keys per lookup: within SQLite's smallest limit on bound parameters (999 before 3.32).
_KEYS_PER_QUERY = 900

T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SqliteIndex:
    """SQLite allows one writer at a time: every write runs on one dedicated thread, as a
    single call holding the whole transaction (a hand-off per statement would cost more
    than the statements). Reads use a few connections of their own, which WAL mode lets
    run beside the writer."""

    def __init__(
        self,
        writer: sqlite3.Connection,
        readers: list[sqlite3.Connection],
        inline: sqlite3.Connection | None = None,
    ) -> None:
        self._writer = writer
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._all_readers = [*readers, *([inline] if inline else [])]
        self._readers: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)
        # Used on the event loop only, one statement at a time (see _read_short). It never
        # waits for a lock there: a busy database sends the search to a reader thread.
        self._inline = inline
        if inline is not None:
            inline.execute("PRAGMA busy_timeout = 0")

    @classmethod
    async def open(cls, path: Path, *, readers: int = READERS) -> SqliteIndex:
        writer, connections = await asyncio.to_thread(_open, path, readers + 1)
        return cls(writer, connections[:-1], connections[-1])

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write_thread, self._writer.close)
        self._write_thread.shutdown()
        for reader in self._all_readers:
            reader.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_thread, _transaction, self._writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = await self._readers.get()
        try:
            return await asyncio.to_thread(fn, conn)
        finally:
            self._readers.put_nowait(conn)

    async def _read_short(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` (one statement) on the event loop if it takes at most INLINE_STEPS, else
        on a reader thread (`_read`)."""
        conn = self._inline
        if conn is None:
            return await self._read(fn)
        checks = 0

        def interrupt() -> bool:
            nonlocal checks
            checks += 1
            return checks * _STEPS_PER_CHECK >= INLINE_STEPS

        conn.set_progress_handler(interrupt, _STEPS_PER_CHECK)
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            # The primary code of an extended one (SQLITE_BUSY_RECOVERY is a busy too).
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_BUSY):
                raise
        finally:
            conn.set_progress_handler(None, 0)
        return await self._read(fn)

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
        items = tuple(batch)
        return await self._write(lambda db: _add_batch(db, items))

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
        return await self._write(lambda db: _delete_scope(db, *scope, audit=audit))

    async def blobs_to_delete(self, limit: int) -> list[str]:
        sql = "SELECT blob_key FROM blob_deletion ORDER BY queued_at, blob_key LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, (limit,)).fetchall())
        return [row[0] for row in rows]

    async def blobs_deleted(self, keys: Sequence[str]) -> None:
        batch = [(key,) for key in keys]
        if batch:
            sql = "DELETE FROM blob_deletion WHERE blob_key = ?"
            await self._write(lambda db: db.executemany(sql, batch))

    # -- reads -------------------------------------------------------------------------

    async def search(self, tenant: str, query: Query) -> list[SearchHit]:
        compiled = compile_counted_search(tenant, query, SQLITE)
        rows = await self._read_short(
            lambda db: db.execute(compiled.sql, compiled.params).fetchall()
        )
        return [search_hit(query.level, row) for row in rows]

    async def instances(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        where, params = _scope(tenant, study_instance_uid, series_instance_uid, sop_instance_uid)
        sql = f"""SELECT {INSTANCE_COLUMNS} FROM instance
                  JOIN series ON series.pk = instance.series_fk
                  JOIN study ON study.pk = instance.study_fk
                  WHERE {where} ORDER BY {_ORDER}"""
        # One instance (a frame, a rendered image: a viewer's every request) is a lookup by
        # key, cheaper on the event loop than the hop to a reader thread (see _read_short).
        read = self._read if sop_instance_uid is None else self._read_short
        rows = await read(lambda db: db.execute(sql, params).fetchall())
        return [stored_instance(row) for row in rows]

    async def metadata(
        self,
        tenant: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredMetadata]:
        where, params = _scope(tenant, study_instance_uid, series_instance_uid, sop_instance_uid)
        sql = f"""SELECT study.study_instance_uid, series.series_instance_uid,
                         instance.sop_instance_uid, instance.metadata, study.patient_id
                  FROM instance
                  JOIN series ON series.pk = instance.series_fk
                  JOIN study ON study.pk = instance.study_fk
                  WHERE {where} ORDER BY {_ORDER}"""
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [StoredMetadata(r[0], r[1], r[2], r[3].encode(), patient_id=r[4]) for r in rows]

    async def referenced_blob_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = tuple(keys[start : start + _KEYS_PER_QUERY])
            found.update(await self._read(partial(_referenced, keys=batch)))
        return found

    # -- change log (app/index/sqlite_changes.py) -------------------------------------

    async def changes(
        self, tenant: str, after: int, limit: int, *, metadata: bool = False
    ) -> list[Change]:
        return await self._read(
            lambda db: sqlite_changes.read_changes(db, tenant, after, limit, metadata=metadata)
        )

    async def latest_change(self, tenant: str, *, metadata: bool = False) -> Change | None:
        return await self._read(
            lambda db: sqlite_changes.latest_change(db, tenant, metadata=metadata)
        )

    # -- consumers' cursors (app/index/sqlite_cursors.py) ------------------------------

    async def pending_tenants(self, consumer: str, owner: str) -> list[str]:
        return await self._read(lambda db: sqlite_cursors.pending_tenants(db, consumer, owner))

    async def claim_cursor(
        self, consumer: str, tenant: str, owner: str, lease: float
    ) -> int | None:
        return await self._write(
            lambda db: sqlite_cursors.claim_cursor(db, consumer, tenant, owner, lease)
        )

    async def advance_cursor(
        self, consumer: str, tenant: str, owner: str, last_seq: int, lease: float
    ) -> bool:
        return await self._write(
            lambda db: sqlite_cursors.advance_cursor(
                db, consumer, tenant, owner, last_seq=last_seq, lease=lease
            )
        )

    async def release_cursor(self, consumer: str, tenant: str, owner: str) -> None:
        await self._write(lambda db: sqlite_cursors.release_cursor(db, consumer, tenant, owner))

    # -- forwarding jobs (app/index/sqlite_jobs.py) ------------------------------------

    async def start_cursors(self, consumer: str) -> bool:
        return await self._write(lambda db: sqlite_jobs.start_cursors(db, consumer))

    async def enqueue_jobs(self, jobs: Sequence[NewJob]) -> int:
        batch = tuple(jobs)
        return await self._write(lambda db: sqlite_jobs.enqueue_jobs(db, batch))

    async def claim_job(self, owner: str, lease: float) -> Job | None:
        return await self._write(lambda db: sqlite_jobs.claim_job(db, owner, lease))

    async def renew_job(self, job_id: int, owner: str, lease: float) -> bool:
        return await self._write(lambda db: sqlite_jobs.renew_job(db, job_id, owner, lease))

    async def job_done(self, job_id: int, owner: str) -> bool:
        return await self._write(lambda db: sqlite_jobs.job_done(db, job_id, owner))

    async def job_failed(
        self, job_id: int, owner: str, reason: str, retry_in: float | None
    ) -> bool:
        return await self._write(
            lambda db: sqlite_jobs.job_failed(db, job_id, owner, reason, retry_in)
        )

    async def jobs(self, tenant: str, state: JobState | None, limit: int) -> list[Job]:
        return await self._read(lambda db: sqlite_jobs.jobs(db, tenant, state, limit))

    async def retry_job(self, tenant: str, job_id: int) -> Job | None:
        return await self._write(lambda db: sqlite_jobs.retry_job(db, tenant, job_id))

    async def announce_stable(self, quiet: float, limit: int) -> dict[str, int]:
        return await self._write(lambda db: sqlite_stable.announce_stable(db, quiet, limit))

    # -- forwarding rules of the admin API (app/index/sqlite_forward_rules.py) ----------

    async def create_forward_rule(self, rule: StoredRule) -> bool:
        return await self._write(lambda db: sqlite_forward_rules.create_forward_rule(db, rule))

    async def forward_rules(
        self, tenant: str | None = None, name: str | None = None
    ) -> list[StoredRule]:
        return await self._read(lambda db: sqlite_forward_rules.forward_rules(db, tenant, name))

    async def delete_forward_rule(self, tenant: str, name: str) -> bool:
        return await self._write(
            lambda db: sqlite_forward_rules.delete_forward_rule(db, tenant, name)
        )

    # -- webhook subscriptions (app/index/sqlite_webhooks.py) -------------------------

    async def create_webhook(self, webhook: Webhook) -> None:
        await self._write(lambda db: sqlite_webhooks.create_webhook(db, webhook))

    async def webhooks(self, tenant: str, webhook_id: str | None = None) -> list[WebhookStatus]:
        return await self._read(lambda db: sqlite_webhooks.webhooks(db, tenant, webhook_id))

    async def active_webhooks(self) -> list[Webhook]:
        return await self._read(sqlite_webhooks.active_webhooks)

    async def delete_webhook(self, tenant: str, webhook_id: str) -> bool:
        return await self._write(lambda db: sqlite_webhooks.delete_webhook(db, tenant, webhook_id))

    async def webhook_failed(self, tenant: str, webhook_id: str, reason: str) -> None:
        await self._write(lambda db: sqlite_webhooks.webhook_failed(db, tenant, webhook_id, reason))

    async def add_dead_letter(self, tenant: str, webhook_id: str, letter: DeadLetter) -> None:
        await self._write(
            lambda db: sqlite_webhooks.add_dead_letter(db, tenant, webhook_id, letter)
        )

    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, *, retry_only: bool = False
    ) -> list[DeadLetter]:
        return await self._read(
            lambda db: sqlite_webhooks.dead_letters(db, tenant, webhook_id, limit, retry_only)
        )

    async def retry_dead_letters(
        self, tenant: str, webhook_id: str, sequence: int | None = None
    ) -> int:
        return await self._write(
            lambda db: sqlite_webhooks.retry_dead_letters(db, tenant, webhook_id, sequence)
        )

    async def remove_dead_letter(self, tenant: str, webhook_id: str, sequence: int) -> None:
        await self._write(
            lambda db: sqlite_webhooks.remove_dead_letter(db, tenant, webhook_id, sequence)
        )

    # -- audit trail (app/index/sqlite_audit.py) ---------------------------------------

    async def add_audit_events(self, events: Sequence[AuditEvent]) -> None:
        batch = tuple(events)
        await self._write(lambda db: sqlite_audit.insert_audit_events(db, batch))

    async def search_audit(self, tenant: str, query: AuditQuery) -> list[AuditEvent]:
        return await self._read(lambda db: sqlite_audit.search_audit(db, tenant, query))


def _referenced(db: sqlite3.Connection, keys: tuple[str, ...]) -> list[str]:
    marks = ",".join("?" * len(keys))
    sql = f"""SELECT blob_key FROM instance WHERE blob_key IN ({marks})
              UNION SELECT blob_key FROM blob_deletion WHERE blob_key IN ({marks})"""
    return [row[0] for row in db.execute(sql, keys + keys)]


def _open(path: Path, readers: int) -> tuple[sqlite3.Connection, list[sqlite3.Connection]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    opened: list[sqlite3.Connection] = []
    try:
        opened.append(_connect(path))
        _migrate(opened[0])
        for _ in range(readers):
            opened.append(_connect(path))
    except BaseException:
        for conn in opened:
            conn.close()
        raise
    return opened[0], opened[1:]


def _transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` in a write transaction; BEGIN IMMEDIATE also orders us against other
    processes using the same file. A result that changed nothing (and kept no audit
    event) is rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.commit()  # inside: a failed commit (a deferred constraint, a full disk) rolls back
    except BaseException:
        db.rollback()
        raise
    return result


def _add_batch(db: sqlite3.Connection, items: Sequence[Adding]) -> list[AddResult | Exception]:
    """Add each item in a savepoint of the caller's transaction: one that fails is undone
    alone and returned as its exception. The change-log entries of those that changed
    something are written last, in the same transaction."""
    results: list[AddResult | Exception] = []
    for item in items:
        db.execute("SAVEPOINT batch_item")
        try:
            added = _add_audited(
                db,
                item.tenant,
                item.record,
                overwrite=item.overwrite,
                audit=item.audit,
                allow_patient_mismatch=item.allow_patient_mismatch,
            )
        except Exception as exc:
            if not db.in_transaction:
                raise  # SQLite rolled the whole transaction back (a full disk, I/O): none kept
            db.execute("ROLLBACK TO batch_item")
            results.append(exc)
        else:
            results.append(added)
        db.execute("RELEASE batch_item")
    changes = [c for i, a in zip(items, results, strict=True) if (c := change_of(i, a))]
    sqlite_stable.record_arrivals(db, changes)
    sqlite_changes.record_changes(db, changes)
    return results


def _add_audited(
    db: sqlite3.Connection,
    tenant: str,
    record: InstanceRecord,
    *,
    overwrite: bool,
    audit: AuditFor | None,
    allow_patient_mismatch: bool,
) -> AddResult:
    # A savepoint: a refused instance undoes what was written before the refusal (a
    # replaced instance's removal, the patient row) and keeps only its audit event.
    db.execute("SAVEPOINT add_instance")
    added = _add(db, tenant, record, overwrite, allow_patient_mismatch)
    if added.outcome is Outcome.PATIENT_MISMATCH:
        db.execute("ROLLBACK TO add_instance")
    db.execute("RELEASE add_instance")
    if audit is None:
        return added
    event = audit(added)
    sqlite_audit.insert_audit_event(db, event)
    return replace(added, audit=event)


def _add(
    db: sqlite3.Connection,
    tenant: str,
    record: InstanceRecord,
    overwrite: bool,
    allow_patient_mismatch: bool,
) -> AddResult:
    orphan: str | None = None
    existing = db.execute(
        "SELECT pk, sha256, blob_key FROM instance WHERE tenant = ? AND sop_instance_uid = ?",
        (tenant, record.sop_instance_uid),
    ).fetchone()
    if existing is not None:
        if existing["sha256"] == record.sha256:
            return AddResult(Outcome.IDENTICAL)
        if not overwrite:
            return AddResult(Outcome.CONFLICT)
        orphan = existing["blob_key"]
        _delete_instance(db, existing["pk"])

    now = _now()
    meta = record.metadata
    patient_fk = _upsert_patient(db, tenant, meta)
    study_fk, new_study = _ensure_study(db, tenant, record, patient_fk, now)
    mismatch = not new_study and _study_patient(db, study_fk) != patient_fk
    if mismatch and not allow_patient_mismatch:
        return AddResult(Outcome.PATIENT_MISMATCH)  # undone by the caller's savepoint
    series_fk, new_series = _ensure_series(db, tenant, record, study_fk)
    inst = column_values("instance", meta)
    db.execute(
        """INSERT INTO instance (tenant, series_fk, study_fk, sop_instance_uid, sop_class_uid,
               instance_number, transfer_syntax_uid, blob_key, size, sha256,
               encapsulated, frames, bulk, metadata, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            tenant,
            series_fk,
            study_fk,
            record.sop_instance_uid,
            record.sop_class_uid,
            inst["instance_number"],
            record.transfer_syntax_uid,
            record.blob_key,
            record.size,
            record.sha256,
            int(record.encapsulated),
            frames_text(record),
            bulk_text(record),
            dumps(meta),
            now,
        ),
    )
    # Instance counts are folded in once per FOLD_AT instances (as on PostgreSQL, where
    # updating them would leave a dead study and series row version behind each one).
    db.execute(_FOLD.format(table="series", fk="series_fk"), (series_fk, FOLD_AT))
    db.execute(_FOLD.format(table="study", fk="study_fk"), (study_fk, FOLD_AT))
    if new_series:
        _series_changed(db, study_fk, 1, now)
    if new_study:
        db.execute("UPDATE patient SET num_studies = num_studies + 1 WHERE pk = ?", (patient_fk,))
    outcome = Outcome.REPLACED if orphan else Outcome.STORED
    return AddResult(outcome, orphan, patient_mismatch=mismatch)


def _study_patient(db: sqlite3.Connection, study_fk: int) -> int:
    row = db.execute("SELECT patient_fk FROM study WHERE pk = ?", (study_fk,)).fetchone()
    assert row is not None
    return int(row[0])


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    install_sqlite_functions(db)
    try:
        # WAL lets readers run beside the writer; synchronous=FULL because an acknowledged
        # instance must survive a power cut, not only a crash.
        db.execute("PRAGMA busy_timeout = 30000")
        _set_wal(db)
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        db.close()
        raise
    return db


def _set_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without waiting for
    busy_timeout, while another connection is creating the same new file: try again."""
    for attempt in range(_WAL_ATTEMPTS):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05)


def _schema_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int((row[0] if row else None) or 0)


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise SchemaError(
            f"index schema version {current} is newer than this code supports ({latest})"
        )


def _migrate(db: sqlite3.Connection) -> None:
    """Apply pending migrations in one transaction; safe from several processes at once."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    latest = latest_version("sqlite")
    current = _schema_version(db)
    _check_not_newer(current, latest)
    if current == latest:
        return
    # Migrations rebuild tables (SQLite cannot alter constraints in place), which foreign
    # key enforcement would refuse half-way; the keys are checked before committing. The
    # pragma has no effect inside a transaction, hence before BEGIN.
    db.execute("PRAGMA foreign_keys = OFF")
    try:
        _apply_migrations(db, latest)
    finally:
        db.execute("PRAGMA foreign_keys = ON")


def _apply_migrations(db: sqlite3.Connection, latest: int) -> None:
    # The write lock: another process migrating this file has finished (look again) or
    # waits for us. Statements run one by one because executescript() would commit.
    db.execute("BEGIN IMMEDIATE")
    try:
        current = _schema_version(db)
        _check_not_newer(current, latest)
        for migration in migrations("sqlite")[current:]:
            log.info("applying index migration %s", migration.path.name)
            for statement in _statements(migration.sql):
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
        broken = db.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise SchemaError(f"index migration broke {len(broken)} foreign keys: {broken[:3]}")
    except BaseException:
        db.rollback()
        raise
    db.commit()


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration file (sqlite3 knows where one is complete)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if any(not line.strip().startswith("--") for line in pending.splitlines() if line.strip()):
        raise SchemaError(f"incomplete SQL statement at the end of a migration: {pending!r}")
    return statements


def _upsert_patient(db: sqlite3.Connection, tenant: str, meta: Json) -> int:
    """The patient's pk, its row created or, if an attribute differs, updated (as on
    PostgreSQL; a skipped update returns no row, so the pk is read again)."""
    cols = column_values("patient", meta)
    key = (tenant, cols["patient_id"] or "", cols["issuer_of_patient_id"] or "")
    row = db.execute(
        """INSERT INTO patient (tenant, patient_id, issuer_of_patient_id, patient_name,
               patient_birth_date, patient_sex, attrs)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (tenant, patient_id, issuer_of_patient_id) DO UPDATE SET
               patient_name = excluded.patient_name,
               patient_birth_date = excluded.patient_birth_date,
               patient_sex = excluded.patient_sex, attrs = excluded.attrs
           WHERE patient.patient_name IS NOT excluded.patient_name
               OR patient.patient_birth_date IS NOT excluded.patient_birth_date
               OR patient.patient_sex IS NOT excluded.patient_sex
               OR patient.attrs IS NOT excluded.attrs
           RETURNING pk""",
        (
            *key,
            cols["patient_name"],
            cols["patient_birth_date"],
            cols["patient_sex"],
            dumps(subset(meta, PATIENT_TAGS)),
        ),
    ).fetchone()
    if row is None:
        row = db.execute(
            "SELECT pk FROM patient"
            " WHERE tenant = ? AND patient_id = ? AND issuer_of_patient_id = ?",
            key,
        ).fetchone()
    assert row is not None
    return int(row[0])


def _ensure_study(
    db: sqlite3.Connection, tenant: str, record: InstanceRecord, patient_fk: int, now: str
) -> tuple[int, bool]:
    row = db.execute(
        "SELECT pk FROM study WHERE tenant = ? AND study_instance_uid = ?",
        (tenant, record.study_instance_uid),
    ).fetchone()
    if row is not None:
        return int(row[0]), False
    values: dict[str, Any] = {
        "tenant": tenant,
        "patient_fk": patient_fk,
        **column_values("study", record.metadata),
        "attrs": dumps(subset(record.metadata, PATIENT_TAGS | STUDY_TAGS)),
        "created_at": now,
        "updated_at": now,
    }
    return _insert(db, "study", values), True


def _ensure_series(
    db: sqlite3.Connection, tenant: str, record: InstanceRecord, study_fk: int
) -> tuple[int, bool]:
    row = db.execute(
        "SELECT pk FROM series WHERE tenant = ? AND series_instance_uid = ?",
        (tenant, record.series_instance_uid),
    ).fetchone()
    if row is not None:
        return int(row[0]), False
    values: dict[str, Any] = {
        "tenant": tenant,
        "study_fk": study_fk,
        **column_values("series", record.metadata),
        "attrs": dumps(subset(record.metadata, SERIES_TAGS)),
    }
    return _insert(db, "series", values), True


def _insert(db: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    """Insert a row and return its pk. Table and column names come from our own code."""
    names = ", ".join(row)
    marks = ", ".join("?" * len(row))
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING pk"
    found = db.execute(sql, tuple(row.values())).fetchone()
    assert found is not None
    return int(found[0])


def _series_changed(db: sqlite3.Connection, study_fk: int, added: int, now: str) -> None:
    """A series of the study was added (1) or removed (-1): its series count and
    ModalitiesInStudy change."""
    rows = db.execute(
        "SELECT DISTINCT modality FROM series WHERE study_fk = ? AND modality IS NOT NULL",
        (study_fk,),
    ).fetchall()
    db.execute(
        """UPDATE study SET num_series = num_series + ?, modalities_in_study = ?,
               updated_at = ? WHERE pk = ?""",
        (added, modalities_text([r[0] for r in rows]), now, study_fk),
    )


# As app/index/postgres.py: fold the instances of a parent above its counted_pk into its
# num_instances once there are at least ?2 of them.
_FOLD = """UPDATE {table} SET num_instances = num_instances + newer.n, counted_pk = newer.top
    FROM (SELECT count(*) AS n, max(instance.pk) AS top FROM instance
          WHERE instance.{fk} = ?1
            AND instance.pk > (SELECT counted_pk FROM {table} WHERE pk = ?1)) AS newer
    WHERE {table}.pk = ?1 AND newer.n >= ?2"""
# An instance removed from a parent: counted in num_instances if folded.
_UNFOLD = "UPDATE {} SET num_instances = num_instances - 1 WHERE pk = ? AND counted_pk >= ?"


def _delete_instance(db: sqlite3.Connection, instance_pk: int) -> None:
    """Remove an instance row, keeping counts exact and dropping emptied parents."""
    row = db.execute(
        "SELECT series_fk, study_fk FROM instance WHERE pk = ?", (instance_pk,)
    ).fetchone()
    assert row is not None
    series_fk, study_fk = row["series_fk"], row["study_fk"]
    db.execute("DELETE FROM instance WHERE pk = ?", (instance_pk,))
    db.execute(_UNFOLD.format("series"), (series_fk, instance_pk))
    db.execute(_UNFOLD.format("study"), (study_fk, instance_pk))
    if not _has_instances(db, "series_fk", series_fk):
        db.execute("DELETE FROM series WHERE pk = ?", (series_fk,))
        _series_changed(db, study_fk, -1, _now())
    if not _has_instances(db, "study_fk", study_fk):
        patient_fk = _study_patient(db, study_fk)
        db.execute("DELETE FROM study WHERE pk = ?", (study_fk,))
        db.execute("UPDATE patient SET num_studies = num_studies - 1 WHERE pk = ?", (patient_fk,))
        db.execute("DELETE FROM patient WHERE pk = ? AND num_studies = 0", (patient_fk,))


def _delete_scope(
    db: sqlite3.Connection,
    tenant: str,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    *,
    audit: DeleteAuditFor | None,
) -> DeleteResult:
    """`Index.delete` in the writer's transaction (one writer: nothing changes meanwhile)."""
    where, params = _scope(tenant, study_uid, series_uid, sop_uid)
    rows = db.execute(
        f"""SELECT {DELETE_COLUMNS} FROM instance
            JOIN series ON series.pk = instance.series_fk
            JOIN study ON study.pk = instance.study_fk
            WHERE {where} ORDER BY {_ORDER}""",
        params,
    ).fetchall()
    if not rows:
        return DeleteResult()
    study = db.execute(
        "SELECT pk, patient_fk, counted_pk FROM study WHERE tenant = ? AND study_instance_uid = ?",
        (tenant, study_uid),
    ).fetchone()
    series_fks = sorted({row["series_fk"] for row in rows})
    marks = ",".join("?" * len(series_fks))
    series_counted = {
        row[0]: row[1]
        for row in db.execute(
            f"SELECT pk, counted_pk FROM series WHERE pk IN ({marks})", series_fks
        )
    }
    pks = [(row["instance_pk"],) for row in rows]
    db.executemany("DELETE FROM instance WHERE pk = ?", pks)
    by_series = counted([(r["series_fk"], r["instance_pk"]) for r in rows], series_counted)
    db.executemany(
        "UPDATE series SET num_instances = num_instances - ? WHERE pk = ?",
        [(n, pk) for pk, n in by_series.items()],
    )
    in_study = counted(
        [(study["pk"], r["instance_pk"]) for r in rows], {study["pk"]: study["counted_pk"]}
    )
    if in_study:
        db.execute(
            "UPDATE study SET num_instances = num_instances - ? WHERE pk = ?",
            (in_study[study["pk"]], study["pk"]),
        )
    emptied = db.execute(
        f"""SELECT pk, series_instance_uid FROM series WHERE pk IN ({marks})
            AND NOT EXISTS (SELECT 1 FROM instance WHERE series_fk = series.pk)""",
        series_fks,
    ).fetchall()
    if emptied:
        db.executemany("DELETE FROM series WHERE pk = ?", [(row[0],) for row in emptied])
        _series_changed(db, study["pk"], -len(emptied), _now())
    study_gone = not _has_instances(db, "study_fk", study["pk"])
    if study_gone:
        patient_fk = study["patient_fk"]
        db.execute("DELETE FROM study WHERE pk = ?", (study["pk"],))
        db.execute("UPDATE patient SET num_studies = num_studies - 1 WHERE pk = ?", (patient_fk,))
        db.execute("DELETE FROM patient WHERE pk = ? AND num_studies = 0", (patient_fk,))
    removed = [stored_instance(row) for row in rows]
    now = _now()
    db.executemany(
        "INSERT OR IGNORE INTO blob_deletion (blob_key, tenant, queued_at) VALUES (?, ?, ?)",
        [(i.blob_key, tenant, now) for i in removed],
    )
    events = audit(removed) if audit is not None else []
    for event in events:
        sqlite_audit.insert_audit_event(db, event)
    gone = {row[1] for row in emptied}
    sqlite_changes.record_changes(db, deleted_changes(tenant, removed, gone, study_gone))
    return DeleteResult(tuple(removed), tuple(events))


def _has_instances(db: sqlite3.Connection, column: str, pk: int) -> bool:
    """Whether any instance has `pk` in `column` ("series_fk" or "study_fk")."""
    row = db.execute(f"SELECT EXISTS (SELECT 1 FROM instance WHERE {column} = ?)", (pk,))
    return bool(row.fetchone()[0])


def _scope(
    tenant: str, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> tuple[str, tuple[str, ...]]:
    # Every table is filtered by tenant (a child has its parent's): whichever table the
    # planner starts from, its (tenant, uid) key finds the rows.
    clauses = [
        "study.tenant = ?",
        "series.tenant = ?",
        "instance.tenant = ?",
        "study.study_instance_uid = ?",
    ]
    params = [tenant, tenant, tenant, study_uid]
    if series_uid is not None:
        clauses.append("series.series_instance_uid = ?")
        params.append(series_uid)
    if sop_uid is not None:
        clauses.append("instance.sop_instance_uid = ?")
        params.append(sop_uid)
    return " AND ".join(clauses), tuple(params)
