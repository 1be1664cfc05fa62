-- API keys: shown once at creation, stored as sha256 hashes. The prefix
-- (`cpk_` and 8 characters) is stored in clear so users can tell keys
-- apart; it need not be unique, the hash is. A key acts for its user with at most its scopes.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    name         text NOT NULL,
    prefix       text NOT NULL,
    key_hash     text NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    expires_at   timestamp,
    last_used_at timestamp,
    usage_count  bigint NOT NULL DEFAULT 0,
    revoked_at   timestamp,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);

-- Password reset tokens (sha256 only), single use, short-lived.
CREATE TABLE password_resets (
    token_hash text PRIMARY KEY,
    user_id    uuid NOT NULL,
    expires_at timestamp NOT NULL,
    used_at    timestamp,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX password_resets_user ON password_resets (user_id) WHERE used_at IS NULL;

-- Credentials get a version, carried by the credential.* events.
ALTER TABLE credentials ADD COLUMN version bigint NOT NULL DEFAULT 1;
