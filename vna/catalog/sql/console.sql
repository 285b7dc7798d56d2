-- Web console sessions (vna.catalog.console_sessions, migration 0200).

-- name: console_session_insert
INSERT INTO console_sessions (session_sha256, token_sha256, actor, csrf, origin, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6));

-- name: console_session_use
-- A live session (not past its expiry, used within the idle limit), marked as used now.
UPDATE console_sessions SET last_seen = now()
WHERE session_sha256 = $1
  AND expires_at > now()
  AND last_seen > now() - make_interval(mins => $2)
RETURNING token_sha256, actor, csrf, expires_at;

-- name: console_session_delete
DELETE FROM console_sessions WHERE session_sha256 = $1 RETURNING actor;

-- name: console_session_purge
-- Sessions past their expiry or idle limit: nothing can use them any more.
DELETE FROM console_sessions
WHERE expires_at <= now() OR last_seen <= now() - make_interval(mins => $1);
