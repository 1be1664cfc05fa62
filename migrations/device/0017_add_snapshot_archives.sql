-- Failover from snapshots: a snapshot of a device whose recover policy is
-- `snapshot` is also archived off its node. Its agent tars the snapshot's
-- /data copy and uploads the archive in chunks of at most 4 MiB with signed
-- PUT /api/v1/device/agent/nodes/{node_id}/snapshots/{snapshot_id}/archive/{seq},
-- accepted only from the snapshot's node while the snapshot is being
-- taken. When the snapshot operation finishes, its result names the
-- archive's size, sha256 and chunk count; the chunks stored must add up to
-- them, or the archive is dropped (the snapshot itself stays ready on its
-- node). A failover then makes the device on another node from the newest
-- archived snapshot: that node's agent downloads the chunks (signed GET,
-- served only to the node the device is placed on) and checks the sha256
-- before the data is used.
CREATE TABLE snapshot_archive_chunks (
    snapshot_id uuid NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    data        bytea NOT NULL,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (snapshot_id, seq)
);

ALTER TABLE snapshots ADD COLUMN archive_bytes bigint CHECK (archive_bytes >= 0);
ALTER TABLE snapshots ADD COLUMN archive_sha256 text;
ALTER TABLE snapshots ADD COLUMN archive_chunks integer CHECK (archive_chunks >= 0);
ALTER TABLE snapshots ADD COLUMN archived_at timestamp;
-- Why an archive was asked for and not kept.
ALTER TABLE snapshots ADD COLUMN archive_error text;
CREATE INDEX snapshots_archived ON snapshots (device_id, created_at DESC)
    WHERE archived_at IS NOT NULL AND status = 'ready';

-- `snapshot`: made again on another node from its newest archived snapshot
-- (fresh when it has none).
ALTER TABLE devices DROP CONSTRAINT devices_recover_policy_check;
ALTER TABLE devices ADD CONSTRAINT devices_recover_policy_check
    CHECK (recover_policy IN ('none', 'fresh', 'snapshot'));

-- The snapshot a recovery's data came from (NULL: made fresh).
ALTER TABLE device_recoveries ADD COLUMN snapshot_id uuid;
