"""Consumers' cursors into the change log in the SQLite index
(migrations/sqlite/0008_change_cursor.sql), as app/index/postgres_cursors.py. Every process
sharing the file runs on this machine, so the lease is dated by this machine's clock
(seconds since the epoch). Claims and advances are write transactions (BEGIN IMMEDIATE):
one at a time across processes, as on PostgreSQL's row lock.
"""

from __future__ import annotations

import sqlite3
import time

_PENDING = """SELECT s.tenant FROM change_sequence s
    LEFT JOIN change_cursor c ON c.consumer = ?1 AND c.tenant = s.tenant
    WHERE s.last_seq > coalesce(c.last_seq, 0)
      AND (c.owner IS NULL OR c.owner = ?2 OR c.lease_until < ?3)
    ORDER BY s.tenant"""
_CLAIM = """INSERT INTO change_cursor AS c (consumer, tenant, last_seq, owner, lease_until)
    VALUES (?1, ?2, 0, ?3, ?4 + ?5)
    ON CONFLICT (consumer, tenant) DO UPDATE
        SET owner = excluded.owner, lease_until = excluded.lease_until
        WHERE c.owner IS NULL OR c.owner = excluded.owner OR c.lease_until < ?4
    RETURNING last_seq"""
_ADVANCE = """UPDATE change_cursor SET last_seq = max(last_seq, ?4), lease_until = ?5 + ?6
    WHERE consumer = ?1 AND tenant = ?2 AND owner = ?3"""
_RELEASE = """UPDATE change_cursor SET owner = NULL, lease_until = NULL
    WHERE consumer = ?1 AND tenant = ?2 AND owner = ?3"""


def pending_tenants(db: sqlite3.Connection, consumer: str, owner: str) -> list[str]:
    return [row[0] for row in db.execute(_PENDING, (consumer, owner, time.time()))]


def claim_cursor(
    db: sqlite3.Connection, consumer: str, tenant: str, owner: str, lease: float
) -> int | None:
    row = db.execute(_CLAIM, (consumer, tenant, owner, time.time(), lease)).fetchone()
    return None if row is None else int(row[0])


def advance_cursor(
    db: sqlite3.Connection, consumer: str, tenant: str, owner: str, *, last_seq: int, lease: float
) -> bool:
    found = db.execute(_ADVANCE, (consumer, tenant, owner, last_seq, time.time(), lease))
    return found.rowcount == 1


def release_cursor(db: sqlite3.Connection, consumer: str, tenant: str, owner: str) -> None:
    db.execute(_RELEASE, (consumer, tenant, owner))
