"""The audit trail in the PostgreSQL index (table audit_event, 0003_audit.sql).

`insert_audit_event` runs on a connection inside an open transaction: the index calls it
in its own transaction for `add_audit_events`, and a write of data may call it in the
data's transaction, so that the event commits (or rolls back) with the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from app.audit.event import AuditEvent
from app.index.audit_rows import AUDIT_COLUMNS, AUDIT_ORDER, audit_event, audit_filter, audit_values

_INSERT = (
    f"INSERT INTO audit_event ({', '.join(AUDIT_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(AUDIT_COLUMNS) + 1))})"
)
_SELECT = ", ".join(c if c != "detail" else "detail::text AS detail" for c in AUDIT_COLUMNS)


def _time(when: datetime) -> datetime:
    return when


async def insert_audit_event(conn: asyncpg.Connection, event: AuditEvent) -> None:
    """Add one event on `conn`, in the transaction the caller holds."""
    await conn.execute(_INSERT, *audit_values(event, _time))


async def insert_audit_events(conn: asyncpg.Connection, events: Iterable[AuditEvent]) -> None:
    await conn.executemany(_INSERT, [audit_values(e, _time) for e in events])


async def search_audit(
    conn: asyncpg.Connection | asyncpg.Pool,
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
        lambda n: f"${n}",
        _time,
        tenant,
        patient_id=patient_id,
        subject=subject,
        study=study,
        since=since,
        until=until,
    )
    n = len(params)
    sql = (
        f"SELECT {_SELECT} FROM audit_event WHERE {where}"
        f" ORDER BY {AUDIT_ORDER} LIMIT ${n + 1} OFFSET ${n + 2}"
    )
    rows = await conn.fetch(sql, *params, limit, offset)
    return [audit_event(row, row["event_time"]) for row in rows]
