"""Forwarding rules of the admin API in the PostgreSQL index
(migrations/postgres/0012_forward_rule.sql)."""

from __future__ import annotations

import asyncpg
import orjson

from app.services.ports import StoredRule


async def create_forward_rule(pool: asyncpg.Pool, rule: StoredRule) -> bool:
    status: str = await pool.execute(
        """INSERT INTO forward_rule (tenant, name, rule, created_at) VALUES ($1, $2, $3::jsonb, $4)
           ON CONFLICT (tenant, name) DO NOTHING""",
        rule.tenant,
        rule.name,
        orjson.dumps(rule.rule).decode(),
        rule.created,
    )
    return status == "INSERT 0 1"


async def forward_rules(
    pool: asyncpg.Pool, tenant: str | None, name: str | None
) -> list[StoredRule]:
    rows = await pool.fetch(
        """SELECT * FROM forward_rule WHERE ($1::text IS NULL OR tenant = $1)
             AND ($2::text IS NULL OR name = $2) ORDER BY tenant, created_at, name""",
        tenant,
        name,
    )
    return [
        StoredRule(
            tenant=row["tenant"],
            name=row["name"],
            rule=orjson.loads(row["rule"]),
            created=row["created_at"],
        )
        for row in rows
    ]


async def delete_forward_rule(pool: asyncpg.Pool, tenant: str, name: str) -> bool:
    status: str = await pool.execute(
        "DELETE FROM forward_rule WHERE tenant = $1 AND name = $2", tenant, name
    )
    return status == "DELETE 1"
