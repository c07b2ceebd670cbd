-- The change log (DESIGN "Events"), as migrations/postgres/0006_change_log.sql: one row per
-- change, written in the transaction that makes it, numbered per tenant from 1 without
-- gaps. SQLite has one writer at a time (BEGIN IMMEDIATE), so numbers are taken and
-- committed in one order; the counter row keeps both backends alike and the numbers
-- growing should old rows ever be pruned. changed_at is ISO 8601 UTC with milliseconds.

CREATE TABLE change_sequence (
    tenant TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE change_log (
    tenant TEXT NOT NULL,
    seq INTEGER NOT NULL,
    action TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT,
    sop_instance_uid TEXT,
    blob_key TEXT,
    PRIMARY KEY (tenant, seq)
) WITHOUT ROWID;
