-- Forwarding jobs (issue 12, app/services/forwarding.py): one row per matching change-log
-- entry and forwarding rule, sending a study, series or instance to a destination. The
-- unique key (tenant, rule, change_seq) makes enqueuing idempotent: the outbox may deliver
-- an entry twice, the job is made once.
--
-- state: queued (waits for next_attempt_at), running (owner holds it until lease_until;
-- a node killed meanwhile leaves it to be claimed again once the lease has run out), done,
-- failed (last_error says why; POST /jobs/{id}/retry queues it again). Claimed with
-- FOR UPDATE SKIP LOCKED, so nodes never claim the same job.
CREATE TABLE forward_job (
    id bigserial PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    rule text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    change_seq bigint NOT NULL,
    study_instance_uid text COLLATE "C" NOT NULL,
    series_instance_uid text COLLATE "C",
    sop_instance_uid text COLLATE "C",
    state text COLLATE "C" NOT NULL,
    priority integer NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    owner text COLLATE "C",
    lease_until timestamptz,
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (tenant, rule, change_seq)
);
-- The claim's scan: only the jobs still to run, best first.
CREATE INDEX forward_job_waiting ON forward_job (priority DESC, next_attempt_at, id)
    WHERE state IN ('queued', 'running');
-- GET /jobs: a tenant's jobs, newest first.
CREATE INDEX forward_job_tenant ON forward_job (tenant, id);
