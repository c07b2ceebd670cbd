-- Stable studies and series (issue 12): a study or series is stable once no instance has
-- arrived in it for a quiet time (PACS_STABLE_AFTER), announced by exactly one
-- series.stable / study.stable change-log entry per quiet period, on whichever node.
--
-- One row per study (series_instance_uid '') and per series that received an instance
-- (stored or replaced) and has not been announced since: written by the ingest
-- transaction, once per batch and study or series (not per instance), and deleted by the
-- announcement, which writes the entries in the same transaction
-- (app/index/postgres_stable.py). A separate narrow table rather than columns of study and
-- series: those rows are wide and indexed, and rewriting them per batch is what migration
-- 0005 stopped doing; here an update changes no indexed column (HOT, in the page's spare
-- room) and the table holds only what awaits its announcement, so the scan of all nodes
-- stays small without an index of its own. A row of a study or series deleted meanwhile
-- announces nothing (the announcement finds no study or series) and goes.
CREATE TABLE stable_pending (
    tenant text COLLATE "C" NOT NULL,
    study_instance_uid text COLLATE "C" NOT NULL,
    series_instance_uid text COLLATE "C" NOT NULL,
    last_arrival timestamptz NOT NULL,
    PRIMARY KEY (tenant, study_instance_uid, series_instance_uid)
) WITH (fillfactor = 50);

-- What an entry says beyond its UIDs, as JSON: the counts at the moment of a series.stable
-- or study.stable (NumberOfSeriesRelatedInstances; NumberOfStudyRelatedSeries and
-- NumberOfStudyRelatedInstances); NULL for the other actions.
ALTER TABLE change_log ADD COLUMN detail text;
