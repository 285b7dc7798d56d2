-- Pending patient links: evidence that two patient identities (PatientID + issuer) are one
-- person, found by the archive rather than declared by an administrator.  A second source
-- sending an instance identical (same SOP Instance UID, same data set) to one filed under
-- another identity shows that both hospitals hold the same images of their patient.  Nothing
-- is re-filed: the instance stays under the identity it was first filed under, and an
-- administrator accepts the link (it becomes a patient_links row) or rejects it.
CREATE TABLE pending_patient_links (
    id            bigserial PRIMARY KEY,
    patient_id_a  text NOT NULL,
    issuer_a      text NOT NULL,
    patient_id_b  text NOT NULL,
    issuer_b      text NOT NULL,
    -- The first shared instance seen, the source that sent it second, and how many times a
    -- shared instance was received since (resends included).
    sop_uid       text NOT NULL,
    study_uid     text NOT NULL,
    source        text NOT NULL,
    sightings     integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'accepted', 'rejected')),
    decided_by    text,
    decided_at    timestamptz,
    -- The patient_links row an acceptance made (no foreign key, like patient_links itself:
    -- the history outlives the rows it names).
    link_fk       bigint,
    -- Canonical order (a < b), as in patient_links, so that a pair is one row.
    CHECK ((patient_id_a, issuer_a) < (patient_id_b, issuer_b))
);
-- One open proposal per pair; a rejected pair is not proposed again (see record_pending_link).
CREATE UNIQUE INDEX pending_patient_links_open
    ON pending_patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b)
    WHERE state = 'pending';
CREATE INDEX pending_patient_links_pair
    ON pending_patient_links (patient_id_a, issuer_a, patient_id_b, issuer_b);
