-- The audit trail (PS3.15 A.5): one row per audited event, kept with the data it is about
-- and searched by the admin API (by tenant and time, patient, user or study, newest first).
-- detail holds the rest of the event as JSON (app/index/audit_rows.py).

CREATE TABLE audit_event (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    event_time timestamptz NOT NULL,
    action text COLLATE "C" NOT NULL,
    outcome smallint NOT NULL,
    subject text COLLATE "C",
    client text COLLATE "C",
    ae_title text COLLATE "C",
    address text COLLATE "C",
    protocol text COLLATE "C" NOT NULL,
    study_instance_uid text COLLATE "C",
    patient_id text COLLATE "C",
    detail jsonb NOT NULL
);
CREATE INDEX audit_event_tenant_time ON audit_event (tenant, event_time);
CREATE INDEX audit_event_patient_id ON audit_event (patient_id, event_time);
CREATE INDEX audit_event_subject ON audit_event (subject, event_time);
CREATE INDEX audit_event_study ON audit_event (study_instance_uid, event_time);
