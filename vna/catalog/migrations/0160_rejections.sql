-- IOCM rejection notes (IHE RAD TF-1 Vol. 1 IOCM; PS3.16 CID 7010): a Key Object Selection
-- Document titled "Rejected for Quality Reasons" (113001), "Rejected for Patient Safety
-- Reasons" (113037), "Incorrect Modality Worklist Entry" (113038) or "Data Retention Policy
-- Expired" (113039) withdraws the instances it references from every query and retrieve.
--
-- rejection_notes: one row per note filed (the note itself stays an ordinary instance);
-- rejected_instances: the SOP Instance UIDs it references within its own study, whether the
-- archive holds them yet or not (IOCM: a note may arrive before the instances it rejects).
-- instances.rejection_fk is the one visibility fact the search and retrieve queries test
-- (`i.rejection_fk IS NULL`): set when a note is filed, cleared on undo, and set on arrival of
-- an instance an active note already names (trigger below), so every filing path (the filing
-- functions of 0070/0090, the general path, a catalogue rebuild) follows it.
CREATE TABLE rejection_notes (
    id bigserial PRIMARY KEY,
    note_sop_uid text NOT NULL UNIQUE,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    code text NOT NULL,          -- (code, DCM) of CID 7010, e.g. 113001
    meaning text NOT NULL,
    actor text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    undone_at timestamptz,
    undone_by text,
    undo_reason text
);

CREATE TABLE rejected_instances (
    note_fk bigint NOT NULL REFERENCES rejection_notes (id) ON DELETE CASCADE,
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    PRIMARY KEY (note_fk, sop_uid)
);
CREATE INDEX rejected_instances_sop_uid ON rejected_instances (sop_uid);

ALTER TABLE instances
    ADD COLUMN rejection_fk bigint REFERENCES rejection_notes (id) ON DELETE SET NULL;
-- Few rows are rejected: the admin listing and the retention review find them by this index.
CREATE INDEX instances_rejected ON instances (rejection_fk) WHERE rejection_fk IS NOT NULL;

-- The active note rejecting an instance of SOP Instance UID p_sop_uid filed in series
-- p_series_fk (NULL: none).  Only a note of the instance's own study counts, so a note cannot
-- reach into another study.  Used when an instance arrives and when a note is undone.
CREATE FUNCTION vna_active_rejection(p_sop_uid text, p_series_fk bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT min(r.note_fk)
    FROM rejected_instances r
    JOIN rejection_notes n ON n.id = r.note_fk AND n.undone_at IS NULL
    JOIN series se ON se.id = p_series_fk
    JOIN studies st ON st.id = se.study_fk AND st.study_uid = r.study_uid
    WHERE r.sop_uid = p_sop_uid
$$;

-- An instance arriving after the note that rejects it is filed rejected (IHE RAD TF-3
-- 4.66.4.1.3, RAD-66: instances a received rejection note names are not made available).
-- A note and its instances may arrive at once on two associations: the note takes an
-- exclusive advisory lock per SOP Instance UID it names before recording them
-- (rejection_lock_uids), an arriving instance a shared one on its own UID here, held to the
-- end of each transaction.  Whichever commits second sees the other: the note's apply runs
-- after the instance's commit, or the lookup below (a statement of its own, so a snapshot
-- taken after the lock) after the note's.
CREATE FUNCTION vna_instance_rejection() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(160, hashtext(NEW.sop_uid));
    NEW.rejection_fk := vna_active_rejection(NEW.sop_uid, NEW.series_fk);
    RETURN NEW;
END
$$;

CREATE TRIGGER instances_rejection BEFORE INSERT ON instances
FOR EACH ROW EXECUTE FUNCTION vna_instance_rejection();

-- Rejected instances in a retention review (lifecycle/rejections.py): listed with the note's
-- reason, deleted one by one on approval unless a legal hold covers their study.
CREATE TABLE retention_review_rejections (
    review_fk bigint NOT NULL REFERENCES retention_reviews (id) ON DELETE CASCADE,
    instance_fk bigint NOT NULL,
    sop_uid text NOT NULL,
    study_uid text NOT NULL,
    series_uid text NOT NULL,
    patient_id text NOT NULL,
    issuer text NOT NULL,
    note_fk bigint NOT NULL,
    note_sop_uid text NOT NULL,
    code text NOT NULL,
    meaning text NOT NULL,
    bytes bigint NOT NULL,
    hold text,
    state text NOT NULL CHECK (state IN ('due', 'held', 'deleted', 'skipped')),
    outcome text,
    done_at timestamptz,
    PRIMARY KEY (review_fk, instance_fk)
);
