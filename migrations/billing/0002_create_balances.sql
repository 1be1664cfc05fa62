-- Account balances in integer minor units, with the ledger that explains them.
CREATE TABLE balances (
    user_id      uuid PRIMARY KEY,
    currency     char(3) NOT NULL DEFAULT 'CNY',
    amount_cents bigint NOT NULL DEFAULT 0,
    frozen_cents bigint NOT NULL DEFAULT 0 CHECK (frozen_cents >= 0),
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE balance_ledger (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    delta_cents  bigint NOT NULL,
    reason       text NOT NULL,
    reference    text,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX balance_ledger_user ON balance_ledger (user_id, created_at DESC);
