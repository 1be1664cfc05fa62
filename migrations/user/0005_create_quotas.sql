-- Per-user quotas: limits and usage in one row, locked by every reservation
-- so that concurrent reservations can never exceed a limit. Resources held
-- (devices, cores, memory, storage) are the sum of committed reservations not
-- yet released, kept in the used_* counters; pending reservations count
-- against the limits until they are committed, released or expire.
-- Minutes of use are reported by `device` and reset daily and monthly by
-- scheduler jobs (the day and month they count for are stored, so a missed
-- tick is caught up by the next one).
CREATE TABLE quotas (
    user_id                 uuid PRIMARY KEY REFERENCES users (id),
    tenant_id               uuid,
    department_id           uuid,
    max_devices             integer NOT NULL DEFAULT 2 CHECK (max_devices >= 0),
    max_concurrent_devices  integer NOT NULL DEFAULT 2 CHECK (max_concurrent_devices >= 0),
    max_cpu_cores           integer NOT NULL DEFAULT 8 CHECK (max_cpu_cores >= 0),
    max_memory_mb           integer NOT NULL DEFAULT 16384 CHECK (max_memory_mb >= 0),
    max_storage_gb          integer NOT NULL DEFAULT 64 CHECK (max_storage_gb >= 0),
    max_minutes_per_day     integer NOT NULL DEFAULT 1440 CHECK (max_minutes_per_day >= 0),
    max_minutes_per_month   integer NOT NULL DEFAULT 44640 CHECK (max_minutes_per_month >= 0),
    used_devices            integer NOT NULL DEFAULT 0 CHECK (used_devices >= 0),
    used_concurrent_devices integer NOT NULL DEFAULT 0 CHECK (used_concurrent_devices >= 0),
    used_cpu_cores          integer NOT NULL DEFAULT 0 CHECK (used_cpu_cores >= 0),
    used_memory_mb          integer NOT NULL DEFAULT 0 CHECK (used_memory_mb >= 0),
    used_storage_gb         integer NOT NULL DEFAULT 0 CHECK (used_storage_gb >= 0),
    minutes_today           integer NOT NULL DEFAULT 0 CHECK (minutes_today >= 0),
    minutes_month           integer NOT NULL DEFAULT 0 CHECK (minutes_month >= 0),
    usage_day               date NOT NULL DEFAULT ((now() AT TIME ZONE 'UTC')::date),
    usage_month             date NOT NULL DEFAULT (date_trunc('month', now() AT TIME ZONE 'UTC')::date),
    exceeded_at             timestamp,
    version                 bigint NOT NULL DEFAULT 1,
    created_at              timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at              timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX quotas_tenant ON quotas (tenant_id);

CREATE TABLE quota_reservations (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES quotas (user_id),
    idempotency_key    text NOT NULL,
    devices            integer NOT NULL DEFAULT 0 CHECK (devices >= 0),
    concurrent_devices integer NOT NULL DEFAULT 0 CHECK (concurrent_devices >= 0),
    cpu_cores          integer NOT NULL DEFAULT 0 CHECK (cpu_cores >= 0),
    memory_mb          integer NOT NULL DEFAULT 0 CHECK (memory_mb >= 0),
    storage_gb         integer NOT NULL DEFAULT 0 CHECK (storage_gb >= 0),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'committed', 'released', 'expired')),
    expires_at         timestamp NOT NULL,
    created_at         timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    committed_at       timestamp,
    released_at        timestamp,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX quota_reservations_pending ON quota_reservations (user_id) WHERE status = 'pending';
CREATE INDEX quota_reservations_expiry ON quota_reservations (expires_at) WHERE status = 'pending';

-- Reported minutes of use, one row per report, so a repeated report counts once.
CREATE TABLE quota_usage_reports (
    idempotency_key text PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES quotas (user_id),
    minutes         integer NOT NULL CHECK (minutes > 0),
    reported_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

INSERT INTO quotas (user_id, tenant_id, department_id)
SELECT id, tenant_id, department_id FROM users WHERE status <> 'deleted';
