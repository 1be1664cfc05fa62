-- The APK catalogue.
CREATE TABLE apps (
    id            uuid PRIMARY KEY,
    package_name  text NOT NULL,
    version_code  bigint NOT NULL,
    version_name  text NOT NULL,
    sha256        text NOT NULL,
    size_bytes    bigint NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (package_name, version_code)
);
