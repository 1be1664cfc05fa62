-- Refresh tokens rotate: each use marks the token used and issues its
-- successor in the same family. A second use of a used token means it was
-- stolen, and the whole family is revoked. Only sha256 hashes are stored.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    issued_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    expires_at  timestamp NOT NULL,
    used_at     timestamp,
    revoked_at  timestamp
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- Failed logins per normalised email, whether or not an account exists, so
-- that lockout behaves the same for unknown emails and reveals nothing.
CREATE TABLE login_attempts (
    email_key    text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    locked_until timestamp,
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
