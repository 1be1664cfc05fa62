-- Snapshot policies, retention and storage quota.
--
-- A device's snapshot policy: automatic backups every `every_secs` (due at
-- `next_backup_at`, which the snapshot job reads through its index instead
-- of scanning devices), and retention: keep the newest `keep_last` and none
-- older than `max_age_secs`, over the automatic snapshots only or over all
-- of them (`applies_to`). Retention marks what must go by setting the
-- snapshot's `expires_at`; the same job deletes what has expired.
CREATE TABLE snapshot_policies (
    device_id       uuid PRIMARY KEY REFERENCES devices (id),
    every_secs      integer CHECK (every_secs > 0),
    keep_last       integer CHECK (keep_last > 0),
    max_age_secs    integer CHECK (max_age_secs > 0),
    applies_to      text NOT NULL DEFAULT 'scheduled' CHECK (applies_to IN ('scheduled', 'all')),
    next_backup_at  timestamp,
    last_backup_at  timestamp,
    -- Why the last due backup was not taken (the device was busy, say).
    last_skipped    text,
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    version         bigint NOT NULL DEFAULT 1,
    CHECK (every_secs IS NOT NULL OR next_backup_at IS NULL)
);
CREATE INDEX snapshot_policies_due ON snapshot_policies (next_backup_at)
    WHERE next_backup_at IS NOT NULL;

-- A template's snapshot policy, given to each device made from it
-- (`{every_secs, keep_last, max_age_secs, applies_to}`; NULL: none).
ALTER TABLE templates ADD COLUMN default_snapshot_policy jsonb;

-- `origin`: taken on request (`manual`) or by the policy (`scheduled`).
-- `data_bytes`: the size of the copied /data, as the agent measured it;
-- `storage_gb` what the owner's storage quota is charged for it (whole GiB,
-- at least 1). `quota_state` follows the charge in `user`: `pending` (ready,
-- not charged yet), `held` (charged under `reservation_id`), `refused` (no
-- room: the snapshot is deleted), `releasing` (deleted, charge being given
-- back), `released`; `none` for a snapshot that never became ready.
ALTER TABLE snapshots ADD COLUMN origin text NOT NULL DEFAULT 'manual'
    CHECK (origin IN ('manual', 'scheduled'));
ALTER TABLE snapshots ADD COLUMN data_bytes bigint CHECK (data_bytes >= 0);
ALTER TABLE snapshots ADD COLUMN storage_gb integer CHECK (storage_gb >= 0);
ALTER TABLE snapshots ADD COLUMN expires_at timestamp;
ALTER TABLE snapshots ADD COLUMN quota_state text NOT NULL DEFAULT 'none'
    CHECK (quota_state IN ('none', 'pending', 'held', 'refused', 'releasing', 'released'));
ALTER TABLE snapshots ADD COLUMN reservation_id uuid;
ALTER TABLE snapshots ADD COLUMN quota_updated_at timestamp;
CREATE INDEX snapshots_expiring ON snapshots (expires_at)
    WHERE status = 'ready' AND expires_at IS NOT NULL;
CREATE INDEX snapshots_quota_due ON snapshots (quota_updated_at)
    WHERE quota_state IN ('pending', 'releasing');
