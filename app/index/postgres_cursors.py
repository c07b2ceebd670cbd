"""Consumers' cursors into the change log in the PostgreSQL index
(migrations/postgres/0008_change_cursor.sql; the protocol in app/services/outbox.py).

Each statement is a transaction of its own: no lock is held while a consumer delivers. A
claim is a lease until a time of the database's clock, so nodes need not agree on the time.
"""

from __future__ import annotations

import asyncpg

# Tenants whose log goes beyond the consumer's cursor and whose cursor is free (never
# claimed, released, lease run out) or already `owner`'s.
_PENDING = """SELECT s.tenant FROM change_sequence s
    LEFT JOIN change_cursor c ON c.consumer = $1 AND c.tenant = s.tenant
    WHERE s.last_seq > coalesce(c.last_seq, 0)
      AND (c.owner IS NULL OR c.owner = $2 OR c.lease_until < now())
    ORDER BY s.tenant"""
# Claim (or renew) the lease; no row returned when another owner holds an unexpired one. A
# concurrent claim of the same cursor waits on the row and then sees the other's lease.
_CLAIM = """INSERT INTO change_cursor AS c (consumer, tenant, last_seq, owner, lease_until)
    VALUES ($1, $2, 0, $3, now() + make_interval(secs => $4))
    ON CONFLICT (consumer, tenant) DO UPDATE
        SET owner = excluded.owner, lease_until = excluded.lease_until
        WHERE c.owner IS NULL OR c.owner = excluded.owner OR c.lease_until < now()
    RETURNING last_seq"""
# Only the owner advances, and never backwards; the lease is renewed with it.
_ADVANCE = """UPDATE change_cursor
    SET last_seq = greatest(last_seq, $4), lease_until = now() + make_interval(secs => $5)
    WHERE consumer = $1 AND tenant = $2 AND owner = $3"""
_RELEASE = """UPDATE change_cursor SET owner = NULL, lease_until = NULL
    WHERE consumer = $1 AND tenant = $2 AND owner = $3"""


async def pending_tenants(pool: asyncpg.Pool, consumer: str, owner: str) -> list[str]:
    return [row[0] for row in await pool.fetch(_PENDING, consumer, owner)]


async def claim_cursor(
    pool: asyncpg.Pool, consumer: str, tenant: str, owner: str, lease: float
) -> int | None:
    found = await pool.fetchval(_CLAIM, consumer, tenant, owner, float(lease))
    return None if found is None else int(found)


async def advance_cursor(
    pool: asyncpg.Pool, consumer: str, tenant: str, owner: str, *, last_seq: int, lease: float
) -> bool:
    status = await pool.execute(_ADVANCE, consumer, tenant, owner, last_seq, float(lease))
    return bool(status == "UPDATE 1")


async def release_cursor(pool: asyncpg.Pool, consumer: str, tenant: str, owner: str) -> None:
    await pool.execute(_RELEASE, consumer, tenant, owner)
