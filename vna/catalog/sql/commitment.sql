-- Storage Commitment (vna/commitment, vna/gateway/dimse/commitment.py, the
-- `commitment-report` job).  Table of migration 0150.

-- name: commitment_record
-- The request and its report job in one statement (the outbox): the job is the safety net
-- that sends the report on a new association if the requester's association is gone, or the
-- process stops, before the report went out.  The job's first run waits $8 seconds: the
-- handler of the request normally reports first, on the requester's association.
WITH c AS (
    INSERT INTO commitments (transaction_uid, source, calling_ae, origin, required_replicas,
                             refs, instances)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id
), j AS (
    INSERT INTO jobs (kind, payload, dedup_key, run_after)
    SELECT 'commitment-report', jsonb_build_object('commitment_id', c.id),
           'commitment-report:' || c.id, now() + make_interval(secs => $8)
    FROM c
)
SELECT id FROM c;

-- name: commitment_get
SELECT id, transaction_uid, source, calling_ae, origin, requested_at, required_replicas,
       state, refs, instances, committed, failed, result, reported_via, reported_at,
       attempts, last_error,
       extract(epoch FROM now() - requested_at) AS age_seconds
FROM commitments WHERE id = $1;

-- name: commitment_report_now
-- The requester released its association before the report was ready: the job sends it on
-- a new association, from now on rather than after its safety delay.
UPDATE jobs SET run_after = now(), updated_at = now()
WHERE dedup_key = 'commitment-report:' || $1::bigint AND state = 'queued';

-- name: commitment_reported
-- Recorded once: a report sent twice (the handler and the job racing) keeps the first record.
UPDATE commitments
SET state = 'reported', committed = $2, failed = $3, result = $4, reported_via = $5,
    reported_at = now(), last_error = NULL
WHERE id = $1 AND state <> 'reported'
RETURNING id;

-- name: commitment_attempt_failed
UPDATE commitments SET attempts = attempts + 1, last_error = $2 WHERE id = $1;

-- name: commitment_undeliverable
UPDATE commitments
SET state = 'undeliverable', committed = $2, failed = $3, result = $4, last_error = $5
WHERE id = $1 AND state = 'pending';

-- name: commitment_list
-- Newest first; $1: a state or NULL for all, $2: how many.
SELECT id, transaction_uid, source, calling_ae, requested_at, required_replicas, state,
       instances, committed, failed, reported_via, reported_at, attempts, last_error
FROM commitments
WHERE $1::text IS NULL OR state = $1
ORDER BY requested_at DESC, id DESC
LIMIT $2;

-- name: commitment_counts
-- For /metrics: requests waiting for their report, and requests whose report listed a
-- failure or could not be delivered.
SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'undeliverable'
                          OR (state = 'reported' AND failed > 0)) AS failed
FROM commitments;

-- name: commitment_instances
-- The catalogued instances among the SOP Instance UIDs $1, with how many of the replica
-- stores $2 hold a verified copy of their current object (table `replicas`, written by
-- lifecycle/dr/replication.py after reading each copy back).
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid,
       (SELECT count(*) FROM replicas r
        WHERE r.object_key = i.object_key AND r.store = ANY($2::text[]))::int AS replicas
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.sop_uid = ANY($1::text[]);

-- name: commitment_replica_counts
-- Verified copies on the replica stores $2 of the current objects of instances $1 (polled
-- while a report waits for replication).
SELECT i.sop_uid,
       (SELECT count(*) FROM replicas r
        WHERE r.object_key = i.object_key AND r.store = ANY($2::text[]))::int AS replicas
FROM instances i
WHERE i.sop_uid = ANY($1::text[]);
