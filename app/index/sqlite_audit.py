"""The audit trail in the SQLite index (table audit_event, migrations/sqlite/0003_audit.sql).

`insert_audit_events` runs on the writer connection inside an open transaction: the index
calls it in its own transaction for `add_audit_events`, and a write of data may call it in
the data's transaction, so that the event commits (or rolls back) with the data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime

from app.index.audit_rows import AUDIT_COLUMNS, audit_event, audit_search, audit_values
from app.services.ports import AuditEvent, AuditQuery

_INSERT = (
    f"INSERT INTO audit_event ({', '.join(AUDIT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(AUDIT_COLUMNS))})"
)


def _time(when: datetime) -> str:
    # One fixed format (UTC, milliseconds, +00:00) so that text order is time order.
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def insert_audit_event(db: sqlite3.Connection, event: AuditEvent) -> None:
    """Add one event on `db`, in the transaction the caller holds."""
    db.execute(_INSERT, audit_values(event, _time))


def insert_audit_events(db: sqlite3.Connection, events: Iterable[AuditEvent]) -> None:
    db.executemany(_INSERT, [audit_values(event, _time) for event in events])


def search_audit(db: sqlite3.Connection, tenant: str, query: AuditQuery) -> list[AuditEvent]:
    sql, params = audit_search(tenant, query, mark=lambda _: "?", time=_time)
    rows = db.execute(sql, params).fetchall()
    return [audit_event(row, datetime.fromisoformat(row["event_time"])) for row in rows]
