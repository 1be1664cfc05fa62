-- Users upload their own APKs to the catalogue (`app:upload`): private to
-- themselves, or shared with their tenant. tenant_admin holds it too;
-- super_admin through `*`. `app:manage` stays with platform staff (the
-- review of what goes public).
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('app:upload', 'app', 'upload', 'upload APKs to the catalogue', true);
INSERT INTO role_permissions (role_id, permission) VALUES
 ('00000000-0000-0000-0000-00000000a002', 'app:upload'),
 ('00000000-0000-0000-0000-00000000a004', 'app:upload');
