//! Provisioning of the per-component databases and login roles. Each role
//! owns exactly its database and is the only role with CONNECT on it, so one
//! component's credentials cannot open another's data.
//!
//! Administration runs `psql` as the `postgres` OS user over the local socket
//! (peer or trust auth), which works on a fresh Debian install and here alike.

use std::process::Command;

/// The components that own a database.
pub const DATABASES: &[&str] = &["auth", "user", "device", "app", "billing", "notification"];

/// A failed administrative command.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AdminError(pub String);

/// Runs SQL as the database superuser; returns psql's output.
pub fn psql(sql: &str) -> Result<String, AdminError> {
    let mut cmd = if running_as("postgres") {
        Command::new("psql")
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "psql"]);
        c
    };
    if let Ok(port) = std::env::var("PGPORT") {
        cmd.args(["-p", &port]);
    }
    let out = cmd
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| AdminError(format!("cannot run psql: {e}")))?;
    if !out.status.success() {
        return Err(AdminError(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn running_as(user: &str) -> bool {
    std::env::var("USER").map(|u| u == user).unwrap_or(false)
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Server connections a component's role may hold at once, across every
/// replica (`CONNECTION LIMIT`): the local installation's and the tests'
/// value. It equals the hosts' connection pool per component (Spin 4.1 pools
/// at most 64 per component and address; the local host the same), so one
/// replica never meets it: a request beyond the pool waits in the pool's
/// queue, first come first served. A deployment sets it to 64 × replicas
/// (or lower, when requests beyond it may wait for a slot and then get 503;
/// see docs/architecture.md, "Bounded resources"), with roles × limit within
/// the server's `max_connections`.
pub const ROLE_CONNECTION_LIMIT: u32 = 64;

/// The server's `max_connections` the local installation and the tests need:
/// every role's limit, with room for the tests' own connections.
pub const SERVER_MAX_CONNECTIONS: u32 = 600;

/// Creates (or updates the password of) role `name` and database `name`
/// owned by it, with CONNECT revoked from everyone else.
pub fn provision(name: &str, password: &str) -> Result<(), AdminError> {
    if !ident_ok(name) || password.contains('\'') {
        return Err(AdminError(format!(
            "invalid database or role name {name:?}"
        )));
    }
    psql(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
             CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT {ROLE_CONNECTION_LIMIT} PASSWORD '{password}';
           ELSE
             ALTER ROLE {name} INHERIT CONNECTION LIMIT {ROLE_CONNECTION_LIMIT} PASSWORD '{password}';
           END IF;
         END $$;"
    ))?;
    let exists = psql(&format!(
        "SELECT 1 FROM pg_database WHERE datname = '{name}'"
    ))?;
    if exists.trim().is_empty() {
        psql(&format!("CREATE DATABASE {name} OWNER {name}"))?;
    }
    psql(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name}"))?;
    Ok(())
}

/// Creates (or updates) login role `name`, a member of each of `of`: it has
/// their privileges (an operator's or a test's inspection role) and a
/// connection limit of its own, so it can connect even when the components'
/// pools hold every connection their roles may have.
pub fn provision_member(name: &str, password: &str, of: &[String]) -> Result<(), AdminError> {
    if !ident_ok(name) || password.contains('\'') || !of.iter().all(|r| ident_ok(r)) {
        return Err(AdminError(format!("invalid role name {name:?}")));
    }
    psql(&format!(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
             CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT PASSWORD '{password}';
           END IF;
         END $$;"
    ))?;
    for role in of {
        psql(&format!("GRANT {role} TO {name}"))?;
    }
    Ok(())
}

/// Drops a role (no database of that name).
pub fn drop_role(name: &str) -> Result<(), AdminError> {
    if !ident_ok(name) {
        return Err(AdminError(format!("invalid role name {name:?}")));
    }
    psql(&format!("DROP ROLE IF EXISTS {name}"))?;
    Ok(())
}

/// Drops a database and its role (tests clean up with this).
pub fn drop(name: &str) -> Result<(), AdminError> {
    if !ident_ok(name) {
        return Err(AdminError(format!(
            "invalid database or role name {name:?}"
        )));
    }
    psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    psql(&format!("DROP ROLE IF EXISTS {name}"))?;
    Ok(())
}

/// The connection URL of a provisioned database.
pub fn url(name: &str, password: &str, host: &str, port: u16) -> String {
    format!("postgres://{name}:{password}@{host}:{port}/{name}?sslmode=disable")
}
