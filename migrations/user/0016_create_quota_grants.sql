-- Higher limits a user bought (`billing`'s orders): made pending by the
-- purchase, activated when it is paid (the amounts are added to the
-- user's `max_*` limits), revoked on a refund or a failed purchase (taken
-- off again if they were added). One grant per granting key, so a retried
-- step never adds twice.
CREATE TABLE quota_grants (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES quotas (user_id),
    idempotency_key    text NOT NULL,
    devices            integer NOT NULL DEFAULT 0 CHECK (devices >= 0),
    concurrent_devices integer NOT NULL DEFAULT 0 CHECK (concurrent_devices >= 0),
    cpu_cores          integer NOT NULL DEFAULT 0 CHECK (cpu_cores >= 0),
    memory_mb          integer NOT NULL DEFAULT 0 CHECK (memory_mb >= 0),
    storage_gb         integer NOT NULL DEFAULT 0 CHECK (storage_gb >= 0),
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'revoked')),
    created_at         timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    activated_at       timestamp,
    revoked_at         timestamp,
    UNIQUE (user_id, idempotency_key)
);
