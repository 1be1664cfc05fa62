-- The device domain: nodes (hosts with a runtime agent), devices with their
-- desired and observed status, the operations users ask for, the commands
-- sent to agents (an outbox: a command leaves only after the desired state
-- it belongs to is committed), every run interval of a device (the single
-- source billing meters from), the quota claims held in `user`, and a copy
-- of each owner from `user`'s events.

-- The first cut's table had no code behind it; nothing was ever stored.
DROP TABLE nodes;

CREATE TABLE nodes (
    id                    text PRIMARY KEY
                          CHECK (id ~ '^[A-Za-z0-9._-]{1,63}$' AND id !~ '\.\.'),
    name                  text NOT NULL,
    address               text NOT NULL DEFAULT '',
    region                text,
    zone                  text,
    labels                jsonb NOT NULL DEFAULT '{}'::jsonb,
    taints                jsonb NOT NULL DEFAULT '[]'::jsonb,
    priority              integer NOT NULL DEFAULT 0,
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'online', 'unreachable', 'maintenance', 'draining', 'disabled')),
    -- false while cordoned: nothing new is placed, devices stay.
    schedulable           boolean NOT NULL DEFAULT true,
    cpu_millis            bigint NOT NULL DEFAULT 0,
    memory_mb             bigint NOT NULL DEFAULT 0,
    disk_gb               bigint NOT NULL DEFAULT 0,
    max_devices           integer NOT NULL DEFAULT 0,
    gpus                  integer NOT NULL DEFAULT 0,
    cpu_overcommit_pct    integer NOT NULL DEFAULT 400 CHECK (cpu_overcommit_pct BETWEEN 100 AND 1600),
    memory_overcommit_pct integer NOT NULL DEFAULT 200 CHECK (memory_overcommit_pct BETWEEN 100 AND 800),
    agent_version         text,
    usage                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_heartbeat_at     timestamp,
    -- The node's HMAC secret, sealed (XChaCha20-Poly1305) under a key
    -- derived from device's component key; never stored in the clear.
    secret_sealed         bytea,
    secret_rotated_at     timestamp,
    created_at            timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at            timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    version               bigint NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    owner_id        uuid NOT NULL,
    tenant_id       uuid,
    department_id   uuid,
    -- Redundant copies of the owner, kept by user.* events (owner_version).
    owner_name      text NOT NULL DEFAULT '',
    owner_email     text NOT NULL DEFAULT '',
    owner_version   bigint NOT NULL DEFAULT 0,
    node_id         text REFERENCES nodes (id),
    spec            jsonb NOT NULL,
    cpu_millis      bigint NOT NULL,
    memory_mb       bigint NOT NULL,
    disk_gb         bigint NOT NULL,
    gpus            integer NOT NULL DEFAULT 0,
    tags            text[] NOT NULL DEFAULT '{}',
    desired_status  text NOT NULL CHECK (desired_status IN ('running', 'stopped', 'deleted')),
    observed_status text NOT NULL
                    CHECK (observed_status IN ('creating', 'booting', 'running', 'stopped', 'failed', 'deleted', 'unknown')),
    status_reason   text,
    -- When the agent sent the report the observed status comes from: an
    -- older report (a retried batch) never overwrites a newer one.
    observed_at     timestamp,
    -- The desired-state generation the running container was built from.
    observed_generation bigint,
    -- Grows with every change of the desired state the agent must follow.
    generation      bigint NOT NULL DEFAULT 1,
    container_id    text,
    adb_host        text,
    adb_port        integer,
    placement       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    deleted_at      timestamp,
    version         bigint NOT NULL DEFAULT 1
);
CREATE INDEX devices_tenant ON devices (tenant_id, created_at DESC);
CREATE INDEX devices_owner ON devices (owner_id, created_at DESC);
CREATE INDEX devices_node ON devices (node_id) WHERE desired_status <> 'deleted';
CREATE INDEX devices_created ON devices (created_at DESC, id);
CREATE INDEX devices_tags ON devices USING gin (tags);

CREATE TABLE operations (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL,
    device_id       uuid,
    node_id         text,
    requested_by    uuid,
    owner_id        uuid,
    tenant_id       uuid,
    department_id   uuid,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed')),
    progress        integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error_code      text,
    error           text,
    result          jsonb,
    -- The generation of the device's desired state this operation waits for.
    generation      bigint,
    idempotency_key text,
    deadline_at     timestamp NOT NULL,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    finished_at     timestamp
);
CREATE UNIQUE INDEX operations_idempotency ON operations (requested_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_device ON operations (device_id, created_at DESC);
CREATE INDEX operations_running ON operations (deadline_at) WHERE status = 'running';

-- Commands for agents, published to the node's channel after commit; the
-- relay job resends what a crash left unsent.
CREATE TABLE node_commands (
    id           uuid PRIMARY KEY,
    node_id      text NOT NULL,
    operation_id uuid,
    body         jsonb NOT NULL,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    sent_at      timestamp,
    sends        integer NOT NULL DEFAULT 0
);
CREATE INDEX node_commands_unsent ON node_commands (created_at) WHERE sent_at IS NULL;
CREATE INDEX node_commands_operation ON node_commands (operation_id);
CREATE INDEX node_commands_created ON node_commands (created_at);

-- Every interval a device ran: the one source metering reads.
CREATE TABLE device_runs (
    id          bigserial PRIMARY KEY,
    device_id   uuid NOT NULL,
    owner_id    uuid NOT NULL,
    tenant_id   uuid,
    node_id     text,
    spec        jsonb NOT NULL,
    started_at  timestamp NOT NULL,
    ended_at    timestamp,
    end_reason  text
);
CREATE UNIQUE INDEX device_runs_open ON device_runs (device_id) WHERE ended_at IS NULL;
CREATE INDEX device_runs_owner ON device_runs (owner_id, started_at);

-- Quota reservations held in `user` for devices: reserved before the
-- device is committed, committed or released after; a job settles what a
-- crash left in between.
CREATE TABLE quota_claims (
    reservation_id uuid PRIMARY KEY,
    device_id      uuid NOT NULL,
    owner_id       uuid NOT NULL,
    purpose        text NOT NULL CHECK (purpose IN ('device', 'run')),
    state          text NOT NULL CHECK (state IN ('reserved', 'committed', 'releasing', 'released')),
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX quota_claims_unsettled ON quota_claims (updated_at) WHERE state IN ('reserved', 'releasing');
CREATE INDEX quota_claims_device ON quota_claims (device_id);

-- Owners as `user`'s events describe them (never going back in version).
CREATE TABLE owners (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL,
    display_name  text NOT NULL,
    tenant_id     uuid,
    department_id uuid,
    status        text NOT NULL,
    version       bigint NOT NULL
);
