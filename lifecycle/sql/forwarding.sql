-- Forwarding (lifecycle.forwarding, migration 0171).

-- name: forward_candidates
-- Feed entries after the cursor $1 (at most $2), with the facts forward rules match on for
-- the instances still held; create and update entries only (a new version is sent again).
-- The calling AE title is the actor of the instance's C-STORE audit record.
SELECT c.sequence, c.action, c.study_uid, c.sop_uid, st.source, se.modality,
       i.sop_class_uid, st.study_description, i.id AS instance_id,
       (SELECT a.actor FROM audit a
        WHERE a.study_uid = c.study_uid AND a.sop_uid = c.sop_uid AND a.action = 'store'
          AND a.outcome = 'success' AND a.detail->>'protocol' = 'dimse'
        ORDER BY a.id DESC LIMIT 1) AS calling_ae_title
FROM change_log c
LEFT JOIN instances i ON i.sop_uid = c.sop_uid AND c.action IN ('create', 'update')
LEFT JOIN series se ON se.id = i.series_fk
LEFT JOIN studies st ON st.id = se.study_fk
WHERE c.sequence > $1
ORDER BY c.sequence
LIMIT $2;

-- name: forward_latest_sequence
SELECT coalesce(max(sequence), 0) FROM change_log;

-- name: forward_insert
-- NULL when this change was already queued for this destination (the step ran twice).
INSERT INTO forwards (destination, rule, change_sequence, study_uid, sop_uid)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (destination, change_sequence) DO NOTHING
RETURNING id;

-- name: forward_get
SELECT id, destination, rule, study_uid, sop_uid, state, attempts FROM forwards WHERE id = $1;

-- name: forward_attempted
-- The outcome of one attempt: $2 state (queued again, sent, failed), $3 status, $4 error.
UPDATE forwards
SET state = $2, status = $3, error = $4, attempts = attempts + 1, updated_at = now()
WHERE id = $1;

-- name: forward_status
-- Per destination and state: how many, and the last change of state.
SELECT destination, state, count(*) AS instances, max(updated_at) AS last
FROM forwards
GROUP BY destination, state
ORDER BY destination, state;

-- name: forward_failures
SELECT destination, sop_uid, study_uid, status, error, attempts, updated_at
FROM forwards
WHERE state = 'failed' AND ($1::text IS NULL OR destination = $1)
ORDER BY updated_at DESC
LIMIT $2;

-- name: forward_held_studies
-- Destinations and studies with instances waiting under any rule but those named in $1 (the
-- rules without a delay, whose instances each have their own job): the rules with a delay,
-- and rules no longer declared (whose instances the study's job marks failed).
SELECT DISTINCT destination, study_uid FROM forwards
WHERE state = 'queued' AND rule <> ALL($1::text[]);

-- name: forward_study_queued
-- The instances of study $2 waiting for destination $1, in feed order, with the time the
-- change that queued each entered the feed (the feed entry, or the row, once pruned).
SELECT f.id, f.destination, f.rule, f.study_uid, f.sop_uid, f.state, f.attempts,
       coalesce(c.logged_at, f.created_at) AS changed_at,
       extract(epoch FROM now() - coalesce(c.logged_at, f.created_at)) AS quiet_seconds
FROM forwards f
LEFT JOIN change_log c ON c.sequence = f.change_sequence
WHERE f.destination = $1 AND f.study_uid = $2 AND f.state = 'queued'
ORDER BY f.id;

-- name: forward_prune
-- Instances sent before $1 (the change feed's horizon): their disclosure stays in the audit
-- trail; the row was only there to say what is still to send.  Failed ones stay for an
-- operator to see.
DELETE FROM forwards WHERE state = 'sent' AND updated_at < $1;
