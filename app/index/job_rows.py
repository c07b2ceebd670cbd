"""Forwarding-job rows (table forward_job, migrations/*/0011_forward_job.sql), shared by the
index backends (app/index/sqlite_jobs.py, app/index/postgres_jobs.py): the columns a job is
read with and how a row becomes a `Job`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from app.services.ports import Job, JobState

COLUMNS = """id, tenant, rule, destination, change_seq, study_instance_uid,
    series_instance_uid, sop_instance_uid, state, priority, attempts, next_attempt_at,
    last_error, created_at, updated_at"""
# The order a claim takes due jobs in: the most urgent rule first, then the oldest.
CLAIM_ORDER = "priority DESC, next_attempt_at, id"
# A job's reason is kept short: a peer's message can be long, and GET /jobs lists many.
MAX_REASON = 1000


def job(row: Any, when: Callable[[Any], datetime]) -> Job:
    """`row` (sqlite3.Row or asyncpg.Record) as a Job; `when` reads a stored time."""
    return Job(
        tenant=row["tenant"],
        rule=row["rule"],
        destination=row["destination"],
        change_seq=int(row["change_seq"]),
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_instance_uid=row["sop_instance_uid"],
        priority=int(row["priority"]),
        id=int(row["id"]),
        state=JobState(row["state"]),
        attempts=int(row["attempts"]),
        next_attempt_at=when(row["next_attempt_at"]),
        last_error=row["last_error"],
        created_at=when(row["created_at"]),
        updated_at=when(row["updated_at"]),
    )


def reason(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
