-- The language a user reads (BCP 47, e.g. `en`, `zh-CN`): notifications are
-- written in it (with a fallback), and it travels in the identity snapshot
-- of every `user.*` event.
ALTER TABLE users ADD COLUMN locale text NOT NULL DEFAULT 'en'
    CHECK (locale ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$');
