-- Forwarding jobs (issue 12), as migrations/postgres/0011_forward_job.sql. Times are
-- seconds since the epoch (the processes sharing a SQLite file share a clock); a claim is
-- a write transaction (one writer at a time).
CREATE TABLE forward_job (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    rule TEXT NOT NULL,
    destination TEXT NOT NULL,
    change_seq INTEGER NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT,
    sop_instance_uid TEXT,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    owner TEXT,
    lease_until REAL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (tenant, rule, change_seq)
);
CREATE INDEX forward_job_waiting ON forward_job (priority DESC, next_attempt_at, id)
    WHERE state IN ('queued', 'running');
CREATE INDEX forward_job_tenant ON forward_job (tenant, id);
