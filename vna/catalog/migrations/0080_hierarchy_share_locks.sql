-- Filing an instance share-locks the patient, study and series rows that already exist,
-- instead of the no-op update 0070 used to make RETURNING yield them.  That update wrote a
-- new version of all three rows for every instance filed (heap and WAL writes, dead rows
-- for vacuum) and held their row locks until commit, so the instances of one series were
-- filed one after the other.  Share locks let the ingests of one series proceed together,
-- and still make an administrator's change to those rows (merge, study move, correction:
-- they lock the rows for update) wait for the instances being filed, as before.
CREATE OR REPLACE FUNCTION vna_file_hierarchy(
    p_patient_id text, p_issuer text, p_patient_name text, p_birth_date text, p_sex text,
    p_study_uid text, p_study_date date, p_study_time text, p_accession_number text,
    p_study_id text, p_study_description text, p_referring_physician text, p_source text,
    p_series_uid text, p_modality text, p_series_number integer, p_series_description text,
    p_body_part text,
    OUT patient_fk bigint, OUT study_id bigint, OUT study_patient_fk bigint,
    OUT series_id bigint, OUT series_study_fk bigint
) LANGUAGE plpgsql AS $$
BEGIN
    -- Each loop reads the row, else inserts it; an insert that finds a row another sender
    -- committed since the read (ON CONFLICT DO NOTHING returns nothing) reads again.
    LOOP
        SELECT p.id INTO patient_fk FROM patients p
        WHERE p.patient_id = p_patient_id AND p.issuer = p_issuer
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
        VALUES (p_patient_id, p_issuer, p_patient_name, p_birth_date, p_sex)
        ON CONFLICT ON CONSTRAINT patients_identity DO NOTHING
        RETURNING id INTO patient_fk;
        EXIT WHEN patient_fk IS NOT NULL;
    END LOOP;

    LOOP
        SELECT st.id, st.patient_fk INTO study_id, study_patient_fk FROM studies st
        WHERE st.study_uid = p_study_uid
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO studies (study_uid, patient_fk, study_date, study_time, accession_number,
                             study_id, study_description, referring_physician, source)
        VALUES (p_study_uid, patient_fk, p_study_date, p_study_time, p_accession_number,
                p_study_id, p_study_description, p_referring_physician, p_source)
        ON CONFLICT (study_uid) DO NOTHING
        RETURNING id, studies.patient_fk INTO study_id, study_patient_fk;
        EXIT WHEN study_id IS NOT NULL;
    END LOOP;

    LOOP
        SELECT se.id, se.study_fk INTO series_id, series_study_fk FROM series se
        WHERE se.series_uid = p_series_uid
        FOR SHARE;
        EXIT WHEN FOUND;
        INSERT INTO series (series_uid, study_fk, modality, series_number, series_description,
                            body_part)
        VALUES (p_series_uid, study_id, p_modality, p_series_number, p_series_description,
                p_body_part)
        ON CONFLICT (series_uid) DO NOTHING
        RETURNING id, series.study_fk INTO series_id, series_study_fk;
        EXIT WHEN series_id IS NOT NULL;
    END LOOP;
END
$$;
