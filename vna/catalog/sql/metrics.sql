-- Figures for GET /metrics, read at each scrape (vna.archive.Archive.refresh_gauges).

-- name: lifecycle_queue_depth
-- Jobs by kind and state, finished ones left out (they stay for `vna lifecycle status`);
-- queued jobs split into due now (ready) and waiting for a retry's back-off.  The jobs_state
-- index (state, kind) serves it.
SELECT kind,
       CASE WHEN state = 'queued' AND run_after <= now() THEN 'ready'
            WHEN state = 'queued' THEN 'waiting'
            ELSE state END AS state,
       count(*)::bigint AS jobs
FROM jobs
WHERE state IN ('queued', 'running', 'dead')
GROUP BY 1, 2;

-- name: forward_totals
-- Forwarded instances by destination and state (migration 0171).
SELECT destination, state, count(*)::bigint AS instances
FROM forwards
GROUP BY 1, 2;

-- name: notification_totals
-- Notification events by subscription and state (migration 0172).
SELECT target, state, count(*)::bigint AS events
FROM notifications
GROUP BY 1, 2;
