//! `cargo xtask`: the project's automation, one command per job, so that a
//! fresh machine needs nothing but this repository.
//!
//! - `setup`: installs/verifies the wasm toolchain (Debian's rustc-web with
//!   `-Zbuild-std`), Postgres, Redis and Podman, and starts what is stopped;
//! - `build`: builds every component to `wasm32-wasip2` and the local host;
//! - `db` / `migrate` / `status`: provisions the per-component databases and
//!   roles and applies `migrations/<db>/` (also against any `--database-url`);
//! - `up`: all of the above, then runs the app on <http://127.0.0.1:3000>;
//! - `lint`: `cargo fmt --check` and clippy with warnings denied, native and wasm;
//! - `test`: all of the above, then every test in the workspace;
//! - `bench`: the platform and event benchmarks (see README);
//! - `check-consistency`: compares redundant copies with their sources;
//! - `admin`: makes a registered user the platform administrator (through
//!   the database: no network endpoint can);
//! - `keys`: prints the public settings derived from the component keys.

mod bench;
mod build;
mod local;
mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or start the toolchain and services the project needs.
    Setup,
    /// Build the WebAssembly components and the local host.
    Build,
    /// Create the local databases and roles and migrate them.
    Db,
    /// Apply migrations to one database by URL (works against production).
    Migrate {
        /// Postgres URL of the database, with the owning role's credentials.
        #[arg(long)]
        database_url: String,
        /// Which database's migrations: auth, user, device, app, billing, notification.
        #[arg(long)]
        database: String,
    },
    /// Show which migrations are applied to one database.
    Status {
        /// Postgres URL of the database.
        #[arg(long)]
        database_url: String,
        /// Which database's migrations.
        #[arg(long)]
        database: String,
    },
    /// Set everything up and run the app locally.
    Up {
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
    /// Check formatting and run clippy (native and wasm) with warnings denied.
    Lint,
    /// Set everything up and run every test.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the platform and event benchmarks and print their figures.
    Bench,
    /// Make a registered user platform administrator (`super_admin`): a
    /// grant written into the `user` database, applied by the running app.
    Admin {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// URL of `cloudphone_user` with its role's credentials (default: the local one).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Run a runtime agent on this host for a node enrolled in the local app
    /// (`POST /api/v1/device/nodes` gives the secret), on Podman's API.
    Agent {
        /// The node id it was enrolled with.
        #[arg(long)]
        node: String,
        /// The node secret the enrolment answered with (base64url: it may
        /// start with '-').
        #[arg(long, env = "CLOUDPHONE_NODE_SECRET", allow_hyphen_values = true)]
        secret: String,
        /// The app's address.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        control_plane: String,
    },
    /// Print the public settings (`service_token_hashes`, `event_public_keys`)
    /// for the component keys in the environment (`SPIN_VARIABLE_<NAME>_KEY`)
    /// or, without them, in `.local/secrets.env`.
    Keys,
    /// Compare every redundant copy with its source (local databases, or the given URLs).
    CheckConsistency {
        /// URL of cloudphone_user (default: the local one).
        #[arg(long)]
        user_db_url: Option<String>,
        /// URL of cloudphone_auth (default: the local one).
        #[arg(long)]
        auth_db_url: Option<String>,
        /// URL of cloudphone_device (default: the local one).
        #[arg(long)]
        device_db_url: Option<String>,
    },
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the repo")
        .to_path_buf()
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::all(),
        Cmd::Build => build::all(),
        Cmd::Db => {
            setup::services()?;
            local::databases().map(|_| ())
        }
        Cmd::Migrate {
            database_url,
            database,
        } => {
            let applied =
                migrator::migrate(&database_url, &root().join("migrations").join(&database))?;
            if applied.is_empty() {
                println!("{database}: up to date");
            }
            for name in applied {
                println!("{database}: applied {name}");
            }
            Ok(())
        }
        Cmd::Status {
            database_url,
            database,
        } => {
            for s in migrator::status(&database_url, &root().join("migrations").join(&database))? {
                println!(
                    "{database}: {} {}",
                    if s.applied { "applied" } else { "pending" },
                    s.name
                );
            }
            Ok(())
        }
        Cmd::Up { listen } => local::up(&listen),
        Cmd::Agent {
            node,
            secret,
            control_plane,
        } => local::agent(&node, &secret, &control_plane),
        Cmd::Lint => {
            setup::wasm_toolchain()?;
            build::lint()
        }
        Cmd::Test { args } => {
            setup::all()?;
            build::lint()?;
            build::all()?;
            build::test(&args)
        }
        Cmd::CheckConsistency {
            user_db_url,
            auth_db_url,
            device_db_url,
        } => {
            let urls = local::database_urls()?;
            let user = user_db_url.unwrap_or_else(|| urls["user"].clone());
            let auth = auth_db_url.unwrap_or_else(|| urls["auth"].clone());
            let device = device_db_url.unwrap_or_else(|| urls["device"].clone());
            let mut differences = 0;
            for (what, report) in [
                ("identities in auth", consistency::check(&user, &auth)?),
                (
                    "owners and devices in device",
                    consistency::check_devices(&user, &device)?,
                ),
            ] {
                for d in &report.differences {
                    println!("{d}");
                }
                println!(
                    "checked {} {what}: {} differences",
                    report.checked,
                    report.differences.len()
                );
                differences += report.differences.len();
            }
            anyhow::ensure!(differences == 0, "copies differ from their source");
            Ok(())
        }
        Cmd::Admin {
            email,
            database_url,
        } => local::admin(&email, database_url),
        Cmd::Keys => {
            let mut secrets = local::secrets()?;
            for name in local::KEYED {
                let k = format!("{}_KEY", name.to_uppercase());
                if let Ok(v) = std::env::var(format!("SPIN_VARIABLE_{k}")) {
                    secrets.insert(k, v);
                }
            }
            let (hashes, public) =
                events::signing::public_settings(&local::component_keys(&secrets)?);
            println!("service_token_hashes={hashes}");
            println!("event_public_keys={public}");
            Ok(())
        }
        Cmd::Bench => {
            setup::all()?;
            build::all()?;
            build::host_release()?;
            bench::run()
        }
    }
}
