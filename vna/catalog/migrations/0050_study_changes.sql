-- Study-level corrections and study moves, kept with the patient corrections and merges
-- (migration 0020) so that one undo mechanism serves all of them.
--   study-update: study attributes (AccessionNumber, StudyDescription...) corrected in the
--                 catalogue and in every stored object of the study;
--   study-move:   a study filed under the wrong patient moved to the right one (IHE IOCM
--                 patient reconciliation), its objects rewritten with that patient's identity.
-- patient_id/issuer name the study's patient before the change, target_* after it.
ALTER TABLE patient_changes DROP CONSTRAINT patient_changes_kind_check;
ALTER TABLE patient_changes ADD CONSTRAINT patient_changes_kind_check
    CHECK (kind IN ('update', 'merge', 'study-update', 'study-move'));
ALTER TABLE patient_changes ADD COLUMN study_uid text;
CREATE INDEX patient_changes_study ON patient_changes (study_uid) WHERE study_uid IS NOT NULL;
