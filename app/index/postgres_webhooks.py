"""Webhook subscriptions and dead letters in the PostgreSQL index
(migrations/postgres/0010_webhook.sql). Each statement is a transaction of its own but the
creation (a subscription and its cursor)."""

from __future__ import annotations

import asyncpg
import orjson

from app.services.ports import DeadLetter, Webhook, WebhookStatus

_STATUS = """SELECT w.*, coalesce(c.last_seq, 0) AS last_seq,
        (SELECT count(*) FROM webhook_dead_letter d
          WHERE d.tenant = w.tenant AND d.webhook_id = w.id) AS dead_letters
    FROM webhook w
    LEFT JOIN change_cursor c ON c.consumer = 'webhook:' || w.id AND c.tenant = w.tenant
    WHERE w.tenant = $1 AND ($2::text IS NULL OR w.id = $2)
    ORDER BY w.created_at, w.id"""
_INSERT = """INSERT INTO webhook (tenant, id, url, events, filter, secret, active, created_at)
    VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8)"""
# The cursor starts at the tenant's latest entry: a new subscription gets what happens next.
# A change committed meanwhile with a number below it would be missed; the counter row is
# locked by writers until their commit (app/index/postgres_changes.py), so reading it FOR
# SHARE waits for them.
_CURSOR = """INSERT INTO change_cursor (consumer, tenant, last_seq)
    VALUES ($1, $2, coalesce(
        (SELECT last_seq FROM change_sequence WHERE tenant = $2 FOR SHARE), 0))
    ON CONFLICT (consumer, tenant) DO NOTHING"""
_DEAD_LETTER = """INSERT INTO webhook_dead_letter
        (tenant, webhook_id, seq, action, reason, attempts, failed_at, retry)
    VALUES ($1, $2, $3, $4, $5, $6, $7, false)
    ON CONFLICT (tenant, webhook_id, seq) DO UPDATE SET reason = excluded.reason,
        attempts = excluded.attempts, failed_at = excluded.failed_at, retry = false"""


def webhook(row: asyncpg.Record) -> Webhook:
    return Webhook(
        tenant=row["tenant"],
        id=row["id"],
        url=row["url"],
        events=tuple(orjson.loads(row["events"])),
        filter=tuple(orjson.loads(row["filter"]).items()),
        secret=row["secret"],
        active=bool(row["active"]),
        created=row["created_at"],
    )


async def create_webhook(pool: asyncpg.Pool, hook: Webhook) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            _INSERT,
            hook.tenant,
            hook.id,
            hook.url,
            orjson.dumps(list(hook.events)).decode(),
            orjson.dumps(dict(hook.filter)).decode(),
            hook.secret,
            hook.active,
            hook.created,
        )
        await conn.execute(_CURSOR, hook.consumer, hook.tenant)


async def webhooks(pool: asyncpg.Pool, tenant: str, webhook_id: str | None) -> list[WebhookStatus]:
    return [
        WebhookStatus(
            webhook(row),
            last_delivered=int(row["last_seq"]),
            failures=int(row["failures"]),
            last_error=row["last_error"],
            dead_letters=int(row["dead_letters"]),
        )
        for row in await pool.fetch(_STATUS, tenant, webhook_id)
    ]


async def active_webhooks(pool: asyncpg.Pool) -> list[Webhook]:
    rows = await pool.fetch("SELECT * FROM webhook WHERE active ORDER BY tenant, created_at, id")
    return [webhook(row) for row in rows]


async def delete_webhook(pool: asyncpg.Pool, tenant: str, webhook_id: str) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "DELETE FROM webhook WHERE tenant = $1 AND id = $2", tenant, webhook_id
        )
        await conn.execute(
            "DELETE FROM webhook_dead_letter WHERE tenant = $1 AND webhook_id = $2",
            tenant,
            webhook_id,
        )
        await conn.execute(
            "DELETE FROM change_cursor WHERE consumer = $1 AND tenant = $2",
            f"webhook:{webhook_id}",
            tenant,
        )
    return bool(status == "DELETE 1")


async def webhook_failed(pool: asyncpg.Pool, tenant: str, webhook_id: str, reason: str) -> None:
    await pool.execute(
        "UPDATE webhook SET failures = failures + 1, last_error = $3 WHERE tenant = $1 AND id = $2",
        tenant,
        webhook_id,
        reason,
    )


async def add_dead_letter(
    pool: asyncpg.Pool, tenant: str, webhook_id: str, letter: DeadLetter
) -> None:
    await pool.execute(
        _DEAD_LETTER,
        tenant,
        webhook_id,
        letter.sequence,
        letter.action,
        letter.reason,
        letter.attempts,
        letter.failed_at,
    )


async def dead_letters(
    pool: asyncpg.Pool, tenant: str, webhook_id: str, limit: int, retry_only: bool
) -> list[DeadLetter]:
    rows = await pool.fetch(
        """SELECT * FROM webhook_dead_letter WHERE tenant = $1 AND webhook_id = $2
             AND (retry OR NOT $3) ORDER BY seq LIMIT $4""",
        tenant,
        webhook_id,
        retry_only,
        limit,
    )
    return [
        DeadLetter(
            sequence=int(row["seq"]),
            action=row["action"],
            reason=row["reason"],
            attempts=int(row["attempts"]),
            failed_at=row["failed_at"],
            retry=bool(row["retry"]),
        )
        for row in rows
    ]


async def retry_dead_letters(
    pool: asyncpg.Pool, tenant: str, webhook_id: str, sequence: int | None
) -> int:
    status = await pool.execute(
        """UPDATE webhook_dead_letter SET retry = true
           WHERE tenant = $1 AND webhook_id = $2 AND ($3::bigint IS NULL OR seq = $3)""",
        tenant,
        webhook_id,
        sequence,
    )
    return int(status.split()[-1])


async def remove_dead_letter(
    pool: asyncpg.Pool, tenant: str, webhook_id: str, sequence: int
) -> None:
    await pool.execute(
        "DELETE FROM webhook_dead_letter WHERE tenant = $1 AND webhook_id = $2 AND seq = $3",
        tenant,
        webhook_id,
        sequence,
    )
