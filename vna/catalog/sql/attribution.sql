-- Re-attribution of studies to a declared source (vna.admin.studies.set_source).

-- name: set_study_source
-- The study and every instance of it filed as source $2.
WITH st AS (
    UPDATE studies SET source = $2, updated_at = now() WHERE id = $1 RETURNING id
)
UPDATE instances i SET source = $2
FROM series se, st
WHERE se.study_fk = st.id AND i.series_fk = se.id;

-- name: restore_instance_sources
-- Undo of a re-attribution: each instance's source before it ($2: instance ids, $3: sources,
-- in the same order), and the study's ($4).
WITH st AS (
    UPDATE studies SET source = $4, updated_at = now() WHERE id = $1 RETURNING id
)
UPDATE instances i SET source = prev.source
FROM unnest($2::bigint[], $3::text[]) AS prev (id, source), st
WHERE i.id = prev.id;

-- name: instance_sources_of_study
SELECT i.id, i.source
FROM instances i
JOIN series se ON se.id = i.series_fk
WHERE se.study_fk = $1
ORDER BY i.id;

-- name: study_source
SELECT source FROM studies WHERE id = $1;

-- name: default_studies_from_ae
-- Studies holding instances filed as source DEFAULT whose stores the audit trail attributes
-- to calling AE title $1 over DIMSE (the only record of who sent them).
SELECT st.study_uid
FROM studies st
WHERE EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_fk = se.id
              WHERE se.study_fk = st.id AND i.source = 'DEFAULT')
  AND EXISTS (SELECT 1 FROM audit a
              WHERE a.study_uid = st.study_uid AND a.action = 'store'
                AND a.outcome = 'success' AND a.actor = $1
                AND a.detail ->> 'protocol' = 'dimse')
ORDER BY st.id;
