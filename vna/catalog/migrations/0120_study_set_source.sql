-- Re-attribution (`vna studies set-source`): a study filed under the wrong source (typically
-- DEFAULT, received before sources were declared) re-filed under a declared source, with that
-- source's issuer of patient ID in the catalogue and in every stored object.  Kept with the
-- other corrections (migrations 0020, 0050) so that the same undo serves it; `previous` holds
-- the study's patient and each instance's source before the change.
ALTER TABLE patient_changes DROP CONSTRAINT patient_changes_kind_check;
ALTER TABLE patient_changes ADD CONSTRAINT patient_changes_kind_check
    CHECK (kind IN ('update', 'merge', 'study-update', 'study-move', 'study-set-source'));
