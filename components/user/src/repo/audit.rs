//! The audit log: one row per privileged action, written in the action's own
//! transaction (append-only, enforced by a trigger), and searched with the
//! caller's data scope.

use access::{Caller, Credential, RowFilter};
use platform::db::{col, opt_uuid, timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// How data scopes apply to audit entries: the actor owns what they did.
pub const SCOPE: ScopeColumns = ScopeColumns {
    tenant: "tenant_id",
    department: None,
    owner: Some("actor_id"),
};

/// One audit entry to write.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who acted (`None`: the system, e.g. a consumed event or a job).
    pub actor: Option<(Uuid, &'static str)>,
    /// `<resource>.<verb>`, e.g. `user.lock`.
    pub action: String,
    /// The resource type.
    pub resource_type: &'static str,
    /// The resource's id.
    pub resource_id: String,
    /// The tenant the resource belongs to.
    pub tenant_id: Option<Uuid>,
    /// State before (changes and deletions).
    pub before: Option<serde_json::Value>,
    /// State after (creations and changes).
    pub after: Option<serde_json::Value>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client address Spin saw.
    pub client_addr: Option<String>,
}

impl Entry {
    /// An entry for an action of `caller` (or the system).
    pub fn new(
        caller: Option<&Caller>,
        action: impl Into<String>,
        resource_type: &'static str,
        resource_id: impl ToString,
        tenant_id: Option<Uuid>,
    ) -> Self {
        Self {
            actor: caller.map(|c| {
                (
                    c.user_id,
                    match c.credential {
                        Credential::Token => "user",
                        Credential::ApiKey(_) => "api_key",
                    },
                )
            }),
            action: action.into(),
            resource_type,
            resource_id: resource_id.to_string(),
            tenant_id,
            before: None,
            after: None,
            request_id: None,
            client_addr: None,
        }
    }

    /// Records the state before.
    pub fn before(mut self, v: &impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    /// Records the state after.
    pub fn after(mut self, v: &impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }

    /// Records where the request came from.
    pub fn request(mut self, request_id: &str, client_addr: Option<String>) -> Self {
        self.request_id = Some(request_id.to_string());
        self.client_addr = client_addr;
        self
    }
}

fn json(v: &Option<serde_json::Value>) -> Result<P, DbError> {
    match v {
        Some(v) => spin_sdk::pg4::jsonb(v).map_err(|e| DbError::Other(e.to_string())),
        None => Ok(P::DbNull),
    }
}

/// Appends an entry; call inside the action's transaction.
pub fn record(db: &Db, e: &Entry) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO audit_logs (id, actor_id, actor_kind, tenant_id, action, resource_type, resource_id, \
           before, after, request_id, client_addr) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            opt_uuid(e.actor.map(|a| a.0)),
            P::Str(e.actor.map_or("system", |a| a.1).into()),
            opt_uuid(e.tenant_id),
            P::Str(e.action.clone()),
            P::Str(e.resource_type.into()),
            P::Str(e.resource_id.clone()),
            json(&e.before)?,
            json(&e.after)?,
            e.request_id.clone().map_or(P::DbNull, P::Str),
            e.client_addr.clone().map_or(P::DbNull, P::Str),
        ],
    )?;
    Ok(())
}

/// An audit entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    /// Id.
    pub id: Uuid,
    /// Position in the log.
    pub seq: i64,
    /// When.
    pub occurred_at: String,
    /// Who.
    pub actor_id: Option<Uuid>,
    /// `user`, `api_key` or `system`.
    pub actor_kind: String,
    /// Tenant of the resource.
    pub tenant_id: Option<Uuid>,
    /// What.
    pub action: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// State before.
    pub before: Option<serde_json::Value>,
    /// State after.
    pub after: Option<serde_json::Value>,
    /// Request id.
    pub request_id: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
}

const COLUMNS: &str =
    "id, seq, occurred_at, actor_id, actor_kind, tenant_id, action, resource_type, \
     resource_id, before, after, request_id, client_addr";

fn logged(r: &[DbValue]) -> Result<Logged, DbError> {
    Ok(Logged {
        id: col(r, 0, "audit_logs.id")?,
        seq: col(r, 1, "audit_logs.seq")?,
        occurred_at: timestamp(r, 2, "audit_logs.occurred_at")?,
        actor_id: col(r, 3, "audit_logs.actor_id")?,
        actor_kind: col(r, 4, "audit_logs.actor_kind")?,
        tenant_id: col(r, 5, "audit_logs.tenant_id")?,
        action: col(r, 6, "audit_logs.action")?,
        resource_type: col(r, 7, "audit_logs.resource_type")?,
        resource_id: col(r, 8, "audit_logs.resource_id")?,
        before: col(r, 9, "audit_logs.before")?,
        after: col(r, 10, "audit_logs.after")?,
        request_id: col(r, 11, "audit_logs.request_id")?,
        client_addr: col(r, 12, "audit_logs.client_addr")?,
    })
}

/// Filters of an audit search.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Actor.
    pub actor_id: Option<Uuid>,
    /// Exact action, or a prefix ending in `.` (`user.`).
    pub action: Option<String>,
    /// Resource type.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Tenant (platform staff).
    pub tenant_id: Option<Uuid>,
    /// From (inclusive).
    pub from: Option<chrono::NaiveDateTime>,
    /// To (exclusive).
    pub to: Option<chrono::NaiveDateTime>,
}

/// A page of entries in the caller's scope, newest first, with the total.
pub fn search(
    db: &Db,
    scope: &RowFilter,
    s: &Search,
    page: Page,
) -> Result<(Vec<Logged>, i64), DbError> {
    let mut w = Where::new();
    w.scope(scope, SCOPE);
    if let Some(a) = s.actor_id {
        w.eq("actor_id", P::Uuid(a.to_string()));
    }
    if let Some(a) = &s.action {
        if let Some(prefix) = a.strip_suffix('.') {
            let p = w.bind(P::Str(format!("{prefix}.%")));
            w.and(format!("action LIKE {p}"));
        } else {
            w.eq("action", P::Str(a.clone()));
        }
    }
    if let Some(t) = &s.resource_type {
        w.eq("resource_type", P::Str(t.clone()));
    }
    if let Some(r) = &s.resource_id {
        w.eq("resource_id", P::Str(r.clone()));
    }
    if let Some(t) = s.tenant_id {
        w.eq("tenant_id", P::Uuid(t.to_string()));
    }
    if let Some(f) = s.from {
        let p = w.bind(platform::db::datetime_param(f));
        w.and(format!("occurred_at >= {p}"));
    }
    if let Some(t) = s.to {
        let p = w.bind(platform::db::datetime_param(t));
        w.and(format!("occurred_at < {p}"));
    }
    paged(
        db,
        &format!("SELECT {COLUMNS} FROM audit_logs"),
        "audit_logs",
        w,
        "seq DESC",
        page,
        logged,
    )
}

/// One entry by id.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Logged>, DbError> {
    db.one(
        &format!("SELECT {COLUMNS} FROM audit_logs WHERE id = $1"),
        &[P::Uuid(id.to_string())],
        logged,
    )
}
