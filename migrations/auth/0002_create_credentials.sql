-- Login credentials. The user's profile lives in cloudphone_user; user_id is a
-- logical reference with no foreign key across databases.
CREATE TABLE credentials (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX credentials_email ON credentials (lower(email));
