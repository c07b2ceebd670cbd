-- Initial schema of the SQLite index. Column names follow app/query/columns.py.
-- attrs columns hold DICOM JSON (PS3.18 Annex F) of that level's attributes.

CREATE TABLE patient (
    pk INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL DEFAULT '',
    issuer_of_patient_id TEXT NOT NULL DEFAULT '',
    patient_name TEXT,
    patient_birth_date TEXT,
    patient_sex TEXT,
    num_studies INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL,
    UNIQUE (patient_id, issuer_of_patient_id)
);

CREATE TABLE study (
    pk INTEGER PRIMARY KEY,
    patient_fk INTEGER NOT NULL REFERENCES patient (pk),
    study_instance_uid TEXT NOT NULL UNIQUE,
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
    updated_at TEXT NOT NULL
);
CREATE INDEX study_patient_fk ON study (patient_fk);
CREATE INDEX study_study_date ON study (study_date);
CREATE INDEX study_patient_id ON study (patient_id);
CREATE INDEX study_patient_name ON study (patient_name);
CREATE INDEX study_accession_number ON study (accession_number);

CREATE TABLE series (
    pk INTEGER PRIMARY KEY,
    study_fk INTEGER NOT NULL REFERENCES study (pk),
    series_instance_uid TEXT NOT NULL UNIQUE,
    modality TEXT,
    series_number INTEGER,
    series_description TEXT,
    body_part_examined TEXT,
    performed_procedure_step_start_date TEXT,
    performed_procedure_step_start_time TEXT,
    scheduled_procedure_step_id TEXT,
    requested_procedure_id TEXT,
    num_instances INTEGER NOT NULL DEFAULT 0,
    attrs TEXT NOT NULL
);
CREATE INDEX series_study_fk ON series (study_fk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instance (
    pk INTEGER PRIMARY KEY,
    series_fk INTEGER NOT NULL REFERENCES series (pk),
    study_fk INTEGER NOT NULL REFERENCES study (pk),
    sop_instance_uid TEXT NOT NULL UNIQUE,
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
    created_at TEXT NOT NULL
);
CREATE INDEX instance_series_fk ON instance (series_fk);
CREATE INDEX instance_study_fk ON instance (study_fk);
CREATE INDEX instance_sop_class_uid ON instance (sop_class_uid);
