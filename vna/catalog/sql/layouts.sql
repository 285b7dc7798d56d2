-- Named queries of object layouts (vna.dicom.frames, migration 0130): frames and bulk data.

-- name: object_layout
SELECT layout FROM object_layouts WHERE sha256 = $1;

-- name: record_object_layout
-- Same bytes, same layout: a second writer (a resend, two first retrieves at once) changes
-- nothing.  A layout of another version is replaced.
INSERT INTO object_layouts (sha256, layout) VALUES ($1, $2::jsonb)
ON CONFLICT (sha256) DO UPDATE SET layout = EXCLUDED.layout, recorded_at = now()
WHERE object_layouts.layout -> 'version' IS DISTINCT FROM EXCLUDED.layout -> 'version';

-- name: record_object_layouts
-- Layouts found by retrieves, written in batches (vna.retrieve): same rule as one.
-- ($2: the layouts as JSON text, one per SHA-256 of $1, each SHA-256 once.)
INSERT INTO object_layouts (sha256, layout)
SELECT u.sha256, u.layout::jsonb FROM unnest($1::text[], $2::text[]) AS u(sha256, layout)
ON CONFLICT (sha256) DO UPDATE SET layout = EXCLUDED.layout, recorded_at = now()
WHERE object_layouts.layout -> 'version' IS DISTINCT FROM EXCLUDED.layout -> 'version';

-- name: bulk_layouts_of_study
-- The layouts of a study's instances that have one, for the BulkDataURIs of its metadata.
SELECT i.sop_uid, i.sha256, l.layout
FROM instances i
JOIN series se ON se.id = i.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN object_layouts l ON l.sha256 = i.sha256
WHERE st.study_uid = $1 AND ($2::text IS NULL OR se.series_uid = $2)
  AND ($3::text IS NULL OR i.sop_uid = $3);
