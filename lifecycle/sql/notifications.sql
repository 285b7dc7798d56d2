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

-- name: notify_settled_studies
-- Studies of target $1 with a create event whose last create was made more than $2 seconds
-- ago and that have no study-stable event since (looking back $3 seconds).
SELECT n.study_uid, max(n.change_sequence) AS last_sequence, max(n.event_time) AS last_time
FROM notifications n
WHERE n.target = $1 AND n.event_type = 'create'
  AND n.created_at > now() - make_interval(secs => $3)
GROUP BY n.study_uid
HAVING max(n.created_at) < now() - make_interval(secs => $2)
   AND NOT EXISTS (SELECT 1 FROM notifications s
                   WHERE s.target = $1 AND s.study_uid = n.study_uid
                     AND s.event_type = 'study-stable'
                     AND s.change_sequence >= max(n.change_sequence));

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
