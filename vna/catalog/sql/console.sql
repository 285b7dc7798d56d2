-- Web console sessions (vna.catalog.console_sessions, migration 0200).

-- name: console_session_insert
INSERT INTO console_sessions (session_sha256, token_sha256, actor, csrf, origin, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6));

-- name: console_session_insert_oidc
-- An OIDC user's session (migration 0217): no token; the principal the ID token mapped to.
INSERT INTO console_sessions (session_sha256, actor, csrf, origin, expires_at, oidc_issuer,
                              oidc_subject, display_name, role, read_sources)
VALUES ($1, $2, $3, $4, now() + make_interval(mins => $5), $6, $7, $8, $9, $10);

-- name: console_session_use
-- A live session (not past its expiry, used within the idle limit), marked as used now.
UPDATE console_sessions SET last_seen = now()
WHERE session_sha256 = $1
  AND expires_at > now()
  AND last_seen > now() - make_interval(mins => $2)
RETURNING token_sha256, actor, csrf, expires_at, oidc_subject, display_name, role,
          read_sources;

-- name: console_session_delete
DELETE FROM console_sessions WHERE session_sha256 = $1 RETURNING actor;

-- name: console_session_purge
-- Sessions past their expiry or idle limit: nothing can use them any more.
DELETE FROM console_sessions
WHERE expires_at <= now() OR last_seen <= now() - make_interval(mins => $1);

-- name: console_oidc_state_insert
-- A sign-in sent to the provider; older unfinished ones are forgotten on the way.
WITH purged AS (DELETE FROM console_oidc_states WHERE expires_at <= now())
INSERT INTO console_oidc_states (state_sha256, browser_sha256, nonce, code_verifier,
                                 redirect_url, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6));

-- name: console_oidc_state_take
-- The sign-in this state began, if it is still live; taken once (deleted), so a replayed
-- callback finds nothing.
DELETE FROM console_oidc_states WHERE state_sha256 = $1
RETURNING browser_sha256, nonce, code_verifier, redirect_url, expires_at > now() AS live;

-- name: console_study_storage
-- Per series of study $1: the served instances, their bytes as received and as stored, their
-- tiers and compressions, whether any has pixel data (a thumbnail), and per replica store of
-- $2 how many have a verified copy there (replicas.object_key is the instance's object).
SELECT se.series_uid,
       count(i.id)::int AS instances,
       coalesce(sum(i.size), 0)::bigint AS size,
       coalesce(sum(i.stored_size), 0)::bigint AS stored_size,
       coalesce(array_agg(DISTINCT i.tier) FILTER (WHERE i.id IS NOT NULL), '{}') AS tiers,
       coalesce(array_agg(DISTINCT i.compression) FILTER (WHERE i.id IS NOT NULL), '{}')
           AS compressions,
       coalesce(bool_or(i.has_pixel_data), false) AS has_pixel_data,
       (SELECT coalesce(array_agg(n ORDER BY ord), '{}')
        FROM unnest($2::text[]) WITH ORDINALITY AS s(store, ord)
        CROSS JOIN LATERAL (
            SELECT count(*)::int AS n
            FROM instances i2
            WHERE i2.series_fk = se.id AND i2.rejection_fk IS NULL
              AND EXISTS (SELECT 1 FROM replicas r
                          WHERE r.store = s.store AND r.object_key = i2.object_key)
        ) c) AS replicated
FROM studies st
JOIN series se ON se.study_fk = st.id
LEFT JOIN instances i ON i.series_fk = se.id AND i.rejection_fk IS NULL
WHERE st.study_uid = $1
GROUP BY se.id, se.series_uid, se.series_number
ORDER BY se.series_number NULLS LAST, se.id;

-- name: console_patient_by_pk
-- A patient by its row id: console URLs name patients by it, not by their PatientID (patient
-- identifiers stay out of URLs, browser history and proxy logs).
SELECT p.id, p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex,
       (SELECT count(*) FROM studies s WHERE s.patient_fk = p.id)::int AS studies
FROM patients p
WHERE p.id = $1;

-- name: console_instance_history
-- The change log of the instances $1 (a study's), summed up per action: how many instances,
-- first and last time (through the sop_uid index: change_log has none by study).
SELECT action, count(DISTINCT sop_uid)::int AS instances, min(logged_at) AS first_at,
       max(logged_at) AS last_at
FROM change_log
WHERE sop_uid = ANY($1::text[])
GROUP BY action
ORDER BY min(logged_at), action;
