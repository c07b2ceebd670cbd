"""The SQLite index: the embedded default.

One writer connection (SQLite has a single writer; an asyncio lock keeps our own writes
in order and each runs in a `BEGIN IMMEDIATE` transaction, so counts stay exact) and one
reader connection, which WAL mode lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from app.dicom.levels import PATIENT_TAGS, SERIES_TAGS, STUDY_TAGS
from app.index.migrations import SchemaError, latest_version, migrations
from app.index.rows import (
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
from app.query.sql import SQLITE, compile_search
from app.services.ports import (
    AddResult,
    InstanceRecord,
    Json,
    Outcome,
    SearchHit,
    StoredInstance,
    StoredMetadata,
)

log = logging.getLogger(__name__)

_INSTANCE_COLUMNS = """
    study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid,
    instance.sop_class_uid, instance.transfer_syntax_uid, instance.blob_key, instance.size,
    instance.sha256, instance.encapsulated, instance.frames, instance.bulk
"""
# SQLite sorts NULL first: instances without a number come before the numbered ones.
_ORDER = ", ".join(ORDER_COLUMNS)


_WAL_ATTEMPTS = 200  # 10 s


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SqliteIndex:
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteIndex:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await _migrate(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    # -- writes ------------------------------------------------------------------------

    async def add_instance(self, record: InstanceRecord, *, overwrite: bool) -> AddResult:
        async with self._write_lock:
            db = self._writer
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await self._add(db, record, overwrite)
            except BaseException:
                await db.rollback()
                raise
            if result.outcome in (Outcome.IDENTICAL, Outcome.CONFLICT):
                await db.rollback()
            else:
                await db.commit()
            return result

    async def _add(
        self, db: aiosqlite.Connection, record: InstanceRecord, overwrite: bool
    ) -> AddResult:
        orphan: str | None = None
        async with db.execute(
            "SELECT pk, sha256, blob_key FROM instance WHERE sop_instance_uid = ?",
            (record.sop_instance_uid,),
        ) as cur:
            existing = await cur.fetchone()
        if existing is not None:
            if existing["sha256"] == record.sha256:
                return AddResult(Outcome.IDENTICAL)
            if not overwrite:
                return AddResult(Outcome.CONFLICT)
            orphan = existing["blob_key"]
            await _delete_instance(db, existing["pk"])

        now = _now()
        meta = record.metadata
        patient_fk = await _upsert_patient(db, meta)
        study_fk, new_study = await _ensure_study(db, record, patient_fk, now)
        series_fk, new_series = await _ensure_series(db, record, study_fk)
        inst = column_values("instance", meta)
        await db.execute(
            """INSERT INTO instance (series_fk, study_fk, sop_instance_uid, sop_class_uid,
                   instance_number, transfer_syntax_uid, blob_key, size, sha256,
                   encapsulated, frames, bulk, metadata, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
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
        await db.execute(
            "UPDATE series SET num_instances = num_instances + 1 WHERE pk = ?", (series_fk,)
        )
        await db.execute(
            """UPDATE study SET num_instances = num_instances + 1,
                   num_series = num_series + ?, updated_at = ? WHERE pk = ?""",
            (int(new_series), now, study_fk),
        )
        if new_series:
            await _refresh_modalities(db, study_fk)
        if new_study:
            await db.execute(
                "UPDATE patient SET num_studies = num_studies + 1 WHERE pk = ?", (patient_fk,)
            )
        outcome = Outcome.REPLACED if orphan else Outcome.STORED
        return AddResult(outcome, orphan)

    # -- reads -------------------------------------------------------------------------

    async def search(self, query: Query) -> list[SearchHit]:
        compiled = compile_search(query, SQLITE)
        async with self._reader.execute(compiled.sql, compiled.params) as cur:
            rows = await cur.fetchall()
        return [search_hit(query.level, row) for row in rows]

    async def instances(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredInstance]:
        where, params = _scope(study_instance_uid, series_instance_uid, sop_instance_uid)
        sql = f"""SELECT {_INSTANCE_COLUMNS} FROM instance
                  JOIN series ON series.pk = instance.series_fk
                  JOIN study ON study.pk = instance.study_fk
                  WHERE {where} ORDER BY {_ORDER}"""
        async with self._reader.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [stored_instance(row) for row in rows]

    async def metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[StoredMetadata]:
        where, params = _scope(study_instance_uid, series_instance_uid, sop_instance_uid)
        sql = f"""SELECT study.study_instance_uid, series.series_instance_uid,
                         instance.sop_instance_uid, instance.metadata FROM instance
                  JOIN series ON series.pk = instance.series_fk
                  JOIN study ON study.pk = instance.study_fk
                  WHERE {where} ORDER BY {_ORDER}"""
        async with self._reader.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [StoredMetadata(r[0], r[1], r[2], r[3].encode()) for r in rows]


async def _connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        # WAL lets readers run beside the writer; synchronous=FULL because an acknowledged
        # instance must survive a power cut, not only a crash.
        await db.execute("PRAGMA busy_timeout = 30000")
        await _set_wal(db)
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await db.close()  # its thread would keep the process alive
        raise
    return db


async def _set_wal(db: aiosqlite.Connection) -> None:
    """Switch to WAL. SQLite answers "database is locked" at once, without waiting for
    busy_timeout, while another connection is creating the same new file: try again."""
    for attempt in range(_WAL_ATTEMPTS):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05)


async def _schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT max(version) FROM schema_version") as cur:
        row = await cur.fetchone()
    return int((row[0] if row else None) or 0)


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise SchemaError(
            f"index schema version {current} is newer than this code supports ({latest})"
        )


async def _migrate(db: aiosqlite.Connection) -> None:
    """Apply pending migrations in one transaction; safe from several processes at once."""
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    latest = latest_version("sqlite")
    current = await _schema_version(db)
    _check_not_newer(current, latest)
    if current == latest:
        return
    # The write lock: another process migrating this file has finished (look again) or
    # waits for us. Statements run one by one because executescript() would commit.
    await db.execute("BEGIN IMMEDIATE")
    try:
        current = await _schema_version(db)
        _check_not_newer(current, latest)
        for migration in migrations("sqlite")[current:]:
            log.info("applying index migration %s", migration.path.name)
            for statement in _statements(migration.sql):
                await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
            )
    except BaseException:
        await db.rollback()
        raise
    await db.commit()


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


async def _upsert_patient(db: aiosqlite.Connection, meta: Json) -> int:
    cols = column_values("patient", meta)
    attrs = dumps(subset(meta, PATIENT_TAGS))
    async with db.execute(
        """INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name,
               patient_birth_date, patient_sex, attrs)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (patient_id, issuer_of_patient_id) DO UPDATE SET
               patient_name = excluded.patient_name,
               patient_birth_date = excluded.patient_birth_date,
               patient_sex = excluded.patient_sex, attrs = excluded.attrs
           RETURNING pk""",
        (
            cols["patient_id"] or "",
            cols["issuer_of_patient_id"] or "",
            cols["patient_name"],
            cols["patient_birth_date"],
            cols["patient_sex"],
            attrs,
        ),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _ensure_study(
    db: aiosqlite.Connection, record: InstanceRecord, patient_fk: int, now: str
) -> tuple[int, bool]:
    async with db.execute(
        "SELECT pk FROM study WHERE study_instance_uid = ?", (record.study_instance_uid,)
    ) as cur:
        row = await cur.fetchone()
    if row is not None:
        return int(row[0]), False
    values: dict[str, Any] = {
        "patient_fk": patient_fk,
        **column_values("study", record.metadata),
        "attrs": dumps(subset(record.metadata, PATIENT_TAGS | STUDY_TAGS)),
        "created_at": now,
        "updated_at": now,
    }
    return await _insert(db, "study", values), True


async def _ensure_series(
    db: aiosqlite.Connection, record: InstanceRecord, study_fk: int
) -> tuple[int, bool]:
    async with db.execute(
        "SELECT pk, study_fk FROM series WHERE series_instance_uid = ?",
        (record.series_instance_uid,),
    ) as cur:
        row = await cur.fetchone()
    if row is not None:
        return int(row[0]), False
    values: dict[str, Any] = {
        "study_fk": study_fk,
        **column_values("series", record.metadata),
        "attrs": dumps(subset(record.metadata, SERIES_TAGS)),
    }
    return await _insert(db, "series", values), True


async def _insert(db: aiosqlite.Connection, table: str, row: dict[str, Any]) -> int:
    """Insert a row and return its pk. Table and column names come from our own code."""
    names = ", ".join(row)
    marks = ", ".join("?" * len(row))
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING pk"
    async with db.execute(sql, tuple(row.values())) as cur:
        found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def _refresh_modalities(db: aiosqlite.Connection, study_fk: int) -> None:
    async with db.execute(
        "SELECT DISTINCT modality FROM series WHERE study_fk = ? AND modality IS NOT NULL",
        (study_fk,),
    ) as cur:
        modalities = [r[0] for r in await cur.fetchall()]
    await db.execute(
        "UPDATE study SET modalities_in_study = ? WHERE pk = ?",
        (modalities_text(modalities), study_fk),
    )


async def _delete_instance(db: aiosqlite.Connection, instance_pk: int) -> None:
    """Remove an instance row, keeping counts exact and dropping emptied parents."""
    async with db.execute(
        "SELECT series_fk, study_fk FROM instance WHERE pk = ?", (instance_pk,)
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    series_fk, study_fk = row["series_fk"], row["study_fk"]
    await db.execute("DELETE FROM instance WHERE pk = ?", (instance_pk,))
    await db.execute(
        "UPDATE series SET num_instances = num_instances - 1 WHERE pk = ?", (series_fk,)
    )
    await db.execute("UPDATE study SET num_instances = num_instances - 1 WHERE pk = ?", (study_fk,))
    async with db.execute("SELECT num_instances FROM series WHERE pk = ?", (series_fk,)) as cur:
        left = await cur.fetchone()
    if left is not None and left[0] == 0:
        await db.execute("DELETE FROM series WHERE pk = ?", (series_fk,))
        await db.execute("UPDATE study SET num_series = num_series - 1 WHERE pk = ?", (study_fk,))
        await _refresh_modalities(db, study_fk)
    async with db.execute(
        "SELECT num_instances, patient_fk FROM study WHERE pk = ?", (study_fk,)
    ) as cur:
        study = await cur.fetchone()
    if study is not None and study[0] == 0:
        await db.execute("DELETE FROM study WHERE pk = ?", (study_fk,))
        await db.execute(
            "UPDATE patient SET num_studies = num_studies - 1 WHERE pk = ?", (study[1],)
        )
        await db.execute("DELETE FROM patient WHERE pk = ? AND num_studies = 0", (study[1],))


def _scope(
    study_uid: str, series_uid: str | None, sop_uid: str | None
) -> tuple[str, tuple[str, ...]]:
    clauses, params = ["study.study_instance_uid = ?"], [study_uid]
    if series_uid is not None:
        clauses.append("series.series_instance_uid = ?")
        params.append(series_uid)
    if sop_uid is not None:
        clauses.append("instance.sop_instance_uid = ?")
        params.append(sop_uid)
    return " AND ".join(clauses), tuple(params)
