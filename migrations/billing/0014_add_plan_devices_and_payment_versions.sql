-- Plans that include phones (docs/billing.md, "Plans and orders"): the
-- devices a plan makes for its buyer (`{count, cpu_cores, memory_mb,
-- storage_gb, image?}`, null: none), and the ids of those an order made.
ALTER TABLE plans ADD COLUMN devices jsonb;
ALTER TABLE orders ADD COLUMN devices jsonb NOT NULL DEFAULT '[]'::jsonb;
-- `granted`: the grant is active and the plan's phones are being made.
ALTER TABLE orders DROP CONSTRAINT orders_step_check,
    ADD CONSTRAINT orders_step_check CHECK (step IN ('created', 'awaiting_payment', 'funded', 'funds_held',
                                                     'quota_reserved', 'paid', 'granted', 'compensating', 'done'));
-- A payment's version orders its events: one that fails twice (a customer
-- trying another card) announces `payment.failed` twice, each its own.
ALTER TABLE payments ADD COLUMN version bigint NOT NULL DEFAULT 1;
