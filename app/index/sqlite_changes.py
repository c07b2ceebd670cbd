"""The change log in the SQLite index (migrations/sqlite/0006_change_log.sql).

SQLite has one writer at a time (BEGIN IMMEDIATE, across processes too): numbers are taken
and committed in one order, and a reader (WAL) sees a prefix of them. The counter row is
kept as on PostgreSQL (app/index/postgres_changes.py) so that both number alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from app.index.change_rows import PendingChange, by_tenant, change, select_changes
from app.services.ports import Change

_ADVANCE = """INSERT INTO change_sequence (tenant, last_seq) VALUES (?, ?)
    ON CONFLICT (tenant) DO UPDATE SET last_seq = last_seq + excluded.last_seq
    RETURNING last_seq"""
_INSERT = """INSERT INTO change_log (tenant, seq, action, changed_at, study_instance_uid,
        series_instance_uid, sop_instance_uid, blob_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""


def _mark(n: int) -> str:
    return f"?{n}"


def record_changes(db: sqlite3.Connection, changes: Sequence[PendingChange]) -> None:
    """Number and insert `changes` in the transaction `db` holds, in their order."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    for tenant, entries in by_tenant(changes):
        row = db.execute(_ADVANCE, (tenant, len(entries))).fetchone()
        first = int(row[0]) - len(entries) + 1
        db.executemany(
            _INSERT,
            [
                (
                    tenant,
                    first + n,
                    c.action.value,
                    now,
                    c.study_instance_uid,
                    c.series_instance_uid,
                    c.sop_instance_uid,
                    c.blob_key,
                )
                for n, c in enumerate(entries)
            ],
        )


def read_changes(
    db: sqlite3.Connection, tenant: str, after: int, limit: int, *, metadata: bool
) -> list[Change]:
    sql = select_changes(_mark, metadata=metadata, metadata_text="i.metadata", latest=False)
    rows = db.execute(sql, (tenant, after, limit)).fetchall()
    return [change(row, datetime.fromisoformat(row["changed_at"])) for row in rows]


def latest_change(db: sqlite3.Connection, tenant: str, *, metadata: bool) -> Change | None:
    sql = select_changes(_mark, metadata=metadata, metadata_text="i.metadata", latest=True)
    row = db.execute(sql, (tenant,)).fetchone()
    return None if row is None else change(row, datetime.fromisoformat(row["changed_at"]))
