-- The job queue (table `jobs`).  Times are the database's, so that workers on machines with
-- drifting clocks agree on leases and back-off.

-- name: job_enqueue
-- A job with a dedup key is not queued twice while one is queued or running.
INSERT INTO jobs (kind, payload, dedup_key, run_after)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id;

-- name: job_claim
-- SKIP LOCKED: concurrent claimers each take other rows, never wait, never share one.
-- The attempt is counted when claimed, so a worker killed mid-job has used it up.
WITH picked AS (
    SELECT id FROM jobs
    WHERE state = 'queued' AND run_after <= now()
    ORDER BY run_after, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET state = 'running', locked_by = $1, locked_at = now(), attempts = j.attempts + 1,
    updated_at = now()
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts;

-- name: job_complete
UPDATE jobs
SET state = 'done', locked_by = NULL, locked_at = NULL, last_error = NULL, updated_at = now()
WHERE id = $1 AND locked_by = $2 AND state = 'running';

-- name: job_retry
UPDATE jobs
SET state = 'queued', locked_by = NULL, locked_at = NULL,
    run_after = now() + make_interval(secs => $3), last_error = $4, updated_at = now()
WHERE id = $1 AND locked_by = $2 AND state = 'running';

-- name: job_reschedule
-- Not a failure (a restore still under way, a worker stopping): the attempt is given back.
UPDATE jobs
SET state = 'queued', locked_by = NULL, locked_at = NULL, attempts = greatest(attempts - 1, 0),
    run_after = now() + make_interval(secs => $3), last_error = $4, updated_at = now()
WHERE id = $1 AND locked_by = $2 AND state = 'running';

-- name: job_dead
UPDATE jobs
SET state = 'dead', locked_by = NULL, locked_at = NULL, last_error = $3, updated_at = now()
WHERE id = $1 AND locked_by = $2 AND state = 'running';

-- name: job_heartbeat
UPDATE jobs SET locked_at = now()
WHERE id = ANY($1::bigint[]) AND locked_by = $2 AND state = 'running';

-- name: job_reap_expired
-- Jobs whose worker stopped renewing its lease (killed, frozen, cut off from the database):
-- queued again, or dead once their attempts are used up.
UPDATE jobs
SET state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    last_error = format('worker %s stopped renewing its lease during attempt %s',
                        coalesce(locked_by, '?'), attempts),
    locked_by = NULL, locked_at = NULL, run_after = now(), updated_at = now()
WHERE state = 'running' AND locked_at < now() - make_interval(secs => $1)
RETURNING id, kind, state;

-- name: job_requeue
-- The administrator's retry of dead jobs: a fresh set of attempts.
UPDATE jobs
SET state = 'queued', attempts = 0, run_after = now(), locked_by = NULL, locked_at = NULL,
    updated_at = now()
WHERE state = 'dead' AND (id = ANY($1::bigint[]) OR $2)
RETURNING id;

-- name: job_purge_done
DELETE FROM jobs
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'done' AND updated_at < now() - make_interval(hours => $1)
    LIMIT 10000
);

-- name: job_mark_done
-- A job its enqueuer already carried out itself (the deletions of an approval).
UPDATE jobs SET state = 'done', updated_at = now() WHERE id = ANY($1::bigint[]) AND state = 'queued';

-- name: lifecycle_state_get
-- age_seconds by the database's clock, the one updated_at was written with.
SELECT value, updated_at, extract(epoch FROM now() - updated_at) AS age_seconds
FROM lifecycle_state WHERE key = $1;

-- name: lifecycle_state_set
INSERT INTO lifecycle_state (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now();

-- name: job_settle
-- A queued or dead-lettered job carried out by someone else (a failback doing the deletions
-- the primary missed): done, its last error cleared.
UPDATE jobs SET state = 'done', updated_at = now(), last_error = NULL
WHERE id = ANY($1::bigint[]) AND state IN ('queued', 'dead');

-- name: scheduler_try_lock
-- Held until the caller's transaction ends (lifecycle/scheduler.py).
SELECT pg_try_advisory_xact_lock($1);
