-- Instances withdrawn by IOCM rejection notes (migration 0160) in retention reviews
-- (lifecycle/rejections.py): listed with the note's reason, deleted one by one on approval.

-- name: review_fill_rejected
-- Every withdrawn instance, with the note that withdrew it and any active legal hold on its
-- study or patient (the same holds as review_fill; a held one is listed, as held).
INSERT INTO retention_review_rejections
    (review_fk, instance_fk, sop_uid, study_uid, series_uid, patient_id, issuer, note_fk,
     note_sop_uid, code, meaning, bytes, hold, state)
SELECT $1, i.id, i.sop_uid, st.study_uid, se.series_uid, p.patient_id, p.issuer, n.id,
       n.note_sop_uid, n.code, n.meaning, i.size, h.holds,
       CASE WHEN h.holds IS NULL THEN 'due' ELSE 'held' END
FROM instances i
JOIN rejection_notes n ON n.id = i.rejection_fk
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
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
WHERE i.rejection_fk IS NOT NULL;

-- name: review_rejected_items
SELECT * FROM retention_review_rejections WHERE review_fk = $1
ORDER BY study_uid, series_uid, sop_uid;

-- name: review_rejected_to_execute
SELECT instance_fk FROM retention_review_rejections
WHERE review_fk = $1 AND state = 'due'
ORDER BY study_uid, instance_fk;

-- name: review_rejected_lock
SELECT * FROM retention_review_rejections WHERE review_fk = $1 AND instance_fk = $2 FOR UPDATE;

-- name: review_rejected_finish
UPDATE retention_review_rejections SET state = $3, outcome = $4, done_at = now()
WHERE review_fk = $1 AND instance_fk = $2;

-- name: rejected_instance_now
-- The instance as it is now: still withdrawn (by an active note), and its study's id.
SELECT i.id, i.sop_uid, i.object_key, i.size, i.rejection_fk, se.study_fk, n.undone_at
FROM instances i
JOIN series se ON se.id = i.series_fk
LEFT JOIN rejection_notes n ON n.id = i.rejection_fk
WHERE i.id = $1;

-- name: rejected_instance_delete
-- The instance, its earlier versions (they hold the same image) and its series if nothing is
-- left in it.  Returns the objects they used.
WITH versions AS (
    DELETE FROM instance_versions WHERE instance_fk = $1 RETURNING object_key
), gone AS (
    DELETE FROM instances WHERE id = $1 RETURNING object_key, series_fk
), emptied AS (
    DELETE FROM series se USING gone
    WHERE se.id = gone.series_fk
      AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_fk = se.id AND i.id <> $1)
    RETURNING se.id
)
SELECT coalesce((SELECT array_agg(object_key) FROM gone), '{}')
       || coalesce((SELECT array_agg(DISTINCT object_key) FROM versions), '{}') AS object_keys,
       (SELECT count(*) FROM versions) AS versions,
       (SELECT count(*) FROM emptied) AS series_removed;
