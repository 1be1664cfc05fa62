-- The identity copy now holds the whole snapshot user.* events carry
-- (schema_version 2): department, whether the tenant is active, and the
-- effective access (permissions, data scopes, field rules) that access
-- tokens are signed with.
ALTER TABLE identities ADD COLUMN department_id uuid;
ALTER TABLE identities ADD COLUMN tenant_active boolean NOT NULL DEFAULT true;
ALTER TABLE identities ADD COLUMN access jsonb NOT NULL DEFAULT '{}'::jsonb;
