-- The first platform administrator is made through the database, never over
-- the network: `cargo xtask admin` (which holds this database's credentials)
-- inserts a grant, and the scheduler's job (POST /internal/admin-grants/apply)
-- applies it with the component's own rules (role, identity snapshot event,
-- audit entry) and records the outcome.
CREATE TABLE admin_grants (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL,
    requested_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    applied_at   timestamp,
    user_id      uuid,
    outcome      text
);
CREATE INDEX admin_grants_pending ON admin_grants (requested_at) WHERE applied_at IS NULL;
