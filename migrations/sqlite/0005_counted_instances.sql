-- Instance counts are folded into the study and series rows once per batch of instances,
-- not once per instance, as on PostgreSQL (where each update left a dead row version
-- behind). num_instances counts the parent's instances up to counted_pk; a search adds
-- those with a higher pk (app/query/sql.py, compile_counted_search), and a writer folds
-- them in once there are enough (app/index/rows.py, FOLD_AT). The instance_study_fk and
-- instance_series_fk indexes end with the rowid, which is pk: they serve that range.
ALTER TABLE study ADD COLUMN counted_pk INTEGER NOT NULL DEFAULT 0;
ALTER TABLE series ADD COLUMN counted_pk INTEGER NOT NULL DEFAULT 0;
-- The stored counts were exact: they count every instance there is.
UPDATE study SET counted_pk = (SELECT coalesce(max(pk), 0) FROM instance WHERE study_fk = study.pk);
UPDATE series SET counted_pk = (SELECT coalesce(max(pk), 0) FROM instance WHERE series_fk = series.pk);
