-- Moving money on a user's balance by hand (a recorded offline recharge, a
-- reward, a correction, a manual charge or refund) and setting credit
-- limits is its own permission, `billing:adjust`, held by platform staff
-- (super_admin, through `*`) and by no built-in tenant role: every posting
-- names its operator and reason in the ledger.
INSERT INTO permissions (code, resource, action, description, is_system) VALUES
 ('billing:adjust', 'billing', 'adjust', 'post adjustments, rewards and manual charges to balances; set credit limits', true);
