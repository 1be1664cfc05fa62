//! All SQL of `notification`.

use platform::db::{col, timestamp, Db, DbError};
use platform::http::Page;
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A notification as the API shows it.
#[derive(Debug, Serialize)]
pub struct Notification {
    id: Uuid,
    kind: String,
    title: String,
    body: String,
    data: serde_json::Value,
    read_at: Option<String>,
    created_at: String,
}

fn notification(row: &[DbValue]) -> Result<Notification, DbError> {
    let read_at = match row.get(5) {
        Some(DbValue::DbNull) | None => None,
        Some(_) => Some(timestamp(row, 5, "notifications.read_at")?),
    };
    Ok(Notification {
        id: col(row, 0, "notifications.id")?,
        kind: col(row, 1, "notifications.kind")?,
        title: col(row, 2, "notifications.title")?,
        body: col(row, 3, "notifications.body")?,
        data: col(row, 4, "notifications.data")?,
        read_at,
        created_at: timestamp(row, 6, "notifications.created_at")?,
    })
}

/// A page of a user's notifications, newest first, and the total.
pub fn list(
    db: &Db,
    user: Uuid,
    unread_only: bool,
    page: Page,
) -> Result<(Vec<Notification>, i64), DbError> {
    let filter = "user_id = $1 AND ($2 = false OR read_at IS NULL)";
    let rows = db.query(
        &format!(
            "SELECT id, kind, title, body, data, read_at, created_at FROM notifications \
             WHERE {filter} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        ),
        &[
            P::Uuid(user.to_string()),
            P::Boolean(unread_only),
            P::Int64(page.per_page),
            P::Int64(page.offset()),
        ],
    )?;
    let items = rows
        .rows
        .iter()
        .map(|r| notification(r))
        .collect::<Result<Vec<_>, _>>()?;
    let total = db.query(
        &format!("SELECT count(*) FROM notifications WHERE {filter}"),
        &[P::Uuid(user.to_string()), P::Boolean(unread_only)],
    )?;
    let total: i64 = col(&total.rows[0], 0, "count")?;
    Ok((items, total))
}

/// Marks a notification read; false if the user has no such notification.
pub fn mark_read(db: &Db, user: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db.execute(
        "UPDATE notifications SET read_at = coalesce(read_at, now() AT TIME ZONE 'UTC') WHERE id = $1 AND user_id = $2",
        &[P::Uuid(id.to_string()), P::Uuid(user.to_string())],
    )?;
    Ok(n == 1)
}

/// A notification to create for an event.
pub struct New<'a> {
    /// Recipient.
    pub user: Uuid,
    /// Kind, e.g. `welcome`.
    pub kind: &'a str,
    /// Title.
    pub title: &'a str,
    /// Text.
    pub body: String,
    /// Structured data for clients (and delivery channels).
    pub data: serde_json::Value,
}

/// Inserts the notification caused by an event (or, with no event, a direct
/// delivery); a redelivered event creates nothing (one notification per
/// source event).
pub fn insert(db: &Db, n: &New, event_id: Option<Uuid>) -> Result<(), DbError> {
    let data = spin_sdk::pg4::jsonb(&n.data).map_err(|e| DbError::Other(e.to_string()))?;
    db.execute(
        "INSERT INTO notifications (id, user_id, kind, title, body, data, source_event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source_event_id) DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(n.user.to_string()),
            P::Str(n.kind.into()),
            P::Str(n.title.into()),
            P::Str(n.body.clone()),
            data,
            event_id.map_or(P::DbNull, |e| P::Uuid(e.to_string())),
        ],
    )?;
    Ok(())
}

/// An email to send.
pub struct NewMail<'a> {
    /// The recipient user.
    pub user: Uuid,
    /// Their address.
    pub to: &'a str,
    /// What it is, e.g. `password_reset`.
    pub kind: &'a str,
    /// Subject line.
    pub subject: &'a str,
    /// Plain-text body (sealed before it is stored).
    pub text: &'a str,
}

/// The purpose bound into sealed mail bodies.
pub const MAIL_SEAL_PURPOSE: &str = "outgoing-mail";

/// Queues an email; its body is stored sealed under the component's mail key.
pub fn queue_mail(db: &Db, m: &NewMail) -> Result<(), crate::error::Error> {
    let key = access::service::ComponentKey::parse(&platform::var("component_key")?)
        .map_err(|e| platform::Problem::internal(e.to_string()))?
        .seal_key(MAIL_SEAL_PURPOSE);
    let sealed = access::seal::seal(&key, MAIL_SEAL_PURPOSE, m.text.as_bytes())
        .map_err(|e| platform::Problem::internal(e.to_string()))?;
    db.execute(
        "INSERT INTO outgoing_mail (id, user_id, to_address, kind, subject, sealed_body) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(m.user.to_string()),
            P::Str(m.to.into()),
            P::Str(m.kind.into()),
            P::Str(m.subject.into()),
            P::Binary(sealed),
        ],
    )?;
    Ok(())
}
