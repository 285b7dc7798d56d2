-- Forwarding held per study (issue 20, [[forward]] delay_seconds): a rule with a delay sends
-- a study's instances together once the study has been quiet that long, on one association.
-- The job finds a destination's queued instances of one study, and the scheduler the studies
-- with instances waiting, through this index.
CREATE INDEX forwards_queued_study ON forwards (destination, study_uid, id)
    WHERE state = 'queued';
-- Sent instances are forgotten with the change feed entries that caused them (the scheduler,
-- every step): found through this index, not by reading the table.
CREATE INDEX forwards_sent_at ON forwards (updated_at) WHERE state = 'sent';
