//! The ledger's SQL: accounts, transactions and their entries. Posting is
//! claim-then-run: the transaction row (with its idempotency key) is
//! inserted first, and only the inserter adds the entries; the entries'
//! trigger moves the balances under the accounts' checks, and the deferred
//! check at commit refuses an unbalanced transaction (see
//! `migrations/billing/0006_create_ledger.sql`).

use crate::domain::money::Currency;
use crate::domain::posting::{Account, Posting};
use platform::db::{col, opt_uuid, timestamp, Db, DbError};
use serde::Serialize;
use spin_sdk::pg4::{DbValue, ParameterValue as P};
use uuid::Uuid;

/// Shards of each platform account.
pub const SHARDS: u32 = 8;

/// One leg as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Position in the ledger.
    pub id: i64,
    /// The account.
    pub account_id: Uuid,
    /// Its kind.
    pub account: String,
    /// Its owner (a user), or null for the platform's.
    pub owner_id: Option<Uuid>,
    /// Added to the account.
    pub amount_minor: i64,
    /// The account's balance after it.
    pub balance_after_minor: i64,
}

/// A transaction as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// Id.
    pub id: Uuid,
    /// `recharge`, `charge`, ...
    pub kind: String,
    /// Currency.
    pub currency: String,
    /// Whose balance moved.
    pub user_id: Uuid,
    /// Their tenant then.
    pub tenant_id: Option<Uuid>,
    /// What the user's balances gained (negative: lost).
    pub amount_minor: i64,
    /// The user's available balance after it, if it moved.
    pub available_after_minor: Option<i64>,
    /// The user's frozen balance after it, if it moved.
    pub frozen_after_minor: Option<i64>,
    /// Who made it (null: the system).
    pub actor_id: Option<Uuid>,
    /// Why.
    pub reason: String,
    /// What it is about (an order, a usage period...).
    pub reference: Option<String>,
    /// When.
    pub created_at: String,
    /// Its legs, when asked for one transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<Entry>>,
    /// The fingerprint of the request that made it (not shown).
    #[serde(skip)]
    pub fingerprint: String,
}

/// Columns of [`transaction`], over `ledger_transactions t`.
pub const TX_COLUMNS: &str = "t.id, t.kind, t.currency, t.user_id, t.tenant_id, t.amount, \
    (SELECT e.balance_after FROM ledger_entries e JOIN accounts a ON a.id = e.account_id \
      WHERE e.transaction_id = t.id AND a.kind = 'available'), \
    (SELECT e.balance_after FROM ledger_entries e JOIN accounts a ON a.id = e.account_id \
      WHERE e.transaction_id = t.id AND a.kind = 'frozen'), \
    t.actor_id, t.reason, t.reference, t.created_at, t.fingerprint";

/// Decodes [`TX_COLUMNS`].
pub fn transaction(r: &[DbValue]) -> Result<Transaction, DbError> {
    Ok(Transaction {
        id: col(r, 0, "ledger_transactions.id")?,
        kind: col(r, 1, "ledger_transactions.kind")?,
        currency: col(r, 2, "ledger_transactions.currency")?,
        user_id: col(r, 3, "ledger_transactions.user_id")?,
        tenant_id: col(r, 4, "ledger_transactions.tenant_id")?,
        amount_minor: col(r, 5, "ledger_transactions.amount")?,
        available_after_minor: col(r, 6, "available_after")?,
        frozen_after_minor: col(r, 7, "frozen_after")?,
        actor_id: col(r, 8, "ledger_transactions.actor_id")?,
        reason: col(r, 9, "ledger_transactions.reason")?,
        reference: col(r, 10, "ledger_transactions.reference")?,
        created_at: timestamp(r, 11, "ledger_transactions.created_at")?,
        entries: None,
        fingerprint: col(r, 12, "ledger_transactions.fingerprint")?,
    })
}

/// A movement to record.
#[derive(Debug)]
pub struct NewTransaction<'a> {
    /// What moves where.
    pub posting: &'a Posting,
    /// Whose balance.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Option<Uuid>,
    /// Who asks (None: the system).
    pub actor: Option<Uuid>,
    /// Why.
    pub reason: &'a str,
    /// What it is about.
    pub reference: Option<&'a str>,
    /// The scoped idempotency key.
    pub key: &'a str,
    /// sha256 of what was asked.
    pub fingerprint: &'a str,
    /// The request.
    pub request_id: &'a str,
}

/// What posting did.
#[derive(Debug)]
pub enum Posted {
    /// Recorded now.
    New(Transaction),
    /// The key was used before for the same request: what it recorded.
    Repeat(Transaction),
    /// The key was used before for something else.
    KeyReused,
    /// A balance would break its floor: nothing was recorded.
    Insufficient,
}

/// The id of an account, made on first use. A user's accounts are one per
/// kind and currency; a platform account is picked among its shards.
pub fn account(db: &Db, which: Account, user: Uuid, currency: Currency) -> Result<Uuid, DbError> {
    let (owner, shard) = if which.is_users() {
        (Some(user), 0)
    } else {
        (
            None,
            i16::try_from(Uuid::new_v4().as_u128() % u128::from(SHARDS)).unwrap_or(0),
        )
    };
    let find = || {
        db.one(
            "SELECT id FROM accounts WHERE kind = $1 AND owner_id IS NOT DISTINCT FROM $2 \
               AND currency = $3 AND shard = $4",
            &[
                P::Str(which.kind().into()),
                opt_uuid(owner),
                P::Str(currency.code().into()),
                P::Int16(shard),
            ],
            |r| col::<Uuid>(r, 0, "accounts.id"),
        )
    };
    if let Some(id) = find()? {
        return Ok(id);
    }
    db.execute(
        "INSERT INTO accounts (id, kind, owner_id, currency, shard) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
        &[
            P::Uuid(Uuid::new_v4().to_string()),
            P::Str(which.kind().into()),
            opt_uuid(owner),
            P::Str(currency.code().into()),
            P::Int16(shard),
        ],
    )?;
    find()?.ok_or_else(|| DbError::Other("account vanished after insert".into()))
}

/// What an available account may still spend (balance plus credit
/// limit). Not locked: locks are taken in account order by [`post`]
/// alone, and a posting that a concurrent one made too large is refused
/// by the account's check (and tried again by its caller).
pub fn spendable(tx: &Db, account: Uuid) -> Result<i64, DbError> {
    tx.one(
        "SELECT balance + credit_limit FROM accounts WHERE id = $1",
        &[P::Uuid(account.to_string())],
        |r| col(r, 0, "spendable"),
    )?
    .ok_or_else(|| DbError::Other("account vanished".into()))
}

/// Records a movement, in `tx` (a transaction the caller commits).
pub fn post(tx: &Db, t: &NewTransaction) -> Result<Posted, DbError> {
    let currency = t.posting.amount.currency();
    let id = Uuid::new_v4();
    let claimed = tx.execute(
        "INSERT INTO ledger_transactions (id, kind, currency, user_id, tenant_id, amount, actor_id, \
           reason, reference, idempotency_key, fingerprint, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (idempotency_key) DO NOTHING",
        &[
            P::Uuid(id.to_string()),
            P::Str(t.posting.kind.name().into()),
            P::Str(currency.code().into()),
            P::Uuid(t.user.to_string()),
            opt_uuid(t.tenant),
            P::Int64(t.posting.users_side()),
            opt_uuid(t.actor),
            P::Str(t.reason.into()),
            t.reference.map_or(P::DbNull, |r| P::Str(r.into())),
            P::Str(t.key.into()),
            P::Str(t.fingerprint.into()),
            P::Str(t.request_id.into()),
        ],
    )?;
    if claimed == 0 {
        let earlier =
            by_key(tx, t.key)?.ok_or_else(|| DbError::Other("idempotency key vanished".into()))?;
        return Ok(if earlier.fingerprint == t.fingerprint {
            Posted::Repeat(earlier)
        } else {
            Posted::KeyReused
        });
    }
    // Accounts are found (or made, the first time) in the order of their
    // kinds, and the legs then posted in account-id order: every posting
    // takes its locks in the same order, so two postings never wait on each
    // other in a cycle (a freeze and an unfreeze making a user's first
    // accounts at once would otherwise make them in opposite orders).
    let mut by_kind: Vec<_> = t.posting.legs.iter().collect();
    by_kind.sort_by_key(|leg| leg.account.kind());
    let mut legs = Vec::with_capacity(by_kind.len());
    for leg in by_kind {
        legs.push((account(tx, leg.account, t.user, currency)?, leg.amount));
    }
    legs.sort_by_key(|(a, _)| *a);
    for (account, amount) in legs {
        let r = tx.execute(
            "INSERT INTO ledger_entries (transaction_id, account_id, currency, amount) VALUES ($1, $2, $3, $4)",
            &[
                P::Uuid(id.to_string()),
                P::Uuid(account.to_string()),
                P::Str(currency.code().into()),
                P::Int64(amount),
            ],
        );
        match r {
            Ok(_) => {}
            // The only checks an entry can break are its account's floors.
            Err(DbError::Constraint(_)) => return Ok(Posted::Insufficient),
            Err(e) => return Err(e),
        }
    }
    let mut stored =
        find(tx, id)?.ok_or_else(|| DbError::Other("posted transaction vanished".into()))?;
    stored.entries = Some(entries(tx, id)?);
    Ok(Posted::New(stored))
}

/// A transaction by id, without entries.
pub fn find(db: &Db, id: Uuid) -> Result<Option<Transaction>, DbError> {
    db.one(
        &format!("SELECT {TX_COLUMNS} FROM ledger_transactions t WHERE t.id = $1"),
        &[P::Uuid(id.to_string())],
        transaction,
    )
}

/// A transaction by its scoped idempotency key, with entries.
pub fn by_key(db: &Db, key: &str) -> Result<Option<Transaction>, DbError> {
    let t = db.one(
        &format!("SELECT {TX_COLUMNS} FROM ledger_transactions t WHERE t.idempotency_key = $1"),
        &[P::Str(key.into())],
        transaction,
    )?;
    match t {
        Some(mut t) => {
            t.entries = Some(entries(db, t.id)?);
            Ok(Some(t))
        }
        None => Ok(None),
    }
}

/// A transaction's legs, in ledger order.
pub fn entries(db: &Db, id: Uuid) -> Result<Vec<Entry>, DbError> {
    db.all(
        "SELECT e.id, e.account_id, a.kind, a.owner_id, e.amount, e.balance_after \
           FROM ledger_entries e JOIN accounts a ON a.id = e.account_id \
          WHERE e.transaction_id = $1 ORDER BY e.id",
        &[P::Uuid(id.to_string())],
        |r| {
            Ok(Entry {
                id: col(r, 0, "ledger_entries.id")?,
                account_id: col(r, 1, "ledger_entries.account_id")?,
                account: col(r, 2, "accounts.kind")?,
                owner_id: col(r, 3, "accounts.owner_id")?,
                amount_minor: col(r, 4, "ledger_entries.amount")?,
                balance_after_minor: col(r, 5, "ledger_entries.balance_after")?,
            })
        },
    )
}

/// What the ledger's own check found.
#[derive(Debug, Default, Serialize)]
pub struct Check {
    /// Transactions whose legs do not sum to zero (or have fewer than two).
    pub unbalanced_transactions: Vec<Uuid>,
    /// Currencies whose accounts do not sum to zero, with the sum.
    pub currency_totals: Vec<(String, i64)>,
    /// Accounts whose balance is not the sum of their entries.
    pub mismatched_accounts: Vec<Uuid>,
    /// Available balances below minus their credit limit, frozen below zero.
    pub below_floor: Vec<Uuid>,
    /// Transactions checked.
    pub transactions: i64,
    /// Accounts checked.
    pub accounts: i64,
}

/// Checks the ledger's invariants over every row (an operator's audit, and
/// what the property test asks after its storm).
pub fn check(db: &Db) -> Result<Check, DbError> {
    let unbalanced_transactions = db.all(
        "SELECT t.id FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id \
          GROUP BY t.id HAVING coalesce(sum(e.amount), 0) <> 0 OR count(e.id) < 2 \
          ORDER BY t.id LIMIT 100",
        &[],
        |r| col::<Uuid>(r, 0, "id"),
    )?;
    let currency_totals = db.all(
        "SELECT currency::text, sum(balance)::bigint FROM accounts GROUP BY currency ORDER BY currency",
        &[],
        |r| Ok((col::<String>(r, 0, "currency")?, col::<i64>(r, 1, "sum")?)),
    )?;
    let mismatched_accounts = db.all(
        "SELECT a.id FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id \
          GROUP BY a.id, a.balance, a.entries \
         HAVING a.balance <> coalesce(sum(e.amount), 0) OR a.entries <> count(e.id) \
          ORDER BY a.id LIMIT 100",
        &[],
        |r| col::<Uuid>(r, 0, "id"),
    )?;
    let below_floor = db.all(
        "SELECT id FROM accounts WHERE (kind = 'available' AND balance + credit_limit < 0) \
            OR (kind = 'frozen' AND balance < 0) ORDER BY id LIMIT 100",
        &[],
        |r| col::<Uuid>(r, 0, "id"),
    )?;
    let count = |sql: &str| -> Result<i64, DbError> {
        let rows = db.query(sql, &[])?;
        col(&rows.rows[0], 0, "count")
    };
    Ok(Check {
        unbalanced_transactions,
        currency_totals,
        mismatched_accounts,
        below_floor,
        transactions: count("SELECT count(*) FROM ledger_transactions")?,
        accounts: count("SELECT count(*) FROM accounts")?,
    })
}
