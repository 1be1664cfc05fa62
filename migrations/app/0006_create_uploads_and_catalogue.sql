-- The APK catalogue, first part: uploads and what they hold.
--
-- The placeholder `apps` table of 0002 was never written: it goes.
DROP TABLE apps;

-- An upload: a file of `size` bytes sent in chunks of `chunk_bytes` (the
-- last one shorter), kept as bytea rows in `upload_chunks`, so the two
-- README commands need no object store and no request holds more than one
-- chunk. `open` until completed; `stored` once it is an app version (its
-- chunks are then that version's file). An open upload expires at
-- `expires_at`.
CREATE TABLE uploads (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL,
    tenant_id     uuid,
    department_id uuid,
    size          bigint NOT NULL CHECK (size > 0),
    chunk_bytes   integer NOT NULL CHECK (chunk_bytes > 0),
    chunks        integer NOT NULL CHECK (chunks > 0),
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'stored')),
    sha256        text,
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    expires_at    timestamp NOT NULL
);
CREATE INDEX uploads_open ON uploads (expires_at) WHERE status = 'open';

CREATE TABLE upload_chunks (
    upload_id uuid NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    seq       integer NOT NULL CHECK (seq >= 0),
    data      bytea NOT NULL,
    PRIMARY KEY (upload_id, seq)
);

-- An application: one package in one place (`scope_key`: its owner for a
-- private one, its tenant for a tenant one), with its versions.
CREATE TABLE applications (
    id                uuid PRIMARY KEY,
    package_name      text NOT NULL,
    label             text,
    owner_id          uuid NOT NULL,
    tenant_id         uuid,
    department_id     uuid,
    visibility        text NOT NULL CHECK (visibility IN ('private', 'tenant')),
    scope_key         uuid NOT NULL,
    category          text,
    tags              text[] NOT NULL DEFAULT '{}',
    latest_version_id uuid,
    versions          integer NOT NULL DEFAULT 0,
    created_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at        timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (scope_key, package_name)
);
CREATE INDEX applications_tenant ON applications (tenant_id, visibility);
CREATE INDEX applications_owner ON applications (owner_id);

-- A version: what the file itself says (never the uploader's word).
CREATE TABLE app_versions (
    id              uuid PRIMARY KEY,
    application_id  uuid NOT NULL REFERENCES applications (id),
    upload_id       uuid NOT NULL UNIQUE REFERENCES uploads (id),
    version_code    bigint NOT NULL,
    version_name    text,
    sha256          text NOT NULL,
    size_bytes      bigint NOT NULL,
    min_sdk         integer NOT NULL,
    target_sdk      integer,
    label           text,
    icon            text,
    permissions     jsonb NOT NULL,
    abis            jsonb NOT NULL,
    signing         jsonb NOT NULL,
    signer_sha256   text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn')),
    uploaded_by     uuid NOT NULL,
    created_at      timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (application_id, version_code)
);
