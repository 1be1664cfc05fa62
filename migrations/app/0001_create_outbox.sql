-- The transactional outbox and the consumer ledger, the same in every
-- database (see docs/events.md). Timestamps are UTC `timestamp` columns:
-- Spin cannot read `timestamptz`.
CREATE TABLE outbox (
    seq               bigserial PRIMARY KEY,
    id                uuid NOT NULL UNIQUE,
    source            text NOT NULL,
    event_type        text NOT NULL,
    schema_version    integer NOT NULL,
    aggregate_id      text NOT NULL,
    aggregate_version bigint NOT NULL,
    payload           jsonb NOT NULL,
    created_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    published_at      timestamp
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    source       text NOT NULL,
    event_type   text NOT NULL,
    processed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
