-- Named queries of the ingest path.  Each runs inside the caller's transaction.

-- name: first_look
-- Before the object is written: the archived instance with this SOP Instance UID (NULL columns
-- when there is none), and whether an administrator's change applies to an instance of this
-- identity ($2, $3) or study ($4), which the instance must then be filed to (a merge of the
-- patient, a study correction or move).  One round trip for the common case of neither.
SELECT i.id, i.sha256, i.received_sha256, i.data_set_sha256, i.object_key, i.source,
       i.series_uid, i.study_uid,
       EXISTS (SELECT 1 FROM patient_changes c
               WHERE c.state = 'applied'
                 AND ((c.kind = 'merge' AND c.patient_id = $2 AND c.issuer = $3)
                      OR c.study_uid = $4)) AS changed
FROM (SELECT) AS one
LEFT JOIN (
    SELECT i.id, i.sha256, i.received_sha256, i.data_set_sha256, i.object_key, i.source,
           se.series_uid, st.study_uid
    FROM instances i
    JOIN series se ON se.id = i.series_fk
    JOIN studies st ON st.id = se.study_fk
    WHERE i.sop_uid = $1
) i ON true;

-- name: patient_identity
SELECT patient_id, issuer FROM patients WHERE id = $1;

-- name: upsert_patient
-- The no-op update makes RETURNING yield the row a concurrent sender inserted first, so two
-- senders of the same new patient end with one row (the unique constraint decides).
INSERT INTO patients (patient_id, issuer, patient_name, birth_date, sex)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT ON CONSTRAINT patients_identity DO UPDATE SET patient_id = patients.patient_id
RETURNING id;

-- name: insert_instance
-- The new row's id; NULL when another sender committed the UID first (0070_filing_functions).
SELECT vna_insert_instance($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                           $16, $17);

-- name: file_new_instance
-- Hierarchy, instance row, outbox job and audit record of a new instance in one statement;
-- raises SQLSTATE VN409 when the general path must decide (0070_filing_functions).
SELECT vna_file_new_instance($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28,
                             $29, $30, $31, $32, $33, $34, $35);

-- name: enqueue_job
INSERT INTO jobs (kind, payload) VALUES ($1, $2) RETURNING id;

-- name: enqueue_unused_object_delete
-- The object an ingest wrote for an instance another sender filed first: deleted by the
-- lifecycle workers after the grace period ($2 seconds) if nothing refers to it then.
INSERT INTO jobs (kind, payload, dedup_key, run_after)
SELECT 'delete-object', jsonb_build_object('object_key', $1::text), 'delete:' || $1::text,
       now() + make_interval(secs => $2)
WHERE NOT EXISTS (SELECT 1 FROM instances WHERE object_key = $1::text)
  AND NOT EXISTS (SELECT 1 FROM instance_versions WHERE object_key = $1::text)
  AND NOT EXISTS (SELECT 1 FROM conflicts WHERE object_key = $1::text AND state <> 'discarded')
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING;

-- name: object_key_in_use
-- Earlier versions of instances and quarantined conflicts hold objects too (0020_federation).
SELECT EXISTS (SELECT 1 FROM instances WHERE object_key = $1)
    OR EXISTS (SELECT 1 FROM instance_versions WHERE object_key = $1)
    OR EXISTS (SELECT 1 FROM conflicts WHERE object_key = $1 AND state <> 'discarded');

-- name: file_hierarchy
-- Patient, study and series of an arriving instance, upserted; the row ids that exist, so the
-- caller can see a study under another patient or a series under another study
-- (0070_filing_functions).
SELECT * FROM vna_file_hierarchy($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                 $15, $16, $17, $18);

-- name: file_new_instances
-- Several new instances in one statement (migration 0090); $1 is a JSON array.
SELECT vna_file_new_instances($1::jsonb);
