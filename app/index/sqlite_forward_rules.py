"""Forwarding rules of the admin API in the SQLite index
(migrations/sqlite/0012_forward_rule.sql), as app/index/postgres_forward_rules.py."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import orjson

from app.services.ports import StoredRule


def create_forward_rule(db: sqlite3.Connection, rule: StoredRule) -> bool:
    found = db.execute(
        """INSERT INTO forward_rule (tenant, name, rule, created_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (tenant, name) DO NOTHING""",
        (
            rule.tenant,
            rule.name,
            orjson.dumps(rule.rule).decode(),
            rule.created.astimezone(UTC).isoformat(timespec="milliseconds"),
        ),
    )
    return found.rowcount == 1


def forward_rules(db: sqlite3.Connection, tenant: str | None, name: str | None) -> list[StoredRule]:
    rows = db.execute(
        """SELECT * FROM forward_rule WHERE (?1 IS NULL OR tenant = ?1)
             AND (?2 IS NULL OR name = ?2) ORDER BY tenant, created_at, name""",
        (tenant, name),
    )
    return [
        StoredRule(
            tenant=row["tenant"],
            name=row["name"],
            rule=orjson.loads(row["rule"]),
            created=datetime.fromisoformat(row["created_at"]),
        )
        for row in rows
    ]


def delete_forward_rule(db: sqlite3.Connection, tenant: str, name: str) -> bool:
    found = db.execute("DELETE FROM forward_rule WHERE tenant = ? AND name = ?", (tenant, name))
    return found.rowcount == 1
