-- Warm pools: per template, devices made and booted ahead of demand and
-- owned by nobody yet (owner_id is the nil UUID, no tenant, so no user's
-- data scope reaches them and no quota holds them). A create from the
-- template takes one at once; the replenish job makes up the number.
CREATE TABLE warm_pools (
    template_id uuid PRIMARY KEY REFERENCES templates (id),
    size        integer NOT NULL CHECK (size BETWEEN 0 AND 100),
    updated_by  uuid NOT NULL,
    -- Held by the replenish run working on the pool, so that overlapping
    -- runs never make its devices twice.
    lease_until timestamp,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- The pool a device waits in; NULL once a user has it (or never pooled).
ALTER TABLE devices ADD COLUMN pool_template_id uuid;
CREATE INDEX devices_pool ON devices (pool_template_id, created_at)
    WHERE pool_template_id IS NOT NULL AND desired_status <> 'deleted';
