"""Forwarding jobs in the SQLite index (migrations/sqlite/0011_forward_job.sql), as
app/index/postgres_jobs.py. Every process sharing the file runs on this machine, so times
are this machine's clock (seconds since the epoch). A claim is one write transaction
(BEGIN IMMEDIATE): one writer at a time across processes, so no two claim one job.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from app.index.job_rows import CLAIM_ORDER, COLUMNS, job, reason
from app.services.ports import Job, JobState, NewJob

_ENQUEUE = """INSERT INTO forward_job (tenant, rule, destination, change_seq,
        study_instance_uid, series_instance_uid, sop_instance_uid, state, priority,
        next_attempt_at, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?9, ?9)
    ON CONFLICT (tenant, rule, change_seq) DO NOTHING"""
_CLAIM = f"""UPDATE forward_job
    SET state = 'running', owner = ?1, lease_until = ?2 + ?3, attempts = attempts + 1,
        updated_at = ?2
    WHERE id = (SELECT id FROM forward_job
        WHERE (state = 'queued' AND next_attempt_at <= ?2)
           OR (state = 'running' AND lease_until < ?2)
        ORDER BY {CLAIM_ORDER} LIMIT 1)
    RETURNING {COLUMNS}"""
_RENEW = """UPDATE forward_job SET lease_until = ?3 + ?4
    WHERE id = ?1 AND owner = ?2 AND state = 'running'"""
_DONE = """UPDATE forward_job
    SET state = 'done', owner = NULL, lease_until = NULL, last_error = NULL, updated_at = ?3
    WHERE id = ?1 AND owner = ?2 AND state = 'running'"""
_FAILED = """UPDATE forward_job
    SET state = ?3, owner = NULL, lease_until = NULL, last_error = ?4, updated_at = ?5,
        next_attempt_at = ?5 + ?6
    WHERE id = ?1 AND owner = ?2 AND state = 'running'"""
_RETRY = f"""UPDATE forward_job
    SET state = 'queued', attempts = 0, next_attempt_at = ?3, updated_at = ?3
    WHERE id = ?2 AND tenant = ?1 AND state = 'failed'
    RETURNING {COLUMNS}"""


# A consumer's first start: a marker cursor (tenant '', which no tenant is named) says it
# has started, then one cursor per tenant at its latest entry.
_MARK_STARTED = """INSERT INTO change_cursor (consumer, tenant, last_seq) VALUES (?, '', 0)
    ON CONFLICT (consumer, tenant) DO NOTHING"""
_START_CURSORS = """INSERT INTO change_cursor (consumer, tenant, last_seq)
    SELECT ?, tenant, last_seq FROM change_sequence WHERE true  -- (SQLite's upsert needs it)
    ON CONFLICT (consumer, tenant) DO NOTHING"""


def start_cursors(db: sqlite3.Connection, consumer: str) -> bool:
    if db.execute(_MARK_STARTED, (consumer,)).rowcount == 0:
        return False
    db.execute(_START_CURSORS, (consumer,))
    return True


def _when(value: float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def enqueue_jobs(db: sqlite3.Connection, jobs: Sequence[NewJob]) -> int:
    now = time.time()
    queued = 0
    for j in jobs:
        found = db.execute(
            _ENQUEUE,
            (
                j.tenant,
                j.rule,
                j.destination,
                j.change_seq,
                j.study_instance_uid,
                j.series_instance_uid,
                j.sop_instance_uid,
                j.priority,
                now,
            ),
        )
        queued += found.rowcount
    return queued


def claim_job(db: sqlite3.Connection, owner: str, lease: float) -> Job | None:
    row = db.execute(_CLAIM, (owner, time.time(), lease)).fetchone()
    return None if row is None else job(row, _when)


def renew_job(db: sqlite3.Connection, job_id: int, owner: str, lease: float) -> bool:
    return db.execute(_RENEW, (job_id, owner, time.time(), lease)).rowcount == 1


def job_done(db: sqlite3.Connection, job_id: int, owner: str) -> bool:
    return db.execute(_DONE, (job_id, owner, time.time())).rowcount == 1


def job_failed(
    db: sqlite3.Connection, job_id: int, owner: str, why: str, retry_in: float | None
) -> bool:
    state = JobState.FAILED if retry_in is None else JobState.QUEUED
    found = db.execute(
        _FAILED, (job_id, owner, state.value, reason(why), time.time(), retry_in or 0.0)
    )
    return found.rowcount == 1


def jobs(db: sqlite3.Connection, tenant: str, state: JobState | None, limit: int) -> list[Job]:
    where = "tenant = ?" + (" AND state = ?" if state else "")
    args: tuple[object, ...] = (tenant, state.value, limit) if state else (tenant, limit)
    sql = f"SELECT {COLUMNS} FROM forward_job WHERE {where} ORDER BY id DESC LIMIT ?"
    return [job(row, _when) for row in db.execute(sql, args)]


def retry_job(db: sqlite3.Connection, tenant: str, job_id: int) -> Job | None:
    row = db.execute(_RETRY, (tenant, job_id, time.time())).fetchone()
    return None if row is None else job(row, _when)
