-- Named queries of the ingest path.  Each runs inside the caller's transaction.

-- name: find_instance
SELECT i.id, i.sha256, i.received_sha256, i.data_set_sha256, i.object_key, i.source,
       se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.sop_uid = $1;

-- name: find_patient
SELECT id FROM patients WHERE patient_id = $1 AND issuer = $2;

-- name: upsert_patient
-- The no-op update makes RETURNING yield the row a concurrent sender inserted first, so two
-- senders of the same new patient end with one row (the unique constraint decides).
INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT ON CONSTRAINT patients_identity DO UPDATE SET patient_id = patients.patient_id
RETURNING id;

-- name: find_study
SELECT id, patient_fk FROM studies WHERE study_uid = $1;

-- name: upsert_study
INSERT INTO studies (study_uid, patient_fk, study_date, study_time, accession_number, study_id,
                     study_description, referring_physician, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (study_uid) DO UPDATE SET study_uid = studies.study_uid
RETURNING id, patient_fk;

-- name: find_series
SELECT id, study_fk FROM series WHERE series_uid = $1;

-- name: upsert_series
INSERT INTO series (series_uid, study_fk, modality, series_number, series_description, body_part)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (series_uid) DO UPDATE SET series_uid = series.series_uid
RETURNING id, study_fk;

-- name: insert_instance
INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax,
                       rows, columns, number_of_frames, has_pixel_data, sha256, received_sha256,
                       size, object_key, stored_size, source, metadata, data_set_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (sop_uid) DO NOTHING
RETURNING id;

-- name: enqueue_job
INSERT INTO jobs (kind, payload) VALUES ($1, $2) RETURNING id;

-- name: record_audit
INSERT INTO audit (actor, origin, action, outcome, patient_id, issuer, study_uid, series_uid,
                   sop_uid, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: object_key_in_use
-- Earlier versions of instances and quarantined conflicts hold objects too (0020_federation).
SELECT EXISTS (SELECT 1 FROM instances WHERE object_key = $1)
    OR EXISTS (SELECT 1 FROM instance_versions WHERE object_key = $1)
    OR EXISTS (SELECT 1 FROM conflicts WHERE object_key = $1 AND state <> 'discarded');

-- name: file_hierarchy
-- Patient, study and series of an arriving instance in one round trip.  Each upsert returns
-- the row that exists (the no-op update makes RETURNING yield it), so the caller can see a
-- study filed under another patient, or a series under another study, and roll back.
WITH p AS (
    INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT ON CONSTRAINT patients_identity DO UPDATE SET patient_id = patients.patient_id
    RETURNING id
), st AS (
    INSERT INTO studies (study_uid, patient_fk, study_date, study_time, accession_number,
                         study_id, study_description, referring_physician, source)
    SELECT $6, p.id, $7, $8, $9, $10, $11, $12, $13 FROM p
    ON CONFLICT (study_uid) DO UPDATE SET study_uid = studies.study_uid
    RETURNING id, patient_fk
), se AS (
    INSERT INTO series (series_uid, study_fk, modality, series_number, series_description,
                        body_part)
    SELECT $14, st.id, $15, $16, $17, $18 FROM st
    ON CONFLICT (series_uid) DO UPDATE SET series_uid = series.series_uid
    RETURNING id, study_fk
)
SELECT p.id AS patient_fk, st.id AS study_id, st.patient_fk AS study_patient_fk,
       se.id AS series_id, se.study_fk AS series_study_fk
FROM p, st, se;
