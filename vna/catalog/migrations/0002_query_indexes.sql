-- Indexes for searches (QIDO-RS, PS3.18 10.6; C-FIND, PS3.4 C.6).
--
-- PatientID is served by the patients_identity unique index (patient_id, issuer), and
-- StudyDate, AccessionNumber and Modality by the indexes of 0001.

-- Person names match case-insensitively; text_pattern_ops serves both = and prefix LIKE
-- ('DOE^%'), whatever the database collation.
CREATE INDEX patients_name_lower ON patients (lower(patient_name) text_pattern_ops);
CREATE INDEX studies_referring_lower ON studies (lower(referring_physician) text_pattern_ops);

-- The default listing (newest study first, then id) read in index order under a LIMIT.
CREATE INDEX studies_date_desc ON studies (study_date DESC NULLS LAST, id);

-- Instances by SOP Class (SOPClassUID matching at instance level).
CREATE INDEX instances_sop_class ON instances (sop_class_uid);
