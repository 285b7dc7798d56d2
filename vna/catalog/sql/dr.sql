-- Disaster recovery on the archive's side (vna/recovery): the active store, the state of the
-- replicas, fixity checks and the catalogue rebuild.  Migration 0030.

-- name: dr_active_store
SELECT active_store FROM dr_state;

-- name: dr_state_get
SELECT active_store, changed_at, changed_by FROM dr_state;

-- name: dr_state_set
UPDATE dr_state SET active_store = $1, changed_at = now(), changed_by = $2
RETURNING active_store, changed_at, changed_by;

-- name: replica_lag
-- The state of replica $1: instances whose current object has a verified copy on it, the
-- backlog (instances without one) and its oldest instance (the RPO as it stands).
SELECT count(r.object_key) AS replicated,
       coalesce(sum(i.stored_size) FILTER (WHERE r.object_key IS NOT NULL), 0)::bigint
           AS replicated_bytes,
       count(*) FILTER (WHERE r.object_key IS NULL) AS backlog,
       coalesce(sum(i.stored_size) FILTER (WHERE r.object_key IS NULL), 0)::bigint
           AS backlog_bytes,
       min(i.received_at) FILTER (WHERE r.object_key IS NULL) AS oldest_unreplicated,
       (SELECT max(verified_at) FROM replicas WHERE store = $1) AS last_verified
FROM instances i
LEFT JOIN replicas r ON r.store = $1 AND r.object_key = i.object_key;

-- name: replica_record
-- A verified copy of an object on a replica store.
INSERT INTO replicas (store, object_key, instance_fk, sha256, size)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (store, object_key) DO UPDATE
SET instance_fk = coalesce(excluded.instance_fk, replicas.instance_fk),
    sha256 = excluded.sha256, size = excluded.size, verified_at = now();

-- name: replica_forget
DELETE FROM replicas WHERE store = $1 AND object_key = $2;

-- name: replica_lock
-- Serialises the copy and the deletion of one object on one store (transaction-scoped).
SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0));

-- name: replica_verified
SELECT verified_at FROM replicas WHERE store = $1 AND object_key = $2;

-- name: fixity_instance
SELECT i.id, i.sop_uid, i.object_key, i.compression, i.sha256, i.size, i.stored_size,
       i.received_at, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.id = $1;

-- name: fixity_sample
-- A random sample of instances (ids only; the instances are read one by one).
SELECT id FROM instances ORDER BY random() LIMIT $1;

-- name: fixity_batch
SELECT id FROM instances WHERE id > $1 ORDER BY id LIMIT $2;

-- name: instance_count
SELECT count(*) FROM instances;

-- name: rebuild_lock_instance
SELECT i.id, i.sha256, i.object_key, i.compression, i.received_at, i.series_fk
FROM instances i WHERE i.sop_uid = $1
FOR UPDATE;

-- name: rebuild_set_object
-- What the pipeline's insert leaves at its defaults: when it was received, and the object's
-- encoding and tier as found in the store.
UPDATE instances
SET received_at = coalesce($2, received_at), compression = $3, stored_size = $4, tier = $5,
    object_key = $6
WHERE id = $1;

-- name: rebuild_insert_version
-- An older version of an instance found in the store: filed as an earlier version (the
-- object stays in use, for the record), as a replaced version would have been.
INSERT INTO instance_versions (instance_fk, sop_uid, series_fk, sop_class_uid, instance_number,
                               transfer_syntax, sha256, received_sha256, data_set_sha256, size,
                               object_key, stored_size, compression, tier, source, received_at,
                               metadata, reason, superseded_by, actor)
SELECT i.id, i.sop_uid, i.series_fk, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
       coalesce($14, now()), $15, 'rebuild', i.sha256, $16
FROM instances i WHERE i.id = $1
RETURNING id;

-- name: rebuild_version_known
SELECT EXISTS (SELECT 1 FROM instance_versions WHERE sop_uid = $1 AND sha256 = $2);

-- name: known_object_keys
-- Of these keys, the ones the catalogue knows (a fixity check lists the rest as orphans):
-- current instances, earlier versions, open quarantined conflicts, verified replica copies
-- of the named store, and objects whose deletion is already queued.
SELECT k FROM unnest($1::text[]) AS k
WHERE EXISTS (SELECT 1 FROM instances WHERE object_key = k)
   OR EXISTS (SELECT 1 FROM instance_versions WHERE object_key = k)
   OR EXISTS (SELECT 1 FROM conflicts WHERE object_key = k AND state <> 'discarded')
   OR EXISTS (SELECT 1 FROM replicas WHERE object_key = k AND store = $2)
   OR EXISTS (SELECT 1 FROM jobs WHERE kind = 'delete-object' AND state IN ('queued', 'running')
              AND payload ->> 'object_key' = k);

-- name: database_now
-- The database's clock: replication ages are measured against the times it wrote.
SELECT now();

-- name: catalogue_counts
SELECT (SELECT count(*) FROM studies) AS studies, (SELECT count(*) FROM patients) AS patients;

-- Reads that heal themselves (migration 0195; vna.retrieve records, lifecycle.dr.read_repair
-- resolves).

-- name: read_repair_record
-- A read found the copy of $2 on store $1 damaged ($3 outcome, $4 detail, $5 the store that
-- served instead or NULL).  One open row per copy: a later read of the same damage counts on
-- it.  inserted: true for the first detection (the one that is audited and queues the repair).
INSERT INTO read_repairs (store, object_key, outcome, detail, served_from)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (store, object_key) WHERE resolved_at IS NULL
DO UPDATE SET detections = read_repairs.detections + 1,
              served_from = coalesce(EXCLUDED.served_from, read_repairs.served_from)
RETURNING (xmax = 0) AS inserted;

-- name: read_repair_enqueue
-- The repair of one damaged copy ($1 object key, $2 store), once however many reads find it.
INSERT INTO jobs (kind, payload, dedup_key)
VALUES ('repair-object', jsonb_build_object('object_key', $1::text, 'store', $2::text),
        'repair:' || $2::text || ':' || $1::text)
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING;

-- name: read_repairs_open
-- The copies of store $1 known damaged and not repaired yet: readers go to a replica first.
SELECT object_key FROM read_repairs WHERE store = $1 AND resolved_at IS NULL
LIMIT 100000;

-- name: object_subject
-- What the catalogue says object $1 holds, and whose it is (the audit rows of its damage and
-- repair name the patient, study, series and instance).
SELECT i.sop_uid, i.compression, i.sha256, i.size, i.tier, se.series_uid, st.study_uid,
       p.patient_id, p.issuer
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE i.object_key = $1
LIMIT 1;

-- name: read_repair_resolve
-- The open damage of the copy of $2 on store $1 resolved ($3 resolution, $4 the store a good
-- copy came from or NULL); the row, or none when nothing was open.
UPDATE read_repairs
SET resolved_at = now(), resolution = $3, repaired_from = $4
WHERE store = $1 AND object_key = $2 AND resolved_at IS NULL
RETURNING id, outcome, detected_at, detections;

-- name: read_repair_counts
-- Per store: damaged copies open, and resolved by kind; the last detection (`vna dr status`).
SELECT store,
       count(*) FILTER (WHERE resolved_at IS NULL) AS open,
       count(*) FILTER (WHERE resolution = 'repaired') AS repaired,
       count(*) FILTER (WHERE resolution = 'intact') AS intact,
       count(*) FILTER (WHERE resolution = 'gone') AS gone,
       coalesce(sum(detections), 0) AS detections,
       max(detected_at) AS last_detected
FROM read_repairs
GROUP BY store
ORDER BY store;
