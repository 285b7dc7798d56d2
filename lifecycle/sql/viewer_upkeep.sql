-- Viewer upkeep (lifecycle/viewer_upkeep.py, migration 0211): old objects made seekable, old
-- instances given their layouts.

-- name: upkeep_single_frame_objects
-- Hot objects still in the single-frame compressed form, without a recompress job that died
-- (left to the administrator: `vna lifecycle retry`).  Queued or running ones are skipped by
-- the job's dedup key.
SELECT DISTINCT i.object_key
FROM instances i
WHERE i.compression = 'zstd' AND i.object_key NOT LIKE '%.szst' AND i.tier = 'hot'
  AND NOT EXISTS (SELECT 1 FROM jobs j
                  WHERE j.kind = 'recompress' AND j.state = 'dead'
                    AND j.dedup_key = 'recompress:' || i.object_key)
LIMIT $1;

-- name: upkeep_take_backlog
-- The next instances listed for a layout, marked queued (their jobs go in the same
-- transaction).
UPDATE layout_backlog SET queued = true
WHERE instance_fk IN (SELECT instance_fk FROM layout_backlog WHERE NOT queued
                      ORDER BY instance_fk LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING instance_fk;

-- name: upkeep_layout_instance
-- The instance a layout job is for, as the retriever reads it; none when deleted since.
SELECT i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.object_key, i.compression, i.tier,
       i.size, i.sha256, se.series_uid, st.study_uid,
       EXISTS (SELECT 1 FROM object_layouts l WHERE l.sha256 = i.sha256) AS has_layout
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
WHERE i.id = $1;

-- name: upkeep_backlog_done
DELETE FROM layout_backlog WHERE instance_fk = $1;

-- name: upkeep_status
-- What is left: `vna lifecycle status`.
SELECT (SELECT count(*) FROM instances
        WHERE compression = 'zstd' AND object_key NOT LIKE '%.szst') AS single_frame_objects,
       (SELECT count(*) FROM layout_backlog) AS layouts_missing,
       (SELECT count(*) FROM layout_backlog WHERE queued) AS layouts_queued;
