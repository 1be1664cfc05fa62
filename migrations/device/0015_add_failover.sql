-- Failover: a device's recover policy says what happens when its node
-- stays unreachable past `failover_after_secs`: `none` (it waits for its
-- node) or `fresh` (it is made again on another node, without the data it
-- had on the lost one). Every recovery is recorded with what was lost. The
-- device keeps its id; its new generation on the new node is what counts,
-- and the lost node, if it comes back, finds the device gone from its
-- desired state and removes its container.
ALTER TABLE devices ADD COLUMN recover_policy text NOT NULL DEFAULT 'none'
    CHECK (recover_policy IN ('none', 'fresh'));

CREATE TABLE device_recoveries (
    id           uuid PRIMARY KEY,
    device_id    uuid NOT NULL REFERENCES devices (id),
    from_node    text NOT NULL,
    to_node      text NOT NULL,
    -- `node_lost` (the failover job) or `operator` (a manual recover).
    reason       text NOT NULL CHECK (reason IN ('node_lost', 'operator')),
    requested_by uuid,
    -- What did not come along: the data on the lost node.
    lost         text NOT NULL,
    operation_id uuid NOT NULL,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX device_recoveries_device ON device_recoveries (device_id, created_at DESC);
CREATE INDEX devices_recoverable ON devices (node_id)
    WHERE recover_policy <> 'none' AND desired_status <> 'deleted';
