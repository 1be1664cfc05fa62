//! Users as billing knows them (the `owners` copy of `user`'s identities),
//! their balances, credit limits, transaction lists and statistics.

use crate::domain::money::Currency;
use crate::domain::posting::Account;
use access::RowFilter;
use chrono::NaiveDateTime;
use platform::db::{col, datetime_param, opt_timestamp, Db, DbError};
use platform::http::Page;
use platform::query::{paged, ScopeColumns, Where};
use serde::Serialize;
use spin_sdk::pg4::ParameterValue as P;
use uuid::Uuid;

/// A user's data scope is evaluated on the owner copy.
pub const OWNER_SCOPE: ScopeColumns = ScopeColumns {
    tenant: "o.tenant_id",
    department: Some("o.department_id"),
    owner: Some("o.user_id"),
};

/// A user billing knows.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// `active`, `locked` or `deleted`.
    pub status: String,
}

/// A user the caller's filter admits.
pub fn visible_owner(db: &Db, user: Uuid, filter: &RowFilter) -> Result<Option<Owner>, DbError> {
    let mut w = Where::new();
    w.eq("o.user_id", P::Uuid(user.to_string()));
    w.scope(filter, OWNER_SCOPE);
    db.one(
        &format!("SELECT o.tenant_id, o.status FROM owners o{}", w.sql()),
        w.params(),
        |r| {
            Ok(Owner {
                tenant_id: col(r, 0, "owners.tenant_id")?,
                status: col(r, 1, "owners.status")?,
            })
        },
    )
}

/// One currency of a user's balance.
#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    /// Currency.
    pub currency: String,
    /// Spendable balance (negative down to minus the credit limit).
    pub available_minor: i64,
    /// Held for pending orders and charges.
    pub frozen_minor: i64,
    /// Owed for usage the balance did not cover (zero or negative).
    pub owed_minor: i64,
    /// How far below zero the available balance may go.
    pub credit_limit_minor: i64,
    /// What may still be spent: available plus the credit limit.
    pub spendable_minor: i64,
    /// Last movement.
    pub updated_at: Option<String>,
}

/// A user's balances, one per currency they have accounts in.
pub fn balances(db: &Db, user: Uuid) -> Result<Vec<Balance>, DbError> {
    db.all(
        "SELECT currency::text, \
                coalesce(sum(balance) FILTER (WHERE kind = 'available'), 0)::bigint, \
                coalesce(sum(balance) FILTER (WHERE kind = 'frozen'), 0)::bigint, \
                coalesce(sum(credit_limit) FILTER (WHERE kind = 'available'), 0)::bigint, \
                max(updated_at), \
                coalesce(sum(balance) FILTER (WHERE kind = 'owed'), 0)::bigint \
           FROM accounts WHERE owner_id = $1 GROUP BY currency ORDER BY currency",
        &[P::Uuid(user.to_string())],
        |r| {
            let available: i64 = col(r, 1, "available")?;
            let credit: i64 = col(r, 3, "credit_limit")?;
            Ok(Balance {
                currency: col(r, 0, "currency")?,
                available_minor: available,
                frozen_minor: col(r, 2, "frozen")?,
                owed_minor: col(r, 5, "owed")?,
                credit_limit_minor: credit,
                spendable_minor: available + credit,
                updated_at: opt_timestamp(r, 4, "updated_at")?,
            })
        },
    )
}

/// Sets the credit limit of a user's available account (made if missing),
/// recording who and why; `None` when the balance is already below minus
/// the new limit (nothing changed).
pub fn set_credit_limit(
    tx: &Db,
    user: Uuid,
    currency: Currency,
    limit: i64,
    actor: Uuid,
    reason: &str,
    request_id: &str,
) -> Result<Option<i64>, DbError> {
    let account = super::ledger::account(tx, Account::Available, user, currency)?;
    let old: i64 = tx
        .one(
            "SELECT credit_limit FROM accounts WHERE id = $1 FOR UPDATE",
            &[P::Uuid(account.to_string())],
            |r| col(r, 0, "accounts.credit_limit"),
        )?
        .unwrap_or_default();
    let moved = tx.execute(
        "UPDATE accounts SET credit_limit = $2, updated_at = now() AT TIME ZONE 'UTC' \
          WHERE id = $1 AND balance + $2 >= 0",
        &[P::Uuid(account.to_string()), P::Int64(limit)],
    )?;
    if moved == 0 {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO account_changes (id, account_id, field, old_value, new_value, actor_id, reason, request_id) \
         VALUES ($1, $2, 'credit_limit', $3, $4, $5, $6, $7)",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Uuid(account.to_string()),
            P::Int64(old),
            P::Int64(limit),
            P::Uuid(actor.to_string()),
            P::Str(reason.into()),
            P::Str(request_id.into()),
        ],
    )?;
    Ok(Some(old))
}

/// Filters of transaction lists, exports and statistics.
#[derive(Debug, Default)]
pub struct Filter {
    /// One user.
    pub user: Option<Uuid>,
    /// One tenant (as recorded on the transaction).
    pub tenant: Option<Uuid>,
    /// One kind.
    pub kind: Option<&'static str>,
    /// One currency.
    pub currency: Option<Currency>,
    /// What it is about.
    pub reference: Option<String>,
    /// From (inclusive).
    pub from: Option<NaiveDateTime>,
    /// Until (exclusive).
    pub to: Option<NaiveDateTime>,
}

impl Filter {
    /// The conditions on `ledger_transactions t JOIN owners o`, within the
    /// caller's scope.
    fn clause(&self, scope: &RowFilter) -> Where {
        let mut w = Where::new();
        w.scope(scope, OWNER_SCOPE);
        if let Some(u) = self.user {
            w.eq("t.user_id", P::Uuid(u.to_string()));
        }
        if let Some(t) = self.tenant {
            w.eq("t.tenant_id", P::Uuid(t.to_string()));
        }
        if let Some(k) = self.kind {
            w.eq("t.kind", P::Str(k.into()));
        }
        if let Some(c) = self.currency {
            w.eq("t.currency", P::Str(c.code().into()));
        }
        if let Some(r) = &self.reference {
            w.eq("t.reference", P::Str(r.clone()));
        }
        if let Some(f) = self.from {
            let p = w.bind(datetime_param(f));
            w.and(format!("t.created_at >= {p}"));
        }
        if let Some(t) = self.to {
            let p = w.bind(datetime_param(t));
            w.and(format!("t.created_at < {p}"));
        }
        w
    }
}

const FROM: &str = "ledger_transactions t JOIN owners o ON o.user_id = t.user_id";

/// A page of transactions, newest first.
pub fn transactions(
    db: &Db,
    scope: &RowFilter,
    f: &Filter,
    page: Page,
) -> Result<(Vec<super::ledger::Transaction>, i64), DbError> {
    paged(
        db,
        &format!("SELECT {} FROM {FROM}", super::ledger::TX_COLUMNS),
        FROM,
        f.clause(scope),
        "t.created_at DESC, t.id DESC",
        page,
        super::ledger::transaction,
    )
}

/// Up to `limit` transactions for an export, oldest first.
pub fn export(
    db: &Db,
    scope: &RowFilter,
    f: &Filter,
    limit: i64,
) -> Result<Vec<super::ledger::Transaction>, DbError> {
    let mut w = f.clause(scope);
    let l = w.bind(P::Int64(limit));
    db.all(
        &format!(
            "SELECT {} FROM {FROM}{} ORDER BY t.created_at, t.id LIMIT {l}",
            super::ledger::TX_COLUMNS,
            w.sql()
        ),
        w.params(),
        super::ledger::transaction,
    )
}

/// Totals of one kind in one currency.
#[derive(Debug, Serialize)]
pub struct KindTotal {
    /// Currency.
    pub currency: String,
    /// Kind.
    pub kind: String,
    /// Transactions.
    pub count: i64,
    /// What users' balances gained in sum (negative: lost).
    pub net_minor: i64,
    /// Sum of the amounts moved, whichever way.
    pub volume_minor: i64,
}

/// Per kind and currency, over the filter.
pub fn totals(db: &Db, scope: &RowFilter, f: &Filter) -> Result<Vec<KindTotal>, DbError> {
    let w = f.clause(scope);
    db.all(
        &format!(
            "SELECT t.currency::text, t.kind, count(*), coalesce(sum(t.amount), 0)::bigint, \
                    coalesce(sum((SELECT abs(e.amount) FROM ledger_entries e WHERE e.transaction_id = t.id \
                                   ORDER BY e.id LIMIT 1)), 0)::bigint \
               FROM {FROM}{} GROUP BY t.currency, t.kind ORDER BY t.currency, t.kind",
            w.sql()
        ),
        w.params(),
        |r| {
            Ok(KindTotal {
                currency: col(r, 0, "currency")?,
                kind: col(r, 1, "kind")?,
                count: col(r, 2, "count")?,
                net_minor: col(r, 3, "net")?,
                volume_minor: col(r, 4, "volume")?,
            })
        },
    )
}

/// Balances held by the users of a filter, per currency.
#[derive(Debug, Serialize)]
pub struct Held {
    /// Currency.
    pub currency: String,
    /// Users with an account in it.
    pub users: i64,
    /// Sum of available balances.
    pub available_minor: i64,
    /// Sum of frozen balances.
    pub frozen_minor: i64,
    /// Sum of the negative available balances (credit in use).
    pub overdrawn_minor: i64,
    /// Sum owed for usage not covered.
    pub owed_minor: i64,
}

/// What the users in scope (one user or tenant, if given) hold now.
pub fn held(
    db: &Db,
    scope: &RowFilter,
    user: Option<Uuid>,
    tenant: Option<Uuid>,
) -> Result<Vec<Held>, DbError> {
    let mut w = Where::new();
    w.scope(scope, OWNER_SCOPE);
    if let Some(u) = user {
        w.eq("o.user_id", P::Uuid(u.to_string()));
    }
    if let Some(t) = tenant {
        w.eq("o.tenant_id", P::Uuid(t.to_string()));
    }
    db.all(
        &format!(
            "SELECT a.currency::text, count(DISTINCT a.owner_id), \
                    coalesce(sum(a.balance) FILTER (WHERE a.kind = 'available'), 0)::bigint, \
                    coalesce(sum(a.balance) FILTER (WHERE a.kind = 'frozen'), 0)::bigint, \
                    coalesce(sum(a.balance) FILTER (WHERE a.kind = 'available' AND a.balance < 0), 0)::bigint, \
                    coalesce(sum(a.balance) FILTER (WHERE a.kind = 'owed'), 0)::bigint \
               FROM accounts a JOIN owners o ON o.user_id = a.owner_id{} \
              GROUP BY a.currency ORDER BY a.currency",
            w.sql()
        ),
        w.params(),
        |r| {
            Ok(Held {
                currency: col(r, 0, "currency")?,
                users: col(r, 1, "users")?,
                available_minor: col(r, 2, "available")?,
                frozen_minor: col(r, 3, "frozen")?,
                overdrawn_minor: col(r, 4, "overdrawn")?,
                owed_minor: col(r, 5, "owed")?,
            })
        },
    )
}
