-- Device templates: a spec, an image, boot settings, the apps installed and
-- the commands run at a device's first boot, and the defaults of its
-- lifecycle policy. `public` templates are the platform's (tenant_id NULL,
-- seen by everyone); `tenant` ones are seen within their tenant; `private`
-- ones (made by a user without a tenant) only by their owner.
CREATE TABLE templates (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL,
    description            text NOT NULL DEFAULT '',
    category               text NOT NULL DEFAULT 'general',
    visibility             text NOT NULL CHECK (visibility IN ('public', 'tenant', 'private')),
    owner_id               uuid NOT NULL,
    tenant_id              uuid,
    department_id          uuid,
    spec                   jsonb NOT NULL,
    tags                   text[] NOT NULL DEFAULT '{}',
    -- [{"url", "sha256"}]: installed in order at first boot.
    preinstalled_apps      jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- System properties set at first boot (`setprop`), after the apps.
    properties             jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Shell commands run in order at first boot, after the properties.
    init_commands          jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- Lifecycle defaults for devices made from it (seconds; NULL = none).
    default_lifetime_secs     integer CHECK (default_lifetime_secs > 0),
    default_idle_timeout_secs integer CHECK (default_idle_timeout_secs > 0),
    default_max_session_secs  integer CHECK (default_max_session_secs > 0),
    -- How many devices were made from it.
    usage_count            bigint NOT NULL DEFAULT 0,
    created_at             timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at             timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    deleted_at             timestamp,
    version                bigint NOT NULL DEFAULT 1,
    CHECK ((visibility = 'public') = (tenant_id IS NULL) OR visibility = 'private')
);
-- Names are unique where a template is seen: among public ones, in a
-- tenant, or among one user's private ones.
CREATE UNIQUE INDEX templates_name ON templates (
    coalesce(tenant_id::text, CASE WHEN visibility = 'private' THEN owner_id::text ELSE '' END),
    visibility, lower(name)) WHERE deleted_at IS NULL;
CREATE INDEX templates_tenant ON templates (tenant_id, created_at DESC) WHERE deleted_at IS NULL;

ALTER TABLE devices ADD COLUMN template_id uuid REFERENCES templates (id);
CREATE INDEX devices_template ON devices (template_id) WHERE template_id IS NOT NULL;

-- What a device does at its first boot, step by step: each step becomes an
-- operation (and a command for the agent) only when the one before it has
-- succeeded, so apps install in order and the commands run after them. A
-- clone of a snapshot has one step: restoring the snapshot's data.
CREATE TABLE provision_steps (
    device_id     uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    seq           integer NOT NULL CHECK (seq >= 0),
    kind          text NOT NULL CHECK (kind IN ('install_apk', 'shell', 'restore')),
    input         jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    operation_id  uuid,
    error         text,
    updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (device_id, seq)
);
CREATE UNIQUE INDEX provision_steps_operation ON provision_steps (operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX provision_steps_pending ON provision_steps (device_id) WHERE status IN ('pending', 'running');
