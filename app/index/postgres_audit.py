"""The audit trail in the PostgreSQL index (table audit_event, 0003_audit.sql).

`insert_audit_event` runs on a connection inside an open transaction: the index calls it
in its own transaction for `add_audit_events`, and a write of data may call it in the
data's transaction, so that the event commits (or rolls back) with the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from app.index.audit_rows import AUDIT_COLUMNS, audit_event, audit_search, audit_values
from app.services.ports import AuditEvent, AuditQuery

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
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, query: AuditQuery
) -> list[AuditEvent]:
    sql, params = audit_search(tenant, query, mark=lambda n: f"${n}", time=_time, select=_SELECT)
    rows = await conn.fetch(sql, *params)
    return [audit_event(row, row["event_time"]) for row in rows]
