-- Stable studies and series (issue 12; as migrations/postgres/0009_stable_pending.sql): one
-- row per study (series_instance_uid '') and per series that received an instance and has
-- not been announced since, written by the ingest transaction once per batch and study or
-- series, deleted by the announcement, which writes the series.stable / study.stable
-- change-log entries in the same transaction (app/index/sqlite_stable.py). last_arrival is
-- ISO 8601 UTC with milliseconds.
CREATE TABLE stable_pending (
    tenant TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    last_arrival TEXT NOT NULL,
    PRIMARY KEY (tenant, study_instance_uid, series_instance_uid)
) WITHOUT ROWID;

-- The counts of a series.stable / study.stable entry, as JSON; NULL for other actions.
ALTER TABLE change_log ADD COLUMN detail TEXT;
