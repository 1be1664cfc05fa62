-- Tenants, departments, roles, permissions, data scopes, field permissions
-- and menus (docs/architecture.md, "Access control"). A user's effective
-- access is computed from their roles and stored on the row (`access`), so
-- that it travels with every user.* event and `auth` can sign it into tokens.

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    code          text NOT NULL,
    name          text NOT NULL,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    contact_email text,
    max_users     integer CHECK (max_users >= 0),
    max_devices   integer CHECK (max_devices >= 0),
    expires_at    timestamp,
    version       bigint NOT NULL DEFAULT 1,
    created_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at    timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX tenants_code ON tenants (lower(code));

-- A tree per tenant; `path` is the materialized path of ids ("/a/b/c/"), so a
-- subtree is one prefix match and a move rewrites the prefix of its rows.
CREATE TABLE departments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id),
    parent_id   uuid REFERENCES departments (id),
    name        text NOT NULL,
    code        text,
    manager_id  uuid,
    sort        integer NOT NULL DEFAULT 0,
    path        text NOT NULL,
    depth       integer NOT NULL,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX departments_path ON departments (path text_pattern_ops);
CREATE UNIQUE INDEX departments_sibling_name
    ON departments (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid),
                    coalesce(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), lower(name));
CREATE INDEX departments_tenant ON departments (tenant_id);

CREATE TABLE permissions (
    code        text PRIMARY KEY,
    resource    text NOT NULL,
    action      text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_system   boolean NOT NULL DEFAULT false,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- tenant_id NULL: a system role, visible in every tenant and changed only by
-- platform staff.
CREATE TABLE roles (
    id          uuid PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id),
    code        text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_system   boolean NOT NULL DEFAULT false,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at  timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE UNIQUE INDEX roles_code
    ON roles (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), lower(code));

-- Permission patterns: `resource:action`, `resource:*` or `*`.
CREATE TABLE role_permissions (
    role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    permission text NOT NULL,
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE user_roles (
    user_id    uuid NOT NULL REFERENCES users (id),
    role_id    uuid NOT NULL REFERENCES roles (id),
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role ON user_roles (role_id);

-- Which rows of a resource a role sees; resource '*' is the role's default.
CREATE TABLE data_scopes (
    id             uuid PRIMARY KEY,
    role_id        uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    resource       text NOT NULL,
    scope          text NOT NULL CHECK (scope IN ('all', 'tenant', 'department', 'department_tree', 'self', 'custom')),
    department_ids uuid[] NOT NULL DEFAULT '{}',
    created_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at     timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (role_id, resource)
);

-- Which fields of a resource a role's holders see hidden or masked.
CREATE TABLE field_permissions (
    id         uuid PRIMARY KEY,
    role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    resource   text NOT NULL,
    hidden     text[] NOT NULL DEFAULT '{}',
    masked     text[] NOT NULL DEFAULT '{}',
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    UNIQUE (role_id, resource)
);

CREATE TABLE menus (
    id         uuid PRIMARY KEY,
    parent_id  uuid REFERENCES menus (id),
    code       text NOT NULL UNIQUE,
    name       text NOT NULL,
    path       text NOT NULL,
    icon       text,
    sort       integer NOT NULL DEFAULT 0,
    permission text,
    visible    boolean NOT NULL DEFAULT true,
    created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Users: department, phone, the computed access, and 'locked' instead of
-- 'suspended'. Roles move from the text[] column to user_roles. A deleted
-- user's email can be registered again.
ALTER TABLE users ADD COLUMN department_id uuid REFERENCES departments (id);
ALTER TABLE users ADD COLUMN phone text;
ALTER TABLE users ADD COLUMN access jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE users ADD COLUMN tenant_active boolean NOT NULL DEFAULT true;
ALTER TABLE users ADD COLUMN deleted_at timestamp;
-- Who created the user: NULL for self-registration.
ALTER TABLE users ADD COLUMN created_by uuid;
ALTER TABLE users ADD CONSTRAINT users_tenant FOREIGN KEY (tenant_id) REFERENCES tenants (id);
ALTER TABLE users DROP CONSTRAINT users_status_check;
UPDATE users SET status = 'locked' WHERE status = 'suspended';
ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('active', 'locked', 'deleted'));
DROP INDEX users_email;
CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE status <> 'deleted';
CREATE INDEX users_department ON users (department_id);
CREATE INDEX users_created ON users (created_at, id);

-- The permission catalogue.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('user:read', 'user', 'read', 'list and read users', true),
 ('user:create', 'user', 'create', 'create users', true),
 ('user:update', 'user', 'update', 'change users, set passwords', true),
 ('user:delete', 'user', 'delete', 'delete users', true),
 ('user:lock', 'user', 'lock', 'lock and unlock users', true),
 ('role:read', 'role', 'read', 'list and read roles', true),
 ('role:create', 'role', 'create', 'create roles', true),
 ('role:update', 'role', 'update', 'change roles, their permissions, data scopes and field permissions', true),
 ('role:delete', 'role', 'delete', 'delete roles', true),
 ('role:assign', 'role', 'assign', 'assign roles to users', true),
 ('permission:read', 'permission', 'read', 'list permissions', true),
 ('permission:create', 'permission', 'create', 'add permissions to the catalogue', true),
 ('permission:delete', 'permission', 'delete', 'remove custom permissions', true),
 ('tenant:read', 'tenant', 'read', 'read tenants', true),
 ('tenant:create', 'tenant', 'create', 'create tenants', true),
 ('tenant:update', 'tenant', 'update', 'change tenants, their status and limits', true),
 ('tenant:delete', 'tenant', 'delete', 'delete tenants', true),
 ('department:read', 'department', 'read', 'list and read departments', true),
 ('department:create', 'department', 'create', 'create departments', true),
 ('department:update', 'department', 'update', 'rename and move departments', true),
 ('department:delete', 'department', 'delete', 'delete departments', true),
 ('menu:read', 'menu', 'read', 'list every menu', true),
 ('menu:create', 'menu', 'create', 'create menus', true),
 ('menu:update', 'menu', 'update', 'change menus', true),
 ('menu:delete', 'menu', 'delete', 'delete menus', true),
 ('quota:read', 'quota', 'read', 'read quotas and usage', true),
 ('quota:update', 'quota', 'update', 'change quota limits', true),
 ('ticket:read', 'ticket', 'read', 'list and read tickets', true),
 ('ticket:create', 'ticket', 'create', 'open tickets', true),
 ('ticket:update', 'ticket', 'update', 'reply to, close and rate tickets', true),
 ('ticket:manage', 'ticket', 'manage', 'assign tickets, internal notes, any status change', true),
 ('audit_log:read', 'audit_log', 'read', 'search the audit log', true),
 ('api_key:read', 'api_key', 'read', 'list one''s api keys', true),
 ('api_key:create', 'api_key', 'create', 'create api keys', true),
 ('api_key:revoke', 'api_key', 'revoke', 'revoke api keys', true),
 ('event:manage', 'event', 'manage', 'list and replay dead-letter events', true),
 ('device:read', 'device', 'read', 'list and read devices', true),
 ('device:create', 'device', 'create', 'create devices', true),
 ('device:update', 'device', 'update', 'change devices', true),
 ('device:delete', 'device', 'delete', 'delete devices', true),
 ('device:control', 'device', 'control', 'start, stop, shell, install on devices', true),
 ('app:read', 'app', 'read', 'browse the app catalogue', true),
 ('app:manage', 'app', 'manage', 'upload and review apps', true),
 ('billing:read', 'billing', 'read', 'read balances, orders, invoices', true),
 ('billing:manage', 'billing', 'manage', 'manage plans, rules, refunds', true),
 ('notification:read', 'notification', 'read', 'read one''s notifications', true),
 ('notification:manage', 'notification', 'manage', 'manage notification templates', true);

-- System roles. Fixed ids so that code and tests can name them.
INSERT INTO roles (id, tenant_id, code, name, description, is_system) VALUES
 ('00000000-0000-0000-0000-00000000a001', NULL, 'super_admin', 'Super administrator', 'platform staff with every permission', true),
 ('00000000-0000-0000-0000-00000000a002', NULL, 'tenant_admin', 'Tenant administrator', 'manages one tenant', true),
 ('00000000-0000-0000-0000-00000000a003', NULL, 'support', 'Support agent', 'answers tickets', true),
 ('00000000-0000-0000-0000-00000000a004', NULL, 'user', 'User', 'rents and uses cloud phones', true);

INSERT INTO role_permissions (role_id, permission)
SELECT '00000000-0000-0000-0000-00000000a001'::uuid, '*'
UNION ALL
SELECT '00000000-0000-0000-0000-00000000a002'::uuid, p FROM unnest(ARRAY[
  'user:*', 'role:*', 'department:*', 'quota:*', 'ticket:*', 'audit_log:read', 'api_key:*',
  'device:*', 'app:read', 'billing:read', 'notification:read', 'menu:read', 'tenant:read', 'permission:read']) p
UNION ALL
SELECT '00000000-0000-0000-0000-00000000a003'::uuid, p FROM unnest(ARRAY[
  'user:read', 'ticket:*', 'audit_log:read', 'quota:read', 'device:read', 'menu:read', 'api_key:read',
  'api_key:create', 'api_key:revoke', 'notification:read']) p
UNION ALL
SELECT '00000000-0000-0000-0000-00000000a004'::uuid, p FROM unnest(ARRAY[
  'ticket:read', 'ticket:create', 'ticket:update', 'api_key:read', 'api_key:create', 'api_key:revoke',
  'device:read', 'device:create', 'device:update', 'device:delete', 'device:control', 'app:read',
  'billing:read', 'notification:read', 'quota:read']) p;

INSERT INTO data_scopes (id, role_id, resource, scope) VALUES
 ('00000000-0000-0000-0000-00000000b001', '00000000-0000-0000-0000-00000000a001', '*', 'all'),
 ('00000000-0000-0000-0000-00000000b002', '00000000-0000-0000-0000-00000000a002', '*', 'tenant'),
 ('00000000-0000-0000-0000-00000000b003', '00000000-0000-0000-0000-00000000a003', '*', 'tenant'),
 ('00000000-0000-0000-0000-00000000b004', '00000000-0000-0000-0000-00000000a004', '*', 'self');

INSERT INTO user_roles (user_id, role_id)
SELECT id, '00000000-0000-0000-0000-00000000a004'::uuid FROM users;
ALTER TABLE users DROP COLUMN roles;

-- The console's menus; each shows only to callers holding its permission.
INSERT INTO menus (id, parent_id, code, name, path, icon, sort, permission) VALUES
 ('00000000-0000-0000-0000-00000000c001', NULL, 'devices', 'Cloud phones', '/devices', 'phone', 10, 'device:read'),
 ('00000000-0000-0000-0000-00000000c002', NULL, 'apps', 'Apps', '/apps', 'apps', 20, 'app:read'),
 ('00000000-0000-0000-0000-00000000c003', NULL, 'billing', 'Billing', '/billing', 'wallet', 30, 'billing:read'),
 ('00000000-0000-0000-0000-00000000c004', NULL, 'tickets', 'Support', '/tickets', 'help', 40, 'ticket:read'),
 ('00000000-0000-0000-0000-00000000c005', NULL, 'admin', 'Administration', '/admin', 'settings', 90, NULL),
 ('00000000-0000-0000-0000-00000000c006', '00000000-0000-0000-0000-00000000c005', 'admin.users', 'Users', '/admin/users', 'users', 10, 'user:read'),
 ('00000000-0000-0000-0000-00000000c007', '00000000-0000-0000-0000-00000000c005', 'admin.roles', 'Roles', '/admin/roles', 'shield', 20, 'role:read'),
 ('00000000-0000-0000-0000-00000000c008', '00000000-0000-0000-0000-00000000c005', 'admin.departments', 'Departments', '/admin/departments', 'tree', 30, 'department:read'),
 ('00000000-0000-0000-0000-00000000c009', '00000000-0000-0000-0000-00000000c005', 'admin.tenants', 'Tenants', '/admin/tenants', 'building', 40, 'tenant:create'),
 ('00000000-0000-0000-0000-00000000c010', '00000000-0000-0000-0000-00000000c005', 'admin.quotas', 'Quotas', '/admin/quotas', 'gauge', 50, 'quota:update'),
 ('00000000-0000-0000-0000-00000000c011', '00000000-0000-0000-0000-00000000c005', 'admin.audit', 'Audit log', '/admin/audit-logs', 'list', 60, 'audit_log:read');
