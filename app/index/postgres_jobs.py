"""Forwarding jobs in the PostgreSQL index (migrations/postgres/0011_forward_job.sql).

Each statement is a transaction of its own: no lock is held while a job runs. A claim
takes the best due job with FOR UPDATE SKIP LOCKED, so concurrent claims of several nodes
pass each other by rather than wait or take the same job; what it takes it holds by a
lease until a time of the database's clock (nodes need not agree on the time), so a job
whose node died is claimed again once the lease has run out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.index.job_rows import CLAIM_ORDER, COLUMNS, job, reason
from app.services.ports import Job, JobState, NewJob

_ENQUEUE = """INSERT INTO forward_job (tenant, rule, destination, change_seq,
        study_instance_uid, series_instance_uid, sop_instance_uid, state, priority,
        next_attempt_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, now(), now(), now())
    ON CONFLICT (tenant, rule, change_seq) DO NOTHING"""
_CLAIM = f"""UPDATE forward_job
    SET state = 'running', owner = $1, lease_until = now() + make_interval(secs => $2),
        attempts = attempts + 1, updated_at = now()
    WHERE id = (SELECT id FROM forward_job
        WHERE (state = 'queued' AND next_attempt_at <= now())
           OR (state = 'running' AND lease_until < now())
        ORDER BY {CLAIM_ORDER} LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING {COLUMNS}"""
_RENEW = """UPDATE forward_job SET lease_until = now() + make_interval(secs => $3)
    WHERE id = $1 AND owner = $2 AND state = 'running'"""
_DONE = """UPDATE forward_job
    SET state = 'done', owner = NULL, lease_until = NULL, last_error = NULL, updated_at = now()
    WHERE id = $1 AND owner = $2 AND state = 'running'"""
_FAILED = """UPDATE forward_job
    SET state = $3, owner = NULL, lease_until = NULL, last_error = $4, updated_at = now(),
        next_attempt_at = now() + make_interval(secs => $5)
    WHERE id = $1 AND owner = $2 AND state = 'running'"""
_RETRY = f"""UPDATE forward_job
    SET state = 'queued', attempts = 0, next_attempt_at = now(), updated_at = now()
    WHERE id = $2 AND tenant = $1 AND state = 'failed'
    RETURNING {COLUMNS}"""


# A consumer's first start: a marker cursor (tenant '', which no tenant is named) says it
# has started, then one cursor per tenant at its latest entry, in one transaction. A node
# starting at the same time waits on the marker's row and then finds it.
_MARK_STARTED = """INSERT INTO change_cursor (consumer, tenant, last_seq) VALUES ($1, '', 0)
    ON CONFLICT (consumer, tenant) DO NOTHING RETURNING 1"""
_START_CURSORS = """INSERT INTO change_cursor (consumer, tenant, last_seq)
    SELECT $1, tenant, last_seq FROM change_sequence
    ON CONFLICT (consumer, tenant) DO NOTHING"""


async def start_cursors(pool: asyncpg.Pool, consumer: str) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(_MARK_STARTED, consumer) is None:
            return False
        await conn.execute(_START_CURSORS, consumer)
    return True


def _when(value: datetime) -> datetime:
    return value


async def enqueue_jobs(pool: asyncpg.Pool, jobs: Sequence[NewJob]) -> int:
    queued = 0
    async with pool.acquire() as conn, conn.transaction():
        for j in jobs:
            status = await conn.execute(
                _ENQUEUE,
                j.tenant,
                j.rule,
                j.destination,
                j.change_seq,
                j.study_instance_uid,
                j.series_instance_uid,
                j.sop_instance_uid,
                j.priority,
            )
            queued += status == "INSERT 0 1"
    return queued


async def claim_job(pool: asyncpg.Pool, owner: str, lease: float) -> Job | None:
    row = await pool.fetchrow(_CLAIM, owner, float(lease))
    return None if row is None else job(row, _when)


async def renew_job(pool: asyncpg.Pool, job_id: int, owner: str, lease: float) -> bool:
    return bool(await pool.execute(_RENEW, job_id, owner, float(lease)) == "UPDATE 1")


async def job_done(pool: asyncpg.Pool, job_id: int, owner: str) -> bool:
    return bool(await pool.execute(_DONE, job_id, owner) == "UPDATE 1")


async def job_failed(
    pool: asyncpg.Pool, job_id: int, owner: str, why: str, retry_in: float | None
) -> bool:
    state = JobState.FAILED if retry_in is None else JobState.QUEUED
    status = await pool.execute(
        _FAILED, job_id, owner, state.value, reason(why), float(retry_in or 0.0)
    )
    return bool(status == "UPDATE 1")


async def jobs(pool: asyncpg.Pool, tenant: str, state: JobState | None, limit: int) -> list[Job]:
    where = "tenant = $1" + (" AND state = $3" if state else "")
    args: tuple[object, ...] = (tenant, limit, state.value) if state else (tenant, limit)
    sql = f"SELECT {COLUMNS} FROM forward_job WHERE {where} ORDER BY id DESC LIMIT $2"
    return [job(row, _when) for row in await pool.fetch(sql, *args)]


async def retry_job(pool: asyncpg.Pool, tenant: str, job_id: int) -> Job | None:
    row = await pool.fetchrow(_RETRY, tenant, job_id)
    return None if row is None else job(row, _when)
