-- Replication to the [[replicas]] (lifecycle/dr/replication.py) and disaster-recovery commands
-- (lifecycle/dr/).  Tables of migration 0030.

-- name: replication_instance
SELECT i.id, i.sop_uid, i.object_key, i.compression, i.sha256, i.size, i.stored_size,
       i.received_at
FROM instances i WHERE i.id = $1;

-- name: replication_sweep_enqueue
-- Instances whose current object has no verified copy on replica $1 and no replication job
-- queued or running (the dedup key), up to $2; dead jobs are not queued again each sweep
-- (`vna lifecycle retry` does that).
INSERT INTO jobs (kind, payload, dedup_key)
SELECT 'replicate', jsonb_build_object('instance_id', i.id, 'store', $1::text),
       'replicate:' || $1 || ':' || i.id
FROM instances i
WHERE NOT EXISTS (SELECT 1 FROM replicas r WHERE r.store = $1 AND r.object_key = i.object_key)
  -- (the partial unique index jobs_dedup serves this look-up)
  AND NOT EXISTS (SELECT 1 FROM jobs j
                  WHERE j.dedup_key = 'replicate:' || $1 || ':' || i.id
                    AND j.state IN ('queued', 'running'))
  AND 'replicate:' || $1 || ':' || i.id NOT IN (
      SELECT dedup_key FROM jobs
      WHERE state = 'dead' AND kind = 'replicate' AND dedup_key IS NOT NULL)
  -- An instance whose instance-stored job is still to run gets its jobs from that handler,
  -- after compression (copying the original first would be wasted).
  AND i.id NOT IN (
      SELECT (payload ->> 'instance_id')::bigint FROM jobs
      WHERE state IN ('queued', 'running') AND kind = 'instance-stored'
        AND payload ? 'instance_id')
ORDER BY i.id
LIMIT $2
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id;

-- name: replication_orphans_enqueue
-- Copies on replicas that no instance, earlier version or open conflict uses any more (the
-- instance was deleted, or its object rewritten by compression): deleted from the replica.
INSERT INTO jobs (kind, payload, dedup_key)
SELECT 'replica-delete', jsonb_build_object('store', r.store, 'object_key', r.object_key),
       'replica-delete:' || r.store || ':' || r.object_key
FROM replicas r
WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.object_key = r.object_key)
  AND NOT EXISTS (SELECT 1 FROM instance_versions v WHERE v.object_key = r.object_key)
  AND NOT EXISTS (SELECT 1 FROM conflicts c
                  WHERE c.object_key = r.object_key AND c.state <> 'discarded')
LIMIT $1
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id;

-- name: enqueue_replica_deletes
-- After object $1 was deleted from the active store $2 (lifecycle/retention.py): a deletion job
-- for every other store $3 (the replicas and, while failed over, the primary) and any store
-- recorded with a copy, carried out at once by the deleter; a job left queued is a store that
-- failed (failback carries out the primary's).  The (store, job id) of each job queued.
INSERT INTO jobs (kind, payload, dedup_key)
SELECT 'replica-delete', jsonb_build_object('store', s.store, 'object_key', $1::text),
       'replica-delete:' || s.store || ':' || $1
FROM (SELECT store FROM replicas WHERE object_key = $1
      UNION
      SELECT unnest($3::text[])) s
WHERE s.store <> $2
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING
RETURNING id, payload ->> 'store' AS store;

-- name: replication_jobs_by_store
SELECT kind, payload ->> 'store' AS store, state, count(*) AS jobs
FROM jobs
WHERE kind IN ('replicate', 'replica-delete') AND state IN ('queued', 'running', 'dead')
GROUP BY kind, payload ->> 'store', state;

-- name: replica_deletes_for_store
-- Deletions waiting (or given up) for store $1: failback carries them out itself.
SELECT id, payload ->> 'object_key' AS object_key
FROM jobs
WHERE kind = 'replica-delete' AND payload ->> 'store' = $1 AND state IN ('queued', 'dead')
ORDER BY id;

-- name: replication_lost
-- Instances without a verified copy on replica $1: what a loss of the active store would
-- lose now, oldest first, up to $2.
SELECT i.id, i.sop_uid, i.stored_size, i.size, i.received_at, se.series_uid, st.study_uid,
       st.accession_number
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE NOT EXISTS (SELECT 1 FROM replicas r WHERE r.store = $1 AND r.object_key = i.object_key)
ORDER BY i.received_at, i.id
LIMIT $2;

-- name: drill_instances_all
SELECT i.id FROM instances i WHERE i.id > $1 ORDER BY i.id LIMIT $2;

-- name: drill_instance
-- One instance as the drill reads it, with whether the replica $2 has a verified copy.
SELECT i.id, i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression,
       i.tier, i.size, i.stored_size, i.sha256, i.received_at, se.series_uid, st.study_uid,
       EXISTS (SELECT 1 FROM replicas r WHERE r.store = $2 AND r.object_key = i.object_key)
           AS recorded
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.id = $1;

-- name: drill_record
INSERT INTO dr_drills (store, started_at, finished_at, actor, mode, checked, verified, defects,
                       rpo_seconds, rto_seconds, lost_instances, lost_bytes, report)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING id;

-- name: drill_last
SELECT id, started_at, finished_at, mode, checked, verified, defects, rpo_seconds,
       rto_seconds, lost_instances
FROM dr_drills WHERE store = $1
ORDER BY started_at DESC LIMIT 1;

-- name: drill_open_defects
-- The copies the last drill of store $1 found damaged or missing that have not been verified
-- again since (re-copied by replication after `vna verify --store` forgot them) and still
-- belong to an instance: `vna dr status` must not call them verified.
WITH last AS (
    SELECT id, finished_at, report FROM dr_drills WHERE store = $1
    ORDER BY started_at DESC LIMIT 1
)
SELECT last.id AS drill, last.finished_at, d ->> 'sop_uid' AS sop_uid,
       d ->> 'study_uid' AS study_uid, d ->> 'object_key' AS object_key,
       d ->> 'outcome' AS outcome, d ->> 'detail' AS detail
FROM last, jsonb_array_elements(last.report -> 'defects') AS d
WHERE EXISTS (SELECT 1 FROM instances i WHERE i.object_key = d ->> 'object_key')
  AND NOT EXISTS (SELECT 1 FROM replicas r
                  WHERE r.store = $1 AND r.object_key = d ->> 'object_key'
                    AND r.verified_at > last.finished_at)
ORDER BY study_uid, sop_uid;

-- name: failback_batch
SELECT i.id, i.sop_uid, i.object_key, i.compression, i.sha256, i.size, i.stored_size,
       i.received_at
FROM instances i
WHERE i.id > $1
ORDER BY i.id
LIMIT $2;

-- name: received_since
SELECT count(*) AS instances, coalesce(sum(stored_size), 0)::bigint AS bytes
FROM instances WHERE received_at >= $1;

-- name: instances_not_on_store
-- Instances without a verified copy on store $1, keyset pages by id (a failover's backlog, a
-- failback's pass).
SELECT i.id FROM instances i
WHERE i.id > $2
  AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.store = $1 AND r.object_key = i.object_key)
ORDER BY i.id
LIMIT $3;

-- name: replicas_forget_store
-- Every copy recorded on a store (a failback re-checks the primary from scratch).
DELETE FROM replicas WHERE store = $1;
