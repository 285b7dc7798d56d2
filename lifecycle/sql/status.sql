-- `vna lifecycle status`.

-- name: status_jobs
SELECT kind, state, count(*) AS jobs,
       count(*) FILTER (WHERE state = 'queued' AND run_after <= now()) AS ready,
       min(run_after) FILTER (WHERE state = 'queued') AS next_run
FROM jobs
GROUP BY kind, state
ORDER BY kind, state;

-- name: status_dead
SELECT id, kind, attempts, last_error, updated_at, payload
FROM jobs WHERE state = 'dead'
ORDER BY updated_at DESC
LIMIT $1;

-- name: status_tiers
SELECT tier, count(*) AS instances, coalesce(sum(size), 0)::bigint AS bytes,
       coalesce(sum(stored_size), 0)::bigint AS stored_bytes
FROM instances
GROUP BY tier;

-- name: status_compression
SELECT compression, count(*) AS instances, coalesce(sum(size), 0)::bigint AS bytes,
       coalesce(sum(stored_size), 0)::bigint AS stored_bytes
FROM instances
GROUP BY compression;

-- name: status_retention
SELECT (SELECT count(*) FROM studies) AS studies,
       (SELECT count(*) FROM studies st
        WHERE NOT EXISTS (SELECT 1 FROM study_retention r
                          WHERE r.study_fk = st.id AND r.rules_fingerprint = $2)) AS stale,
       count(*) FILTER (WHERE retain_until IS NULL) AS indefinite,
       count(*) FILTER (WHERE retain_until < $1) AS due,
       count(*) FILTER (WHERE retain_until >= $1 AND retain_until < $1 + 30) AS due_30,
       count(*) FILTER (WHERE retain_until >= $1 AND retain_until < $1 + 90) AS due_90,
       count(*) FILTER (WHERE retain_until >= $1 AND retain_until < $1 + 365) AS due_365
FROM study_retention;

-- name: status_next_dates
SELECT retain_until + 1 AS due_on, count(*) AS studies, array_agg(DISTINCT rule) AS rules
FROM study_retention
WHERE retain_until >= $1
GROUP BY retain_until
ORDER BY retain_until
LIMIT $2;

-- name: status_holds
SELECT count(*) FILTER (WHERE scope = 'patient') AS patients,
       count(*) FILTER (WHERE scope = 'study') AS studies
FROM legal_holds WHERE released_at IS NULL;

-- name: status_reviews
SELECT r.id, r.as_of, r.state, r.created_at, r.created_by,
       count(i.*) FILTER (WHERE i.state = 'due') AS due,
       count(i.*) FILTER (WHERE i.state = 'held') AS held,
       count(i.*) FILTER (WHERE i.state = 'pending') AS pending,
       count(i.*) FILTER (WHERE i.state = 'deleted') AS deleted,
       count(i.*) FILTER (WHERE i.state = 'skipped') AS skipped
FROM retention_reviews r
LEFT JOIN retention_review_items i ON i.review_fk = r.id
GROUP BY r.id
ORDER BY r.id DESC
LIMIT $1;

-- name: status_compression_fallbacks
-- Instances an image codec could not carry byte for byte, by codec and reason.
SELECT codec, reason, count(*) AS instances
FROM compression_fallbacks
GROUP BY codec, reason
ORDER BY count(*) DESC, codec, reason;
