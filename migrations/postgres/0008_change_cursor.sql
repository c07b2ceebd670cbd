-- Where each consumer of the change log (DESIGN "Events": the broker publisher, later
-- webhooks, forwarding, the search indexer) has got to in each tenant's log, and which node
-- works on it now (app/services/outbox.py, app/index/postgres_cursors.py).
--
-- last_seq: the highest sequence the consumer has delivered; it is advanced only after a
-- delivery succeeded, so a crash repeats a delivery (at least once), never skips one.
-- owner, lease_until: the node that claimed the cursor and until when (the database's
-- clock). Another node may take it once the lease has run out, so a node killed while it
-- held it blocks the consumer for one lease at most; a node whose lease was taken can no
-- longer advance the cursor (its advance names it as owner).
CREATE TABLE change_cursor (
    consumer text COLLATE "C" NOT NULL,
    tenant text COLLATE "C" NOT NULL,
    last_seq bigint NOT NULL,
    owner text COLLATE "C",
    lease_until timestamptz,
    PRIMARY KEY (consumer, tenant)
);
