"""The audit trail in the SQLite index (table audit_event, migrations/sqlite/0003_audit.sql).

`insert_audit_events` runs on the writer connection inside an open transaction: the index
calls it in its own transaction for `add_audit_events`, and a write of data may call it in
the data's transaction, so that the event commits (or rolls back) with the data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime

from app.audit.event import AuditEvent
from app.index.audit_rows import AUDIT_COLUMNS, AUDIT_ORDER, audit_event, audit_filter, audit_values

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


def search_audit(
    db: sqlite3.Connection,
    tenant: str,
    *,
    patient_id: str | None = None,
    subject: str | None = None,
    study: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    where, params = audit_filter(
        lambda _: "?",
        _time,
        tenant,
        patient_id=patient_id,
        subject=subject,
        study=study,
        since=since,
        until=until,
    )
    sql = (
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_event WHERE {where}"
        f" ORDER BY {AUDIT_ORDER} LIMIT ? OFFSET ?"
    )
    rows = db.execute(sql, (*params, limit, offset)).fetchall()
    return [audit_event(row, datetime.fromisoformat(row["event_time"])) for row in rows]
