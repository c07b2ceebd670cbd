-- Blobs to delete (issue 12, Delete): a delete removes its rows and writes one record per
-- blob here in one transaction, deletes the blobs after the commit and then the records. A
-- blob whose deletion failed (the store down, refused) keeps its record, and the background
-- retry of any node (app/services/delete.py) tries again until it is gone: never leaked.
-- The orphan sweep counts these keys as known (Index.referenced_blob_keys): a blob awaiting
-- deletion is not an orphan to quarantine.
CREATE TABLE blob_deletion (
    blob_key text COLLATE "C" PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    queued_at timestamptz NOT NULL DEFAULT now()
);
