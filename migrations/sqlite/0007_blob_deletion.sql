-- Blobs to delete (issue 12, Delete; as migrations/postgres/0007_blob_deletion.sql): a
-- delete removes its rows and writes one record per blob here in one transaction, deletes
-- the blobs after the commit and then the records. A blob whose deletion failed (the store
-- down, refused) keeps its record, and the background retry (app/services/delete.py) tries
-- again until it is gone: never leaked. The orphan sweep counts these keys as known
-- (Index.referenced_blob_keys): a blob awaiting deletion is not an orphan to quarantine.
-- queued_at is ISO 8601 UTC with milliseconds.
CREATE TABLE blob_deletion (
    blob_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    queued_at TEXT NOT NULL
) WITHOUT ROWID;
