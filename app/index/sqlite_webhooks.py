"""Webhook subscriptions and dead letters in the SQLite index
(migrations/sqlite/0010_webhook.sql), as app/index/postgres_webhooks.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import orjson

from app.services.ports import DeadLetter, Webhook, WebhookStatus

_STATUS = """SELECT w.*, coalesce(c.last_seq, 0) AS last_seq,
        (SELECT count(*) FROM webhook_dead_letter d
          WHERE d.tenant = w.tenant AND d.webhook_id = w.id) AS dead_letters
    FROM webhook w
    LEFT JOIN change_cursor c ON c.consumer = 'webhook:' || w.id AND c.tenant = w.tenant
    WHERE w.tenant = ?1 AND (?2 IS NULL OR w.id = ?2)
    ORDER BY w.created_at, w.id"""
_INSERT = """INSERT INTO webhook (tenant, id, url, events, filter, secret, active, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
# The cursor starts at the tenant's latest entry: a new subscription gets what happens next.
_CURSOR = """INSERT INTO change_cursor (consumer, tenant, last_seq)
    VALUES (?1, ?2, coalesce((SELECT last_seq FROM change_sequence WHERE tenant = ?2), 0))
    ON CONFLICT (consumer, tenant) DO NOTHING"""
_DEAD_LETTER = """INSERT INTO webhook_dead_letter
        (tenant, webhook_id, seq, action, reason, attempts, failed_at, retry)
    VALUES (?, ?, ?, ?, ?, ?, ?, 0)
    ON CONFLICT (tenant, webhook_id, seq) DO UPDATE SET reason = excluded.reason,
        attempts = excluded.attempts, failed_at = excluded.failed_at, retry = 0"""


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def webhook(row: sqlite3.Row) -> Webhook:
    return Webhook(
        tenant=row["tenant"],
        id=row["id"],
        url=row["url"],
        events=tuple(orjson.loads(row["events"])),
        filter=tuple(orjson.loads(row["filter"]).items()),
        secret=row["secret"],
        active=bool(row["active"]),
        created=datetime.fromisoformat(row["created_at"]),
    )


def create_webhook(db: sqlite3.Connection, hook: Webhook) -> None:
    db.execute(
        _INSERT,
        (
            hook.tenant,
            hook.id,
            hook.url,
            orjson.dumps(list(hook.events)).decode(),
            orjson.dumps(dict(hook.filter)).decode(),
            hook.secret,
            int(hook.active),
            _iso(hook.created),
        ),
    )
    db.execute(_CURSOR, (hook.consumer, hook.tenant))


def webhooks(db: sqlite3.Connection, tenant: str, webhook_id: str | None) -> list[WebhookStatus]:
    return [
        WebhookStatus(
            webhook(row),
            last_delivered=int(row["last_seq"]),
            failures=int(row["failures"]),
            last_error=row["last_error"],
            dead_letters=int(row["dead_letters"]),
        )
        for row in db.execute(_STATUS, (tenant, webhook_id))
    ]


def active_webhooks(db: sqlite3.Connection) -> list[Webhook]:
    rows = db.execute("SELECT * FROM webhook WHERE active = 1 ORDER BY tenant, created_at, id")
    return [webhook(row) for row in rows]


def delete_webhook(db: sqlite3.Connection, tenant: str, webhook_id: str) -> bool:
    found = db.execute("DELETE FROM webhook WHERE tenant = ? AND id = ?", (tenant, webhook_id))
    db.execute(
        "DELETE FROM webhook_dead_letter WHERE tenant = ? AND webhook_id = ?", (tenant, webhook_id)
    )
    db.execute(
        "DELETE FROM change_cursor WHERE consumer = ? AND tenant = ?",
        (f"webhook:{webhook_id}", tenant),
    )
    return found.rowcount == 1


def webhook_failed(db: sqlite3.Connection, tenant: str, webhook_id: str, reason: str) -> None:
    db.execute(
        "UPDATE webhook SET failures = failures + 1, last_error = ? WHERE tenant = ? AND id = ?",
        (reason, tenant, webhook_id),
    )


def add_dead_letter(
    db: sqlite3.Connection, tenant: str, webhook_id: str, letter: DeadLetter
) -> None:
    db.execute(
        _DEAD_LETTER,
        (
            tenant,
            webhook_id,
            letter.sequence,
            letter.action,
            letter.reason,
            letter.attempts,
            _iso(letter.failed_at),
        ),
    )


def dead_letters(
    db: sqlite3.Connection, tenant: str, webhook_id: str, limit: int, retry_only: bool
) -> list[DeadLetter]:
    rows = db.execute(
        """SELECT * FROM webhook_dead_letter WHERE tenant = ? AND webhook_id = ?
             AND (retry = 1 OR NOT ?) ORDER BY seq LIMIT ?""",
        (tenant, webhook_id, retry_only, limit),
    )
    return [
        DeadLetter(
            sequence=int(row["seq"]),
            action=row["action"],
            reason=row["reason"],
            attempts=int(row["attempts"]),
            failed_at=datetime.fromisoformat(row["failed_at"]),
            retry=bool(row["retry"]),
        )
        for row in rows
    ]


def retry_dead_letters(
    db: sqlite3.Connection, tenant: str, webhook_id: str, sequence: int | None
) -> int:
    found = db.execute(
        """UPDATE webhook_dead_letter SET retry = 1
           WHERE tenant = ? AND webhook_id = ? AND (? IS NULL OR seq = ?)""",
        (tenant, webhook_id, sequence, sequence),
    )
    return found.rowcount


def remove_dead_letter(db: sqlite3.Connection, tenant: str, webhook_id: str, sequence: int) -> None:
    db.execute(
        "DELETE FROM webhook_dead_letter WHERE tenant = ? AND webhook_id = ? AND seq = ?",
        (tenant, webhook_id, sequence),
    )
