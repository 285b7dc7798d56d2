-- Forwarding held per study (issue 20, [[forward]] delay_seconds): a rule with a delay sends
-- a study's instances together once the study has been quiet that long, on one association.
-- The job finds a destination's queued instances of one study, and the scheduler the studies
-- with instances waiting, through this index.
CREATE INDEX forwards_queued_study ON forwards (destination, study_uid, id)
    WHERE state = 'queued';
