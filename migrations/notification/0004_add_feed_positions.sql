-- Feed positions are assigned after commit (platform::outbox::sequence), one
-- sequencing transaction at a time, queued on the feed_counter row: a cursor
-- can never pass an event that commits later. The outbox's own seq is taken
-- at insert, before commit, and cannot promise that (a transaction that
-- inserted seq 5 could commit after one that inserted seq 6 was served).
ALTER TABLE outbox ADD COLUMN feed_seq bigint UNIQUE;

CREATE TABLE feed_counter (
    id            integer PRIMARY KEY CHECK (id = 1),
    last_feed_seq bigint NOT NULL
);

-- Events already published keep the positions consumers' cursors point at.
UPDATE outbox SET feed_seq = seq WHERE published_at IS NOT NULL;
INSERT INTO feed_counter (id, last_feed_seq)
    VALUES (1, greatest((SELECT max(seq) FROM outbox), (SELECT max(pruned_through_seq) FROM outbox_retention), 0));

CREATE INDEX outbox_unsequenced ON outbox (seq) WHERE feed_seq IS NULL;
CREATE INDEX outbox_unpublished_feed ON outbox (feed_seq) WHERE published_at IS NULL AND feed_seq IS NOT NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN tx_id;
