-- Federation: normalised objects, versions of an instance, quarantined conflicts, cross-site
-- patient links and reversible patient corrections.
--
-- The new tables name instances and patients by their identifiers or row ids without foreign
-- keys to the core tables, so that the history they keep outlives (and never blocks) the
-- deletion or truncation of those rows.

-- SHA-256 of the stored object's data set (after the File Meta Information).  It differs from
-- received_sha256 when the archive normalised the instance; a resend of the stored version
-- (from a replica, another archive, a viewer's export) is then recognised as well.
ALTER TABLE instances ADD COLUMN data_set_sha256 text;

-- Earlier versions of an instance: superseded by a newer version from a source whose conflict
-- policy is "replace", by an accepted conflict, or by a patient correction (change_fk).  The
-- object stays, for the audit period and for undoing a correction.
CREATE TABLE instance_versions (
    id               bigserial PRIMARY KEY,
    instance_fk      bigint NOT NULL,
    sop_uid          text NOT NULL,
    series_fk        bigint NOT NULL,
    sop_class_uid    text NOT NULL,
    instance_number  integer,
    transfer_syntax  text NOT NULL,
    sha256           text NOT NULL,
    received_sha256  text NOT NULL,
    data_set_sha256  text,
    size             bigint NOT NULL,
    object_key       text NOT NULL,
    stored_size      bigint NOT NULL,
    compression      text NOT NULL,
    tier             text NOT NULL,
    source           text NOT NULL,
    received_at      timestamptz NOT NULL,
    metadata         jsonb NOT NULL,
    -- replace, conflict-accept or correct
    reason           text NOT NULL,
    change_fk        bigint,
    -- sha256 of the version that took this one's place (undo checks it is still current).
    superseded_by    text NOT NULL,
    superseded_at    timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL
);
CREATE INDEX instance_versions_sop ON instance_versions (sop_uid);
CREATE INDEX instance_versions_change ON instance_versions (change_fk) WHERE change_fk IS NOT NULL;
CREATE INDEX instance_versions_object_key ON instance_versions (object_key);

-- Instances with the SOP Instance UID of an archived one but other content, from a source
-- whose policy is "keep-both": stored, but filed nowhere (not visible in QIDO-RS, WADO-RS,
-- C-FIND or C-MOVE) until an administrator accepts (it replaces the archived version) or
-- discards it.
CREATE TABLE conflicts (
    id              bigserial PRIMARY KEY,
    sop_uid         text NOT NULL,
    study_uid       text NOT NULL,
    series_uid      text NOT NULL,
    source          text NOT NULL,
    actor           text NOT NULL,
    sha256          text NOT NULL,
    received_sha256 text NOT NULL,
    data_set_sha256 text NOT NULL,
    size            bigint NOT NULL,
    object_key      text NOT NULL,
    transfer_syntax text NOT NULL,
    -- The facts the catalogue files an instance by (vna.dicom.parse.InstanceHeader) and the
    -- patient issuer, to file it on acceptance without reading the object again.
    header          jsonb NOT NULL,
    issuer          text NOT NULL,
    metadata        jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'accepted', 'discarded')),
    resolved_at     timestamptz,
    resolved_by     text,
    CONSTRAINT conflicts_version UNIQUE (sop_uid, received_sha256)
);
CREATE INDEX conflicts_open ON conflicts (received_at) WHERE state = 'open';
CREATE INDEX conflicts_object_key ON conflicts (object_key);

-- Two patient identities (PatientID + issuer) declared the same person.  Queries follow the
-- links only when asked.  A removed link stays, for the record.
CREATE TABLE patient_links (
    id           bigserial PRIMARY KEY,
    patient_id_a text NOT NULL,
    issuer_a     text NOT NULL,
    patient_id_b text NOT NULL,
    issuer_b     text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    removed_by   text,
    removed_at   timestamptz,
    -- Stored in a canonical order (a < b) so that a pair is one row whichever way it was given.
    CHECK ((patient_id_a, issuer_a) < (patient_id_b, issuer_b))
);
CREATE UNIQUE INDEX patient_links_active ON patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b)
    WHERE removed_at IS NULL;
CREATE INDEX patient_links_b ON patient_links (patient_id_b, issuer_b) WHERE removed_at IS NULL;

-- Corrections of patient demographics and merges of two patients.  The instances rewritten
-- keep their previous versions (instance_versions.change_fk), and `previous` holds what the
-- catalogue said before, so that a change can be undone.
CREATE TABLE patient_changes (
    id                bigserial PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('update', 'merge')),
    patient_id        text NOT NULL,
    issuer            text NOT NULL,
    target_patient_id text NOT NULL,
    target_issuer     text NOT NULL,
    previous          jsonb NOT NULL,
    changes           jsonb NOT NULL,
    state             text NOT NULL DEFAULT 'applied' CHECK (state IN ('applied', 'undone')),
    actor             text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    undone_by         text,
    undone_at         timestamptz
);
CREATE INDEX patient_changes_patient ON patient_changes (patient_id, issuer);
CREATE INDEX patient_changes_target ON patient_changes (target_patient_id, target_issuer);
