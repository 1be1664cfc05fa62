-- Event delivery (docs/events.md): the feed serves only rows of transactions
-- older than every running one (tx_id), consumers keep a cursor per source,
-- failed events are retried with backoff and parked after a limit, and the
-- retention job records how far it pruned the outbox.
ALTER TABLE outbox ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE TABLE outbox_retention (
    id                 integer PRIMARY KEY CHECK (id = 1),
    pruned_through_seq bigint NOT NULL DEFAULT 0
);

CREATE TABLE event_cursors (
    source     text PRIMARY KEY,
    last_seq   bigint NOT NULL DEFAULT 0,
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE event_failures (
    event_id        uuid PRIMARY KEY,
    source          text NOT NULL,
    event_type      text NOT NULL,
    envelope        jsonb NOT NULL,
    attempts        integer NOT NULL,
    last_error      text NOT NULL,
    next_attempt_at timestamp NOT NULL,
    parked          boolean NOT NULL DEFAULT false,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX event_failures_due ON event_failures (next_attempt_at) WHERE NOT parked;
