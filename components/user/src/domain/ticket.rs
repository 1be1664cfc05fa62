//! Support tickets: categories, priorities and the status flow.

use crate::error::Error;
use platform::input::{Name, Text};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Ticket categories.
pub const CATEGORIES: &[&str] = &[
    "technical",
    "billing",
    "account",
    "feature_request",
    "other",
];
/// Ticket priorities.
pub const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Opened, nobody has picked it up.
    Open,
    /// Staff is working on it.
    InProgress,
    /// Staff waits for the opener.
    Waiting,
    /// Staff considers it solved; the opener may reopen or close it.
    Resolved,
    /// Done; nothing changes any more.
    Closed,
}

/// Who moves a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The user who opened it.
    Opener,
    /// Support staff (`ticket:manage`).
    Staff,
}

impl Status {
    /// Every status as stored.
    pub const ALL: &[&str] = &["open", "in_progress", "waiting", "resolved", "closed"];

    /// Parses a stored or requested status.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "in_progress" => Self::InProgress,
            "waiting" => Self::Waiting,
            "resolved" => Self::Resolved,
            "closed" => Self::Closed,
            _ => return None,
        })
    }

    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::InProgress => "in_progress",
            Self::Waiting => "waiting",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
        }
    }

    /// The status after `actor` asks for `to`, or why not.
    pub fn transition(self, to: Status, actor: Actor) -> Result<Status, Error> {
        use Status::*;
        let allowed = match (self, to, actor) {
            (Closed, _, _) => false,
            (from, Closed, _) => from != Closed,
            (Resolved, Open, Actor::Opener) => true,
            (Open | Waiting | Resolved, InProgress, Actor::Staff) => true,
            (Open | InProgress, Waiting, Actor::Staff) => true,
            (Open | InProgress | Waiting, Resolved, Actor::Staff) => true,
            _ => false,
        };
        if allowed {
            Ok(to)
        } else {
            Err(Error::Conflict(format!(
                "a ticket cannot go from {} to {}{}",
                self.as_str(),
                to.as_str(),
                if actor == Actor::Opener {
                    " by its opener"
                } else {
                    ""
                }
            )))
        }
    }

    /// What a reply does to the status: the opener's reply puts a waiting or
    /// resolved ticket back in progress; staff's first reply takes an open one.
    pub fn after_reply(self, actor: Actor) -> Status {
        match (self, actor) {
            (Status::Waiting | Status::Resolved, Actor::Opener) => Status::InProgress,
            (Status::Open, Actor::Staff) => Status::InProgress,
            (s, _) => s,
        }
    }
}

fn one_of(v: &str, field: &str, allowed: &[&str]) -> Result<String, Error> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(Error::Invalid(format!(
            "{field} must be one of {}",
            allowed.join(", ")
        )))
    }
}

/// A ticket as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    /// Id.
    pub id: Uuid,
    /// Human-friendly number.
    pub number: i64,
    /// Tenant of the opener.
    pub tenant_id: Option<Uuid>,
    /// Department of the opener.
    pub department_id: Option<Uuid>,
    /// The opener.
    pub user_id: Uuid,
    /// Subject.
    pub subject: String,
    /// Description.
    pub body: String,
    /// Category.
    pub category: String,
    /// Priority.
    pub priority: String,
    /// Status.
    pub status: String,
    /// Assigned staff.
    pub assignee_id: Option<Uuid>,
    /// The opener's rating, 1 to 5.
    pub rating: Option<i16>,
    /// The opener's feedback.
    pub feedback: Option<String>,
    /// First staff reply.
    pub first_response_at: Option<String>,
    /// When it was resolved.
    pub resolved_at: Option<String>,
    /// When it was closed.
    pub closed_at: Option<String>,
    /// Version.
    pub version: i64,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// `POST /tickets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    /// Subject.
    pub subject: String,
    /// Description.
    pub body: String,
    /// Category.
    pub category: String,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: Option<String>,
}

/// A validated new ticket.
#[derive(Debug, Clone)]
pub struct NewTicket {
    /// Subject.
    pub subject: Name,
    /// Body.
    pub body: Text,
    /// Category.
    pub category: String,
    /// Priority.
    pub priority: String,
}

impl CreateTicket {
    /// Validates.
    pub fn parse(self) -> Result<NewTicket, Error> {
        Ok(NewTicket {
            subject: Name::parse(&self.subject, "subject", 200)?,
            body: Text::parse(&self.body, "body", 10_000)?,
            category: one_of(&self.category, "category", CATEGORIES)?,
            priority: one_of(
                self.priority.as_deref().unwrap_or("normal"),
                "priority",
                PRIORITIES,
            )?,
        })
    }
}

/// `PATCH /tickets/:id`: the opener edits an open ticket; staff may change
/// category and priority any time before closing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketPatch {
    /// Subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// Priority.
    #[serde(default)]
    pub priority: Option<String>,
}

/// A validated ticket change.
#[derive(Debug, Clone, Default)]
pub struct TicketChange {
    /// Subject.
    pub subject: Option<Name>,
    /// Category.
    pub category: Option<String>,
    /// Priority.
    pub priority: Option<String>,
}

impl TicketPatch {
    /// Validates; an empty patch is refused.
    pub fn parse(self) -> Result<TicketChange, Error> {
        if self.subject.is_none() && self.category.is_none() && self.priority.is_none() {
            return Err(Error::Invalid("nothing to update".into()));
        }
        Ok(TicketChange {
            subject: self
                .subject
                .as_deref()
                .map(|s| Name::parse(s, "subject", 200))
                .transpose()?,
            category: self
                .category
                .as_deref()
                .map(|c| one_of(c, "category", CATEGORIES))
                .transpose()?,
            priority: self
                .priority
                .as_deref()
                .map(|p| one_of(p, "priority", PRIORITIES))
                .transpose()?,
        })
    }
}

/// A reply as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// Id.
    pub id: Uuid,
    /// Ticket.
    pub ticket_id: Uuid,
    /// Author.
    pub author_id: Uuid,
    /// `user`, `staff` or `system`.
    pub kind: String,
    /// Internal notes are visible to staff only.
    pub internal: bool,
    /// Text.
    pub body: String,
    /// When.
    pub created_at: String,
}

/// `POST /tickets/:id/replies`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReply {
    /// Text.
    pub body: String,
    /// An internal note (staff only).
    #[serde(default)]
    pub internal: bool,
}

/// `POST /tickets/:id/status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The status to move to.
    pub status: String,
}

impl StatusChange {
    /// Parses the target status.
    pub fn parse(&self) -> Result<Status, Error> {
        Status::parse(&self.status).ok_or_else(|| {
            Error::Invalid(format!("status must be one of {}", Status::ALL.join(", ")))
        })
    }
}

/// `POST /tickets/:id/assign`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// Staff member to assign; `null` unassigns. Required.
    #[serde(default, deserialize_with = "platform::input::nullable")]
    pub assignee_id: Option<Option<Uuid>>,
}

impl Assign {
    /// The assignee (`None`: unassign); the field must be given.
    pub fn assignee(&self) -> Result<Option<Uuid>, Error> {
        self.assignee_id
            .ok_or_else(|| Error::Invalid("assignee_id is required (null unassigns)".into()))
    }
}

/// `POST /tickets/:id/rating`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// 1 to 5.
    pub rating: i16,
    /// Optional feedback.
    #[serde(default)]
    pub feedback: Option<String>,
}

impl Rate {
    /// Validates.
    pub fn parse(self) -> Result<(i16, Option<Text>), Error> {
        if !(1..=5).contains(&self.rating) {
            return Err(Error::Invalid("rating must be from 1 to 5".into()));
        }
        Ok((
            self.rating,
            self.feedback
                .as_deref()
                .map(|f| Text::parse(f, "feedback", 2000))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_status_flow_refuses_illegal_moves() {
        assert_eq!(
            Open.transition(InProgress, Actor::Staff).unwrap(),
            InProgress
        );
        assert!(Open.transition(InProgress, Actor::Opener).is_err());
        assert!(Open.transition(Resolved, Actor::Opener).is_err());
        assert_eq!(Resolved.transition(Open, Actor::Opener).unwrap(), Open);
        assert_eq!(Waiting.transition(Closed, Actor::Opener).unwrap(), Closed);
        for to in [Open, InProgress, Waiting, Resolved, Closed] {
            assert!(
                Closed.transition(to, Actor::Staff).is_err(),
                "closed is final"
            );
        }
        assert!(InProgress.transition(Open, Actor::Staff).is_err());
    }

    #[test]
    fn replies_move_the_ticket_along() {
        assert_eq!(Waiting.after_reply(Actor::Opener), InProgress);
        assert_eq!(Open.after_reply(Actor::Staff), InProgress);
        assert_eq!(Open.after_reply(Actor::Opener), Open);
    }

    #[test]
    fn inputs_are_checked() {
        let t = CreateTicket {
            subject: "Phone will not boot".into(),
            body: "It shows a black screen".into(),
            category: "technical".into(),
            priority: None,
        };
        assert_eq!(t.clone().parse().unwrap().priority, "normal");
        assert!(CreateTicket {
            category: "misc".into(),
            ..t.clone()
        }
        .parse()
        .is_err());
        assert!(CreateTicket {
            subject: "x".repeat(201),
            ..t
        }
        .parse()
        .is_err());
        assert!(Rate {
            rating: 6,
            feedback: None
        }
        .parse()
        .is_err());
        assert!(TicketPatch::default().parse().is_err());
    }
}
