-- Where each frame and each bulk value of a stored object sits (vna.dicom.frames): recorded
-- at ingest, or by the first frame or bulk data retrieve of an object stored before, so that
-- WADO-RS frames and bulk data (PS3.18 10.4) read one byte range of the object instead of
-- the whole of it.  Keyed by the SHA-256 of the uncompressed object (instances.sha256): the
-- layout is a function of those bytes alone, and it survives compression at rest and tier
-- moves, which change the object key but not the bytes a retrieve returns.
CREATE TABLE object_layouts (
    sha256 text PRIMARY KEY,
    layout jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
