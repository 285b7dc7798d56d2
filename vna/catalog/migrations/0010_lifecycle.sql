-- Lifecycle engine: job de-duplication and leases, per-study retention, legal holds,
-- retention reviews and the engine's own bookkeeping.

-- A job that must not be queued twice (a restore of one object, a tier move of one study)
-- carries a dedup key; while one such job is queued or running, enqueueing another is a no-op.
ALTER TABLE jobs ADD COLUMN dedup_key text;
CREATE UNIQUE INDEX jobs_dedup ON jobs (dedup_key) WHERE state IN ('queued', 'running');
-- Finding jobs whose worker stopped renewing its lease.
CREATE INDEX jobs_running_lease ON jobs (locked_at) WHERE state = 'running';
-- Dead letters, newest first, for `vna lifecycle status`.
CREATE INDEX jobs_dead ON jobs (updated_at DESC) WHERE state = 'dead';

-- Retention of each study as computed by the rules in force (`rules_fingerprint`).
-- retain_until NULL: kept indefinitely (no rule applies, or a fact the rule needs is missing:
-- never delete early).  A study is due for deletion the day after retain_until.
CREATE TABLE study_retention (
    study_fk          bigint PRIMARY KEY REFERENCES studies (id) ON DELETE CASCADE,
    rule              text NOT NULL DEFAULT '',
    rule_fingerprint  text NOT NULL DEFAULT '',
    retain_until      date,
    basis             text NOT NULL DEFAULT '',
    rules_fingerprint text NOT NULL,
    computed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX study_retention_until ON study_retention (retain_until);
CREATE INDEX study_retention_rules ON study_retention (rules_fingerprint);

-- Legal holds name the patient (PatientID + issuer: identity) or the study by its identifiers,
-- not by row ids, so that they read the same in an export and survive a catalogue rebuild.
-- Released holds stay, for the record.
CREATE TABLE legal_holds (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('patient', 'study')),
    patient_id  text,
    issuer      text,
    study_uid   text,
    reason      text NOT NULL,
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now(),
    released_by text,
    released_at timestamptz,
    CHECK ((scope = 'patient' AND patient_id IS NOT NULL AND issuer IS NOT NULL)
           OR (scope = 'study' AND study_uid IS NOT NULL))
);
CREATE INDEX legal_holds_study ON legal_holds (study_uid) WHERE released_at IS NULL;
CREATE INDEX legal_holds_patient ON legal_holds (patient_id, issuer) WHERE released_at IS NULL;

-- A retention review: the studies due for deletion as of a date, saved so that an approval
-- deletes exactly what was reviewed.
CREATE TABLE retention_reviews (
    id                bigserial PRIMARY KEY,
    as_of             date NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL,
    rules_fingerprint text NOT NULL,
    state             text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'approved')),
    approved_by       text,
    approved_at       timestamptz
);

-- One row per study listed.  Identifiers are copied (not referenced) because the study rows
-- go once the deletion is done, and the review must still say what was deleted.
--   state: due (listed for deletion), held (held back by a legal hold, never deleted by this
--   review), pending (approved, deleted when due), deleted, skipped (see outcome).
CREATE TABLE retention_review_items (
    review_fk         bigint NOT NULL REFERENCES retention_reviews (id) ON DELETE CASCADE,
    study_fk          bigint NOT NULL,
    study_uid         text NOT NULL,
    patient_id        text NOT NULL,
    issuer            text NOT NULL,
    patient_name      text NOT NULL,
    accession_number  text NOT NULL,
    study_date        date,
    study_description text NOT NULL,
    modalities        text[] NOT NULL,
    source            text NOT NULL,
    rule              text NOT NULL,
    rule_fingerprint  text NOT NULL,
    retain_until      date NOT NULL,
    basis             text NOT NULL,
    instances         integer NOT NULL,
    max_instance_id   bigint NOT NULL,
    bytes             bigint NOT NULL,
    stored_bytes      bigint NOT NULL,
    hold              text,
    state             text NOT NULL CHECK (state IN ('due', 'held', 'pending', 'deleted', 'skipped')),
    outcome           text,
    done_at           timestamptz,
    PRIMARY KEY (review_fk, study_fk)
);
CREATE INDEX retention_review_items_pending ON retention_review_items (retain_until)
    WHERE state = 'pending';

-- Small key/value state of the engine (when tiering was last evaluated...).
CREATE TABLE lifecycle_state (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
