"""Stable series and studies in the SQLite index (migrations/sqlite/0009_stable_pending.sql,
app/index/stable_rows.py). One writer at a time (BEGIN IMMEDIATE, across processes too):
an announcement reads, counts and deletes its rows with nothing changing meanwhile, so
each quiet period is announced once whichever process announces."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from app.index import sqlite_changes
from app.index.change_rows import PendingChange
from app.index.stable_rows import announcements, arrivals, counted_sql, per_tenant

_ARRIVED = """INSERT INTO stable_pending (tenant, study_instance_uid, series_instance_uid,
        last_arrival) VALUES (?, ?, ?, ?)
    ON CONFLICT (tenant, study_instance_uid, series_instance_uid)
    DO UPDATE SET last_arrival = excluded.last_arrival"""
_QUIET = """(SELECT tenant, study_instance_uid, series_instance_uid FROM stable_pending
    WHERE last_arrival <= ?1 ORDER BY last_arrival LIMIT ?2)"""
_ANNOUNCE = counted_sql(_QUIET)
_CLAIMED = """DELETE FROM stable_pending
    WHERE tenant = ? AND study_instance_uid = ? AND series_instance_uid = ?"""


def _at(when: datetime) -> str:
    # The form of every timestamp this index writes: compared as text.
    return when.isoformat(timespec="milliseconds")


def record_arrivals(db: sqlite3.Connection, changes: Sequence[PendingChange]) -> None:
    """Mark the studies and series of `changes` as arrived now, in the open transaction."""
    now = _at(datetime.now(UTC))
    db.executemany(_ARRIVED, [(*key, now) for key in arrivals(changes)])


def announce_stable(db: sqlite3.Connection, quiet: float, limit: int) -> dict[str, int]:
    """In the writer's open transaction."""
    cutoff = _at(datetime.now(UTC) - timedelta(seconds=quiet))
    rows = db.execute(_ANNOUNCE, (cutoff, limit)).fetchall()
    db.executemany(_CLAIMED, [(r[0], r[1], r[2]) for r in rows])
    changes = announcements(rows)
    sqlite_changes.record_changes(db, changes)
    return per_tenant(changes)
