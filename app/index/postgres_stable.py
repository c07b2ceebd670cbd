"""Stable series and studies in the PostgreSQL index (migrations/postgres/0009_stable_pending.sql,
app/index/stable_rows.py), with any number of nodes announcing.

Exactly one announcement per quiet period: a node claims quiet rows with
`FOR UPDATE SKIP LOCKED` and deletes them in the transaction that writes their entries, so
another node's scan skips them while they are claimed and finds them gone once committed
(a row updated meanwhile by a committed ingest is checked again, and is no longer quiet).
A row an ingest holds (it is being written: an instance is arriving) is skipped too; should
the ingest wait for a claimed row, it inserts it anew after our commit, and the arrival
starts the next quiet period.

Locks: ingest writes its rows after its study and series rows and before the change-log
counter, in key order; an announcement takes rows only without waiting, then the counter.
Neither waits for a lock the other may hold while waiting itself: no deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.index import postgres_changes
from app.index.change_rows import PendingChange
from app.index.stable_rows import announcements, arrivals, counted_sql, per_tenant

# One row version per batch and study or series; the update changes no indexed column
# (HOT). Keys come sorted and unique (stable_rows.arrivals). The time is this statement's,
# just before the commit, not the transaction's start (now()): a batch that waited for
# locks must not look quiet for that long the moment it commits.
_ARRIVED = """INSERT INTO stable_pending (tenant, study_instance_uid, series_instance_uid,
        last_arrival)
    SELECT tenant, study, series, clock_timestamp()
    FROM unnest($1::text[], $2::text[], $3::text[]) AS t(tenant, study, series)
    ON CONFLICT (tenant, study_instance_uid, series_instance_uid)
    DO UPDATE SET last_arrival = excluded.last_arrival"""

# Claim (lock, delete) up to $2 rows quiet for $1 seconds, oldest first, and count them.
_ANNOUNCE = f"""WITH c AS (
        DELETE FROM stable_pending p
        USING (SELECT tenant, study_instance_uid, series_instance_uid FROM stable_pending
               WHERE last_arrival <= now() - make_interval(secs => $1)
               ORDER BY last_arrival LIMIT $2
               FOR UPDATE SKIP LOCKED) q
        WHERE p.tenant = q.tenant AND p.study_instance_uid = q.study_instance_uid
          AND p.series_instance_uid = q.series_instance_uid
        RETURNING p.tenant, p.study_instance_uid, p.series_instance_uid)
    {counted_sql("c")}"""


async def record_arrivals(conn: asyncpg.Connection, changes: Sequence[PendingChange]) -> None:
    """Mark the studies and series of `changes` as arrived now, in the transaction `conn`
    holds (before the change log: its counter is the last lock)."""
    keys = arrivals(changes)
    if keys:
        tenants, studies, series = zip(*keys, strict=True)
        await conn.execute(_ARRIVED, list(tenants), list(studies), list(series))


async def announce_stable(pool: asyncpg.Pool, quiet: float, limit: int) -> dict[str, int]:
    async with pool.acquire() as conn, conn.transaction():
        changes = announcements(await conn.fetch(_ANNOUNCE, float(quiet), limit))
        await postgres_changes.record_changes(conn, changes)
    return per_tenant(changes)
