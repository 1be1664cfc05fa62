-- Notifications shown to a user. source_event_id ties a notification to the
-- event that caused it, so a redelivered event cannot create a second one.
CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    kind            text NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}'::jsonb,
    source_event_id uuid UNIQUE,
    read_at         timestamp,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX notifications_user ON notifications (user_id, created_at DESC);
