-- Email waiting for delivery. The body may hold a secret (a password-reset
-- token), so it is stored sealed (XChaCha20-Poly1305 under a key derived from
-- the component's own key, access::seal); no API returns this table.
CREATE TABLE outgoing_mail (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    to_address  text NOT NULL,
    kind        text NOT NULL,
    subject     text NOT NULL,
    sealed_body bytea NOT NULL,
    status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    sent_at     timestamp
);
CREATE INDEX outgoing_mail_queued ON outgoing_mail (created_at) WHERE status = 'queued';

-- Reset tokens queued before this migration sat in the clear in
-- notifications.data: drop them (the users ask again).
UPDATE notifications SET data = data - 'token' WHERE kind = 'password_reset';
