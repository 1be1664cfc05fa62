-- The exhaustion policy (docs/billing.md, "Running out"): a balance that
-- stays exhausted past `exhaustion_grace_secs` is suspended, which
-- `device` follows (`balance.suspended`: the user's running phones are
-- stopped and no phone of theirs starts); money that ends the exhaustion
-- lifts it (`balance.restored`). `suspension_version` orders the two
-- events per user and currency.
ALTER TABLE balance_alerts ADD COLUMN suspended_at timestamp,
    ADD COLUMN suspension_version bigint NOT NULL DEFAULT 0;
CREATE INDEX balance_alerts_exhausted ON balance_alerts (changed_at)
    WHERE state = 'exhausted' AND suspended_at IS NULL;
