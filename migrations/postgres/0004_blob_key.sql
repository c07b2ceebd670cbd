-- Instances by blob key: the orphan sweep (app/services/orphans.py) asks, a page of blob
-- keys at a time, which of them an instance row refers to. Without this index each page
-- would scan the whole instance table.
CREATE INDEX instance_blob_key ON instance (blob_key);
