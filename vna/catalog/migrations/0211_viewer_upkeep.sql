-- Viewer upkeep of what was stored before the viewer work (issue 17; lifecycle.viewer_upkeep):
--
-- 1. Instances stored before object layouts were recorded (0130) have none: their metadata
--    lacks the BulkDataURIs of bulk values other than Pixel Data, and their first frame
--    retrieve reads the whole object.  They are listed here once, at this migration, and the
--    lifecycle computes their layouts in the background, deleting each row when done.
--    (Instances stored since are not listed: ingest records the layout of every object that
--    has bulk values, multi-frame or encapsulated pixels; a single native frame's is found
--    by its first retrieve, which reads the object whole anyway.)
CREATE TABLE layout_backlog (
    instance_fk bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    -- A layout job is queued for it (the sweep queues each once; a dead job stays visible
    -- in `vna lifecycle status` and `vna lifecycle retry` runs it again).
    queued      boolean NOT NULL DEFAULT false
);

INSERT INTO layout_backlog (instance_fk)
SELECT i.id FROM instances i
WHERE NOT EXISTS (SELECT 1 FROM object_layouts l WHERE l.sha256 = i.sha256);

-- 2. Objects compressed at rest before the seekable form (one zstandard frame, ``.zst``):
--    a frame of one costs decompressing the whole object until it is rewritten seekable
--    (the ``recompress`` job).  The sweep finds them through this small partial index: no
--    object written since matches it.
CREATE INDEX instances_single_frame_zstd ON instances (id)
WHERE compression = 'zstd' AND object_key NOT LIKE '%.szst';
