-- Device time, metered from `device`'s run intervals (`device.run_started`,
-- `device.run_ended`) and from nothing else: billing never looks at a
-- device's status. Each interval is charged per minute by the metering
-- tick: while it runs, up to the last whole minute; once it ended, its
-- whole length (a started minute counts). What is charged is computed from
-- the run's total each time (never added up from ticks), so ticks, restarts
-- and repeated or reordered events cannot change the total.
CREATE TABLE metered_runs (
    run_id          bigint PRIMARY KEY,
    device_id       uuid NOT NULL,
    user_id         uuid NOT NULL,
    tenant_id       uuid,
    spec            jsonb NOT NULL,
    started_at      timestamp NOT NULL,
    ended_at        timestamp,
    end_reason      text,
    -- Fixed at the first charge, so a price change applies to new runs.
    currency        char(3),
    price_per_hour  bigint CHECK (price_per_hour >= 0),
    charged_minutes bigint NOT NULL DEFAULT 0,
    charged_minor   bigint NOT NULL DEFAULT 0,
    settled         boolean NOT NULL DEFAULT false,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX metered_runs_unsettled ON metered_runs (run_id) WHERE NOT settled;
CREATE INDEX metered_runs_user ON metered_runs (user_id, started_at DESC);

-- One line per charge of a run: minutes `from_minute`..`to_minute` of it
-- (a correction, when a run turned out shorter than charged, goes back:
-- negative minutes and amount).
CREATE TABLE usage_records (
    id             uuid PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES metered_runs (run_id),
    user_id        uuid NOT NULL,
    tenant_id      uuid,
    device_id      uuid NOT NULL,
    resource       text NOT NULL CHECK (resource = 'device_time'),
    from_minute    bigint NOT NULL,
    to_minute      bigint NOT NULL,
    period_start   timestamp NOT NULL,
    period_end     timestamp NOT NULL,
    minutes        bigint NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       char(3) NOT NULL,
    transaction_id uuid REFERENCES ledger_transactions (id),
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (run_id, from_minute, to_minute)
);
CREATE INDEX usage_records_user ON usage_records (user_id, period_start DESC);
CREATE INDEX usage_records_tenant ON usage_records (tenant_id, period_start DESC);

-- Where each user's balance stands, so `balance.low` and
-- `balance.exhausted` are sent once per fall, not once per charge.
CREATE TABLE balance_alerts (
    user_id    uuid NOT NULL,
    currency   char(3) NOT NULL,
    state      text NOT NULL CHECK (state IN ('ok', 'low', 'exhausted')),
    changed_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (user_id, currency)
);
