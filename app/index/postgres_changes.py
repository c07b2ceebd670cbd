"""The change log in the PostgreSQL index (migrations/postgres/0006_change_log.sql).

Numbering without gaps a reader can see. A sequence (BIGSERIAL) is not enough: two
transactions take 10 and 11, the one with 11 commits first, and a reader sees 11 while 10
may still appear (or never, if rolled back); a consumer that carried on from 11 would miss
10 for good. Two designs fix it:
- readers stop below the oldest transaction still in progress (xid8 columns and
  pg_snapshot_xmin): writers never wait, but every read needs the snapshot arithmetic, a
  long transaction anywhere in the database holds every feed back, and entries still come
  in xid order, not sequence order;
- writers take their numbers under a row lock held to their commit: one counter row per
  tenant, advanced by the transaction's last statement. The next writer of the tenant waits
  for that commit before it takes its numbers, so numbers become visible in their order and
  a rolled-back transaction's numbers are taken again.
We use the second. What it costs: commits of one tenant are serialised across processes for
the duration of one commit, and only at the very end of a transaction (no lock is awaited
while holding the counter, so it cannot deadlock). Within a process the group commit
(app/services/group_commit.py) already commits one batch at a time and advances the counter
once per batch, so a node pays one statement per batch; tenants do not wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.index.change_rows import PendingChange, by_tenant, change, select_changes
from app.services.ports import Change

# Reserve n numbers for the tenant: its row locked until commit. The first transaction of
# a tenant inserts the row; a concurrent first one waits for it, then updates.
_ADVANCE = """INSERT INTO change_sequence AS s (tenant, last_seq) VALUES ($1, $2)
    ON CONFLICT (tenant) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq
    RETURNING last_seq"""
_INSERT = """INSERT INTO change_log (tenant, seq, action, changed_at, study_instance_uid,
        series_instance_uid, sop_instance_uid, blob_key)
    SELECT $1, $2::bigint + n - 1, action, now(), study, series, sop, blob_key
    FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
        WITH ORDINALITY AS t(action, study, series, sop, blob_key, n)"""


def _mark(n: int) -> str:
    return f"${n}"


async def record_changes(conn: asyncpg.Connection, changes: Sequence[PendingChange]) -> None:
    """Number and insert `changes` in the transaction `conn` holds, in their order; call it
    last before the commit (the counter rows stay locked until then)."""
    for tenant, entries in by_tenant(changes):
        last = await conn.fetchval(_ADVANCE, tenant, len(entries))
        await conn.execute(
            _INSERT,
            tenant,
            int(last) - len(entries) + 1,
            [c.action.value for c in entries],
            [c.study_instance_uid for c in entries],
            [c.series_instance_uid for c in entries],
            [c.sop_instance_uid for c in entries],
            [c.blob_key for c in entries],
        )


async def read_changes(
    pool: asyncpg.Pool, tenant: str, after: int, limit: int, *, metadata: bool
) -> list[Change]:
    sql = select_changes(_mark, metadata=metadata, metadata_text="i.metadata::text", latest=False)
    rows = await pool.fetch(sql, tenant, after, limit)
    return [change(row, row["changed_at"]) for row in rows]


async def latest_change(pool: asyncpg.Pool, tenant: str, *, metadata: bool) -> Change | None:
    sql = select_changes(_mark, metadata=metadata, metadata_text="i.metadata::text", latest=True)
    row = await pool.fetchrow(sql, tenant)
    return None if row is None else change(row, row["changed_at"])
