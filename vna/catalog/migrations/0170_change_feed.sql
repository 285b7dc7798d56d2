-- The change feed (issue 20): one row per change to an instance (store, replacement,
-- correction, merge, rejection, deletion, tier move), readable in commit order.
--
-- Why two tables and a sequencer instead of one bigserial: a bigserial is handed out when a
-- row is inserted, not when its transaction commits.  With concurrent writers, transaction A
-- can take 9, B take 10, and B commit first: a reader then sees 10, moves its cursor past it,
-- and never sees 9.  So writers put their rows in change_pending (an outbox, written in the
-- same transaction as the change, so a change and its row commit or vanish together), and a
-- sequencer (vna_sequence_changes) moves the committed ones into change_log, numbering them
-- as it goes.  Only one sequencer runs at a time (the row lock on change_sequencer), and each
-- one sees every pending row that committed before it got the lock; the numbers it hands out
-- follow all numbers handed out before.  So any reader that sees sequence N sees everything
-- below N as well: sequence order is commit order, on any number of archive nodes sharing
-- the catalogue.  Readers run the sequencer before reading (vna.catalog.changes), and so
-- does the lifecycle scheduler, so the feed trails the catalogue by one reader's poll at
-- most.
CREATE TABLE change_pending (
    id          bigserial PRIMARY KEY,
    action      text NOT NULL,
    study_uid   text NOT NULL,
    series_uid  text NOT NULL,
    sop_uid     text NOT NULL,
    source      text NOT NULL DEFAULT '',
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE change_log (
    sequence    bigint PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('create', 'update', 'delete', 'reject', 'tier')),
    study_uid   text NOT NULL,
    series_uid  text NOT NULL,
    sop_uid     text NOT NULL,
    -- The study's source when the change was made: what a reader restricted to some sources
    -- (read_sources) may see, as QIDO-RS filters on the study's source.
    source      text NOT NULL DEFAULT '',
    -- When the change's transaction ran.
    changed_at  timestamptz NOT NULL,
    -- When the entry entered the feed: never decreasing with sequence, so a time window a
    -- reader has read to its end (endTime in the past) gains no entries later.  This is the
    -- feed's Timestamp.
    logged_at   timestamptz NOT NULL
);
CREATE INDEX change_log_logged_at ON change_log (logged_at);
-- An entry's State is decided by the later entries of the same instance.
CREATE INDEX change_log_sop_uid ON change_log (sop_uid, sequence);

CREATE TABLE change_sequencer (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_sequence  bigint NOT NULL,
    last_logged_at timestamptz NOT NULL
);
INSERT INTO change_sequencer (last_sequence, last_logged_at) VALUES (0, '-infinity');

-- Move committed pending rows into the feed, numbered in the order they were written; returns
-- how many.  At most p_max per call, so a large backlog is sequenced in bounded transactions.
CREATE FUNCTION vna_sequence_changes(p_max integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    last_at timestamptz;
    at timestamptz;
    n bigint;
BEGIN
    -- Waits for a running sequencer to commit.  The statements below take a new snapshot
    -- (READ COMMITTED), which sees what that sequencer and every writer before it committed.
    SELECT last_sequence, last_logged_at INTO last, last_at FROM change_sequencer FOR UPDATE;
    at := greatest(clock_timestamp(), last_at);
    WITH moved AS (
        DELETE FROM change_pending
        WHERE id IN (SELECT id FROM change_pending ORDER BY id LIMIT p_max)
        RETURNING *
    )
    INSERT INTO change_log (sequence, action, study_uid, series_uid, sop_uid, source,
                            changed_at, logged_at)
    SELECT last + row_number() OVER (ORDER BY m.id), m.action, m.study_uid, m.series_uid,
           m.sop_uid, m.source, m.changed_at, at
    FROM moved m;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE change_sequencer SET last_sequence = last + n, last_logged_at = at;
    END IF;
    RETURN n;
END
$$;

-- Every new instance row writes its 'create' change here, in the same statement: ingest's
-- one-round-trip filing (vna_file_new_instance, and vna_file_new_instances for a STOW-RS
-- request) and the general path both insert through this function, so each new instance gets
-- exactly one row at the cost of one index lookup and one insert, inside its own
-- subtransaction in a group filing (rolled back with it when the instance is not filed).
CREATE OR REPLACE FUNCTION vna_insert_instance(
    p_sop_uid text, p_series_fk bigint, p_sop_class_uid text, p_instance_number integer,
    p_transfer_syntax text, p_rows integer, p_columns integer, p_number_of_frames integer,
    p_has_pixel_data boolean, p_sha256 text, p_received_sha256 text, p_size bigint,
    p_object_key text, p_stored_size bigint, p_source text, p_metadata jsonb,
    p_data_set_sha256 text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO instances (sop_uid, series_fk, sop_class_uid, instance_number, transfer_syntax,
                           rows, columns, number_of_frames, has_pixel_data, sha256,
                           received_sha256, size, object_key, stored_size, source, metadata,
                           data_set_sha256)
    VALUES (p_sop_uid, p_series_fk, p_sop_class_uid, p_instance_number, p_transfer_syntax,
            p_rows, p_columns, p_number_of_frames, p_has_pixel_data, p_sha256,
            p_received_sha256, p_size, p_object_key, p_stored_size, p_source, p_metadata,
            p_data_set_sha256)
    ON CONFLICT (sop_uid) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NOT NULL THEN
        INSERT INTO change_pending (action, study_uid, series_uid, sop_uid, source)
        SELECT 'create', st.study_uid, se.series_uid, p_sop_uid, st.source
        FROM series se JOIN studies st ON st.id = se.study_fk
        WHERE se.id = p_series_fk;
    END IF;
    RETURN new_id;
END
$$;
