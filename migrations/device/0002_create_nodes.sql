-- Hosts that run devices, as registered by their runtime agents.
CREATE TABLE nodes (
    id              text PRIMARY KEY,
    address         text NOT NULL,
    status          text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'offline', 'maintenance', 'draining')),
    cpu_millis      bigint NOT NULL,
    memory_mb       bigint NOT NULL,
    max_devices     integer NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb,
    load_score      numeric(6, 3) NOT NULL DEFAULT 0,
    last_heartbeat  timestamp,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
