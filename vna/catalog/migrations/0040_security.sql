-- API tokens, and the audit trail of reads (issue 9: security and reliability).

-- Bearer tokens of the DICOMweb and administration API.  Only the SHA-256 of a token is kept:
-- the token itself is printed once by `vna tokens create` and cannot be recovered from here.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    token_sha256 text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('source', 'reader', 'admin')),
    -- The declared source a 'source' token stores as.
    source       text,
    -- Sources whose studies the token may read (studies.source); NULL: every source.
    read_sources text[],
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   text,
    CHECK ((role = 'source') = (source IS NOT NULL))
);
-- A name is reusable once its token is revoked; the audit trail keeps the history.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- A read (QIDO-RS, WADO-RS, C-FIND, C-MOVE, C-GET) is one audit row however many studies it
-- disclosed; these list them (and their patients' IDs) so that `vna audit --study/--patient`
-- finds the row.  Rows about one study keep using study_uid / patient_id as before.
ALTER TABLE audit ADD COLUMN study_uids text[];
ALTER TABLE audit ADD COLUMN patient_ids text[];
CREATE INDEX audit_study_uids ON audit USING gin (study_uids);
CREATE INDEX audit_patient_ids ON audit USING gin (patient_ids);
CREATE INDEX audit_actor ON audit (actor, at);
