-- Catalogue schema, version 1.
-- Patient identity is (patient_id, issuer): the same PatientID from two hospitals is two people.

CREATE TABLE patients (
    id            bigserial PRIMARY KEY,
    patient_id    text NOT NULL,
    issuer        text NOT NULL DEFAULT '',
    patient_name  text NOT NULL DEFAULT '',
    birth_date    text NOT NULL DEFAULT '',
    sex           text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT patients_identity UNIQUE (patient_id, issuer)
);

CREATE TABLE studies (
    id                  bigserial PRIMARY KEY,
    study_uid           text NOT NULL UNIQUE,
    patient_fk          bigint NOT NULL REFERENCES patients (id),
    study_date          date,
    study_time          text NOT NULL DEFAULT '',
    accession_number    text NOT NULL DEFAULT '',
    study_id            text NOT NULL DEFAULT '',
    study_description   text NOT NULL DEFAULT '',
    referring_physician text NOT NULL DEFAULT '',
    source              text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_patient ON studies (patient_fk);
CREATE INDEX studies_date ON studies (study_date);
CREATE INDEX studies_accession ON studies (accession_number);

CREATE TABLE series (
    id                 bigserial PRIMARY KEY,
    series_uid         text NOT NULL UNIQUE,
    study_fk           bigint NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    modality           text NOT NULL DEFAULT '',
    series_number      integer,
    series_description text NOT NULL DEFAULT '',
    body_part          text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study ON series (study_fk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instances (
    id               bigserial PRIMARY KEY,
    sop_uid          text NOT NULL UNIQUE,
    series_fk        bigint NOT NULL REFERENCES series (id) ON DELETE CASCADE,
    sop_class_uid    text NOT NULL,
    instance_number  integer,
    transfer_syntax  text NOT NULL,
    rows             integer,
    columns          integer,
    number_of_frames integer,
    has_pixel_data   boolean NOT NULL DEFAULT false,
    -- sha256 of the stored (normalised) Part 10 file, which the object key is derived from;
    -- received_sha256 of the data set the source sent (the bytes after the File Meta
    -- Information, PS3.10 7.1), which a resend is recognised by: senders rewrite the file
    -- meta header (implementation name, group length) when they resend the same instance.
    sha256           text NOT NULL,
    received_sha256  text NOT NULL,
    size             bigint NOT NULL,
    object_key       text NOT NULL,
    tier             text NOT NULL DEFAULT 'hot',
    compression      text NOT NULL DEFAULT 'none',
    stored_size      bigint NOT NULL,
    source           text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_accessed_at timestamptz,
    metadata         jsonb NOT NULL
);
CREATE INDEX instances_series ON instances (series_fk);
CREATE INDEX instances_object_key ON instances (object_key);

-- Lifecycle queue.  Ingest writes follow-up work here in its own transaction (an outbox),
-- so no acknowledged instance can miss replication or compression.
CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 8,
    run_after    timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_at    timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_ready ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_state ON jobs (state, kind);

-- Who did what to which study, when, and how it ended.  Append-only.
CREATE TABLE audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    origin      text NOT NULL DEFAULT '',
    action      text NOT NULL,
    outcome     text NOT NULL DEFAULT 'success',
    patient_id  text,
    issuer      text,
    study_uid   text,
    series_uid  text,
    sop_uid     text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_study ON audit (study_uid);
CREATE INDEX audit_patient ON audit (patient_id, issuer);
