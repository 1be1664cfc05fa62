-- Notifications are written from templates (docs/notifications.md): each
-- has its event's category (what preferences choose channels by) and the
-- locale it was written in. Earlier rows keep their kinds.
ALTER TABLE notifications ADD COLUMN category text NOT NULL DEFAULT 'account',
    ADD COLUMN locale text NOT NULL DEFAULT 'en';
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;
