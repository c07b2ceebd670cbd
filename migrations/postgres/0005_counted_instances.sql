-- Instance counts are folded into the study and series rows once per batch of instances,
-- not once per instance: each update left a dead row version behind (290,924 dead study
-- rows beside 40,000 live ones after a million instances, the table eleven times its
-- size). num_instances counts the parent's instances up to counted_pk; a search adds those
-- with a higher pk (app/query/sql.py, compile_counted_search), and a writer folds them in
-- once there are enough (app/index/rows.py, FOLD_AT). Writers of a study hold its row
-- lock until they commit, so its instances commit in pk order and none is missed.
-- The study row also changes when a series is added or removed (updated_at: the last
-- such change), the patient row when a study is or its attributes change.
ALTER TABLE study ADD COLUMN counted_pk bigint NOT NULL DEFAULT 0;
ALTER TABLE series ADD COLUMN counted_pk bigint NOT NULL DEFAULT 0;
-- The stored counts were exact: they count every instance there is.
UPDATE study SET counted_pk = (SELECT coalesce(max(pk), 0) FROM instance WHERE study_fk = study.pk);
UPDATE series SET counted_pk = (SELECT coalesce(max(pk), 0) FROM instance WHERE series_fk = series.pk);

-- The instances of a parent above its counted_pk: a range of these indexes.
DROP INDEX instance_study_fk;
CREATE INDEX instance_study_fk ON instance (study_fk, pk);
DROP INDEX instance_series_fk;
CREATE INDEX instance_series_fk ON instance (series_fk, pk);

-- Room in each page for the remaining rewrites to stay there (HOT: no new entry in any of
-- the table's indexes, the old version pruned with the page). For pages written from now.
ALTER TABLE patient SET (fillfactor = 90);
ALTER TABLE study SET (fillfactor = 90);
ALTER TABLE series SET (fillfactor = 90);
