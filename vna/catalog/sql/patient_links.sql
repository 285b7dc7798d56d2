-- Named queries of pending patient links (migration 0100): identities the archive found to
-- hold the same instances, waiting for an administrator.

-- name: filed_identity
-- The patient an archived instance is filed under.
SELECT p.patient_id, p.issuer, st.study_uid, se.series_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.sop_uid = $1;

-- name: record_pending_link
-- Propose linking ($1, $2) and ($3, $4), given in canonical order, on the evidence of
-- instance $5 of study $6 sent by source $7: a new pending link, or one more sighting of the
-- open one.  Nothing when the pair is linked already or an administrator rejected it (the
-- same evidence would only come back).  The pending link's id, or NULL.
INSERT INTO pending_patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b, sop_uid,
                                   study_uid, source)
SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text
WHERE NOT EXISTS (
        SELECT 1 FROM patient_links l
        WHERE l.removed_at IS NULL AND l.patient_id_a = $1 AND l.issuer_a = $2
          AND l.patient_id_b = $3 AND l.issuer_b = $4)
  AND NOT EXISTS (
        SELECT 1 FROM pending_patient_links r
        WHERE r.state = 'rejected' AND r.patient_id_a = $1 AND r.issuer_a = $2
          AND r.patient_id_b = $3 AND r.issuer_b = $4)
ON CONFLICT (patient_id_a, issuer_a, patient_id_b, issuer_b) WHERE state = 'pending'
DO UPDATE SET sightings = pending_patient_links.sightings + 1, last_seen_at = now()
RETURNING id;

-- name: list_pending_links
-- $1: a state, or NULL for all.
SELECT id, patient_id_a, issuer_a, patient_id_b, issuer_b, sop_uid, study_uid, source,
       sightings, created_at, last_seen_at, state, decided_by, decided_at, link_fk
FROM pending_patient_links
WHERE $1::text IS NULL OR state = $1::text
ORDER BY id
LIMIT $2;

-- name: lock_pending_link
SELECT id, patient_id_a, issuer_a, patient_id_b, issuer_b, sop_uid, study_uid, source, state
FROM pending_patient_links WHERE id = $1 FOR UPDATE;

-- name: decide_pending_link
UPDATE pending_patient_links
SET state = $2, decided_by = $3, decided_at = now(), link_fk = $4
WHERE id = $1 AND state = 'pending'
RETURNING id;
