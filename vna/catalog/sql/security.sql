-- Named queries of API tokens and the audit trail (vna/security).

-- name: token_insert
INSERT INTO api_tokens (name, token_sha256, role, source, read_sources, created_by, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, name, role, source, read_sources, created_at, expires_at;

-- name: token_revoke
UPDATE api_tokens SET revoked_at = now(), revoked_by = $2
WHERE name = $1 AND revoked_at IS NULL
RETURNING id, name, role, source, read_sources;

-- name: token_list
SELECT id, name, role, source, read_sources, created_at, created_by, expires_at, revoked_at,
       revoked_by
FROM api_tokens
WHERE $1::boolean OR revoked_at IS NULL
ORDER BY name, id;

-- name: token_by_digest
-- A live token: not revoked, not expired.
SELECT name, role, source, read_sources, expires_at
FROM api_tokens
WHERE token_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

-- name: token_any
-- Whether a token was ever created: from then on the API requires one, even if all are revoked.
SELECT EXISTS (SELECT 1 FROM api_tokens);

-- name: study_subject
-- The source a study came from (what reader tokens are restricted by) and its patient.
SELECT st.source, p.patient_id, p.issuer
FROM studies st
JOIN patients p ON p.id = st.patient_fk
WHERE st.study_uid = $1;

-- name: audit_search_newest
-- The console's audit search: the same filters as audit_search, newest first, a page at a time.
SELECT id, at, actor, origin, action, outcome, patient_id, issuer, study_uid, series_uid,
       sop_uid, study_uids, patient_ids, detail
FROM audit
WHERE ($1::text IS NULL OR patient_id = $1 OR patient_ids @> ARRAY[$1::text])
  AND ($2::text IS NULL
       OR issuer = $2
       OR detail -> 'patients' @> jsonb_build_array(jsonb_build_array($1::text, $2::text)))
  AND ($3::text IS NULL OR study_uid = $3 OR study_uids @> ARRAY[$3::text])
  AND ($4::text IS NULL OR actor = $4)
  AND ($5::text IS NULL OR action = $5)
  AND ($6::timestamptz IS NULL OR at >= $6)
  AND ($7::timestamptz IS NULL OR at < $7)
ORDER BY at DESC, id DESC
LIMIT $8 OFFSET $9;

-- name: audit_search
-- `vna audit`: every filter optional (NULL), oldest first.
SELECT id, at, actor, origin, action, outcome, patient_id, issuer, study_uid, series_uid,
       sop_uid, study_uids, patient_ids, detail
FROM audit
WHERE ($1::text IS NULL OR patient_id = $1 OR patient_ids @> ARRAY[$1::text])
  AND ($2::text IS NULL
       OR issuer = $2
       OR detail -> 'patients' @> jsonb_build_array(jsonb_build_array($1::text, $2::text)))
  AND ($3::text IS NULL OR study_uid = $3 OR study_uids @> ARRAY[$3::text])
  AND ($4::text IS NULL OR actor = $4)
  AND ($5::text IS NULL OR action = $5)
  AND ($6::timestamptz IS NULL OR at >= $6)
  AND ($7::timestamptz IS NULL OR at < $7)
ORDER BY at, id
LIMIT $8;
