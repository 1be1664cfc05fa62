-- Permissions of the device domain beyond the first five: shell access is
-- its own permission (it can do anything inside a phone), nodes are
-- platform infrastructure. No built-in role changes: super_admin holds `*`,
-- tenant_admin `device:*` (which covers device:shell); a plain user gets
-- shell only from an administrator's role.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('device:shell', 'device', 'shell', 'run shell commands, push and pull files on devices', true),
 ('node:read', 'node', 'read', 'list and read nodes and their statistics', true),
 ('node:manage', 'node', 'manage', 'enroll, change, cordon, drain and revoke nodes; choose placement', true);
