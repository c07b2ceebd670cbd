-- Where each consumer of the change log has got to in each tenant's log, and which process
-- works on it now, as migrations/postgres/0008_change_cursor.sql. lease_until is in seconds
-- since the epoch (the processes sharing a SQLite file share a clock).
CREATE TABLE change_cursor (
    consumer TEXT NOT NULL,
    tenant TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    owner TEXT,
    lease_until REAL,
    PRIMARY KEY (consumer, tenant)
) WITHOUT ROWID;
