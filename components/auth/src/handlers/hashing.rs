//! Password hashing, bounded. Argon2id takes 7 MiB per hash (`domain::password`), so N logins at
//! once would cost N × 7 MiB: a login flood would be a memory flood. Every
//! hash or verification therefore runs in one of `hash_slots` slots
//! (variable, default 4), held as a transaction-scoped Postgres advisory
//! lock on the request's own connection, so the bound holds across every
//! instance and replica: at most `hash_slots` × 7 MiB of hashing memory at
//! once. A request that finds every slot taken waits for one up to
//! [`SLOT_WAIT`], then gets 503 with `Retry-After`, having changed nothing.

use crate::domain::password;
use crate::error::Error;
use platform::db::{col, Db};
use platform::Problem;
use spin_sdk::pg4::ParameterValue as P;

/// The advisory-lock namespace of hashing slots.
const SLOT_SPACE: i32 = 0x4350_4831;

/// How long a request waits for a free slot.
pub const SLOT_WAIT: &str = "2s";

fn slots() -> i32 {
    platform::var("hash_slots")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &i32| *n > 0)
        .unwrap_or(4)
}

/// Runs `f` (a hash or a verification) in a hashing slot.
fn in_slot<T>(db: &Db, f: impl FnOnce() -> T) -> Result<T, Error> {
    let n = slots();
    db.transaction(|tx| {
        let free = tx.one(
            "SELECT s FROM generate_series(1, $1) s WHERE pg_try_advisory_xact_lock($2, s) LIMIT 1",
            &[P::Int32(n), P::Int32(SLOT_SPACE)],
            |r| col::<i32>(r, 0, "slot"),
        )?;
        if free.is_none() {
            // Every slot is busy: wait on one, in turn (a ticket), so that
            // waiters spread over every slot and each slot's lock queue
            // serves its waiters first come first served; for a bounded time.
            let ticket = tx
                .one("SELECT nextval('hash_slot_tickets')", &[], |r| {
                    col::<i64>(r, 0, "ticket")
                })?
                .unwrap_or(0);
            let slot = (ticket % i64::from(n)) as i32 + 1;
            tx.execute(&format!("SET LOCAL lock_timeout = '{SLOT_WAIT}'"), &[])?;
            // A lock timeout is `DbError::Busy`: 503 with `Retry-After`.
            tx.query(
                "SELECT 1 FROM (SELECT pg_advisory_xact_lock($1, $2)) x",
                &[P::Int32(SLOT_SPACE), P::Int32(slot)],
            )?;
        }
        Ok(f())
    })
}

/// Hashes a new password (in a slot).
pub fn hash(db: &Db, plain: &str) -> Result<String, Error> {
    in_slot(db, || password::hash(plain))?.map_err(|e| Error::Problem(Problem::internal(e)))
}

/// Verifies a password against a stored hash (in a slot).
pub fn verify(db: &Db, plain: &str, phc: &str) -> Result<bool, Error> {
    in_slot(db, || password::verify(plain, phc))
}
