-- Notifications (lifecycle.notifications, migration 0172).

-- name: notify_candidates
-- Feed entries after the cursor $1 (at most $2) with the facts subscriptions filter on;
-- modality and description only while the instance is held.
SELECT c.sequence, c.action, c.study_uid, c.series_uid, c.sop_uid, c.source, c.logged_at,
       se.modality, st.study_description
FROM change_log c
LEFT JOIN instances i ON i.sop_uid = c.sop_uid
LEFT JOIN series se ON se.id = i.series_fk
LEFT JOIN studies st ON st.id = se.study_fk
WHERE c.sequence > $1
ORDER BY c.sequence
LIMIT $2;

-- name: notify_insert
INSERT INTO notifications (target, change_sequence, event_type, study_uid, data, event_time)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (target, change_sequence, event_type) DO NOTHING
RETURNING id;

-- name: notify_study_arrived
-- An instance of study $2 arrived (feed entry $3 at $4) that subscription $1 watches.
INSERT INTO notification_studies (target, study_uid, last_sequence, last_change)
VALUES ($1, $2, $3, $4)
ON CONFLICT (target, study_uid) DO UPDATE
SET last_sequence = greatest(notification_studies.last_sequence, EXCLUDED.last_sequence),
    last_change = greatest(notification_studies.last_change, EXCLUDED.last_change);

-- name: notify_settled_studies
-- Studies of subscription $1 with no instance arrived for $2 seconds since their last
-- study-stable event (or ever), locked until the caller's transaction ends.
SELECT study_uid, last_sequence, last_change
FROM notification_studies
WHERE target = $1 AND stable_sequence IS DISTINCT FROM last_sequence
  AND last_change < now() - make_interval(secs => $2)
ORDER BY last_change
FOR UPDATE SKIP LOCKED;

-- name: notify_study_settled
UPDATE notification_studies SET stable_sequence = $3 WHERE target = $1 AND study_uid = $2;

-- name: notify_pending_studies
SELECT DISTINCT target, study_uid FROM notifications WHERE state = 'pending';

-- name: notify_next
-- The next events to deliver for one study of one target, in order.
SELECT id, change_sequence, event_type, study_uid, data, event_time, created_at, attempts,
       extract(epoch FROM now() - created_at) AS age_seconds
FROM notifications
WHERE target = $1 AND study_uid = $2 AND state = 'pending'
ORDER BY id
LIMIT $3;

-- name: notify_attempted
UPDATE notifications
SET state = $2, last_error = $3, attempts = attempts + 1, updated_at = now()
WHERE id = $1;

-- name: notify_status
SELECT target, state, count(*) AS events, min(created_at) AS oldest, max(updated_at) AS last
FROM notifications
GROUP BY target, state
ORDER BY target, state;

-- name: notify_dead
SELECT target, event_type, study_uid, change_sequence, attempts, last_error, updated_at
FROM notifications WHERE state = 'dead'
ORDER BY updated_at DESC
LIMIT $1;

-- name: notify_prune
-- Events delivered before $1 (the change feed's horizon), and studies found stable then and
-- quiet since; dead events stay for an operator to see.
WITH events AS (
    DELETE FROM notifications WHERE state = 'delivered' AND updated_at < $1
)
DELETE FROM notification_studies
WHERE stable_sequence = last_sequence AND last_change < $1;
