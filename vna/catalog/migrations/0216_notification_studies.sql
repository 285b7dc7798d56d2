-- Study-stable events (issue 20, [[notifications]] study-stable): per subscription and study,
-- the last instance that arrived (its create entry in the change feed, which passed the
-- subscription's filters) and the last one a study-stable event was made for.  Kept apart
-- from the events themselves so that a subscription to study-stable alone (no create events)
-- still knows when its studies last received an instance, and so that finding the settled
-- studies reads one row per study, not every event.
CREATE TABLE notification_studies (
    target          text NOT NULL,
    study_uid       text NOT NULL,
    last_sequence   bigint NOT NULL,
    last_change     timestamptz NOT NULL,
    -- last_sequence when the last study-stable event was made; NULL: none yet.
    stable_sequence bigint,
    PRIMARY KEY (target, study_uid)
);
-- The studies still waiting to be found stable, by when they last changed.
CREATE INDEX notification_studies_unsettled ON notification_studies (target, last_change)
    WHERE stable_sequence IS DISTINCT FROM last_sequence;
-- Delivered events and settled studies are forgotten with the change feed entries (the
-- scheduler, every step): found through these indexes, not by reading the tables.
CREATE INDEX notifications_delivered_at ON notifications (updated_at) WHERE state = 'delivered';
CREATE INDEX notification_studies_settled ON notification_studies (last_change)
    WHERE stable_sequence = last_sequence;
