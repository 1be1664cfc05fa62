-- auth's redundant copy of each user's identity, kept from user.* events so
-- that issuing a token needs no call to `user`. `version` is the source's
-- aggregate version: an older event never overwrites a newer one.
CREATE TABLE identities (
    user_id    uuid PRIMARY KEY,
    email      text NOT NULL,
    status     text NOT NULL,
    tenant_id  uuid,
    roles      text[] NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
