//! Tickets and their replies.

use crate::domain::ticket::{NewTicket, Reply, Ticket, TicketChange};
use access::RowFilter;
use platform::db::{col, opt_timestamp, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to tickets: the opener owns the ticket, and its
/// tenant and department are the opener's at opening.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "tenant_id",
    department: Some("department_id"),
    owner: Some("user_id"),
};

const COLUMNS: &str = "id, number, tenant_id, department_id, user_id, subject, body, category, priority, status, \
     assignee_id, rating, feedback, first_response_at, resolved_at, closed_at, version, created_at, updated_at";

fn ticket(r: &[DbValue]) -> Result<Ticket, DbError> {
    Ok(Ticket {
        id: col(r, 0, "tickets.id")?,
        number: col(r, 1, "tickets.number")?,
        tenant_id: col(r, 2, "tickets.tenant_id")?,
        department_id: col(r, 3, "tickets.department_id")?,
        user_id: col(r, 4, "tickets.user_id")?,
        subject: col(r, 5, "tickets.subject")?,
        body: col(r, 6, "tickets.body")?,
        category: col(r, 7, "tickets.category")?,
        priority: col(r, 8, "tickets.priority")?,
        status: col(r, 9, "tickets.status")?,
        assignee_id: col(r, 10, "tickets.assignee_id")?,
        rating: col(r, 11, "tickets.rating")?,
        feedback: col(r, 12, "tickets.feedback")?,
        first_response_at: opt_timestamp(r, 13, "tickets.first_response_at")?,
        resolved_at: opt_timestamp(r, 14, "tickets.resolved_at")?,
        closed_at: opt_timestamp(r, 15, "tickets.closed_at")?,
        version: col(r, 16, "tickets.version")?,
        created_at: timestamp(r, 17, "tickets.created_at")?,
        updated_at: timestamp(r, 18, "tickets.updated_at")?,
    })
}

/// A ticket by id; `lock` takes a row lock for a change.
pub fn find(db: &Db, id: Uuid, lock: bool) -> Result<Option<Ticket>, DbError> {
    db.one(
        &format!(
            "SELECT {COLUMNS} FROM tickets WHERE id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        ),
        &[P::Uuid(id.to_string())],
        ticket,
    )
}

/// Filters of `GET /tickets`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Status.
    pub status: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Priority.
    pub priority: Option<String>,
    /// Assigned staff.
    pub assignee_id: Option<Uuid>,
    /// Opener.
    pub user_id: Option<Uuid>,
    /// Substring of the subject.
    pub q: Option<String>,
}

/// Tickets in the caller's scope, newest first, paged.
pub fn list(
    db: &Db,
    scope: &RowFilter,
    f: &Filter,
    page: Page,
) -> Result<(Vec<Ticket>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    for (c, v) in [
        ("status", &f.status),
        ("category", &f.category),
        ("priority", &f.priority),
    ] {
        if let Some(v) = v {
            w.eq(c, P::Str(v.clone()));
        }
    }
    if let Some(a) = f.assignee_id {
        w.eq("assignee_id", P::Uuid(a.to_string()));
    }
    if let Some(u) = f.user_id {
        w.eq("user_id", P::Uuid(u.to_string()));
    }
    if let Some(q) = &f.q {
        w.search(&["subject"], q);
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM tickets"),
        "tickets",
        w,
        "created_at DESC, id",
        page,
        ticket,
    )
}

/// Opens a ticket for `user` in their tenant and department.
pub fn insert(
    db: &Db,
    user: Uuid,
    tenant: Option<Uuid>,
    department: Option<Uuid>,
    t: &NewTicket,
) -> Result<Ticket, DbError> {
    let rows = db.query(
        &format!(
            "INSERT INTO tickets (id, tenant_id, department_id, user_id, subject, body, category, priority) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            opt_uuid(tenant),
            opt_uuid(department),
            P::Uuid(user.to_string()),
            P::Str(t.subject.as_str().into()),
            P::Str(t.body.as_str().into()),
            P::Str(t.category.clone()),
            P::Str(t.priority.clone()),
        ],
    )?;
    ticket(&rows.rows[0])
}

/// Applies an edit.
pub fn update(db: &Db, id: Uuid, c: &TicketChange) -> Result<Ticket, DbError> {
    let rows = db.query(
        &format!(
            "UPDATE tickets SET subject = coalesce($2, subject), category = coalesce($3, category), \
               priority = coalesce($4, priority), version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(id.to_string()),
            c.subject.as_ref().map_or(P::DbNull, |s| P::Str(s.as_str().into())),
            c.category.clone().map_or(P::DbNull, P::Str),
            c.priority.clone().map_or(P::DbNull, P::Str),
        ],
    )?;
    ticket(&rows.rows[0])
}

/// Moves a ticket to a status, stamping resolved/closed times; a staff
/// reply stamps the first response.
pub fn set_status(db: &Db, id: Uuid, status: &str, staff_replied: bool) -> Result<Ticket, DbError> {
    let rows = db.query(
        &format!(
            "UPDATE tickets SET status = $2, \
               resolved_at = CASE WHEN $2 = 'resolved' THEN now() AT TIME ZONE 'UTC' WHEN $2 IN ('open', 'in_progress') THEN NULL ELSE resolved_at END, \
               closed_at = CASE WHEN $2 = 'closed' THEN now() AT TIME ZONE 'UTC' ELSE closed_at END, \
               first_response_at = CASE WHEN $3 THEN coalesce(first_response_at, now() AT TIME ZONE 'UTC') ELSE first_response_at END, \
               version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[P::Uuid(id.to_string()), P::Str(status.into()), P::Boolean(staff_replied)],
    )?;
    ticket(&rows.rows[0])
}

/// Assigns (or unassigns) a ticket.
pub fn assign(db: &Db, id: Uuid, assignee: Option<Uuid>) -> Result<Ticket, DbError> {
    let rows = db.query(
        &format!(
            "UPDATE tickets SET assignee_id = $2, version = version + 1, updated_at = now() AT TIME ZONE 'UTC' \
             WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[P::Uuid(id.to_string()), opt_uuid(assignee)],
    )?;
    ticket(&rows.rows[0])
}

/// Records the opener's rating.
pub fn rate(db: &Db, id: Uuid, rating: i16, feedback: Option<&str>) -> Result<Ticket, DbError> {
    let rows = db.query(
        &format!(
            "UPDATE tickets SET rating = $2, feedback = $3, version = version + 1, \
               updated_at = now() AT TIME ZONE 'UTC' WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[
            P::Uuid(id.to_string()),
            P::Int16(rating),
            feedback.map_or(P::DbNull, |f| P::Str(f.into())),
        ],
    )?;
    ticket(&rows.rows[0])
}

const REPLY_COLUMNS: &str = "id, ticket_id, author_id, kind, internal, body, created_at";

fn reply(r: &[DbValue]) -> Result<Reply, DbError> {
    Ok(Reply {
        id: col(r, 0, "ticket_replies.id")?,
        ticket_id: col(r, 1, "ticket_replies.ticket_id")?,
        author_id: col(r, 2, "ticket_replies.author_id")?,
        kind: col(r, 3, "ticket_replies.kind")?,
        internal: col(r, 4, "ticket_replies.internal")?,
        body: col(r, 5, "ticket_replies.body")?,
        created_at: timestamp(r, 6, "ticket_replies.created_at")?,
    })
}

/// Adds a reply.
pub fn add_reply(
    db: &Db,
    ticket: Uuid,
    author: Uuid,
    kind: &str,
    internal: bool,
    body: &str,
) -> Result<Reply, DbError> {
    let rows = db.query(
        &format!(
            "INSERT INTO ticket_replies (id, ticket_id, author_id, kind, internal, body) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {REPLY_COLUMNS}"
        ),
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(ticket.to_string()),
            P::Uuid(author.to_string()),
            P::Str(kind.into()),
            P::Boolean(internal),
            P::Str(body.into()),
        ],
    )?;
    reply(&rows.rows[0])
}

/// Replies of a ticket in order; internal notes only if `internal`.
pub fn replies(
    db: &Db,
    ticket: Uuid,
    internal: bool,
    page: Page,
) -> Result<(Vec<Reply>, i64), DbError> {
    let mut w = Where::new();
    w.eq("ticket_id", P::Uuid(ticket.to_string()));
    if !internal {
        w.and("NOT internal");
    }
    paged(
        db,
        &format!("SELECT {REPLY_COLUMNS} FROM ticket_replies"),
        "ticket_replies",
        w,
        "created_at, id",
        page,
        reply,
    )
}
