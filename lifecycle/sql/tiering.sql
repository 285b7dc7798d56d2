-- Tiering: per-study facts for the rules, moves, restores.

-- name: tiering_facts
-- One pass over the catalogue (hash joins and one aggregate), read through a cursor.
SELECT st.id, st.study_date, (st.created_at AT TIME ZONE 'UTC')::date AS received_date,
       st.source, agg.modalities, agg.last_access, agg.tiers
FROM studies st
JOIN (
    SELECT se.study_fk,
           array_agg(DISTINCT se.modality) FILTER (WHERE se.modality <> '') AS modalities,
           (max(coalesce(i.last_accessed_at, i.received_at)) AT TIME ZONE 'UTC')::date
               AS last_access,
           array_agg(DISTINCT i.tier) AS tiers
    FROM instances i
    JOIN series se ON se.id = i.series_fk
    GROUP BY se.study_fk
) agg ON agg.study_fk = st.id;

-- name: tier_enqueue
INSERT INTO jobs (kind, payload, dedup_key)
SELECT 'tier-study', jsonb_build_object('study_id', s, 'tier', t, 'codec', c), 'tier:' || s
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS x (s, t, c)
ON CONFLICT (dedup_key) WHERE state IN ('queued', 'running') DO NOTHING;

-- name: tier_instances_to_move
-- The study's instances in a tier warmer than the target ($2: the tiers that are).
SELECT i.id, i.object_key, i.tier
FROM instances i
JOIN series se ON se.id = i.series_fk
WHERE se.study_fk = $1 AND i.tier = ANY($2::text[])
ORDER BY i.id;

-- name: tier_record
-- Only if the row still names the object that was moved (compression may have switched it).
-- A restored copy (of the class it leaves) no longer counts.
UPDATE instances SET tier = $2, restored_until = NULL WHERE id = $1 AND object_key = $3;

-- name: restore_target
SELECT tier FROM instances WHERE object_key = $1 LIMIT 1;

-- name: restore_record
-- A restore of the object completed: readable for $2 days (S3 keeps the copy at least that
-- long, to the next midnight UTC), which Instance Availability reports (migration 0051).
UPDATE instances SET restored_until = now() + make_interval(days => $2::int)
WHERE object_key = $1;
