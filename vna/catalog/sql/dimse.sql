-- Named queries of the DIMSE gateway (C-FIND at PATIENT level, C-MOVE, C-GET; PS3.4 C.4, C.6).

-- name: dimse_patient_counts
-- PS3.4 Table C.6-1: Number of Patient Related Studies, Series and Instances, per identity
-- ($1 patient IDs and $2 issuers, pairwise).
SELECT p.patient_id, p.issuer,
       (SELECT count(*) FROM studies st WHERE st.patient_fk = p.id) AS studies,
       (SELECT count(*) FROM studies st JOIN series se ON se.study_fk = st.id
        WHERE st.patient_fk = p.id) AS series,
       (SELECT count(*) FROM studies st JOIN series se ON se.study_fk = st.id
        JOIN instances i ON i.series_fk = se.id
        WHERE st.patient_fk = p.id) AS instances
FROM unnest($1::text[], $2::text[]) AS k(patient_id, issuer)
JOIN patients p ON p.patient_id = k.patient_id AND p.issuer = k.issuer;

-- The instances a C-MOVE or C-GET names by the unique key of its level (PS3.4 C.4.2.2.1), one
-- query per level so that each uses its unique index; the gateway checks the keys above the
-- level on the rows.  The last parameter bounds the rows (at most 65535 sub-operations).

-- name: dimse_retrieve_patient
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM patients p
JOIN studies st ON st.patient_fk = p.id
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE p.patient_id = $1::text AND ($2::text IS NULL OR p.issuer = $2::text)
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $3;

-- name: dimse_retrieve_studies
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM studies st
JOIN patients p ON p.id = st.patient_fk
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE st.study_uid = ANY($1::text[])
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;

-- name: dimse_retrieve_series
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM series se
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
JOIN instances i ON i.series_fk = se.id
WHERE se.series_uid = ANY($1::text[])
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;

-- name: dimse_retrieve_instances
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.sop_uid = ANY($1::text[])
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;
