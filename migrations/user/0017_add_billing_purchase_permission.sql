-- Buying plans (`billing:purchase`): what a user and a tenant's
-- administrators do with their own balance; super_admin holds it through
-- `*`. Reading balances stays `billing:read`.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('billing:purchase', 'billing', 'purchase', 'buy plans and cancel one''s orders', true);
INSERT INTO role_permissions (role_id, permission) VALUES
 ('00000000-0000-0000-0000-00000000a002', 'billing:purchase'),
 ('00000000-0000-0000-0000-00000000a004', 'billing:purchase');
