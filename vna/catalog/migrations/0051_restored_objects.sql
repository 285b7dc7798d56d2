-- Until when a restored copy of an instance's object in an offline tier (S3 GLACIER,
-- DEEP_ARCHIVE) stays readable, as the restore job last saw it complete; NULL: not restored.
-- QIDO-RS and C-FIND report Instance Availability (0008,0056) from it and the tier without
-- asking the store (PS3.4 C.4.1.1.3.2).  A move to another tier clears it.
ALTER TABLE instances ADD COLUMN restored_until timestamptz;
