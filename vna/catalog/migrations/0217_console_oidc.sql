-- Console sign-in through an OpenID Connect provider (vna.ui.oidc, vna.security.oidc).
--
-- A token session re-resolves its API token on every request (so revoking the token ends it);
-- an OIDC session has no token to resolve, so it keeps the principal the ID token mapped to
-- at sign-in: the subject, the role and the readable sources.  It lasts at most
-- [ui] session_minutes, as a token session does; a user removed from a group at the
-- provider keeps what they had until then, or until they or an administrator end it.
ALTER TABLE console_sessions ALTER COLUMN token_sha256 DROP NOT NULL;
ALTER TABLE console_sessions
    -- The ID token's issuer and `sub`: who the provider says signed in.
    ADD COLUMN oidc_issuer text,
    ADD COLUMN oidc_subject text,
    -- The name shown in the console (the configured name claim, else the subject).
    ADD COLUMN display_name text,
    -- The role and sources [[oidc.groups]] granted (as api_tokens.role, read_sources).
    ADD COLUMN role text,
    ADD COLUMN read_sources text[];
-- Exactly one kind of session: a token's, or an OIDC user's with a console role.
ALTER TABLE console_sessions ADD CONSTRAINT console_sessions_credential CHECK (
    (token_sha256 IS NOT NULL AND oidc_subject IS NULL AND role IS NULL)
    OR (token_sha256 IS NULL AND oidc_subject IS NOT NULL AND oidc_issuer IS NOT NULL
        AND role IN ('reader', 'admin'))
);

-- Sign-ins started and not yet finished: the `state` sent to the provider (its digest is the
-- key, so a catalogue backup holds no usable value), the browser that started it (the
-- digest of a cookie, so that a callback carried to another browser fails), the `nonce` the
-- ID token must carry and the PKCE code verifier (RFC 7636) the token request sends.  Kept in
-- the catalogue, not in memory, because the callback may reach another server process; a
-- row is deleted when its callback arrives, so a replayed state is unknown.
CREATE TABLE console_oidc_states (
    state_sha256    text PRIMARY KEY,
    browser_sha256  text NOT NULL,
    nonce           text NOT NULL,
    code_verifier   text NOT NULL,
    redirect_url    text NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX console_oidc_states_expires ON console_oidc_states (expires_at);
