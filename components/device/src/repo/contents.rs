//! The contents of files pushed to devices (`operation_contents`): written
//! in the transaction of the `push_file` operation and its command, served
//! to the node the operation was sent to while it runs, and deleted when
//! it finishes. The command on Redis names them only by length and sha256.

use platform::db::{col, Db, DbError};
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// Stores the contents an operation's agent fetches.
pub fn store(db: &Db, operation: Uuid, node: &str, content: Vec<u8>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO operation_contents (operation_id, node_id, content) VALUES ($1, $2, $3)",
        &[
            P::Uuid(operation.to_string()),
            P::Str(node.into()),
            P::Binary(content),
        ],
    )?;
    Ok(())
}

/// The contents of an operation sent to `node`, while that operation runs;
/// `None` for another node's operation, a finished one, or one without
/// contents.
pub fn for_running(db: &Db, operation: Uuid, node: &str) -> Result<Option<Vec<u8>>, DbError> {
    db.one(
        "SELECT c.content FROM operation_contents c JOIN operations o ON o.id = c.operation_id \
         WHERE c.operation_id = $1 AND c.node_id = $2 AND o.node_id = $2 AND o.status = 'running'",
        &[P::Uuid(operation.to_string()), P::Str(node.into())],
        |r| col(r, 0, "operation_contents.content"),
    )
}

/// Deletes an operation's contents (once it has finished: nothing fetches
/// them any more, and the file should not stay in the database).
pub fn delete(db: &Db, operation: Uuid) -> Result<(), DbError> {
    db.execute(
        "DELETE FROM operation_contents WHERE operation_id = $1",
        &[P::Uuid(operation.to_string())],
    )?;
    Ok(())
}
