-- Compression at rest with an image codec (issue 18, lifecycle.compression): an instance the
-- codec could not carry byte for byte (bits above Bits Stored, float pixel data...) is
-- compressed with zstd instead, and why is kept here, one row per instance, for
-- `vna lifecycle status`.  instances.compression takes the image codecs' names too
-- ('jpeg-ls', 'jpeg2000', 'htj2k': the object is a pixel pack, vna.storage.pixelpack).
CREATE TABLE compression_fallbacks (
    instance_fk bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    codec       text NOT NULL,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
