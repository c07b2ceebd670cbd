-- Webhook subscriptions and their dead letters (app/services/webhooks.py,
-- app/broker/webhooks.py), as migrations/postgres/0010_webhook.sql. events is a JSON array
-- of change-log actions, filter a JSON object keyword -> exact value; created_at and
-- failed_at are ISO 8601 UTC. A subscription's progress is its cursor in change_cursor
-- (consumer 'webhook:' || id).

CREATE TABLE webhook (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    filter TEXT NOT NULL,
    secret TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

CREATE TABLE webhook_dead_letter (
    tenant TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at TEXT NOT NULL,
    retry INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, webhook_id, seq)
) WITHOUT ROWID;
