-- Webhook subscriptions and their dead letters (app/services/webhooks.py,
-- app/broker/webhooks.py). events: the change-log actions it wants; filter: keyword ->
-- exact value, matched against the instance's DICOM JSON; secret: the HMAC key of its
-- signatures (kept: every delivery needs it). A subscription's progress is its cursor in
-- change_cursor (consumer 'webhook:' || id).

CREATE TABLE webhook (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    url text NOT NULL,
    events jsonb NOT NULL,
    filter jsonb NOT NULL,
    secret text NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    failures bigint NOT NULL DEFAULT 0,
    last_error text,
    PRIMARY KEY (tenant, id)
);

-- An entry the receiver refused (a 4xx) or that failed every attempt; retry: asked for by
-- the admin API, made by the node's webhook loop.
CREATE TABLE webhook_dead_letter (
    tenant text COLLATE "C" NOT NULL,
    webhook_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    action text COLLATE "C" NOT NULL,
    reason text NOT NULL,
    attempts integer NOT NULL,
    failed_at timestamptz NOT NULL,
    retry boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, webhook_id, seq)
);
