-- Administering a device's lifecycle: setting when it expires and
-- force-releasing it (deleting it now, whoever owns it). No built-in role
-- changes: super_admin holds `*` and tenant_admin `device:*`, which cover
-- it within their data scope; a plain user does not hold it.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('device:admin', 'device', 'admin', 'set device expiry and force-release devices', true);
