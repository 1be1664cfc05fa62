-- A file pushed to a device no longer travels inside its command: the
-- command on the node's Redis channel names only the file's length and
-- sha256, and the node's agent fetches the bytes with a signed
-- GET /api/v1/device/agent/nodes/{node_id}/operations/{operation_id}/content,
-- served only to that node and only while the operation runs. The row is
-- written in the transaction of the operation and its command, and deleted
-- when the operation finishes (its result, or its deadline). The contents
-- are bytea: Spin's Postgres interface binds and reads bytes
-- (`ParameterValue::Binary`), so no base64 text is needed.
CREATE TABLE operation_contents (
    operation_id uuid PRIMARY KEY REFERENCES operations (id) ON DELETE CASCADE,
    node_id      text NOT NULL,
    content      bytea NOT NULL,
    created_at   timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Commands written before this change may still hold a file inline.
UPDATE node_commands SET body = body - 'content_base64' WHERE body ? 'content_base64';
