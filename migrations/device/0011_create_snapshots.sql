-- Snapshots of a device: its container image and its /data directory,
-- kept on the device's node by the agent (`snapshot` in
-- docs/agent-protocol.md). A snapshot outlives its device until deleted;
-- it keeps the owner, tenant and department it was taken under, for data
-- scopes.
CREATE TABLE snapshots (
    id             uuid PRIMARY KEY,
    device_id      uuid NOT NULL,
    node_id        text NOT NULL,
    owner_id       uuid NOT NULL,
    tenant_id      uuid,
    department_id  uuid,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    status         text NOT NULL DEFAULT 'creating'
                   CHECK (status IN ('creating', 'ready', 'failed', 'deleting', 'deleted')),
    -- The device's generation when it was taken.
    generation     bigint NOT NULL,
    image          text,
    image_id       text,
    error          text,
    -- The operation that takes it, and the one that deletes it.
    operation_id   uuid NOT NULL,
    delete_operation_id uuid,
    restores       integer NOT NULL DEFAULT 0,
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    ready_at       timestamp,
    deleted_at     timestamp,
    version        bigint NOT NULL DEFAULT 1
);
CREATE INDEX snapshots_device ON snapshots (device_id, created_at DESC);
CREATE INDEX snapshots_owner ON snapshots (owner_id, created_at DESC);
CREATE UNIQUE INDEX snapshots_operation ON snapshots (operation_id);
CREATE UNIQUE INDEX snapshots_delete_operation ON snapshots (delete_operation_id)
    WHERE delete_operation_id IS NOT NULL;
