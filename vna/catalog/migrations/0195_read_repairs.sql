-- Reads that heal themselves (issue 21): a copy of an object that a retrieve found missing,
-- unreadable or not the catalogued content on a store.  One open row per (store, object) until
-- the `repair-object` job (lifecycle.dr.read_repair) put a verified copy back or found the copy
-- intact after all; readers of every node go to a replica first for an object with an open
-- row, so a retry after a response cut short is served at once.
CREATE TABLE read_repairs (
    id            bigserial PRIMARY KEY,
    store         text NOT NULL,
    object_key    text NOT NULL,
    -- What the read found: missing | corrupt | unreadable (vna.recovery.policy.Outcome).
    outcome       text NOT NULL,
    detail        text NOT NULL DEFAULT '',
    -- The store that served the read instead (NULL: none could, the read failed).
    served_from   text,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    -- Reads that found it damaged while the row was open.
    detections    integer NOT NULL DEFAULT 1,
    resolved_at   timestamptz,
    -- repaired (copied back from repaired_from) | intact (read back verified: a passing
    -- failure of the store) | gone (no instance uses the object any more)
    resolution    text,
    repaired_from text
);
CREATE UNIQUE INDEX read_repairs_open ON read_repairs (store, object_key)
    WHERE resolved_at IS NULL;
CREATE INDEX read_repairs_detected ON read_repairs (detected_at);
