-- Named queries of the retrieve path (WADO-RS, C-MOVE, C-GET).
--
-- The queries that find instances test the visibility rule first (`i.rejection_fk IS NULL`:
-- not withdrawn by an IOCM rejection note, migration 0160), and end with the caller's
-- patient scope
-- (vna.security.query_scope, vna.catalog.patient_links.ScopedIdentities): issuers, then the
-- PatientIDs and issuers of single identities, pairwise; NULL issuers: not scoped.

-- name: instances_of_study
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND st.study_uid = $1
  AND ($2::text[] IS NULL OR p.issuer = ANY($2::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($3::text[], $4::text[])))
ORDER BY se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id;

-- name: instances_of_series
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND st.study_uid = $1 AND se.series_uid = $2
  AND ($3::text[] IS NULL OR p.issuer = ANY($3::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY i.instance_number NULLS LAST, i.id;

-- name: instance_by_uid
-- With the object's recorded layout (vna.dicom.frames), if any: a frame, bulk value or
-- rendered image of one instance then costs one catalogue round trip, not two.
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, l.layout
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
LEFT JOIN object_layouts l ON l.sha256 = i.sha256
WHERE i.rejection_fk IS NULL AND st.study_uid = $1 AND se.series_uid = $2 AND i.sop_uid = $3
  AND ($4::text[] IS NULL OR p.issuer = ANY($4::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($5::text[], $6::text[])));

-- name: metadata_of_study
SELECT i.metadata, i.has_pixel_data, i.sop_uid, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND st.study_uid = $1
  AND ($2::text[] IS NULL OR p.issuer = ANY($2::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($3::text[], $4::text[])))
ORDER BY se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id;

-- name: metadata_of_series
SELECT i.metadata, i.has_pixel_data, i.sop_uid, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND st.study_uid = $1 AND se.series_uid = $2
  AND ($3::text[] IS NULL OR p.issuer = ANY($3::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY i.instance_number NULLS LAST, i.id;

-- name: metadata_of_instance
SELECT i.metadata, i.has_pixel_data, i.sop_uid, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND st.study_uid = $1 AND se.series_uid = $2 AND i.sop_uid = $3
  AND ($4::text[] IS NULL OR p.issuer = ANY($4::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($5::text[], $6::text[])));

-- name: catalogue_totals
SELECT count(*) AS instances, coalesce(sum(size), 0)::bigint AS bytes,
       coalesce(sum(stored_size), 0)::bigint AS stored_bytes
FROM instances;

-- name: instances_by_sop_uids
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.sop_uid = ANY($1::text[])
ORDER BY i.id;

-- name: touch_instances
-- Last access, written in batches by the retriever (one UPDATE per flush, not per request).
-- An instance already touched within the hour is left alone: tiering counts in days, and
-- every skipped row is a dead tuple less.
UPDATE instances SET last_accessed_at = $2::timestamptz
WHERE sop_uid = ANY($1::text[])
  AND (last_accessed_at IS NULL OR last_accessed_at < $2::timestamptz - interval '1 hour');

-- name: enqueue_restores
-- One restore job per offline object, however many readers ask while it is queued or running.
INSERT INTO jobs (kind, payload, dedup_key)
SELECT 'restore', jsonb_build_object('object_key', k, 'sop_uid', u), 'restore:' || k
FROM unnest($1::text[], $2::text[]) AS t (k, u)
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING;

-- The instances a C-MOVE or C-GET names by the unique key of its level (PS3.4 C.4.2.2.1), one
-- query per level so that each uses its unique index; the retriever checks the keys above
-- the level on the rows.  The last parameter bounds the rows (at most 65535 sub-operations).

-- name: retrieve_keys_identities
-- A PATIENT level retrieve by a source whose scope follows links: the instances of every
-- identity linked to the PatientID it named ($1 PatientIDs and $2 issuers, pairwise).
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM unnest($1::text[], $2::text[]) AS k (patient_id, issuer)
JOIN patients p ON p.patient_id = k.patient_id AND p.issuer = k.issuer
JOIN studies st ON st.patient_fk = p.id
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE i.rejection_fk IS NULL
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $3;

-- name: retrieve_keys_patient
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM patients p
JOIN studies st ON st.patient_fk = p.id
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE i.rejection_fk IS NULL AND p.patient_id = $1::text AND ($2::text IS NULL OR p.issuer = $2::text)
  AND ($4::text[] IS NULL OR p.issuer = ANY($4::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($5::text[], $6::text[])))
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $3;

-- name: retrieve_keys_studies
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM studies st
JOIN patients p ON p.id = st.patient_fk
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE i.rejection_fk IS NULL AND st.study_uid = ANY($1::text[])
  AND ($3::text[] IS NULL OR p.issuer = ANY($3::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;

-- name: retrieve_keys_series
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM series se
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
JOIN instances i ON i.series_fk = se.id
WHERE i.rejection_fk IS NULL AND se.series_uid = ANY($1::text[])
  AND ($3::text[] IS NULL OR p.issuer = ANY($3::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;

-- name: retrieve_keys_instances
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.rejection_fk IS NULL AND i.sop_uid = ANY($1::text[])
  AND ($3::text[] IS NULL OR p.issuer = ANY($3::text[])
       OR (p.patient_id, p.issuer) IN (SELECT * FROM unnest($4::text[], $5::text[])))
ORDER BY st.id, se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
LIMIT $2;

-- name: enqueue_recompression
-- A frame or bulk value read from an object compressed before the seekable form: queue its
-- rewrite (lifecycle.compression.recompress_object), once however many readers ask.
INSERT INTO jobs (kind, payload, dedup_key)
VALUES ('recompress', jsonb_build_object('object_key', $1::text), 'recompress:' || $1::text)
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING;
