-- Device templates are managed with `device:template`: tenant_admin holds
-- it through `device:*` (for its tenant's templates), super_admin through
-- `*` (public ones too); a plain user only uses the templates they see.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('device:template', 'device', 'template', 'create, change and delete device templates', true);
