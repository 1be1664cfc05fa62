-- Device lifecycle: an expiry (from a plan, or set by an administrator)
-- with a warning ahead and deletion after a grace period, an idle timeout
-- (no client heartbeat for that long while running) and a maximum session
-- length. The rules are in components/device/src/domain/lifecycle.rs; the
-- columns here are their inputs and the marks of what was already done.
--
-- `lifecycle_due_at` is the next instant the lifecycle job must look at the
-- device (NULL: nothing will ever be due until an input changes). Every
-- write that can bring that instant earlier recomputes it in its own
-- transaction; a client heartbeat only ever moves an idle deadline later,
-- so it leaves the column alone and the job, looking a little early,
-- finds nothing due and moves it on. The job reads only the few due rows
-- through the partial index below, never every device.
ALTER TABLE devices
    ADD COLUMN expires_at               timestamp,
    ADD COLUMN expiry_warned_at         timestamp,
    ADD COLUMN idle_timeout_secs        integer
        CHECK (idle_timeout_secs BETWEEN 1 AND 2592000),
    ADD COLUMN max_session_secs         integer
        CHECK (max_session_secs BETWEEN 1 AND 2592000),
    ADD COLUMN last_client_heartbeat_at timestamp,
    -- When the device was last seen starting to run: the session's start.
    ADD COLUMN session_started_at       timestamp,
    ADD COLUMN idle_warned_at           timestamp,
    ADD COLUMN lifecycle_due_at         timestamp;

CREATE INDEX devices_lifecycle_due ON devices (lifecycle_due_at)
    WHERE lifecycle_due_at IS NOT NULL;
