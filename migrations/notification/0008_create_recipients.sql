-- Who notifications go to, kept from `user.*` events (their identity
-- snapshots, applied in version order): the language each is written in,
-- and the address email goes to. A deleted user's row stays, marked, so a
-- late older event cannot bring it back.
CREATE TABLE recipients (
    user_id      uuid PRIMARY KEY,
    email        text NOT NULL,
    display_name text NOT NULL,
    locale       text NOT NULL DEFAULT 'en',
    status       text NOT NULL,
    version      bigint NOT NULL,
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
