-- The audit trail's rows, written only through vna/catalog/audit.py.

-- name: record_audit
INSERT INTO audit (actor, origin, action, outcome, patient_id, issuer, study_uid, series_uid,
                   sop_uid, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: record_access
-- One audit row for one request that disclosed PHI (a query or a retrieve): the studies it
-- touched ($6) and the patients they belong to, resolved here so every protocol records them
-- alike, plus identities given directly ($7, $8: a patient level C-FIND has no studies).
-- One patient: patient_id / issuer are set as on every other row; several: patient_ids and
-- detail.patients list them.
WITH touched AS (
    SELECT p.patient_id, p.issuer
    FROM studies st
    JOIN patients p ON p.id = st.patient_fk
    WHERE st.study_uid = ANY($6::text[])
    UNION
    SELECT g.patient_id, g.issuer FROM unnest($7::text[], $8::text[]) AS g(patient_id, issuer)
), people AS (
    SELECT count(*) AS n, min(patient_id) AS patient_id, min(issuer) AS issuer,
           array_agg(patient_id ORDER BY patient_id, issuer) AS ids,
           jsonb_agg(jsonb_build_array(patient_id, issuer) ORDER BY patient_id, issuer)
               AS identities
    FROM touched
)
INSERT INTO audit (actor, origin, action, outcome, patient_id, issuer, study_uid, series_uid,
                   sop_uid, study_uids, patient_ids, detail)
SELECT $1, $2, $3, $4,
       CASE WHEN people.n = 1 THEN people.patient_id END,
       CASE WHEN people.n = 1 THEN people.issuer END,
       CASE WHEN cardinality($6::text[]) = 1 THEN ($6::text[])[1] END,
       $9, $10,
       $6::text[],
       coalesce(people.ids, '{}'::text[]),
       $5::jsonb || jsonb_build_object('patients', coalesce(people.identities, '[]'::jsonb))
FROM people;

-- name: record_security_event
-- An audit row about no study: authentication failures, refusals, token changes.
INSERT INTO audit (actor, origin, action, outcome, detail)
VALUES ($1, $2, $3, $4, $5);
