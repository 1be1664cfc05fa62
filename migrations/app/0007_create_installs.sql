-- Installs: one record per device and application version, following the
-- install (and a later uninstall) that `device` runs on the device's node.
-- `device` is asked on behalf of the requester (their own credentials, so
-- `device` decides which devices they may install on); its `apk.*` events
-- move the record on, matched by the device and the file's sha256 (an
-- install) or the package (an uninstall).
CREATE TABLE installs (
    id             uuid PRIMARY KEY,
    device_id      uuid NOT NULL,
    version_id     uuid NOT NULL REFERENCES app_versions (id),
    application_id uuid NOT NULL REFERENCES applications (id),
    package_name   text NOT NULL,
    sha256         text NOT NULL,
    requested_by   uuid NOT NULL,
    tenant_id      uuid,
    department_id  uuid,
    status         text NOT NULL CHECK (status IN
                     ('pending', 'installing', 'installed', 'failed', 'uninstalling', 'uninstalled')),
    batch_id       uuid,
    operation_id   uuid,
    error          text,
    version        bigint NOT NULL DEFAULT 1,
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    installed_at   timestamp,
    UNIQUE (device_id, version_id)
);
CREATE INDEX installs_file ON installs (device_id, sha256);
CREATE INDEX installs_package ON installs (device_id, package_name);
CREATE INDEX installs_requester ON installs (requested_by, updated_at DESC);
CREATE INDEX installs_tenant ON installs (tenant_id, updated_at DESC);
CREATE INDEX installs_version ON installs (version_id);

-- How often a version's file was handed out, and how many devices have it.
ALTER TABLE app_versions
    ADD COLUMN download_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN install_count  bigint NOT NULL DEFAULT 0;
ALTER TABLE applications
    ADD COLUMN download_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN install_count  bigint NOT NULL DEFAULT 0;

-- An install request between asking `device` and recording what it
-- answered: an `apk.*` event for its file that finds no record meanwhile
-- is retried (the records are about to exist), not dropped.
CREATE TABLE install_requests (
    id           uuid PRIMARY KEY,
    requested_by uuid NOT NULL,
    sha256       text NOT NULL,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX install_requests_file ON install_requests (requested_by, sha256);
