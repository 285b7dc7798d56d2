-- The migration runner's own bookkeeping (vna/catalog/migrate.py).

-- name: migrations_lock
-- Serialises concurrent migrators (several servers starting at once), until the end of the
-- transaction: a session lock may be taken and released on two server connections behind a
-- transaction-mode pooler.
SELECT pg_advisory_xact_lock($1);

-- name: migrations_table
-- Before the first migration there is nowhere to record it.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: migration_is_applied
SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1);

-- name: migrations_applied
SELECT version FROM schema_migrations;

-- name: migration_record
INSERT INTO schema_migrations (version, name) VALUES ($1, $2);
