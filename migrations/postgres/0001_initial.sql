-- Initial schema of the PostgreSQL index. Column names follow app/query/columns.py and
-- match the SQLite schema, so that app/query/sql.py compiles one query for both.
--
-- Text columns use COLLATE "C": comparisons and ranges then follow code points as in
-- SQLite (whatever the database locale), and b-tree indexes also serve LIKE 'prefix%'.
-- attrs hold DICOM JSON (PS3.18 Annex F) of a level's attributes as jsonb; instance.metadata
-- holds the whole instance. jsonb sorts object keys, which keeps DICOM JSON's 8-hex-digit
-- tags in tag order.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE patient (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text COLLATE "C" NOT NULL DEFAULT '',
    issuer_of_patient_id text COLLATE "C" NOT NULL DEFAULT '',
    patient_name text COLLATE "C",
    patient_birth_date text COLLATE "C",
    patient_sex text COLLATE "C",
    num_studies integer NOT NULL DEFAULT 0,
    attrs jsonb NOT NULL,
    UNIQUE (patient_id, issuer_of_patient_id)
);
CREATE INDEX patient_patient_name ON patient (patient_name);
CREATE INDEX patient_patient_name_trgm ON patient USING gin (patient_name gin_trgm_ops);
CREATE INDEX patient_attrs ON patient USING gin (attrs jsonb_path_ops);

CREATE TABLE study (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_fk bigint NOT NULL REFERENCES patient (pk),
    study_instance_uid text COLLATE "C" NOT NULL UNIQUE,
    study_date text COLLATE "C",
    study_time text COLLATE "C",
    accession_number text COLLATE "C",
    study_id text COLLATE "C",
    referring_physician_name text COLLATE "C",
    study_description text COLLATE "C",
    patient_id text COLLATE "C",
    patient_name text COLLATE "C",
    patient_birth_date text COLLATE "C",
    patient_sex text COLLATE "C",
    modalities_in_study text COLLATE "C" NOT NULL DEFAULT '',
    num_series integer NOT NULL DEFAULT 0,
    num_instances integer NOT NULL DEFAULT 0,
    attrs jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX study_patient_fk ON study (patient_fk);
CREATE INDEX study_study_date ON study (study_date);
CREATE INDEX study_accession_number ON study (accession_number);
CREATE INDEX study_study_id ON study (study_id);
CREATE INDEX study_patient_id ON study (patient_id);
CREATE INDEX study_patient_name ON study (patient_name);
CREATE INDEX study_patient_birth_date ON study (patient_birth_date);
-- '*x*' wildcards on names and descriptions (LIKE '%x%') need trigrams.
CREATE INDEX study_patient_name_trgm ON study USING gin (patient_name gin_trgm_ops);
CREATE INDEX study_referring_physician_name_trgm
    ON study USING gin (referring_physician_name gin_trgm_ops);
CREATE INDEX study_study_description_trgm ON study USING gin (study_description gin_trgm_ops);
-- Any other study (or patient) attribute: sql.py adds a containment test (@>) to equality.
CREATE INDEX study_attrs ON study USING gin (attrs jsonb_path_ops);

CREATE TABLE series (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_fk bigint NOT NULL REFERENCES study (pk),
    series_instance_uid text COLLATE "C" NOT NULL UNIQUE,
    modality text COLLATE "C",
    series_number bigint,
    series_description text COLLATE "C",
    body_part_examined text COLLATE "C",
    performed_procedure_step_start_date text COLLATE "C",
    performed_procedure_step_start_time text COLLATE "C",
    scheduled_procedure_step_id text COLLATE "C",
    requested_procedure_id text COLLATE "C",
    num_instances integer NOT NULL DEFAULT 0,
    attrs jsonb NOT NULL
);
CREATE INDEX series_study_fk ON series (study_fk);
CREATE INDEX series_modality ON series (modality);
CREATE INDEX series_performed_procedure_step_start_date
    ON series (performed_procedure_step_start_date);
CREATE INDEX series_series_description_trgm
    ON series USING gin (series_description gin_trgm_ops);
CREATE INDEX series_attrs ON series USING gin (attrs jsonb_path_ops);

-- No GIN index on instance.metadata: it is the largest and most written table, and
-- instance-level searches are scoped to a study or series, whose rows an index finds.
CREATE TABLE instance (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_fk bigint NOT NULL REFERENCES series (pk),
    study_fk bigint NOT NULL REFERENCES study (pk),
    sop_instance_uid text COLLATE "C" NOT NULL UNIQUE,
    sop_class_uid text COLLATE "C" NOT NULL,
    instance_number bigint,
    transfer_syntax_uid text COLLATE "C" NOT NULL,
    blob_key text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    sha256 text COLLATE "C" NOT NULL,
    encapsulated boolean NOT NULL DEFAULT false,
    -- Read back whole, never searched: text is cheaper than jsonb.
    frames text NOT NULL,
    bulk text NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_series_fk ON instance (series_fk);
CREATE INDEX instance_study_fk ON instance (study_fk);
CREATE INDEX instance_sop_class_uid ON instance (sop_class_uid);
