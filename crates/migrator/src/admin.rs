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
             CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}';
           ELSE
             ALTER ROLE {name} INHERIT PASSWORD '{password}';
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
