-- Named queries of federation: versions and conflicts of an instance, patient links and
-- patient corrections (migration 0020).  Each runs inside the caller's transaction.

-- name: lock_instance
-- The archived instance with this SOP Instance UID, locked until the transaction ends so that
-- two versions arriving at once are decided one after the other.
SELECT i.id, i.sha256, i.received_sha256, i.data_set_sha256, i.object_key, i.source,
       i.series_fk, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.sop_uid = $1
FOR UPDATE OF i;

-- name: known_versions
-- Data-set hashes of earlier versions and quarantined conflicts of an instance: a resend of
-- any of them is a duplicate, not a new conflict.
SELECT received_sha256, data_set_sha256 FROM instance_versions WHERE sop_uid = $1
UNION ALL
SELECT received_sha256, data_set_sha256 FROM conflicts WHERE sop_uid = $1;

-- name: supersede_instance
-- Keep the current version of an instance before its row takes another version's values.
INSERT INTO instance_versions (instance_fk, sop_uid, series_fk, sop_class_uid, instance_number,
                               transfer_syntax, sha256, received_sha256, data_set_sha256, size,
                               object_key, stored_size, compression, tier, source, received_at,
                               metadata, reason, change_fk, superseded_by, actor)
SELECT id, sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax, sha256,
       received_sha256, data_set_sha256, size, object_key, stored_size, compression, tier,
       source, received_at, metadata, $2, $3, $4, $5
FROM instances WHERE id = $1
RETURNING id;

-- name: replace_instance
-- The new version becomes current: a new object, in the hot tier, uncompressed.
UPDATE instances
SET series_fk = $2, sop_class_uid = $3, instance_number = $4, transfer_syntax = $5, rows = $6,
    columns = $7, number_of_frames = $8, has_pixel_data = $9, sha256 = $10,
    received_sha256 = $11, data_set_sha256 = $12, size = $13, object_key = $14,
    stored_size = $13, compression = 'none', tier = 'hot', source = $15, received_at = now(),
    metadata = $16
WHERE id = $1;

-- name: insert_conflict
INSERT INTO conflicts (sop_uid, study_uid, series_uid, source, actor, sha256, received_sha256,
                       data_set_sha256, size, object_key, transfer_syntax, header, issuer,
                       metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT ON CONSTRAINT conflicts_version DO NOTHING
RETURNING id;

-- name: list_conflicts
SELECT c.id, c.sop_uid, c.study_uid, c.series_uid, c.source, c.actor, c.size, c.received_at,
       c.state, c.resolved_at, c.resolved_by, c.header ->> 'patient_id' AS patient_id, c.issuer
FROM conflicts c
WHERE ($1::text IS NULL OR c.state = $1)
ORDER BY c.id
LIMIT $2 OFFSET $3;

-- name: get_conflict
SELECT * FROM conflicts WHERE id = $1;

-- name: lock_conflict
SELECT * FROM conflicts WHERE id = $1 FOR UPDATE;

-- name: resolve_conflict
UPDATE conflicts SET state = $2, resolved_at = now(), resolved_by = $3
WHERE id = $1 AND state = 'open'
RETURNING id;

-- name: current_version
SELECT i.id, i.sop_uid, i.sha256, i.received_sha256, i.size, i.object_key, i.source,
       i.received_at, i.metadata, i.transfer_syntax, se.series_uid, st.study_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.sop_uid = $1;

-- name: insert_link
INSERT INTO patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b, reason, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (patient_id_a, issuer_a, patient_id_b, issuer_b) WHERE removed_at IS NULL
DO NOTHING
RETURNING id;

-- name: find_active_link
SELECT id FROM patient_links
WHERE patient_id_a = $1 AND issuer_a = $2 AND patient_id_b = $3 AND issuer_b = $4
  AND removed_at IS NULL;

-- name: remove_link
UPDATE patient_links SET removed_at = now(), removed_by = $2
WHERE id = $1 AND removed_at IS NULL
RETURNING id, patient_id_a, issuer_a, patient_id_b, issuer_b;

-- name: links_of
SELECT id, patient_id_a, issuer_a, patient_id_b, issuer_b, reason, created_by, created_at
FROM patient_links
WHERE removed_at IS NULL
  AND ((patient_id_a = $1 AND issuer_a = $2) OR (patient_id_b = $1 AND issuer_b = $2))
ORDER BY id;

-- name: linked_identities
-- Every identity reachable from ($1, $2) over active links, itself included.  UNION (not
-- UNION ALL) stops at identities already reached, so cycles end.
WITH RECURSIVE reach (patient_id, issuer) AS (
    SELECT $1::text, $2::text
    UNION
    SELECT CASE WHEN l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer
                THEN l.patient_id_b ELSE l.patient_id_a END,
           CASE WHEN l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer
                THEN l.issuer_b ELSE l.issuer_a END
    FROM patient_links l
    JOIN reach r
      ON (l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer)
      OR (l.patient_id_b = r.patient_id AND l.issuer_b = r.issuer)
    WHERE l.removed_at IS NULL
)
SELECT patient_id, issuer FROM reach ORDER BY patient_id, issuer;

-- name: find_patient_row
SELECT id, patient_id, issuer, patient_name, birth_date, sex
FROM patients WHERE patient_id = $1 AND issuer = $2;

-- name: lock_patient_row
SELECT id, patient_id, issuer, patient_name, birth_date, sex
FROM patients WHERE id = $1 FOR UPDATE;

-- name: search_patients
SELECT p.id, p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex,
       (SELECT count(*) FROM studies s WHERE s.patient_fk = p.id) AS studies
FROM patients p
WHERE ($1::text IS NULL OR p.patient_id = $1)
  AND ($2::text IS NULL OR p.issuer = $2)
ORDER BY p.patient_id, p.issuer
LIMIT $3 OFFSET $4;

-- name: studies_of_patient
SELECT id, study_uid FROM studies WHERE patient_fk = $1 ORDER BY id;

-- name: instances_of_studies
-- The instances a correction, merge, study move or re-attribution rewrites, as
-- vna.admin.patients.apply_change takes them.
SELECT i.id, i.sop_uid, i.object_key, se.series_uid, st.study_uid, st.id AS study_fk
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE st.id = ANY($1::bigint[])
ORDER BY i.id;

-- name: swap_instance_object
-- A corrected object takes the place of the current one, unless the instance changed since
-- it was read (then nothing happens and the caller reports).  The content hash, not the object
-- key, says so: the lifecycle engine may have compressed or moved the same content.
UPDATE instances
SET object_key = $3, sha256 = $4, size = $5, stored_size = $5, data_set_sha256 = $6,
    metadata = $7, compression = 'none', tier = 'hot', restored_until = NULL
WHERE id = $1 AND sha256 = $2
RETURNING id;

-- name: update_patient_row
UPDATE patients
SET patient_id = $2, issuer = $3, patient_name = $4, birth_date = $5, sex = $6,
    updated_at = now()
WHERE id = $1;

-- name: move_studies
UPDATE studies SET patient_fk = $2, updated_at = now() WHERE id = ANY($1::bigint[]);

-- name: insert_patient_change
INSERT INTO patient_changes (kind, patient_id, issuer, target_patient_id, target_issuer,
                             previous, changes, actor, study_uid)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id;

-- name: lock_patient_change
SELECT * FROM patient_changes WHERE id = $1 FOR UPDATE;

-- name: list_patient_changes
SELECT id, kind, patient_id, issuer, target_patient_id, target_issuer, study_uid, state,
       actor, created_at, undone_by, undone_at,
       (SELECT count(*) FROM instance_versions v WHERE v.change_fk = c.id) AS instances
FROM patient_changes c
ORDER BY id DESC
LIMIT $1 OFFSET $2;

-- name: versions_of_change
SELECT v.id, v.instance_fk, v.sop_uid, v.object_key, v.superseded_by
FROM instance_versions v WHERE v.change_fk = $1 ORDER BY v.id;

-- name: restore_version
-- Undo a correction of one instance: its previous object becomes current again, provided the
-- instance still holds the content the correction gave it.
UPDATE instances i
SET object_key = v.object_key, sha256 = v.sha256, size = v.size, stored_size = v.stored_size,
    data_set_sha256 = v.data_set_sha256, metadata = v.metadata, compression = v.compression,
    tier = v.tier, restored_until = NULL
FROM instance_versions v
WHERE v.id = $1 AND i.id = v.instance_fk AND i.sha256 = v.superseded_by
RETURNING i.id;

-- name: mark_change_undone
UPDATE patient_changes SET state = 'undone', undone_by = $2, undone_at = now()
WHERE id = $1 AND state = 'applied';

-- name: merged_into
-- The patient an identity was merged into (the latest merge still applied), with the
-- demographics instances arriving under the old identity are filed with.
SELECT c.id AS change_id, p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
FROM patient_changes c
JOIN patients p ON p.patient_id = c.target_patient_id AND p.issuer = c.target_issuer
WHERE c.kind = 'merge' AND c.state = 'applied' AND c.patient_id = $1 AND c.issuer = $2
ORDER BY c.id DESC
LIMIT 1;

-- name: find_study_row
-- A study with its patient, for a study correction or move (migration 0050).
SELECT st.id, st.study_uid, st.patient_fk, st.study_date, st.study_time, st.accession_number,
       st.study_id, st.study_description, st.referring_physician,
       p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex, p.id AS patient_row
FROM studies st
JOIN patients p ON p.id = st.patient_fk
WHERE st.study_uid = $1;

-- name: update_study_row
UPDATE studies
SET study_date = $2, study_time = $3, accession_number = $4, study_id = $5,
    study_description = $6, referring_physician = $7, updated_at = now()
WHERE id = $1;

-- name: changes_of_study
SELECT id, kind, patient_id, issuer, target_patient_id, target_issuer, study_uid, state, actor,
       changes, created_at, undone_by, undone_at
FROM patient_changes
WHERE study_uid = $1
ORDER BY id DESC;

-- name: study_changes_applied
-- What instances arriving late for a study are corrected to, in one round trip: the patient
-- the study was moved to from this identity (the latest study move still applied; NULL
-- columns when none), and the study's catalogue values with the keywords that applied study
-- corrections changed (an empty list when none).
SELECT mv.patient_id, mv.issuer, mv.patient_name, mv.birth_date, mv.sex,
       st.study_date, st.study_time, st.accession_number, st.study_id, st.study_description,
       st.referring_physician,
       ARRAY(SELECT DISTINCT k FROM patient_changes c, jsonb_object_keys(c.changes) AS k
             WHERE c.study_uid = st.study_uid AND c.kind = 'study-update'
               AND c.state = 'applied') AS corrected
FROM studies st
LEFT JOIN LATERAL (
    SELECT p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
    FROM patient_changes c
    JOIN patients p ON p.id = st.patient_fk
    WHERE c.kind = 'study-move' AND c.state = 'applied' AND c.study_uid = st.study_uid
      AND c.patient_id = $2 AND c.issuer = $3
    ORDER BY c.id DESC
    LIMIT 1
) mv ON true
WHERE st.study_uid = $1
  AND EXISTS (SELECT 1 FROM patient_changes c
              WHERE c.study_uid = st.study_uid AND c.state = 'applied');

-- name: instances_filed_since_change
-- Instances of a changed study that the change did not rewrite (filed after it).
SELECT count(*)
FROM patient_changes c
JOIN studies st ON st.study_uid = c.study_uid
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE c.id = $1
  AND NOT EXISTS (SELECT 1 FROM instance_versions v
                  WHERE v.change_fk = c.id AND v.instance_fk = i.id);
