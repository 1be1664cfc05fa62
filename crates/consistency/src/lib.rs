//! The consistency check: every redundant copy that a component keeps of
//! another service's data, compared with its source. Used by
//! `cargo xtask check-consistency` and by the end-to-end tests, which expect
//! zero differences once events have been delivered.
//!
//! Copies checked: `cloudphone_auth.identities` (email, status, tenant,
//! department, roles, whether the tenant is active, effective access,
//! version) against `cloudphone_user.users` and its role assignments
//! ([`check`]); `cloudphone_device.owners` and the owner columns of
//! `cloudphone_device.devices` (name, email, tenant, version) against
//! `cloudphone_user.users` ([`check_devices`]).

use postgres::{Client, NoTls};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A failed check (cannot connect or query).
#[derive(Debug, thiserror::Error)]
#[error("consistency check: {0}")]
pub struct Error(#[from] postgres::Error);

/// The outcome of a check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Source rows compared.
    pub checked: usize,
    /// One line per difference.
    pub differences: Vec<String>,
}

/// One identity as both sides store it.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    email: String,
    status: String,
    tenant: Option<Uuid>,
    department: Option<Uuid>,
    roles: Vec<String>,
    tenant_active: bool,
    access: serde_json::Value,
    version: i64,
}

fn load(client: &mut Client, sql: &str) -> Result<BTreeMap<Uuid, Identity>, Error> {
    Ok(client
        .query(sql, &[])?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Identity {
                    email: r.get(1),
                    status: r.get(2),
                    tenant: r.get(3),
                    department: r.get(4),
                    roles: r.get(5),
                    tenant_active: r.get(6),
                    access: r.get(7),
                    version: r.get(8),
                },
            )
        })
        .collect())
}

/// Compares a copy (kept by the component `holder`) with its source in
/// `user`, row by row: missing, different, and left over.
fn compare<T: PartialEq + std::fmt::Debug>(
    what: &str,
    source: &BTreeMap<Uuid, T>,
    holder: &str,
    copy: &BTreeMap<Uuid, T>,
) -> Report {
    let mut differences = Vec::new();
    for (id, s) in source {
        match copy.get(id) {
            None => differences.push(format!("{what} {id}: missing in {holder}")),
            Some(c) if c != s => {
                differences.push(format!("{what} {id}: {holder} has {c:?}, user has {s:?}"))
            }
            Some(_) => {}
        }
    }
    for id in copy.keys().filter(|id| !source.contains_key(id)) {
        differences.push(format!("{what} {id}: in {holder} but not in user"));
    }
    Report {
        checked: source.len(),
        differences,
    }
}

/// Compares `auth`'s identity copies with `user`'s profiles.
pub fn check(user_db_url: &str, auth_db_url: &str) -> Result<Report, Error> {
    let mut user = Client::connect(user_db_url, NoTls)?;
    let mut auth = Client::connect(auth_db_url, NoTls)?;
    let source = load(
        &mut user,
        "SELECT u.id, u.email, u.status, u.tenant_id, u.department_id, \
           coalesce((SELECT array_agg(r.code ORDER BY r.code) FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
             WHERE ur.user_id = u.id), '{}'), u.tenant_active, u.access, u.version FROM users u",
    )?;
    let copy = load(
        &mut auth,
        "SELECT user_id, email, status, tenant_id, department_id, roles, tenant_active, access, version FROM identities",
    )?;
    Ok(compare("identity", &source, "auth", &copy))
}

/// A user as `device` copies it.
#[derive(Debug, Clone, PartialEq)]
struct Owner {
    email: String,
    name: String,
    tenant: Option<Uuid>,
    department: Option<Uuid>,
    status: String,
    version: i64,
}

fn owners(client: &mut Client, sql: &str) -> Result<BTreeMap<Uuid, Owner>, Error> {
    Ok(client
        .query(sql, &[])?
        .iter()
        .map(|r| {
            (
                r.get(0),
                Owner {
                    email: r.get(1),
                    name: r.get(2),
                    tenant: r.get(3),
                    department: r.get(4),
                    status: r.get(5),
                    version: r.get(6),
                },
            )
        })
        .collect())
}

/// Compares `device`'s copies of users (the `owners` table, and the owner
/// name, email, tenant and version on every device) with `user`'s profiles.
pub fn check_devices(user_db_url: &str, device_db_url: &str) -> Result<Report, Error> {
    let mut user = Client::connect(user_db_url, NoTls)?;
    let mut device = Client::connect(device_db_url, NoTls)?;
    let source = owners(
        &mut user,
        "SELECT id, email, display_name, tenant_id, department_id, status, version FROM users",
    )?;
    let copy = owners(
        &mut device,
        "SELECT user_id, email, display_name, tenant_id, department_id, status, version FROM owners",
    )?;
    let mut report = compare("owner", &source, "device", &copy);
    let devices = device.query(
        "SELECT id, owner_id, owner_name, owner_email, tenant_id, owner_version FROM devices \
         WHERE desired_status <> 'deleted'",
        &[],
    )?;
    report.checked += devices.len();
    for r in &devices {
        let (id, owner): (Uuid, Uuid) = (r.get(0), r.get(1));
        let copied = (
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, Option<Uuid>>(4),
            r.get::<_, i64>(5),
        );
        match source.get(&owner) {
            None => report
                .differences
                .push(format!("device {id}: owner {owner} is not in user")),
            Some(s) if copied != (s.name.clone(), s.email.clone(), s.tenant, s.version) => {
                report.differences.push(format!(
                    "device {id}: owner copy {copied:?}, user has ({:?}, {:?}, {:?}, {})",
                    s.name, s.email, s.tenant, s.version
                ))
            }
            Some(_) => {}
        }
    }
    Ok(report)
}
