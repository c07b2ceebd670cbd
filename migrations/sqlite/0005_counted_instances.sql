-- Instance counts are counted at read time (app/query/sql.py, compile_counts, on the
-- instance_study_fk and instance_series_fk indexes) instead of stored, as on PostgreSQL,
-- where updating them rewrote the study and series rows once per instance stored. The
-- study row now changes when a series is added or removed; updated_at records the last
-- such change.
ALTER TABLE study DROP COLUMN num_instances;
ALTER TABLE series DROP COLUMN num_instances;
