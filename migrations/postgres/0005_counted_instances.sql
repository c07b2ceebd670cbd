-- Instance counts are counted at read time (app/query/sql.py, compile_counts, on the
-- instance_study_fk and instance_series_fk indexes) instead of stored: updating them
-- rewrote the study and series rows once per instance stored, leaving a dead version
-- behind each (290,924 dead study rows beside 40,000 live ones after a million instances,
-- the table eleven times its size). The study row now changes when a series is added or
-- removed, the patient row when a study is or its attributes change; updated_at records
-- the last of those changes.
ALTER TABLE study DROP COLUMN num_instances;
ALTER TABLE series DROP COLUMN num_instances;

-- Room in each page for those rare rewrites to stay there (HOT: no new entry in any of the
-- table's indexes, the old version pruned with the page). Applies to pages written from now.
ALTER TABLE patient SET (fillfactor = 90);
ALTER TABLE study SET (fillfactor = 90);
ALTER TABLE series SET (fillfactor = 90);
