-- Named queries of the change feed (migration 0170).  Writers add rows to change_pending in
-- the transaction of their change; vna_sequence_changes moves committed rows to change_log in
-- commit order; readers read change_log only.

-- name: record_instance_changes
-- One change ($1: the action) per instance ($2: instance row ids), with each instance's
-- current UIDs and its study's source.
INSERT INTO change_pending (action, study_uid, series_uid, sop_uid, source)
SELECT $1, st.study_uid, se.series_uid, i.sop_uid, st.source
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.id = ANY($2::bigint[])
ORDER BY i.id;

-- name: record_study_changes
-- One change ($1: the action) per instance of the study whose row id is $2.
INSERT INTO change_pending (action, study_uid, series_uid, sop_uid, source)
SELECT $1, st.study_uid, se.series_uid, i.sop_uid, st.source
FROM studies st
JOIN series se ON se.study_fk = st.id
JOIN instances i ON i.series_fk = se.id
WHERE st.id = $2
ORDER BY i.id;

-- name: study_row_id
SELECT id FROM studies WHERE study_uid = $1;

-- name: record_change
-- One change named by its UIDs: for changes whose instance row is already gone.
INSERT INTO change_pending (action, study_uid, series_uid, sop_uid, source)
VALUES ($1, $2, $3, $4, $5);

-- name: sequence_changes
-- At most $1 committed pending changes into the feed; how many.
SELECT vna_sequence_changes($1);

-- name: read_changes
-- Feed entries with $1 <= Timestamp < $2, in sequence order, skipping $3, at most $4;
-- $5: the sources the reader may see (NULL: all); $6: with each instance's current metadata;
-- $7: the first sequence wanted (0: from the start).
-- An entry's state comes from the instance's last create, update, delete or reject: an
-- entry that is that last one is current (deleted for a delete or reject); earlier ones are
-- deleted when it is a delete or reject, replaced otherwise.  Tier moves make no version.
SELECT c.sequence, c.study_uid, c.series_uid, c.sop_uid, c.action, c.logged_at, c.source,
       CASE
           WHEN last.action IN ('delete', 'reject') THEN 'deleted'
           WHEN c.action IN ('delete', 'reject') THEN 'deleted'
           WHEN c.action = 'tier' OR last.sequence IS NULL OR last.sequence <= c.sequence
               THEN 'current'
           ELSE 'replaced'
       END AS state,
       CASE WHEN $6::boolean THEN (SELECT i.metadata FROM instances i WHERE i.sop_uid = c.sop_uid)
       END AS metadata
FROM change_log c
LEFT JOIN LATERAL (
    SELECT l.sequence, l.action FROM change_log l
    WHERE l.sop_uid = c.sop_uid AND l.action <> 'tier'
    ORDER BY l.sequence DESC LIMIT 1
) last ON true
WHERE c.logged_at >= $1 AND c.logged_at < $2
  AND ($5::text[] IS NULL OR c.source = ANY($5::text[]))
  AND c.sequence >= $7
ORDER BY c.sequence
OFFSET $3 LIMIT $4;

-- name: latest_change_sequence
-- The last entry the reader may see ($1: its sources, NULL: all).
SELECT max(sequence) FROM change_log
WHERE ($1::text[] IS NULL OR source = ANY($1::text[]));

-- name: prune_changes
-- Entries that entered the feed before $1 (the [changefeed] keep_days horizon).
DELETE FROM change_log WHERE logged_at < $1;
