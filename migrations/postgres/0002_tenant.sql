-- Tenants: every row belongs to one tenant, and the unique keys include it, so the same
-- Patient ID and Study/Series/SOP Instance UIDs may exist in two tenants as different
-- objects. Existing rows move into the default tenant. The default only fills existing
-- rows: writers always name the tenant, so it is dropped again.
--
-- The b-tree indexes of the common searches lead with tenant: every search filters by it.
-- Trigram and jsonb GIN indexes cannot hold it (that would need btree_gin); the tenant is
-- checked on the rows they find. Indexes on foreign keys need no tenant: a child always
-- has its parent's.

ALTER TABLE patient ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE study ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE series ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE instance ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE patient ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE study ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE series ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE instance ALTER COLUMN tenant DROP DEFAULT;

ALTER TABLE patient DROP CONSTRAINT patient_patient_id_issuer_of_patient_id_key;
ALTER TABLE patient ADD CONSTRAINT patient_tenant_patient_id_issuer_of_patient_id_key
    UNIQUE (tenant, patient_id, issuer_of_patient_id);
ALTER TABLE study DROP CONSTRAINT study_study_instance_uid_key;
ALTER TABLE study ADD CONSTRAINT study_tenant_study_instance_uid_key
    UNIQUE (tenant, study_instance_uid);
ALTER TABLE series DROP CONSTRAINT series_series_instance_uid_key;
ALTER TABLE series ADD CONSTRAINT series_tenant_series_instance_uid_key
    UNIQUE (tenant, series_instance_uid);
ALTER TABLE instance DROP CONSTRAINT instance_sop_instance_uid_key;
ALTER TABLE instance ADD CONSTRAINT instance_tenant_sop_instance_uid_key
    UNIQUE (tenant, sop_instance_uid);

-- Lists without a condition (the first page of a study list) walk the tenant's rows in
-- pk order.
CREATE INDEX patient_tenant ON patient (tenant, pk);
CREATE INDEX study_tenant ON study (tenant, pk);

DROP INDEX patient_patient_name;
CREATE INDEX patient_patient_name ON patient (tenant, patient_name);
DROP INDEX study_study_date;
CREATE INDEX study_study_date ON study (tenant, study_date);
DROP INDEX study_accession_number;
CREATE INDEX study_accession_number ON study (tenant, accession_number);
DROP INDEX study_study_id;
CREATE INDEX study_study_id ON study (tenant, study_id);
DROP INDEX study_patient_id;
CREATE INDEX study_patient_id ON study (tenant, patient_id);
DROP INDEX study_patient_name;
CREATE INDEX study_patient_name ON study (tenant, patient_name);
DROP INDEX study_patient_birth_date;
CREATE INDEX study_patient_birth_date ON study (tenant, patient_birth_date);
DROP INDEX series_modality;
CREATE INDEX series_modality ON series (tenant, modality);
DROP INDEX series_performed_procedure_step_start_date;
CREATE INDEX series_performed_procedure_step_start_date
    ON series (tenant, performed_procedure_step_start_date);
DROP INDEX instance_sop_class_uid;
CREATE INDEX instance_sop_class_uid ON instance (tenant, sop_class_uid);
