-- Notifications (issue 20, [[notifications]]): one row per event to deliver to a
-- subscription, made by the lifecycle scheduler from the change feed (lifecycle.notifications).
-- Delivered in id order per (target, study): the order the feed gave them.
CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    target          text NOT NULL,
    -- The feed entry it reports; for study-stable, the study's last entry when it was seen
    -- stable (a study that receives more and settles again is stable again).
    change_sequence bigint NOT NULL,
    event_type      text NOT NULL,
    study_uid       text NOT NULL,
    data            jsonb NOT NULL,
    event_time      timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (target, change_sequence, event_type)
);
CREATE INDEX notifications_pending ON notifications (target, study_uid, id)
    WHERE state = 'pending';
CREATE INDEX notifications_created ON notifications (target, created_at);
