-- Refunds back through the provider that took the payment (docs/billing.md,
-- "Refunds"): a `refund` to the buyer's balance followed, in the same
-- transaction, by a `payout` from it to the provider's clearing account,
-- once the provider accepted the refund (`provider_ref`). A refund the
-- provider refuses is `failed` and moves nothing.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check,
    ADD CONSTRAINT ledger_transactions_kind_check CHECK (kind IN ('recharge', 'charge', 'freeze', 'unfreeze',
        'settle', 'refund', 'reward', 'adjustment', 'usage', 'collect', 'payout'));
ALTER TABLE refunds ADD COLUMN destination text NOT NULL DEFAULT 'balance'
        CHECK (destination IN ('balance', 'provider')),
    ADD COLUMN provider_ref text,
    ADD COLUMN failure text,
    DROP CONSTRAINT refunds_status_check,
    ADD CONSTRAINT refunds_status_check CHECK (status IN ('pending_approval', 'approved', 'completed',
        'rejected', 'failed'));
