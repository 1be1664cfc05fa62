-- Plans users buy, and their orders, each carried through a persisted
-- purchase saga (docs/billing.md): funds held, quota reserved in `user`,
-- payment taken, quota granted; every failed or timed-out step
-- compensated. `step` is where the saga stands, so any process resumes it
-- after a crash.
CREATE TABLE plans (
    id            uuid PRIMARY KEY,
    tenant_id     uuid,
    code          text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description   text,
    cycle         text NOT NULL CHECK (cycle IN ('hourly', 'daily', 'monthly', 'yearly')),
    price_minor   bigint NOT NULL CHECK (price_minor BETWEEN 0 AND 1000000000000000),
    currency      char(3) NOT NULL,
    quota         jsonb NOT NULL,
    device_limits jsonb NOT NULL DEFAULT '{}',
    active        boolean NOT NULL DEFAULT true,
    version       bigint NOT NULL DEFAULT 1,
    created_by    uuid NOT NULL,
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE NULLS NOT DISTINCT (tenant_id, code)
);

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    tenant_id       uuid,
    plan_id         uuid NOT NULL REFERENCES plans (id),
    -- The plan as bought (a later change of the plan changes no order).
    plan            jsonb NOT NULL,
    cycles          integer NOT NULL CHECK (cycles BETWEEN 1 AND 120),
    amount_minor    bigint NOT NULL CHECK (amount_minor >= 0),
    refunded_minor  bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    currency        char(3) NOT NULL,
    pay_with        text NOT NULL CHECK (pay_with IN ('balance')),
    status          text NOT NULL CHECK (status IN ('pending', 'paid', 'fulfilled', 'cancelled', 'expired',
                                                    'refunded', 'failed')),
    step            text NOT NULL CHECK (step IN ('created', 'funds_held', 'quota_reserved', 'paid',
                                                  'compensating', 'done')),
    failure         text,
    grant_id        uuid,
    idempotency_key text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    lease_until     timestamp,
    -- A saga still running then is compensated.
    deadline        timestamp NOT NULL,
    period_start    timestamp,
    period_end      timestamp,
    version         bigint NOT NULL DEFAULT 1,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    paid_at         timestamp,
    fulfilled_at    timestamp,
    closed_at       timestamp,
    UNIQUE (user_id, idempotency_key)
);
-- The status moves only along the state machine (docs/billing.md), whatever
-- writes it.
CREATE FUNCTION orders_status_moves() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> OLD.status AND NOT (
           (OLD.status = 'pending' AND NEW.status IN ('paid', 'cancelled', 'expired', 'failed'))
        OR (OLD.status = 'paid' AND NEW.status IN ('fulfilled', 'failed'))
        OR (OLD.status = 'fulfilled' AND NEW.status = 'refunded')) THEN
        RAISE EXCEPTION 'order % cannot go from % to %', OLD.id, OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_status_moves BEFORE UPDATE OF status ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_status_moves();
CREATE INDEX orders_running ON orders (updated_at) WHERE step <> 'done';
CREATE INDEX orders_user ON orders (user_id, created_at DESC);
CREATE INDEX orders_tenant ON orders (tenant_id, created_at DESC);

-- Every move of an order, append-only: its history for people and audits.
CREATE TABLE order_history (
    id         bigserial PRIMARY KEY,
    order_id   uuid NOT NULL REFERENCES orders (id),
    status     text NOT NULL,
    step       text NOT NULL,
    note       text,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX order_history_order ON order_history (order_id, id);

-- Refunds of paid orders, full or partial; one over the approval
-- threshold waits for a second operator.
CREATE TABLE refunds (
    id             uuid PRIMARY KEY,
    order_id       uuid NOT NULL REFERENCES orders (id),
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    currency       char(3) NOT NULL,
    reason         text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    -- approved: to be carried out (at once, or after the approval).
    status         text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'completed', 'rejected')),
    requested_by   uuid NOT NULL,
    approved_by    uuid,
    transaction_id uuid REFERENCES ledger_transactions (id),
    idempotency_key text NOT NULL,
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    decided_at     timestamp,
    UNIQUE (requested_by, idempotency_key),
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
);
CREATE INDEX refunds_order ON refunds (order_id);
