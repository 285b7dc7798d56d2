-- Retention: facts, computed retain-until dates, reviews, approvals, legal holds.

-- name: retention_facts
SELECT st.id, st.study_date, (st.created_at AT TIME ZONE 'UTC')::date AS received_date,
       st.study_description, st.source, p.birth_date,
       coalesce((SELECT array_agg(DISTINCT se.modality) FROM series se
                 WHERE se.study_fk = st.id AND se.modality <> ''), '{}') AS modalities
FROM studies st
JOIN patients p ON p.id = st.patient_fk
WHERE st.id = ANY($1::bigint[]);

-- name: retention_stale_batch
-- Studies never computed, or computed under another rule set; keyset pages by id.
SELECT st.id
FROM studies st
LEFT JOIN study_retention r ON r.study_fk = st.id
WHERE st.id > $2 AND (r.study_fk IS NULL OR r.rules_fingerprint <> $1)
ORDER BY st.id
LIMIT $3;

-- name: retention_upsert
-- Unchanged rows are not rewritten: the per-instance recomputation of a large study costs
-- reads only.
INSERT INTO study_retention AS r
    (study_fk, rule, rule_fingerprint, retain_until, basis, rules_fingerprint)
SELECT t.s, t.r, t.rf, t.u, t.b, $6
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::date[], $5::text[]) AS t (s, r, rf, u, b)
WHERE EXISTS (SELECT 1 FROM studies WHERE id = t.s)
ON CONFLICT (study_fk) DO UPDATE
SET rule = excluded.rule, rule_fingerprint = excluded.rule_fingerprint,
    retain_until = excluded.retain_until, basis = excluded.basis,
    rules_fingerprint = excluded.rules_fingerprint, computed_at = now()
WHERE (r.rule, r.rule_fingerprint, r.retain_until, r.basis, r.rules_fingerprint)
      IS DISTINCT FROM
      (excluded.rule, excluded.rule_fingerprint, excluded.retain_until, excluded.basis,
       excluded.rules_fingerprint);

-- name: study_of_instance
SELECT se.study_fk FROM instances i JOIN series se ON se.id = i.series_fk WHERE i.id = $1;

-- name: review_create
INSERT INTO retention_reviews (as_of, created_by, rules_fingerprint)
VALUES ($1, $2, $3)
RETURNING id, as_of, created_at, created_by, rules_fingerprint, state;

-- name: review_fill
-- Every study due as of $2 (kept through a date before it) under the current rules ($3),
-- with its sizes and any active legal hold; held studies are listed, as held.
INSERT INTO retention_review_items
    (review_fk, study_fk, study_uid, patient_id, issuer, patient_name, accession_number,
     study_date, study_description, modalities, source, rule, rule_fingerprint, retain_until,
     basis, instances, max_instance_id, bytes, stored_bytes, hold, state)
SELECT $1, st.id, st.study_uid, p.patient_id, p.issuer, p.patient_name, st.accession_number,
       st.study_date, st.study_description, coalesce(agg.modalities, '{}'), st.source,
       r.rule, r.rule_fingerprint, r.retain_until, r.basis,
       coalesce(agg.instances, 0), coalesce(agg.max_id, 0), coalesce(agg.bytes, 0),
       coalesce(agg.stored, 0), h.holds,
       CASE WHEN h.holds IS NULL THEN 'due' ELSE 'held' END
FROM study_retention r
JOIN studies st ON st.id = r.study_fk
JOIN patients p ON p.id = st.patient_fk
LEFT JOIN LATERAL (
    SELECT array_agg(DISTINCT se.modality) FILTER (WHERE se.modality <> '') AS modalities,
           count(i.id) AS instances, max(i.id) AS max_id,
           sum(i.size) AS bytes, sum(i.stored_size) AS stored
    FROM series se
    LEFT JOIN instances i ON i.series_fk = se.id
    WHERE se.study_fk = st.id
) agg ON true
LEFT JOIN LATERAL (
    SELECT string_agg(format('hold %s on the %s: %s', lh.id, lh.scope, lh.reason), '; '
                      ORDER BY lh.id) AS holds
    FROM legal_holds lh
    WHERE lh.released_at IS NULL
      AND ((lh.scope = 'study' AND lh.study_uid = st.study_uid)
           OR (lh.scope = 'patient' AND lh.patient_id = p.patient_id AND lh.issuer = p.issuer)
           OR (lh.scope = 'patient' AND EXISTS (
                   SELECT 1 FROM patient_links pl
                   WHERE pl.removed_at IS NULL
                     AND ((pl.patient_id_a, pl.issuer_a, pl.patient_id_b, pl.issuer_b)
                            = (lh.patient_id, lh.issuer, p.patient_id, p.issuer)
                          OR (pl.patient_id_b, pl.issuer_b, pl.patient_id_a, pl.issuer_a)
                            = (lh.patient_id, lh.issuer, p.patient_id, p.issuer)))))
) h ON true
WHERE r.retain_until < $2 AND r.rules_fingerprint = $3;

-- name: review_counts
SELECT count(*) FILTER (WHERE state = 'due') AS due,
       count(*) FILTER (WHERE state = 'held') AS held
FROM retention_review_items WHERE review_fk = $1;

-- name: review_get
SELECT id, as_of, created_at, created_by, rules_fingerprint, state, approved_by, approved_at
FROM retention_reviews WHERE id = $1;

-- name: review_items
SELECT * FROM retention_review_items WHERE review_fk = $1
ORDER BY retain_until, study_date NULLS LAST, study_uid;

-- name: review_approve
-- Two approvals at once (two administrators, two machines): the second waits for the first's
-- commit, then finds the review approved and changes nothing (no row returned).
UPDATE retention_reviews SET state = 'approved', approved_by = $2, approved_at = now()
WHERE id = $1 AND state = 'open'
RETURNING id;

-- name: review_items_to_execute
SELECT study_fk FROM retention_review_items
WHERE review_fk = $1 AND state IN ('due', 'pending')
ORDER BY retain_until, study_fk;

-- name: review_pending_due
-- Approved deletions whose date has come (approved ahead, from a look-ahead review).
SELECT review_fk, study_fk FROM retention_review_items
WHERE state = 'pending' AND retain_until < $1
ORDER BY retain_until, review_fk, study_fk
LIMIT $2;

-- name: review_item_lock
-- With the review's approver: a deletion carried out later (a look-ahead review's, by the
-- scheduler) still names the person who approved it.
SELECT it.*, rv.approved_by
FROM retention_review_items it JOIN retention_reviews rv ON rv.id = it.review_fk
WHERE it.review_fk = $1 AND it.study_fk = $2
FOR UPDATE OF it;

-- name: review_item_finish
UPDATE retention_review_items SET state = $3, outcome = $4, done_at = now()
WHERE review_fk = $1 AND study_fk = $2;

-- name: study_lock_for_delete
-- Locking the study row serialises an approval with a legal hold being set on it
-- (hold_lock_* take the same lock), so a hold committed first is always seen.
SELECT st.id, st.study_uid, p.id AS patient_fk, p.patient_id, p.issuer
FROM studies st JOIN patients p ON p.id = st.patient_fk
WHERE st.id = $1
FOR UPDATE OF st;

-- name: active_holds_of_study
-- A hold on a patient covers the identities linked to them as the same person
-- (patient_links, 0020_federation): a hold is on a person, whichever hospital's ID it names.
SELECT lh.id, lh.scope, lh.reason FROM legal_holds lh
WHERE lh.released_at IS NULL
  AND ((lh.scope = 'study' AND lh.study_uid = $1)
       OR (lh.scope = 'patient' AND lh.patient_id = $2 AND lh.issuer = $3)
       OR (lh.scope = 'patient' AND EXISTS (
               SELECT 1 FROM patient_links pl
               WHERE pl.removed_at IS NULL
                 AND ((pl.patient_id_a, pl.issuer_a, pl.patient_id_b, pl.issuer_b)
                        = (lh.patient_id, lh.issuer, $2, $3)
                      OR (pl.patient_id_b, pl.issuer_b, pl.patient_id_a, pl.issuer_a)
                        = (lh.patient_id, lh.issuer, $2, $3)))))
ORDER BY lh.id;

-- name: study_contents
SELECT count(i.id) AS instances, coalesce(max(i.id), 0) AS max_id,
       coalesce(sum(i.size), 0)::bigint AS bytes,
       coalesce(sum(i.stored_size), 0)::bigint AS stored_bytes,
       coalesce(array_agg(DISTINCT i.object_key) FILTER (WHERE i.id IS NOT NULL), '{}')
           AS object_keys,
       coalesce(array_agg(DISTINCT i.sop_class_uid) FILTER (WHERE i.id IS NOT NULL), '{}')
           AS sop_classes
FROM series se
LEFT JOIN instances i ON i.series_fk = se.id
WHERE se.study_fk = $1;

-- name: study_objects
-- Every object the study holds or held, with the SHA-256 of its Part 10 file: its instances,
-- their earlier versions, and its quarantined versions still open.
SELECT i.object_key, i.sha256
FROM instances i JOIN series se ON se.id = i.series_fk
WHERE se.study_fk = $1
UNION
SELECT v.object_key, v.sha256
FROM instance_versions v JOIN instances i ON i.id = v.instance_fk
JOIN series se ON se.id = i.series_fk
WHERE se.study_fk = $1
UNION
SELECT c.object_key, c.sha256 FROM conflicts c WHERE c.study_uid = $2 AND c.state <> 'discarded';

-- name: study_history_delete
-- Earlier versions of the study's instances and the conflicting versions quarantined for it
-- (0020_federation) hold the same images: they go with the study.  Returns their objects.
WITH versions AS (
    DELETE FROM instance_versions
    WHERE instance_fk IN (SELECT i.id FROM instances i JOIN series se ON se.id = i.series_fk
                          WHERE se.study_fk = $1)
    RETURNING object_key
), quarantined AS (
    DELETE FROM conflicts WHERE study_uid = $2
    RETURNING object_key, state
)
SELECT (SELECT count(*) FROM versions) AS versions,
       (SELECT count(*) FROM quarantined) AS conflicts,
       coalesce((SELECT array_agg(DISTINCT object_key) FROM versions), '{}')
       || coalesce((SELECT array_agg(DISTINCT object_key) FROM quarantined
                    WHERE state <> 'discarded'), '{}') AS object_keys;

-- name: study_delete
-- Series, instances and the retention row go with it (ON DELETE CASCADE).
DELETE FROM studies WHERE id = $1;

-- name: patient_delete_if_unused
-- No demographics are kept once a patient has no images left.
DELETE FROM patients p WHERE p.id = $1 AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_fk = p.id);

-- name: enqueue_object_deletes
-- An object is deleted only if nothing refers to it any more (identical bytes are stored once;
-- the same test as object_key_in_use).  Carried out by the enqueuer straight away, and by a worker if it crashed.
INSERT INTO jobs (kind, payload, dedup_key, run_after)
SELECT 'delete-object', jsonb_build_object('object_key', k), 'delete:' || k,
       now() + make_interval(secs => $2)
FROM (SELECT DISTINCT k FROM unnest($1::text[]) AS k) AS keys
WHERE NOT EXISTS (SELECT 1 FROM instances WHERE object_key = k)
  AND NOT EXISTS (SELECT 1 FROM instance_versions WHERE object_key = k)
  AND NOT EXISTS (SELECT 1 FROM conflicts WHERE object_key = k AND state <> 'discarded')
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id, payload ->> 'object_key' AS object_key;

-- name: object_delete_jobs
-- The queued deletion jobs of these objects: those just queued by enqueue_object_deletes and
-- those already waiting (a compression original's grace period).
SELECT id, payload ->> 'object_key' AS object_key
FROM jobs
WHERE kind = 'delete-object' AND state = 'queued'
  AND dedup_key = ANY (SELECT 'delete:' || k FROM unnest($1::text[]) AS k)
ORDER BY id;

-- name: hold_insert
INSERT INTO legal_holds (scope, patient_id, issuer, study_uid, reason, set_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, scope, patient_id, issuer, study_uid, reason, set_by, set_at, released_by,
          released_at;

-- name: hold_lock_study
SELECT st.id, st.study_uid, p.patient_id, p.issuer
FROM studies st JOIN patients p ON p.id = st.patient_fk
WHERE st.study_uid = $1
FOR UPDATE OF st;

-- name: patients_by_id
SELECT id, patient_id, issuer FROM patients WHERE patient_id = $1 ORDER BY issuer;

-- name: hold_lock_patient
-- The patient's studies and those of the identities linked to them (see active_holds_of_study).
SELECT st.id FROM studies st JOIN patients p ON p.id = st.patient_fk
WHERE (p.patient_id = $1 AND p.issuer = $2)
   OR EXISTS (SELECT 1 FROM patient_links pl
              WHERE pl.removed_at IS NULL
                AND ((pl.patient_id_a, pl.issuer_a, pl.patient_id_b, pl.issuer_b)
                       = ($1, $2, p.patient_id, p.issuer)
                     OR (pl.patient_id_b, pl.issuer_b, pl.patient_id_a, pl.issuer_a)
                       = ($1, $2, p.patient_id, p.issuer)))
ORDER BY st.id
FOR UPDATE OF st;

-- name: hold_list
SELECT h.*,
       CASE WHEN h.scope = 'study'
            THEN (SELECT count(*) FROM studies WHERE study_uid = h.study_uid)
            ELSE (SELECT count(*) FROM studies st JOIN patients p ON p.id = st.patient_fk
                  WHERE p.patient_id = h.patient_id AND p.issuer = h.issuer)
       END AS studies
FROM legal_holds h
WHERE $1 OR h.released_at IS NULL
ORDER BY h.id;

-- name: hold_release
UPDATE legal_holds SET released_by = $2, released_at = now()
WHERE id = $1 AND released_at IS NULL
RETURNING id, scope, patient_id, issuer, study_uid, reason, set_by, set_at, released_by,
          released_at;

-- name: hold_get
SELECT * FROM legal_holds WHERE id = $1;
