-- Billing rules: how a usage line of a resource is priced
-- (docs/billing.md, "Rules"). Public rules are the platform's; a tenant's
-- own apply to its users. The pricing is never edited (a new rule with a
-- validity window replaces it), so a price once explained stays
-- explainable.
CREATE TABLE billing_rules (
    id          uuid PRIMARY KEY,
    tenant_id   uuid,
    code        text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    resource    text NOT NULL CHECK (resource IN ('device_time', 'cpu_cores', 'memory', 'storage', 'gpu')),
    kind        text NOT NULL CHECK (kind IN ('fixed', 'per_use', 'tiered', 'volume', 'time_of_day')),
    pricing     jsonb NOT NULL,
    currency    char(3) NOT NULL,
    priority    integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    valid_from  timestamp NOT NULL,
    valid_until timestamp,
    active      boolean NOT NULL DEFAULT true,
    version     bigint NOT NULL DEFAULT 1,
    created_by  uuid NOT NULL,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE NULLS NOT DISTINCT (tenant_id, code),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK (pricing ->> 'kind' = kind)
);
CREATE INDEX billing_rules_applying ON billing_rules (resource, valid_from) WHERE active;
