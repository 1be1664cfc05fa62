//! All SQL of `notification`.

use platform::db::{col, opt_timestamp, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// A notification as the API shows it.
#[derive(Debug, Serialize)]
pub struct Notification {
    id: Uuid,
    kind: String,
    category: String,
    locale: String,
    title: String,
    body: String,
    data: serde_json::Value,
    read_at: Option<String>,
    created_at: String,
}

const COLUMNS: &str = "id, kind, category, locale, title, body, data, read_at, created_at";

fn notification(row: &[DbValue]) -> Result<Notification, DbError> {
    Ok(Notification {
        id: col(row, 0, "notifications.id")?,
        kind: col(row, 1, "notifications.kind")?,
        category: col(row, 2, "notifications.category")?,
        locale: col(row, 3, "notifications.locale")?,
        title: col(row, 4, "notifications.title")?,
        body: col(row, 5, "notifications.body")?,
        data: col(row, 6, "notifications.data")?,
        read_at: opt_timestamp(row, 7, "notifications.read_at")?,
        created_at: timestamp(row, 8, "notifications.created_at")?,
    })
}

/// What a list of notifications is narrowed to.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only unread ones (`Some(true)`), only read ones (`Some(false)`).
    pub unread: Option<bool>,
    /// One category.
    pub category: Option<String>,
    /// One kind (event type).
    pub kind: Option<String>,
}

/// A page of a user's notifications, newest first, and the total.
pub fn list(
    db: &Db,
    user: Uuid,
    f: Filter,
    page: Page,
) -> Result<(Vec<Notification>, i64), DbError> {
    let mut w = Where::new();
    w.eq("user_id", P::Uuid(user.to_string()));
    match f.unread {
        Some(true) => w.and("read_at IS NULL"),
        Some(false) => w.and("read_at IS NOT NULL"),
        None => {}
    }
    if let Some(c) = f.category {
        w.eq("category", P::Str(c));
    }
    if let Some(k) = f.kind {
        w.eq("kind", P::Str(k));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM notifications"),
        "notifications",
        w,
        "created_at DESC, id",
        page,
        notification,
    )
}

/// Where a user's notifications stand: unread ones per category, and a
/// token that changes whenever any of theirs is added, read or deleted.
#[derive(Debug, PartialEq, Eq)]
pub struct Standing {
    /// Unread, per category.
    pub unread: Vec<(String, i64)>,
    /// Changes with any change.
    pub token: String,
}

/// Where a user's notifications stand, in one statement.
pub fn standing(db: &Db, user: Uuid) -> Result<Standing, DbError> {
    let rows = db.all(
        "SELECT category, count(*) FILTER (WHERE read_at IS NULL), count(*), \
                coalesce(max(extract(epoch FROM created_at) * 1000000)::bigint, 0), \
                coalesce(max(extract(epoch FROM read_at) * 1000000)::bigint, 0) \
           FROM notifications WHERE user_id = $1 GROUP BY category ORDER BY category",
        &[P::Uuid(user.to_string())],
        |r| {
            Ok((
                col::<String>(r, 0, "category")?,
                col::<i64>(r, 1, "unread")?,
                col::<i64>(r, 2, "total")?,
                col::<i64>(r, 3, "latest")?,
                col::<i64>(r, 4, "read")?,
            ))
        },
    )?;
    let (mut total, mut unread, mut latest, mut read) = (0, 0, 0, 0);
    for (_, u, t, l, r) in &rows {
        total += t;
        unread += u;
        latest = latest.max(*l);
        read = read.max(*r);
    }
    Ok(Standing {
        unread: rows
            .into_iter()
            .filter(|(_, u, ..)| *u > 0)
            .map(|(c, u, ..)| (c, u))
            .collect(),
        token: format!("{total}.{unread}.{latest}.{read}"),
    })
}

/// Marks a notification read; false if the user has no such notification.
pub fn mark_read(db: &Db, user: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db.execute(
        "UPDATE notifications SET read_at = coalesce(read_at, now() AT TIME ZONE 'UTC') WHERE id = $1 AND user_id = $2",
        &[P::Uuid(id.to_string()), P::Uuid(user.to_string())],
    )?;
    Ok(n == 1)
}

/// Marks every unread notification of a user read (of one category, when
/// given); how many.
pub fn mark_all_read(db: &Db, user: Uuid, category: Option<&str>) -> Result<u64, DbError> {
    db.execute(
        "UPDATE notifications SET read_at = now() AT TIME ZONE 'UTC' \
          WHERE user_id = $1 AND read_at IS NULL AND ($2::text IS NULL OR category = $2::text)",
        &[
            P::Uuid(user.to_string()),
            category.map_or(P::DbNull, |c| P::Str(c.into())),
        ],
    )
}

/// Deletes one of a user's notifications; false if they have no such one.
pub fn delete(db: &Db, user: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db.execute(
        "DELETE FROM notifications WHERE id = $1 AND user_id = $2",
        &[P::Uuid(id.to_string()), P::Uuid(user.to_string())],
    )?;
    Ok(n == 1)
}

/// A notification to create for an event.
pub struct New<'a> {
    /// Recipient.
    pub user: Uuid,
    /// Kind: the event type it tells of (`device.failed`), or a direct
    /// delivery's (`password_reset`).
    pub kind: &'a str,
    /// Its category (`security`, `device`, `billing`, …).
    pub category: &'a str,
    /// The locale it was written in.
    pub locale: &'a str,
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
        "INSERT INTO notifications (id, user_id, kind, title, body, data, source_event_id, category, locale) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (source_event_id) DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(n.user.to_string()),
            P::Str(n.kind.into()),
            P::Str(n.title.into()),
            P::Str(n.body.clone()),
            data,
            event_id.map_or(P::DbNull, |e| P::Uuid(e.to_string())),
            P::Str(n.category.into()),
            P::Str(n.locale.into()),
        ],
    )?;
    Ok(())
}

/// What notification keeps of a user, read from the identity snapshot of
/// a `user.*` event (of any schema version: what is absent defaults).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Recipient {
    /// The user.
    pub id: Uuid,
    /// Their address.
    pub email: String,
    /// Their name.
    #[serde(default)]
    pub display_name: String,
    /// `active`, `locked`, `deleted`.
    #[serde(default = "active")]
    pub status: String,
    /// Their language.
    #[serde(default = "english")]
    pub locale: String,
}

fn active() -> String {
    "active".into()
}

fn english() -> String {
    "en".into()
}

/// Keeps a user's copy from their identity snapshot at `version` (an
/// older version than the one kept changes nothing).
pub fn keep_recipient(db: &Db, who: &Recipient, version: i64) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO recipients (user_id, email, display_name, locale, status, version) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET email = $2, display_name = $3, locale = $4, status = $5, \
           version = $6, updated_at = now() AT TIME ZONE 'UTC' \
         WHERE recipients.version < $6",
        &[
            P::Uuid(who.id.to_string()),
            P::Str(who.email.clone()),
            P::Str(who.display_name.clone()),
            P::Str(who.locale.clone()),
            P::Str(who.status.clone()),
            P::Int64(version),
        ],
    )?;
    Ok(())
}

/// The language a user reads, as their copy says (none: not known yet).
pub fn locale_of(db: &Db, user: Uuid) -> Result<Option<String>, DbError> {
    db.one(
        "SELECT locale FROM recipients WHERE user_id = $1",
        &[P::Uuid(user.to_string())],
        |r| col(r, 0, "recipients.locale"),
    )
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
