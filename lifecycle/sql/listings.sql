-- The web console's lists (lifecycle.listings): one page at a time, newest or soonest first.

-- name: listing_reviews
-- Retention reviews, newest first, with their items counted by state.
SELECT r.id, r.as_of, r.state, r.created_at, r.created_by, r.approved_by, r.approved_at,
       count(i.*) FILTER (WHERE i.state = 'due') AS due,
       count(i.*) FILTER (WHERE i.state = 'held') AS held,
       count(i.*) FILTER (WHERE i.state = 'pending') AS pending,
       count(i.*) FILTER (WHERE i.state = 'deleted') AS deleted,
       count(i.*) FILTER (WHERE i.state = 'skipped') AS skipped,
       coalesce(sum(i.bytes) FILTER (WHERE i.state <> 'held'), 0)::bigint AS due_bytes
FROM retention_reviews r
LEFT JOIN retention_review_items i ON i.review_fk = r.id
WHERE r.id IN (SELECT id FROM retention_reviews ORDER BY id DESC LIMIT $1 OFFSET $2)
GROUP BY r.id
ORDER BY r.id DESC;

-- name: listing_coming_due
-- Studies kept until a date from $1 (NULL: any earlier) to before $2, soonest first; the size
-- is summed for the page's rows only.
SELECT st.study_uid, p.patient_id, p.issuer, p.patient_name, st.study_date,
       st.accession_number, st.source, r.rule, r.retain_until, r.retain_until + 1 AS due_on,
       (SELECT count(*) FROM series se JOIN instances i ON i.series_fk = se.id
        WHERE se.study_fk = st.id) AS instances,
       (SELECT coalesce(sum(i.size), 0) FROM series se JOIN instances i ON i.series_fk = se.id
        WHERE se.study_fk = st.id)::bigint AS bytes
FROM study_retention r
JOIN studies st ON st.id = r.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE ($1::date IS NULL OR r.retain_until >= $1) AND r.retain_until < $2
ORDER BY r.retain_until, st.id
LIMIT $3 OFFSET $4;

-- name: listing_dead_jobs
-- Dead jobs, newest first, with their last error (`vna lifecycle retry` queues one again).
SELECT id, kind, attempts, last_error, updated_at
FROM jobs WHERE state = 'dead'
ORDER BY updated_at DESC, id DESC
LIMIT $1 OFFSET $2;

-- name: listing_drills
-- Past DR drills, newest first (their full reports are read one at a time: drill_report).
SELECT id, store, started_at, finished_at, actor, mode, checked, verified, defects,
       rpo_seconds, rto_seconds, lost_instances, lost_bytes,
       coalesce((report ->> 'passed')::boolean, false) AS passed
FROM dr_drills
ORDER BY started_at DESC, id DESC
LIMIT $1 OFFSET $2;

-- name: drill_report
SELECT id, report FROM dr_drills WHERE id = $1;

-- name: listing_review_groups
-- What a review's report sums up, in one pass: the studies due (every item not held) by rule,
-- by source, by year of the study date, in total; and the held ones in total.
SELECT CASE WHEN grouping(rule) = 0 THEN 'rule'
            WHEN grouping(source) = 0 THEN 'source'
            WHEN grouping(year) = 0 THEN 'year'
            ELSE 'total' END AS kind,
       coalesce(rule, source, year, '') AS key, held,
       count(*) AS studies, coalesce(sum(instances), 0)::bigint AS instances,
       coalesce(sum(bytes), 0)::bigint AS bytes,
       coalesce(sum(stored_bytes), 0)::bigint AS stored_bytes
FROM (SELECT rule, source, state = 'held' AS held,
             coalesce(extract(year FROM study_date)::int::text, 'no study date') AS year,
             instances, bytes, stored_bytes
      FROM retention_review_items WHERE review_fk = $1) i
GROUP BY GROUPING SETS ((held, rule), (held, source), (held, year), (held));

-- name: listing_review_items
-- One page of a review's items, held ($2 true) or not, in the report's order.
SELECT * FROM retention_review_items
WHERE review_fk = $1 AND (state = 'held') = $2
ORDER BY retain_until, study_date NULLS LAST, study_uid
LIMIT $3 OFFSET $4;
