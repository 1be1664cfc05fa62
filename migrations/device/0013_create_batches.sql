-- Batch operations: one action over many devices (or N creates from a
-- template), run a bounded number at a time. Each item becomes an ordinary
-- operation when its turn comes; its result is the item's. The batch's
-- counters move in the transaction that finishes an item.
CREATE TABLE batches (
    id            uuid PRIMARY KEY,
    action        text NOT NULL CHECK (action IN
                  ('create', 'start', 'stop', 'restart', 'delete', 'install_apk', 'shell')),
    requested_by  uuid NOT NULL,
    tenant_id     uuid,
    department_id uuid,
    -- The action's input: {template_id, name_prefix, ...} for create,
    -- {url, sha256} for install_apk, {command, timeout_ms} for shell.
    input         jsonb NOT NULL DEFAULT '{}'::jsonb,
    concurrency   integer NOT NULL CHECK (concurrency BETWEEN 1 AND 100),
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    total         integer NOT NULL CHECK (total BETWEEN 1 AND 1000),
    succeeded     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    finished_at   timestamp,
    -- The requester's Idempotency-Key: a retried request gets this batch.
    idempotency_key text
);
CREATE UNIQUE INDEX batches_idempotency ON batches (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_running ON batches (created_at) WHERE status = 'running';
CREATE INDEX batches_requester ON batches (requested_by, created_at DESC);
CREATE INDEX batches_tenant ON batches (tenant_id, created_at DESC);

CREATE TABLE batch_items (
    batch_id     uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 0),
    -- The device acted on (for a create: the device made, once made).
    device_id    uuid,
    operation_id uuid,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    error_code   text,
    error        text,
    updated_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (batch_id, seq)
);
CREATE UNIQUE INDEX batch_items_operation ON batch_items (operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX batch_items_open ON batch_items (batch_id, seq) WHERE status IN ('pending', 'running');
