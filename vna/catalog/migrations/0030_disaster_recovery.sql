-- Disaster recovery: verified copies of objects on replica stores, the store that serves
-- reads and writes (the primary, or a replica after a failover), and the record of drills.

-- One row per object verified on a replica store (by reading it back and comparing its
-- SHA-256).  Keyed by object, not by instance: objects are content-addressed and shared by
-- identical instances, and the copy outlives the instance row (it is deleted from the
-- replica after the instance is deleted).  An instance is protected on a replica when the
-- replica has its current object_key; a compressed instance (a new key) is copied again.
CREATE TABLE replicas (
    store        text NOT NULL,
    object_key   text NOT NULL,
    -- The instance the copy was made for (informative: no foreign key, see above).
    instance_fk  bigint,
    -- Of the object's bytes as stored (the compressed form for a compressed instance).
    sha256       text NOT NULL,
    size         bigint NOT NULL,
    copied_at    timestamptz NOT NULL DEFAULT now(),
    verified_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, object_key)
);
CREATE INDEX replicas_object_key ON replicas (object_key);
CREATE INDEX replicas_verified ON replicas (store, verified_at);

-- Which store serves reads and writes.  One row; every server process reads it when it opens
-- the archive, so all of them agree after `vna dr failover` / `vna dr failback`.
CREATE TABLE dr_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    active_store   text NOT NULL DEFAULT 'primary',
    -- When the active store last changed, and by whom (NULL: never).
    changed_at     timestamptz,
    changed_by     text
);
INSERT INTO dr_state DEFAULT VALUES;

-- Failover drills (`vna dr drill`): what an auditor asks for, kept with the full report.
CREATE TABLE dr_drills (
    id             bigserial PRIMARY KEY,
    store          text NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    actor          text NOT NULL,
    mode           text NOT NULL,
    checked        integer NOT NULL,
    verified       integer NOT NULL,
    defects        integer NOT NULL,
    rpo_seconds    double precision,
    rto_seconds    double precision,
    lost_instances integer NOT NULL,
    lost_bytes     bigint NOT NULL,
    report         jsonb NOT NULL
);
CREATE INDEX dr_drills_store ON dr_drills (store, started_at DESC);
