-- The new instances of one STOW-RS request filed in one statement and one commit, instead of
-- one of each per instance: the request is answered only once every instance in it is filed,
-- so waiting for the others costs the sender nothing, and PostgreSQL's work per statement and
-- per commit is shared by the whole request.
--
-- p_batch is a JSON array of objects with the parameters of vna_file_new_instance as keys
-- (without the p_ prefix).  The result has one element per array element, in order: the new
-- instance's row id, or NULL where vna_file_new_instance raised VN409 (not the plain case;
-- nothing of that instance is left behind, its subtransaction is rolled back).  Any other
-- error fails the whole statement, and the caller files the instances one by one.
CREATE FUNCTION vna_file_new_instances(p_batch jsonb) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    r record;
    ids bigint[] := array_fill(NULL::bigint, ARRAY[jsonb_array_length(p_batch)]);
BEGIN
    FOR r IN
        SELECT e.n, x.*
        FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(item, n),
             LATERAL jsonb_to_record(e.item) AS x(
                 patient_id text, issuer text, patient_name text, birth_date text, sex text,
                 study_uid text, study_date date, study_time text, accession_number text,
                 study_id text, study_description text, referring_physician text,
                 source text, series_uid text, modality text, series_number integer,
                 series_description text, body_part text, sop_uid text, sop_class_uid text,
                 instance_number integer, transfer_syntax text, rows integer,
                 columns integer, number_of_frames integer, has_pixel_data boolean,
                 sha256 text, received_sha256 text, size bigint, object_key text,
                 metadata jsonb, data_set_sha256 text, actor text, origin text,
                 audit_detail jsonb)
        ORDER BY e.n
    LOOP
        BEGIN
            ids[r.n] := vna_file_new_instance(
                r.patient_id, r.issuer, r.patient_name, r.birth_date, r.sex,
                r.study_uid, r.study_date, r.study_time, r.accession_number, r.study_id,
                r.study_description, r.referring_physician, r.source,
                r.series_uid, r.modality, r.series_number, r.series_description, r.body_part,
                r.sop_uid, r.sop_class_uid, r.instance_number, r.transfer_syntax,
                r.rows, r.columns, r.number_of_frames, r.has_pixel_data,
                r.sha256, r.received_sha256, r.size, r.object_key, r.metadata,
                r.data_set_sha256, r.actor, r.origin, r.audit_detail);
        EXCEPTION WHEN SQLSTATE 'VN409' THEN
            ids[r.n] := NULL;
        END;
    END LOOP;
    RETURN ids;
END
$$;
