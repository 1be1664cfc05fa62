-- Monthly invoices per user and currency (docs/billing.md, "Invoices"): an
-- invoice covers what was charged in its month (usage as charged, orders
-- as paid, refunds as made); prices include tax, which is shown apart.
-- The run that makes them is idempotent: one invoice per user, month and
-- currency, numbered without gaps in the order they were made.
CREATE TABLE invoices (
    id               uuid PRIMARY KEY,
    number           text NOT NULL UNIQUE,
    user_id          uuid NOT NULL,
    tenant_id        uuid,
    period_start     date NOT NULL CHECK (extract(day FROM period_start) = 1),
    currency         char(3) NOT NULL,
    status           text NOT NULL CHECK (status IN ('draft', 'issued', 'paid', 'overdue', 'void')),
    tax_rate_bp      integer NOT NULL CHECK (tax_rate_bp BETWEEN 0 AND 10000),
    subtotal_minor   bigint NOT NULL DEFAULT 0,
    tax_minor        bigint NOT NULL DEFAULT 0,
    total_minor      bigint NOT NULL DEFAULT 0 CHECK (total_minor = subtotal_minor + tax_minor),
    -- What the user still owed (usage their balance did not cover) when it
    -- was issued: what they must pay by `due_at`. Zero: paid at issue.
    amount_due_minor bigint NOT NULL DEFAULT 0 CHECK (amount_due_minor >= 0),
    due_at           timestamp,
    issued_at        timestamp,
    paid_at          timestamp,
    voided_at        timestamp,
    void_reason      text,
    version          bigint NOT NULL DEFAULT 1,
    created_at       timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at       timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (user_id, period_start, currency)
);
CREATE INDEX invoices_period ON invoices (period_start, status);
CREATE INDEX invoices_open ON invoices (due_at) WHERE status IN ('issued', 'overdue');
CREATE INDEX invoices_tenant ON invoices (tenant_id, period_start DESC);

CREATE TABLE invoice_lines (
    id           bigserial PRIMARY KEY,
    invoice_id   uuid NOT NULL REFERENCES invoices (id),
    kind         text NOT NULL CHECK (kind IN ('usage', 'order', 'refund')),
    description  text NOT NULL,
    quantity     bigint NOT NULL,
    unit         text NOT NULL,
    amount_minor bigint NOT NULL,
    reference    text
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id, id);

-- The run reads a month of usage by when it was charged.
CREATE INDEX usage_records_created ON usage_records (created_at);
CREATE INDEX orders_paid ON orders (paid_at) WHERE paid_at IS NOT NULL;

-- The numbers' counter per month (INV-YYYYMM-NNNNNN), advanced under the
-- run's lock so numbers have no gaps.
CREATE TABLE invoice_counters (
    period_start date PRIMARY KEY,
    last         integer NOT NULL DEFAULT 0
);
