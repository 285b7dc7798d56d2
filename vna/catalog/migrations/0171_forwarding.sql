-- Forwarding (issue 20, [[forward]]): one row per instance change sent (or to be sent) to a
-- destination, its outcome visible per destination (`vna forward status`).  Rows are made by
-- the lifecycle scheduler from the change feed (lifecycle.forwarding), never by ingest, so a
-- forward rule costs ingest nothing; the feed's commit order lets one cursor
-- (lifecycle_state 'forward_cursor') say what has been looked at.
CREATE TABLE forwards (
    id           bigserial PRIMARY KEY,
    destination  text NOT NULL,
    rule         text NOT NULL,
    -- The change feed entry that caused it: a change is forwarded once per destination.
    change_sequence bigint NOT NULL,
    study_uid    text NOT NULL,
    sop_uid      text NOT NULL,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    -- The C-STORE response status of the last attempt; NULL when none came.
    status       integer,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (destination, change_sequence)
);
CREATE INDEX forwards_destination_state ON forwards (destination, state);
