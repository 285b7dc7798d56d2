-- Web console sessions (issue 22, vna.ui).  Kept in the catalogue rather than in a signed
-- cookie so that signing out (or an administrator) ends a session at once, every server
-- process of a deployment sees the same sessions, and no key has to be shared between them.
-- Only SHA-256 digests are stored: the session cookie and the API token it was opened with
-- are never in the catalogue, so a catalogue backup holds no usable credential.
CREATE TABLE console_sessions (
    session_sha256  text PRIMARY KEY,
    -- The API token signed in with; every request resolves it again (a revoked or expired
    -- token ends the session within [http] token_cache_seconds).
    token_sha256    text NOT NULL,
    actor           text NOT NULL,
    -- The CSRF token of the session's forms (a random value, compared in constant time).
    csrf            text NOT NULL,
    origin          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
