-- Compression at rest (lifecycle/compression.py).

-- name: compression_instance
SELECT object_key, sha256, size, transfer_syntax, compression, tier
FROM instances WHERE id = $1;

-- name: compression_switch
-- The instance now names its compressed object ($2, $3 bytes stored), only if nothing moved or
-- replaced it meanwhile (a tier move of the same study, a new version): still object $4,
-- uncompressed, hot.  NULL when it was.  $5: the form, 'zstd' or an image codec (pixel pack).
UPDATE instances SET object_key = $2, compression = $5, stored_size = $3
WHERE id = $1 AND object_key = $4 AND compression = 'none' AND tier = 'hot'
RETURNING id;

-- name: recompression_instance
-- An instance that keeps a single-frame compressed object (``.zst``), to rewrite it seekable.
SELECT sha256, size, tier FROM instances
WHERE object_key = $1 AND compression = 'zstd'
LIMIT 1;

-- name: recompression_switch
-- Every instance keeping the single-frame object $1 now keeps its seekable form $2 ($3 bytes
-- stored), if still hot and compressed (a tier move meanwhile leaves it as it is).  The
-- instances switched, with what their audit rows name.
WITH moved AS (
    UPDATE instances SET object_key = $2, stored_size = $3
    WHERE object_key = $1 AND compression = 'zstd' AND tier = 'hot'
    RETURNING sop_uid, series_fk
)
SELECT m.sop_uid, se.series_uid, st.study_uid, p.patient_id, p.issuer
FROM moved m
JOIN series se ON se.id = m.series_fk
JOIN studies st ON st.id = se.study_fk
JOIN patients p ON p.id = st.patient_fk;

-- name: record_compression_fallback
-- Why the image codec could not carry instance $1 byte for byte ($2 the codec, $3 the reason):
-- one row per instance (a job run twice counts once), gone with the instance.
INSERT INTO compression_fallbacks (instance_fk, codec, reason, at)
VALUES ($1, $2, $3, now())
ON CONFLICT (instance_fk) DO UPDATE SET codec = excluded.codec, reason = excluded.reason,
    at = excluded.at;

-- name: recode_switch
-- A tier move re-encoded instance $1 (tiering rule codec): it now names object $2 ($3 bytes
-- stored) in form $5, only if it still names object $4 in form $6 (nothing replaced it
-- meanwhile).  NULL when it does not.
UPDATE instances SET object_key = $2, compression = $5, stored_size = $3
WHERE id = $1 AND object_key = $4 AND compression = $6
RETURNING id;
