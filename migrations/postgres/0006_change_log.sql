-- The change log (DESIGN "Events"): one row per change of the archive's content, written in
-- the transaction that makes the change, read by every consumer (change feed, later the
-- search indexer, webhooks, broker, forwarding) from a sequence number it keeps.
--
-- Sequence numbers are per tenant, start at 1 and have no gaps a reader can see: a reader
-- never sees sequence 11 while a 10 that is still uncommitted may appear later. A sequence
-- (BIGSERIAL) cannot promise that: numbers are taken in one order and committed in
-- another, and a rolled-back one leaves a hole. Instead each write transaction advances its
-- tenant's row of change_sequence as its last statement before COMMIT; the row lock it
-- takes is held to the commit, so the next writer of the tenant takes its numbers only
-- once this one is committed (or rolled back, its numbers given again). The lock is held
-- only for the commit itself, and once per batch of instances (group commit).
-- (app/index/postgres_changes.py.)

CREATE TABLE change_sequence (
    tenant text COLLATE "C" PRIMARY KEY,
    last_seq bigint NOT NULL
);

-- action: instance.stored, instance.replaced (later instance.deleted, series.stable,
-- study.stable, study.deleted). blob_key: the version of the instance the change made, so
-- a reader can tell whether it is still the current one (it is never shown).
CREATE TABLE change_log (
    tenant text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    action text COLLATE "C" NOT NULL,
    changed_at timestamptz NOT NULL,
    study_instance_uid text COLLATE "C" NOT NULL,
    series_instance_uid text COLLATE "C",
    sop_instance_uid text COLLATE "C",
    blob_key text COLLATE "C",
    PRIMARY KEY (tenant, seq)
);
