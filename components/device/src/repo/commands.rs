//! The commands outbox: a command for a node is written in the transaction
//! that changes the desired state it belongs to, and published to the
//! node's channel only after that commit (`handlers::dispatch`); the relay
//! job publishes what a crash left unsent and resends what got no answer.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Queues a command (the body of a `command` message) for a node.
pub fn queue(
    db: &Db,
    node: &str,
    operation: Uuid,
    body: &serde_json::Value,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO node_commands (id, node_id, operation_id, body) VALUES ($1, $2, $3, $4)",
        &[
            P::Uuid(id.to_string()),
            P::Str(node.into()),
            P::Uuid(operation.to_string()),
            spin_sdk::pg4::jsonb(body).map_err(|e| DbError::Other(e.to_string()))?,
        ],
    )?;
    Ok(id)
}

/// The command sent for an operation (while it is kept).
pub fn body_of(db: &Db, operation: Uuid) -> Result<Option<serde_json::Value>, DbError> {
    db.one(
        "SELECT body FROM node_commands WHERE operation_id = $1 ORDER BY created_at LIMIT 1",
        &[P::Uuid(operation.to_string())],
        |r| col(r, 0, "node_commands.body"),
    )
}

/// A command to send.
pub struct Pending {
    /// Row id.
    pub id: Uuid,
    /// Node.
    pub node: String,
    /// The command body.
    pub body: serde_json::Value,
}

/// Claims up to `limit` unsent commands (in the caller's transaction, so
/// concurrent relays take different ones), oldest first; also commands
/// sent more than `resend_after_secs` ago whose operation still runs (a
/// lost message: the agent answers a repeat from its ledger), at most
/// `max_sends` times.
pub fn claim(
    db: &Db,
    node: Option<&str>,
    limit: i64,
    resend_after_secs: i32,
    max_sends: i32,
) -> Result<Vec<Pending>, DbError> {
    db.all(
        "SELECT c.id, c.node_id, c.body FROM node_commands c \
         LEFT JOIN operations o ON o.id = c.operation_id \
         WHERE ($1::text IS NULL OR c.node_id = $1) AND c.sends < $4 AND (c.sent_at IS NULL \
           OR (o.status = 'running' AND c.sent_at < (now() AT TIME ZONE 'UTC') - make_interval(secs => $3::int))) \
         ORDER BY c.created_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
        &[
            node.map_or(P::DbNull, |n| P::Str(n.into())),
            P::Int64(limit),
            P::Int32(resend_after_secs),
            P::Int32(max_sends),
        ],
        |r| {
            Ok(Pending {
                id: col(r, 0, "node_commands.id")?,
                node: col(r, 1, "node_commands.node_id")?,
                body: col(r, 2, "node_commands.body")?,
            })
        },
    )
}

/// Marks a command sent.
pub fn sent(db: &Db, id: Uuid) -> Result<(), DbError> {
    db.execute(
        "UPDATE node_commands SET sent_at = now() AT TIME ZONE 'UTC', sends = sends + 1 WHERE id = $1",
        &[P::Uuid(id.to_string())],
    )?;
    Ok(())
}

/// Drops commands older than `days` (their operations are long finished).
pub fn prune(db: &Db, days: i32) -> Result<u64, DbError> {
    db.execute(
        "DELETE FROM node_commands WHERE created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1)",
        &[P::Int32(days)],
    )
}
