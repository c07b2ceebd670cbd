-- Tenants: every row belongs to one tenant, and the unique keys include it, so the same
-- Patient ID and Study/Series/SOP Instance UIDs may exist in two tenants as different
-- objects. Existing rows move into the default tenant.
--
-- SQLite cannot change a UNIQUE constraint in place: each table is built anew and its
-- rows copied, keeping their pk (so the foreign keys still hold), the old table dropped
-- and the new one renamed (https://sqlite.org/lang_altertable.html, "otheralter").
-- The index opener turns foreign key enforcement off around migrations and checks the
-- keys before committing. tenant has no default: writers always name it.

CREATE TABLE new_patient (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    patient_id TEXT NOT NULL DEFAULT '',
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    num_studies INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL,
    UNIQUE (tenant, patient_id, issuer_of_patient_id)
);
INSERT INTO new_patient (pk, tenant, patient_id, issuer_of_patient_id, patient_name,
        patient_birth_date, patient_sex, num_studies, attrs)
    SELECT pk, 'default', patient_id, issuer_of_patient_id, patient_name,
        patient_birth_date, patient_sex, num_studies, attrs
    FROM patient;

CREATE TABLE new_study (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    patient_fk INTEGER NOT NULL REFERENCES patient (pk),
    study_instance_uid TEXT NOT NULL,
    study_date TEXT,
    study_time TEXT,
    accession_number TEXT,
    study_id TEXT,
    referring_physician_name TEXT,
    study_description TEXT,
    patient_id TEXT,
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    modalities_in_study TEXT NOT NULL DEFAULT '',
    num_series INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant, study_instance_uid)
);
INSERT INTO new_study (pk, tenant, patient_fk, study_instance_uid, study_date, study_time,
        accession_number, study_id, referring_physician_name, study_description, patient_id,
        patient_name, patient_birth_date, patient_sex, modalities_in_study, num_series,
        num_instances, attrs, created_at, updated_at)
    SELECT pk, 'default', patient_fk, study_instance_uid, study_date, study_time,
        accession_number, study_id, referring_physician_name, study_description, patient_id,
        patient_name, patient_birth_date, patient_sex, modalities_in_study, num_series,
        num_instances, attrs, created_at, updated_at
    FROM study;

CREATE TABLE new_series (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    study_fk INTEGER NOT NULL REFERENCES study (pk),
    series_instance_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    body_part_examined TEXT,
    performed_procedure_step_start_date TEXT,
    performed_procedure_step_start_time TEXT,
    scheduled_procedure_step_id TEXT,
    requested_procedure_id TEXT,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL,
    UNIQUE (tenant, series_instance_uid)
);
INSERT INTO new_series (pk, tenant, study_fk, series_instance_uid, modality, series_number,
        series_description, body_part_examined, performed_procedure_step_start_date,
        performed_procedure_step_start_time, scheduled_procedure_step_id,
        requested_procedure_id, num_instances, attrs)
    SELECT pk, 'default', study_fk, series_instance_uid, modality, series_number,
        series_description, body_part_examined, performed_procedure_step_start_date,
        performed_procedure_step_start_time, scheduled_procedure_step_id,
        requested_procedure_id, num_instances, attrs
    FROM series;

CREATE TABLE new_instance (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    series_fk INTEGER NOT NULL REFERENCES series (pk),
    study_fk INTEGER NOT NULL REFERENCES study (pk),
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax_uid TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    encapsulated INTEGER NOT NULL DEFAULT 0,
    frames TEXT NOT NULL,
    bulk TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, sop_instance_uid)
);
INSERT INTO new_instance (pk, tenant, series_fk, study_fk, sop_instance_uid, sop_class_uid,
        instance_number, transfer_syntax_uid, blob_key, size, sha256, encapsulated, frames,
        bulk, metadata, created_at)
    SELECT pk, 'default', series_fk, study_fk, sop_instance_uid, sop_class_uid,
        instance_number, transfer_syntax_uid, blob_key, size, sha256, encapsulated, frames,
        bulk, metadata, created_at
    FROM instance;

DROP TABLE instance;
DROP TABLE series;
DROP TABLE study;
DROP TABLE patient;
ALTER TABLE new_patient RENAME TO patient;
ALTER TABLE new_study RENAME TO study;
ALTER TABLE new_series RENAME TO series;
ALTER TABLE new_instance RENAME TO instance;

-- Every search filters by tenant: the indexes of the common searches lead with it.
CREATE INDEX patient_tenant ON patient (tenant, pk);
CREATE INDEX study_tenant ON study (tenant, pk);
CREATE INDEX study_patient_fk ON study (patient_fk);
CREATE INDEX study_study_date ON study (tenant, study_date);
CREATE INDEX study_patient_id ON study (tenant, patient_id);
CREATE INDEX study_patient_name ON study (tenant, patient_name);
CREATE INDEX study_accession_number ON study (tenant, accession_number);
CREATE INDEX series_study_fk ON series (study_fk);
CREATE INDEX series_modality ON series (tenant, modality);
CREATE INDEX instance_series_fk ON instance (series_fk);
CREATE INDEX instance_study_fk ON instance (study_fk);
CREATE INDEX instance_sop_class_uid ON instance (tenant, sop_class_uid);
