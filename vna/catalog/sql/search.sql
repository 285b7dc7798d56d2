-- Named queries of QIDO-RS and C-FIND (PS3.18 10.6, PS3.4 C.6).
--
-- The search_{studies,series,instances} blocks carry a {where} marker that vna/catalog/search.py
-- replaces with a conjunction of fixed fragments; every value in it is a bound parameter
-- numbered from $3.  $1 is the row limit and $2 the offset.  The order is deterministic: newest
-- study first, then series and instance numbers, with the row id breaking ties.
--
-- Only visible instances are counted, matched or described (`rejection_fk IS NULL`: not
-- withdrawn by an IOCM rejection note, migration 0160); vna/catalog/search.py adds the same
-- rule to {where}: a study or series is found while it has a visible instance.

-- name: search_studies
SELECT st.id AS study_pk, st.study_uid, st.study_date, st.study_time, st.accession_number,
       st.study_id, st.study_description, st.referring_physician,
       p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
FROM studies st
JOIN patients p ON p.id = st.patient_fk
WHERE {where}
ORDER BY st.study_date DESC NULLS LAST, st.id
LIMIT $1 OFFSET $2;

-- name: search_series
SELECT se.id AS series_pk, se.series_uid, se.modality, se.series_number, se.series_description,
       st.id AS study_pk, st.study_uid, st.study_date, st.study_time, st.accession_number,
       st.study_id, st.study_description, st.referring_physician,
       p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
FROM series se
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE {where}
ORDER BY st.study_date DESC NULLS LAST, st.id, se.series_number NULLS LAST, se.id
LIMIT $1 OFFSET $2;

-- name: search_instances
SELECT i.id AS instance_pk, i.sop_uid, i.sop_class_uid, i.instance_number, i.rows, i.columns,
       i.number_of_frames, i.tier, coalesce(i.restored_until > now(), false) AS restored,
       se.id AS series_pk, se.series_uid, se.modality, se.series_number, se.series_description,
       st.id AS study_pk, st.study_uid, st.study_date, st.study_time, st.accession_number,
       st.study_id, st.study_description, st.referring_physician,
       p.patient_id, p.issuer, p.patient_name, p.birth_date, p.sex
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk
WHERE {where}
ORDER BY st.study_date DESC NULLS LAST, st.id, se.series_number NULLS LAST, se.id,
         i.instance_number NULLS LAST, i.id
LIMIT $1 OFFSET $2;

-- name: search_study_aggregates
-- PS3.18 Table 10.6.3-3: Number of Study Related Series/Instances, Modalities in Study; and
-- for Instance Availability the tiers of the instances without a readable restored copy
-- (migration 0051), in the same pass over the instances.
SELECT st.id AS study_pk,
       (SELECT count(*) FROM series se WHERE se.study_fk = st.id AND EXISTS (
            SELECT 1 FROM instances vi WHERE vi.series_fk = se.id AND vi.rejection_fk IS NULL))
           AS series_count,
       agg.instance_count, agg.tiers,
       ARRAY(SELECT DISTINCT se.modality FROM series se
             WHERE se.study_fk = st.id AND se.modality <> '' AND EXISTS (
                 SELECT 1 FROM instances vi
                 WHERE vi.series_fk = se.id AND vi.rejection_fk IS NULL)
             ORDER BY se.modality) AS modalities
FROM studies st
CROSS JOIN LATERAL (
    SELECT count(*) AS instance_count,
           coalesce(array_agg(DISTINCT i.tier) FILTER (
               WHERE i.restored_until IS NULL OR i.restored_until <= now()), '{}') AS tiers
    FROM series se JOIN instances i ON i.series_fk = se.id
    WHERE se.study_fk = st.id AND i.rejection_fk IS NULL
) agg
WHERE st.id = ANY($1::bigint[]);

-- name: search_series_aggregates
-- PS3.18 Table 10.6.3-4: Number of Series Related Instances; and the tiers, as for studies.
SELECT se.id AS series_pk, agg.instance_count, agg.tiers
FROM series se
CROSS JOIN LATERAL (
    SELECT count(*) AS instance_count,
           coalesce(array_agg(DISTINCT i.tier) FILTER (
               WHERE i.restored_until IS NULL OR i.restored_until <= now()), '{}') AS tiers
    FROM instances i
    WHERE i.series_fk = se.id AND i.rejection_fk IS NULL
) agg
WHERE se.id = ANY($1::bigint[]);

-- name: search_issuers_of
-- The issuers a PatientID is known under (includelinked without IssuerOfPatientID).
SELECT issuer FROM patients WHERE patient_id = $1 ORDER BY issuer;

-- name: search_study_metadata
-- The header of a study's first instance, reduced to the attributes in $2 (NULL: all).
-- The representative is chosen first so that only its header is taken apart.
SELECT s.pk AS pk,
       CASE WHEN $2::text[] IS NULL THEN rep.metadata
            ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                  FROM jsonb_each(rep.metadata) AS e
                  WHERE e.key = ANY($2::text[])) END AS metadata
FROM unnest($1::bigint[]) AS s(pk)
CROSS JOIN LATERAL (
    SELECT i.metadata
    FROM series se
    JOIN instances i ON i.series_fk = se.id
    WHERE se.study_fk = s.pk AND i.rejection_fk IS NULL
    ORDER BY se.series_number NULLS LAST, se.id, i.instance_number NULLS LAST, i.id
    LIMIT 1
) AS rep;

-- name: search_series_metadata
SELECT s.pk AS pk,
       CASE WHEN $2::text[] IS NULL THEN rep.metadata
            ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                  FROM jsonb_each(rep.metadata) AS e
                  WHERE e.key = ANY($2::text[])) END AS metadata
FROM unnest($1::bigint[]) AS s(pk)
CROSS JOIN LATERAL (
    SELECT i.metadata
    FROM instances i
    WHERE i.series_fk = s.pk AND i.rejection_fk IS NULL
    ORDER BY i.instance_number NULLS LAST, i.id
    LIMIT 1
) AS rep;

-- name: search_instance_metadata
SELECT i.id AS pk,
       CASE WHEN $2::text[] IS NULL THEN i.metadata
            ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
                  FROM jsonb_each(i.metadata) AS e
                  WHERE e.key = ANY($2::text[])) END AS metadata
FROM instances i
WHERE i.id = ANY($1::bigint[]);

-- name: search_patient_counts
-- PS3.4 Table C.6-1: Number of Patient Related Studies, Series and Instances, per identity
-- ($1 patient IDs and $2 issuers, pairwise).
SELECT p.patient_id, p.issuer,
       (SELECT count(DISTINCT st.id) FROM studies st JOIN series se ON se.study_fk = st.id
        JOIN instances i ON i.series_fk = se.id
        WHERE st.patient_fk = p.id AND i.rejection_fk IS NULL) AS studies,
       (SELECT count(DISTINCT se.id) FROM studies st JOIN series se ON se.study_fk = st.id
        JOIN instances i ON i.series_fk = se.id
        WHERE st.patient_fk = p.id AND i.rejection_fk IS NULL) AS series,
       (SELECT count(*) FROM studies st JOIN series se ON se.study_fk = st.id
        JOIN instances i ON i.series_fk = se.id
        WHERE st.patient_fk = p.id AND i.rejection_fk IS NULL) AS instances
FROM unnest($1::text[], $2::text[]) AS k(patient_id, issuer)
JOIN patients p ON p.patient_id = k.patient_id AND p.issuer = k.issuer;

-- name: scope_linked_identities
-- The identities of other issuers linked, directly or through other links, to an identity of
-- issuer $1: what a source with query_scope = "linked" reaches beyond its own issuer's
-- (vna.security.query_scope).  Links are few; the walk starts from those touching the issuer.
WITH RECURSIVE reach (patient_id, issuer) AS (
    SELECT v.patient_id, v.issuer
    FROM patient_links l
    CROSS JOIN LATERAL (VALUES (l.patient_id_a, l.issuer_a),
                               (l.patient_id_b, l.issuer_b)) AS v (patient_id, issuer)
    WHERE l.removed_at IS NULL AND (l.issuer_a = $1::text OR l.issuer_b = $1::text)
    UNION
    SELECT CASE WHEN l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer
                THEN l.patient_id_b ELSE l.patient_id_a END,
           CASE WHEN l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer
                THEN l.issuer_b ELSE l.issuer_a END
    FROM patient_links l
    JOIN reach r
      ON (l.patient_id_a = r.patient_id AND l.issuer_a = r.issuer)
      OR (l.patient_id_b = r.patient_id AND l.issuer_b = r.issuer)
    WHERE l.removed_at IS NULL
)
SELECT patient_id, issuer FROM reach WHERE issuer <> $1::text ORDER BY patient_id, issuer;
