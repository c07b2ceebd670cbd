-- The audit trail (PS3.15 A.5): one row per audited event, kept with the data it is about
-- and searched by the admin API (by tenant and time, patient, user or study, newest first).
-- event_time is ISO 8601 UTC with milliseconds ("2024-01-02T03:04:05.678+00:00"), so text
-- order is time order. detail holds the rest of the event as JSON (app/index/audit_rows.py).

CREATE TABLE audit_event (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    event_time TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome INTEGER NOT NULL,
    subject TEXT,
    client TEXT,
    ae_title TEXT,
    address TEXT,
    protocol TEXT NOT NULL,
    study_instance_uid TEXT,
    patient_id TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_event_tenant_time ON audit_event (tenant, event_time);
CREATE INDEX audit_event_patient_id ON audit_event (patient_id, event_time);
CREATE INDEX audit_event_subject ON audit_event (subject, event_time);
CREATE INDEX audit_event_study ON audit_event (study_instance_uid, event_time);
