-- Billing's exhaustion policy, as `device` follows it (`balance.suspended`,
-- `balance.restored`): a user with a suspended balance in any currency has
-- their running phones stopped and may start or create none. One row per
-- user and currency, applied only from a newer version.
CREATE TABLE balance_suspensions (
    user_id    uuid NOT NULL,
    currency   char(3) NOT NULL,
    suspended  boolean NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (user_id, currency)
);
CREATE INDEX balance_suspensions_active ON balance_suspensions (user_id) WHERE suspended;
