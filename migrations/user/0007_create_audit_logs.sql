-- The audit log of privileged actions, written in the transaction of the
-- action itself. Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE,
-- even for the table's owner.
CREATE TABLE audit_logs (
    id            uuid PRIMARY KEY,
    seq           bigserial NOT NULL UNIQUE,
    occurred_at   timestamp NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC'),
    actor_id      uuid,
    actor_kind    text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'system')),
    tenant_id     uuid,
    action        text NOT NULL,
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    before        jsonb,
    after         jsonb,
    request_id    text,
    client_addr   text
);
CREATE INDEX audit_logs_tenant ON audit_logs (tenant_id, seq);
CREATE INDEX audit_logs_actor ON audit_logs (actor_id, seq);
CREATE INDEX audit_logs_resource ON audit_logs (resource_type, resource_id, seq);
CREATE INDEX audit_logs_action ON audit_logs (action, seq);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only';
END;
$$;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
