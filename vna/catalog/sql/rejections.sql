-- IOCM rejection notes (migration 0160; vna/catalog/rejections.py).  An instance is visible
-- to queries and retrieves exactly when `i.rejection_fk IS NULL`: the search and retrieve
-- blocks (search.sql, retrieve.sql) test that, and tests/unit/test_rejection_visibility.py
-- checks that each of them does.

-- name: rejection_note_insert
-- Nothing when the note is recorded already (a resend, or a note undone since: an undo stays).
INSERT INTO rejection_notes (note_sop_uid, study_uid, series_uid, code, meaning, actor)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (note_sop_uid) DO NOTHING
RETURNING id;

-- name: rejection_lock_uids
-- Exclusive advisory locks on the UIDs a note names, in one order (the arrival trigger of
-- migration 0160 takes shared ones): see vna_instance_rejection.
SELECT count(pg_advisory_xact_lock(160, h))
FROM (SELECT DISTINCT hashtext(u) AS h FROM unnest($1::text[]) AS u ORDER BY 1) AS k;

-- name: rejected_instances_insert
-- $2 the note's study; $3 SOP Instance UIDs and $4 their series UIDs, pairwise.
INSERT INTO rejected_instances (note_fk, sop_uid, study_uid, series_uid)
SELECT $1, t.sop_uid, $2, t.series_uid
FROM unnest($3::text[], $4::text[]) AS t (sop_uid, series_uid)
ON CONFLICT DO NOTHING;

-- name: rejection_apply
-- The instances of note $1 the archive holds, in the note's study, withdrawn; an instance
-- already withdrawn by another note keeps that note.  Returns the instances the note names
-- that the archive holds, and the ids of those it withdrew now (for the change log).
WITH held AS (
    SELECT i.id, i.rejection_fk
    FROM rejected_instances r
    JOIN rejection_notes n ON n.id = r.note_fk
    JOIN instances i ON i.sop_uid = r.sop_uid AND i.sop_uid <> n.note_sop_uid
    JOIN series se ON se.id = i.series_fk
    JOIN studies st ON st.id = se.study_fk AND st.study_uid = r.study_uid
    WHERE r.note_fk = $1
    FOR UPDATE OF i
), marked AS (
    UPDATE instances i SET rejection_fk = $1
    FROM held h
    WHERE i.id = h.id AND h.rejection_fk IS NULL
    RETURNING i.id
)
SELECT count(*) AS held, (SELECT count(*) FROM marked) AS marked,
       ARRAY(SELECT id FROM marked) AS marked_ids
FROM held;

-- name: rejection_note_by_uid
SELECT * FROM rejection_notes WHERE note_sop_uid = $1;

-- name: rejection_undo
UPDATE rejection_notes SET undone_at = now(), undone_by = $2, undo_reason = $3
WHERE note_sop_uid = $1 AND undone_at IS NULL
RETURNING *;

-- name: rejection_unapply
-- After note $1 is undone: its instances visible again, unless another active note of their
-- study rejects them too (vna_active_rejection, migration 0160).  Returns what is visible.
UPDATE instances i SET rejection_fk = vna_active_rejection(i.sop_uid, i.series_fk)
WHERE i.rejection_fk = $1
RETURNING i.id, i.sop_uid, i.rejection_fk IS NULL AS visible;

-- name: rejection_notes_list
-- Every note, newest first: how many instances it names, how many of them the archive holds
-- withdrawn by it, and how many it does not hold yet (applied when they arrive).
SELECT n.id, n.note_sop_uid, n.study_uid, n.code, n.meaning, n.actor, n.received_at,
       n.undone_at, n.undone_by, n.undo_reason,
       count(r.sop_uid) AS referenced,
       count(i.id) FILTER (WHERE i.rejection_fk = n.id) AS rejected,
       count(r.sop_uid) FILTER (WHERE i.id IS NULL) AS not_held
FROM rejection_notes n
LEFT JOIN rejected_instances r ON r.note_fk = n.id
LEFT JOIN instances i ON i.sop_uid = r.sop_uid
WHERE $1 OR n.undone_at IS NULL
GROUP BY n.id
ORDER BY n.received_at DESC, n.id DESC;

-- name: rejected_instances_list
-- The withdrawn instances (an administrator's view), of study $1 or all.
SELECT i.sop_uid, i.sop_class_uid, i.size, se.series_uid, st.study_uid, p.patient_id,
       p.issuer, n.note_sop_uid, n.code, n.meaning, n.received_at
FROM instances i
JOIN rejection_notes n ON n.id = i.rejection_fk
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE $1::text IS NULL OR st.study_uid = $1::text
ORDER BY n.received_at, st.study_uid, se.series_uid, i.instance_number NULLS LAST, i.id;

-- name: rejection_study
-- The study a note is made for (POST .../reject): the attributes the note copies.
SELECT st.study_uid, st.study_date, st.study_time, st.accession_number, st.study_id,
       st.referring_physician, st.source, p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
FROM studies st
JOIN patients p ON p.id = st.patient_fk
WHERE st.study_uid = $1;

-- name: rejection_candidates
-- The visible instances of study $1 (series $2, or all) a new note would reject: not the
-- rejection notes themselves.
SELECT i.sop_uid, i.sop_class_uid, i.has_pixel_data, se.series_uid
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE st.study_uid = $1 AND ($2::text IS NULL OR se.series_uid = $2::text)
  AND i.rejection_fk IS NULL
  AND NOT EXISTS (SELECT 1 FROM rejection_notes n WHERE n.note_sop_uid = i.sop_uid)
ORDER BY se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id;
