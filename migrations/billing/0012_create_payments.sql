-- Payments taken by external providers (docs/billing.md, "Payments"): an
-- order paid with a provider, or a top-up of the balance. The money a
-- provider confirms is recharged to the buyer's balance (provider clearing
-- -> available) once, whatever the order of the webhooks; an order then
-- carries on as one paid from the balance.
CREATE TABLE payments (
    id              uuid PRIMARY KEY,
    provider        text NOT NULL CHECK (provider IN ('stripe', 'alipay')),
    -- The provider's id (a PaymentIntent's `pi_...`; an Alipay trade's
    -- out_trade_no, the payment's own id), once made.
    provider_ref    text,
    order_id        uuid REFERENCES orders (id),
    user_id         uuid NOT NULL,
    tenant_id       uuid,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        char(3) NOT NULL,
    -- pending until the provider says otherwise; succeeded is final.
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    -- What the buyer's client needs to pay: Stripe's client secret, or
    -- where to pay (Alipay's signed page-pay request).
    client_secret   text,
    checkout_url    text,
    last_error      text,
    received_minor  bigint CHECK (received_minor > 0),
    -- The provider's time of the last event applied: an older one arriving
    -- later changes nothing.
    event_at        bigint,
    transaction_id  uuid REFERENCES ledger_transactions (id),
    idempotency_key text NOT NULL,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (provider, provider_ref),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX payments_user ON payments (user_id, created_at DESC);
CREATE INDEX payments_tenant ON payments (tenant_id, created_at DESC);
CREATE UNIQUE INDEX payments_order ON payments (order_id) WHERE order_id IS NOT NULL;

-- Every webhook received, accepted or not: the provider's event id makes
-- a delivery apply once; forged, stale and malformed ones are kept (with
-- a hash of the body, not the body) for whoever investigates.
CREATE TABLE webhook_events (
    id             bigserial PRIMARY KEY,
    provider       text NOT NULL,
    event_id       text,
    event_type     text,
    payment_ref    text,
    verdict        text NOT NULL CHECK (verdict IN ('applied', 'ignored', 'duplicate', 'forged', 'stale', 'malformed')),
    detail         text,
    body_sha256    text NOT NULL,
    received_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX webhook_events_once ON webhook_events (provider, event_id)
    WHERE verdict IN ('applied', 'ignored');
CREATE INDEX webhook_events_received ON webhook_events (received_at DESC);

-- Orders paid with a provider wait for its payment before the saga holds
-- the amount on the (now recharged) balance.
ALTER TABLE orders DROP CONSTRAINT orders_pay_with_check,
    ADD CONSTRAINT orders_pay_with_check CHECK (pay_with IN ('balance', 'stripe', 'alipay'));
ALTER TABLE orders DROP CONSTRAINT orders_step_check,
    ADD CONSTRAINT orders_step_check CHECK (step IN ('created', 'awaiting_payment', 'funded', 'funds_held',
                                                     'quota_reserved', 'paid', 'compensating', 'done'));
