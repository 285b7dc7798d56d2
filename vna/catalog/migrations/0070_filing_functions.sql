-- Filing an instance as functions on the server, so that the common case of ingest (a new
-- instance of a study no administrator has changed) is one statement: one round trip and,
-- outside an explicit transaction, one commit.  Before, it took BEGIN, five statements and
-- COMMIT; on two cores shared with PostgreSQL the round trips cost more CPU than the work.
-- PL/pgSQL caches the plans of the statements inside, whatever the server version.

-- Patient, study and series of an arriving instance.  Each upsert returns the row that exists
-- (the no-op update makes RETURNING yield it), so the caller can see a study filed under
-- another patient, or a series under another study, and roll back.
CREATE FUNCTION vna_file_hierarchy(
    p_patient_id text, p_issuer text, p_patient_name text, p_birth_date text, p_sex text,
    p_study_uid text, p_study_date date, p_study_time text, p_accession_number text,
    p_study_id text, p_study_description text, p_referring_physician text, p_source text,
    p_series_uid text, p_modality text, p_series_number integer, p_series_description text,
    p_body_part text,
    OUT patient_fk bigint, OUT study_id bigint, OUT study_patient_fk bigint,
    OUT series_id bigint, OUT series_study_fk bigint
) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patients AS p (patient_id, issuer, patient_name, birth_date, sex)
    VALUES (p_patient_id, p_issuer, p_patient_name, p_birth_date, p_sex)
    ON CONFLICT ON CONSTRAINT patients_identity DO UPDATE SET patient_id = p.patient_id
    RETURNING p.id INTO patient_fk;

    INSERT INTO studies AS st (study_uid, patient_fk, study_date, study_time, accession_number,
                               study_id, study_description, referring_physician, source)
    VALUES (p_study_uid, patient_fk, p_study_date, p_study_time, p_accession_number,
            p_study_id, p_study_description, p_referring_physician, p_source)
    ON CONFLICT (study_uid) DO UPDATE SET study_uid = st.study_uid
    RETURNING st.id, st.patient_fk INTO study_id, study_patient_fk;

    INSERT INTO series AS se (series_uid, study_fk, modality, series_number, series_description,
                              body_part)
    VALUES (p_series_uid, study_id, p_modality, p_series_number, p_series_description,
            p_body_part)
    ON CONFLICT (series_uid) DO UPDATE SET series_uid = se.series_uid
    RETURNING se.id, se.study_fk INTO series_id, series_study_fk;
END
$$;

-- A new instance row; NULL when another sender committed the SOP Instance UID first.
CREATE FUNCTION vna_insert_instance(
    p_sop_uid text, p_series_fk bigint, p_sop_class_uid text, p_instance_number integer,
    p_transfer_syntax text, p_rows integer, p_columns integer, p_number_of_frames integer,
    p_has_pixel_data boolean, p_sha256 text, p_received_sha256 text, p_size bigint,
    p_object_key text, p_stored_size bigint, p_source text, p_metadata jsonb,
    p_data_set_sha256 text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax,
                           rows, columns, number_of_frames, has_pixel_data, sha256,
                           received_sha256, size, object_key, stored_size, source, metadata,
                           data_set_sha256)
    VALUES (p_sop_uid, p_series_fk, p_sop_class_uid, p_instance_number, p_transfer_syntax,
            p_rows, p_columns, p_number_of_frames, p_has_pixel_data, p_sha256,
            p_received_sha256, p_size, p_object_key, p_stored_size, p_source, p_metadata,
            p_data_set_sha256)
    ON CONFLICT (sop_uid) DO NOTHING
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- The whole filing of a new instance: hierarchy, instance row, the instance-stored outbox job
-- and the audit record, atomically.  Anything other than the plain case raises SQLSTATE VN409
-- and leaves nothing behind: the study is under another patient, the series under another
-- study, or the SOP Instance UID was filed since the caller looked.  The caller then takes
-- the general path, which decides under a row lock and names the problem.
CREATE FUNCTION vna_file_new_instance(
    p_patient_id text, p_issuer text, p_patient_name text, p_birth_date text, p_sex text,
    p_study_uid text, p_study_date date, p_study_time text, p_accession_number text,
    p_study_id text, p_study_description text, p_referring_physician text, p_source text,
    p_series_uid text, p_modality text, p_series_number integer, p_series_description text,
    p_body_part text,
    p_sop_uid text, p_sop_class_uid text, p_instance_number integer, p_transfer_syntax text,
    p_rows integer, p_columns integer, p_number_of_frames integer, p_has_pixel_data boolean,
    p_sha256 text, p_received_sha256 text, p_size bigint, p_object_key text, p_metadata jsonb,
    p_data_set_sha256 text,
    p_actor text, p_origin text, p_audit_detail jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    h record;
    new_id bigint;
BEGIN
    SELECT * INTO h FROM vna_file_hierarchy(
        p_patient_id, p_issuer, p_patient_name, p_birth_date, p_sex,
        p_study_uid, p_study_date, p_study_time, p_accession_number, p_study_id,
        p_study_description, p_referring_physician, p_source,
        p_series_uid, p_modality, p_series_number, p_series_description, p_body_part);
    IF h.study_patient_fk <> h.patient_fk OR h.series_study_fk <> h.study_id THEN
        RAISE EXCEPTION 'instance % does not fit the archived hierarchy', p_sop_uid
            USING ERRCODE = 'VN409';
    END IF;
    new_id := vna_insert_instance(
        p_sop_uid, h.series_id, p_sop_class_uid, p_instance_number, p_transfer_syntax,
        p_rows, p_columns, p_number_of_frames, p_has_pixel_data, p_sha256, p_received_sha256,
        p_size, p_object_key, p_size, p_source, p_metadata, p_data_set_sha256);
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'instance % was filed meanwhile', p_sop_uid USING ERRCODE = 'VN409';
    END IF;
    INSERT INTO jobs (kind, payload)
    VALUES ('instance-stored', jsonb_build_object(
        'instance_id', new_id, 'object_key', p_object_key, 'sop_uid', p_sop_uid));
    INSERT INTO audit (actor, origin, action, outcome, patient_id, issuer, study_uid,
                       series_uid, sop_uid, detail)
    VALUES (p_actor, p_origin, 'store', 'success', p_patient_id, p_issuer, p_study_uid,
            p_series_uid, p_sop_uid, p_audit_detail);
    RETURN new_id;
END
$$;
