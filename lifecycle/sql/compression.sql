-- Compression at rest (lifecycle/compression.py).

-- name: compression_instance
SELECT object_key, sha256, size, transfer_syntax, compression, tier
FROM instances WHERE id = $1;

-- name: compression_switch
-- The instance now names its compressed object ($2, $3 bytes stored), only if nothing moved or
-- replaced it meanwhile (a tier move of the same study, a new version): still object $4,
-- uncompressed, hot.  NULL when it was.
UPDATE instances SET object_key = $2, compression = 'zstd', stored_size = $3
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
