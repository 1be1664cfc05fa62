-- The double-entry ledger (docs/billing.md). Money is integer minor units
-- (`bigint`) with its ISO 4217 currency beside it; nothing on a money path
-- is floating point.
--
-- * `accounts`: one per (kind, owner, currency). A user has `available`,
--   `frozen` and `owed` (usage their balance did not cover); the platform
--   has `revenue`, `provider_clearing`, `refunds_payable`, `promotions` and
--   `adjustments` (owner NULL, in shards).
-- * `ledger_transactions`: one movement (a recharge, a charge, a freeze...),
--   who made it and why, append-only.
-- * `ledger_entries`: its legs, append-only. The legs of a transaction sum
--   to zero in its currency (checked at commit), so the sum over every
--   account is zero.
-- * `accounts.balance` is kept beside the entries: only inserting an entry
--   changes it (a trigger adds the amount and records the balance after),
--   and nothing else may, so a balance is always the sum of its entries.
--   The account's checks apply to that update: a user's available balance
--   never goes below minus its credit limit, a frozen one never below zero.

-- The placeholders of the first cut, never used.
DROP TABLE balance_ledger;
DROP TABLE balances;

-- The users billing knows, as `user`'s events describe them: tenant and
-- department for data scopes, newer versions only.
CREATE TABLE owners (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL,
    display_name  text NOT NULL,
    tenant_id     uuid,
    department_id uuid,
    status        text NOT NULL,
    version       bigint NOT NULL
);
CREATE INDEX owners_tenant ON owners (tenant_id);

CREATE TABLE accounts (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('available', 'frozen', 'owed', 'revenue', 'provider_clearing',
                                               'refunds_payable', 'promotions', 'adjustments')),
    owner_id     uuid,
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    balance      bigint NOT NULL DEFAULT 0,
    credit_limit bigint NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    entries      bigint NOT NULL DEFAULT 0,
    -- A platform account is spread over shards (its balance is their sum),
    -- so concurrent postings do not all queue on one row's lock.
    shard        smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 15),
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT accounts_owned CHECK ((owner_id IS NOT NULL) = (kind IN ('available', 'frozen', 'owed'))),
    CONSTRAINT accounts_available_floor CHECK (kind <> 'available' OR balance + credit_limit >= 0),
    CONSTRAINT accounts_frozen_floor CHECK (kind <> 'frozen' OR balance >= 0),
    -- What a user owes for usage their balance did not cover: never positive.
    CONSTRAINT accounts_owed_ceiling CHECK (kind <> 'owed' OR balance <= 0),
    CONSTRAINT accounts_credit_only_available CHECK (kind = 'available' OR credit_limit = 0),
    CONSTRAINT accounts_users_unsharded CHECK (owner_id IS NULL OR shard = 0),
    UNIQUE NULLS NOT DISTINCT (kind, owner_id, currency, shard),
    UNIQUE (id, currency)
);
CREATE INDEX accounts_owner ON accounts (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE ledger_transactions (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('recharge', 'charge', 'freeze', 'unfreeze', 'settle',
                                                  'refund', 'reward', 'adjustment', 'usage', 'collect')),
    currency        char(3) NOT NULL,
    -- The user whose balance moved, and their tenant at the time.
    user_id         uuid NOT NULL,
    tenant_id       uuid,
    -- The amount from the user's side: what their balances (available and
    -- frozen together) gained, negative for what they lost.
    amount          bigint NOT NULL,
    actor_id        uuid,
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    reference       text,
    -- `<scope>:<key>`: the same key twice is one transaction.
    idempotency_key text NOT NULL UNIQUE,
    -- sha256 of what was asked, so a key reused for something else is refused.
    fingerprint     text NOT NULL,
    request_id      text,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX ledger_transactions_user ON ledger_transactions (user_id, created_at DESC, id);
CREATE INDEX ledger_transactions_tenant ON ledger_transactions (tenant_id, created_at DESC);
CREATE INDEX ledger_transactions_created ON ledger_transactions (created_at DESC, id);

CREATE TABLE ledger_entries (
    id             bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES ledger_transactions (id),
    account_id     uuid NOT NULL,
    currency       char(3) NOT NULL,
    amount         bigint NOT NULL CHECK (amount <> 0),
    balance_after  bigint,
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency)
);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);

-- An entry moves its account's balance, and records the balance after it.
CREATE FUNCTION ledger_entry_post() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount, entries = entries + 1,
                        updated_at = now() AT TIME ZONE 'UTC'
     WHERE id = NEW.account_id
    RETURNING balance INTO NEW.balance_after;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_post BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_post();

-- Entries and transactions are never changed or removed.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- A balance changes only through an entry (the trigger above runs nested).
CREATE FUNCTION accounts_balance_by_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'a balance changes only by a ledger entry'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_balance_guard BEFORE UPDATE OF balance, entries ON accounts
    FOR EACH ROW WHEN (OLD.balance IS DISTINCT FROM NEW.balance OR OLD.entries IS DISTINCT FROM NEW.entries)
    EXECUTE FUNCTION accounts_balance_by_entries();
CREATE TRIGGER accounts_no_delete BEFORE DELETE OR TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- At commit, every transaction that gained entries has at least two and
-- they sum to zero in its currency.
CREATE FUNCTION ledger_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    legs  bigint;
    odd   bigint;
BEGIN
    SELECT coalesce(sum(e.amount), 0), count(*), count(*) FILTER (WHERE e.currency <> t.currency)
      INTO total, legs, odd
      FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
     WHERE e.transaction_id = NEW.transaction_id;
    IF total <> 0 OR legs < 2 OR odd <> 0 THEN
        RAISE EXCEPTION 'unbalanced ledger transaction % (sum %, % legs, % in another currency)',
            NEW.transaction_id, total, legs, odd USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_transaction_balanced();

-- Changes of an account's terms (its credit limit): who, why, append-only.
CREATE TABLE account_changes (
    id         uuid PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts (id),
    field      text NOT NULL,
    old_value  bigint NOT NULL,
    new_value  bigint NOT NULL,
    actor_id   uuid NOT NULL,
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    request_id text,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX account_changes_account ON account_changes (account_id, created_at);
CREATE TRIGGER account_changes_append_only BEFORE UPDATE OR DELETE ON account_changes
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
