//! Support tickets: openers open, edit, reply to, close, reopen and rate
//! their tickets; staff (`ticket:manage`) see their scope's tickets, reply,
//! write internal notes, assign and move tickets through the status flow.

use super::{audit, db, paged, search_query, uuid_query, Call};
use crate::domain::ticket::{
    Actor, Assign, CreateReply, CreateTicket, Rate, Status, StatusChange, Ticket, TicketPatch,
    CATEGORIES, PRIORITIES,
};
use crate::error::{Error, Result};
use crate::repo::{self, tickets::Filter};
use access::{Caller, RowRef};
use platform::db::Db;
use platform::input::Text;
use spin_sdk::http::Response;
use uuid::Uuid;

fn row(t: &Ticket) -> RowRef {
    RowRef {
        tenant: t.tenant_id,
        department: t.department_id,
        owner: Some(t.user_id),
    }
}

fn visible(db: &Db, caller: &Caller, id: Uuid, lock: bool) -> Result<Ticket> {
    match repo::tickets::find(db, id, lock)? {
        Some(t) if caller.sees("ticket", row(&t)) => Ok(t),
        _ => Err(Error::NotFound("ticket")),
    }
}

/// A ticket with the caller's field rules for `ticket` applied (none on
/// their own tickets).
fn view(caller: &Caller, t: &Ticket) -> serde_json::Value {
    super::present(caller, "ticket", Some(t.user_id), t)
}

fn is_staff(caller: &Caller) -> bool {
    caller.can("ticket:manage")
}

fn actor(caller: &Caller, t: &Ticket) -> Result<Actor> {
    if is_staff(caller) {
        Ok(Actor::Staff)
    } else if t.user_id == caller.user_id {
        Ok(Actor::Opener)
    } else {
        Err(Error::Forbidden(
            "only the opener or support staff can do this".into(),
        ))
    }
}

fn status(t: &Ticket) -> Result<Status> {
    Status::parse(&t.status).ok_or_else(|| {
        Error::Problem(platform::Problem::internal(format!(
            "ticket status {}",
            t.status
        )))
    })
}

/// `GET /tickets?status=&category=&priority=&assignee_id=&user_id=&q=&page=&per_page=`.
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let f = Filter {
        status: super::one_of(call, "status", Status::ALL)?,
        category: super::one_of(call, "category", CATEGORIES)?,
        priority: super::one_of(call, "priority", PRIORITIES)?,
        assignee_id: uuid_query(call, "assignee_id")?,
        user_id: uuid_query(call, "user_id")?,
        q: search_query(call)?,
    };
    let (items, total) = repo::tickets::list(&db()?, &caller.filter("ticket"), &f, page)?;
    let items: Vec<_> = items.iter().map(|t| view(caller, t)).collect();
    Ok(paged(items, page, total))
}

/// `POST /tickets`.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let new = call.body::<CreateTicket>()?.parse()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let me = repo::users::find(tx, caller.user_id)?.ok_or(Error::NotFound("user"))?;
        let t = repo::tickets::insert(tx, me.id, me.tenant_id, me.department_id, &new)?;
        // Every change is audited (docs/api.md), a new ticket too.
        repo::audit::record(
            tx,
            &audit(call, "ticket.create", "ticket", t.id, t.tenant_id).after(&t),
        )?;
        Ok::<_, Error>(t)
    })?;
    Ok(platform::http::json(201, &t))
}

/// `GET /tickets/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let t = visible(&db()?, caller, call.id("id", "ticket")?, false)?;
    Ok(platform::http::json(200, &view(caller, &t)))
}

/// `PATCH /tickets/:id`: the opener while it is open; staff until it closes.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "ticket")?;
    let change = call.body::<TicketPatch>()?.parse()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let t = visible(tx, caller, id, true)?;
        let editable = match actor(caller, &t)? {
            Actor::Staff => status(&t)? != Status::Closed,
            Actor::Opener => status(&t)? == Status::Open,
        };
        if !editable {
            return Err(Error::Conflict(format!(
                "a {} ticket cannot be edited",
                t.status
            )));
        }
        Ok(repo::tickets::update(tx, id, &change)?)
    })?;
    Ok(platform::http::json(200, &view(caller, &t)))
}

/// `GET /tickets/:id/replies`: internal notes only for staff.
pub fn replies(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let db = db()?;
    let t = visible(&db, caller, call.id("id", "ticket")?, false)?;
    let (items, total) = repo::tickets::replies(&db, t.id, is_staff(caller), page)?;
    Ok(paged(items, page, total))
}

/// `POST /tickets/:id/replies`.
pub fn reply(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "ticket")?;
    let body: CreateReply = call.body()?;
    let text = Text::parse(&body.body, "body", 10_000)?;
    let db = db()?;
    let r = db.transaction(|tx| {
        let t = visible(tx, caller, id, true)?;
        let who = actor(caller, &t)?;
        if body.internal && who != Actor::Staff {
            return Err(Error::Forbidden(
                "internal notes are for support staff".into(),
            ));
        }
        let s = status(&t)?;
        if s == Status::Closed {
            return Err(Error::Conflict("a closed ticket takes no replies".into()));
        }
        let kind = if who == Actor::Staff && t.user_id != caller.user_id {
            "staff"
        } else {
            "user"
        };
        let r =
            repo::tickets::add_reply(tx, id, caller.user_id, kind, body.internal, text.as_str())?;
        if !body.internal {
            let staff_reply = kind == "staff";
            let next = s.after_reply(if staff_reply {
                Actor::Staff
            } else {
                Actor::Opener
            });
            repo::tickets::set_status(tx, id, next.as_str(), staff_reply)?;
        }
        Ok::<_, Error>(r)
    })?;
    Ok(platform::http::json(201, &r))
}

/// `POST /tickets/:id/status`.
pub fn status_change(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "ticket")?;
    let to = call.body::<StatusChange>()?.parse()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let t = visible(tx, caller, id, true)?;
        let who = actor(caller, &t)?;
        let to = status(&t)?.transition(to, who)?;
        let after = repo::tickets::set_status(tx, id, to.as_str(), false)?;
        repo::audit::record(
            tx,
            &audit(call, "ticket.status", "ticket", id, t.tenant_id)
                .before(&t.status)
                .after(&after.status),
        )?;
        Ok::<_, Error>(after)
    })?;
    Ok(platform::http::json(200, &view(caller, &t)))
}

/// `POST /tickets/:id/assign`: to an active user of the ticket's tenant.
pub fn assign(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "ticket")?;
    let assignee = call.body::<Assign>()?.assignee()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let t = visible(tx, caller, id, true)?;
        if status(&t)? == Status::Closed {
            return Err(Error::Conflict("a closed ticket cannot be assigned".into()));
        }
        if let Some(a) = assignee {
            match repo::users::find(tx, a)? {
                Some(u) if u.status == "active" && u.tenant_id == t.tenant_id => {}
                _ => {
                    return Err(Error::Invalid(
                        "assignee_id names no active user of the ticket's tenant".into(),
                    ))
                }
            }
        }
        let after = repo::tickets::assign(tx, id, assignee)?;
        repo::audit::record(
            tx,
            &audit(call, "ticket.assign", "ticket", id, t.tenant_id)
                .before(&t.assignee_id)
                .after(&after.assignee_id),
        )?;
        Ok::<_, Error>(after)
    })?;
    Ok(platform::http::json(200, &view(caller, &t)))
}

/// `POST /tickets/:id/rating`: the opener rates a resolved or closed ticket.
pub fn rate(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "ticket")?;
    let (rating, feedback) = call.body::<Rate>()?.parse()?;
    let db = db()?;
    let t = db.transaction(|tx| {
        let t = visible(tx, caller, id, true)?;
        if t.user_id != caller.user_id {
            return Err(Error::Forbidden("only the opener rates a ticket".into()));
        }
        if !matches!(status(&t)?, Status::Resolved | Status::Closed) {
            return Err(Error::Conflict(
                "only a resolved or closed ticket can be rated".into(),
            ));
        }
        Ok::<_, Error>(repo::tickets::rate(
            tx,
            id,
            rating,
            feedback.as_ref().map(|f| f.as_str()),
        )?)
    })?;
    Ok(platform::http::json(200, &view(caller, &t)))
}
