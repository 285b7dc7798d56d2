-- Storage Commitment Push Model (PS3.4 Annex J): each N-ACTION request a source made and the
-- N-EVENT-REPORT that answered it.  The request is kept whole (the references) so that a
-- report pending when the archive stopped is still sent after a restart: its
-- `commitment-report` job (queued in the same transaction) reads it from here.
CREATE TABLE commitments (
    id              bigserial PRIMARY KEY,
    -- Transaction UID (0008,1195) chosen by the requester; echoed in the report (PS3.4 J.3.3).
    transaction_uid text NOT NULL,
    source          text NOT NULL,
    -- The requester's calling AE title: the called AE title of a report on a new association.
    calling_ae      text NOT NULL,
    origin          text NOT NULL DEFAULT '',
    requested_at    timestamptz NOT NULL DEFAULT now(),
    -- [dimse] commit_requires_replicas when the request was received.
    required_replicas integer NOT NULL DEFAULT 0,
    -- Waiting for the report to be sent; reported; or undeliverable (no way to reach the
    -- requester: it released the association and no host/port is configured for it).
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'reported', 'undeliverable')),
    -- [{"class": ..., "instance": ...}, ...] in request order.
    refs            jsonb NOT NULL,
    instances       integer NOT NULL,
    committed       integer,
    failed          integer,
    -- {"failed": [{"class", "instance", "reason"}...]} as reported (the committed ones are
    -- the references not listed).
    result          jsonb,
    -- 'same-association' or 'new-association'.
    reported_via    text,
    reported_at     timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text
);
CREATE INDEX commitments_requested ON commitments (requested_at DESC);
CREATE INDEX commitments_pending ON commitments (state) WHERE state <> 'reported';
