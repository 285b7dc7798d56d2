-- The migration runner's own bookkeeping (vna/catalog/migrate.py).

-- name: migrations_lock
-- Serialises concurrent migrators (several servers starting at once).
SELECT pg_advisory_lock($1);

-- name: migrations_unlock
SELECT pg_advisory_unlock($1);

-- name: migrations_table
-- Before the first migration there is nowhere to record it.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: migrations_applied
SELECT version FROM schema_migrations;

-- name: migration_record
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);
