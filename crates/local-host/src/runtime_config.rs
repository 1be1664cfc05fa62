//! Spin's runtime configuration file (`--runtime-config-file`), of which
//! this host uses `[outbound_pg] max_connections` (the number of Postgres
//! connections open in guests at once, across the app; beyond it a guest
//! waits for one to be dropped). Other tables Spin knows (key-value stores,
//! variable providers, TLS, ...) are accepted and ignored, since the app uses
//! none of them; unknown keys of `[outbound_pg]` are refused, as Spin
//! refuses them.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// What this host takes from the runtime configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `[outbound_pg] max_connections`.
    pub pg_max_connections: Option<usize>,
}

impl RuntimeConfig {
    /// Reads a runtime configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid runtime config {}", path.display()))
    }

    /// Parses runtime configuration text.
    pub fn parse(text: &str) -> Result<Self> {
        let table: toml::Table = text.parse()?;
        let mut config = Self::default();
        if let Some(pg) = table.get("outbound_pg") {
            let pg = pg.as_table().context("[outbound_pg] must be a table")?;
            for (k, v) in pg {
                match k.as_str() {
                    "max_connections" => {
                        let n = v
                            .as_integer()
                            .filter(|n| *n >= 0)
                            .context("max_connections must be a non-negative integer")?;
                        config.pg_max_connections = Some(n as usize);
                    }
                    other => bail!("unknown field `{other}` in [outbound_pg]"),
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_postgres_bound_and_refuses_unknown_fields_as_spin_does() {
        assert_eq!(
            RuntimeConfig::parse("[outbound_pg]\nmax_connections = 16\n").unwrap(),
            RuntimeConfig {
                pg_max_connections: Some(16)
            }
        );
        assert_eq!(RuntimeConfig::parse("").unwrap(), RuntimeConfig::default());
        assert!(RuntimeConfig::parse("[outbound_pg]\nmax_conections = 1\n").is_err());
        assert!(RuntimeConfig::parse("[outbound_pg]\nmax_connections = -1\n").is_err());
        assert!(RuntimeConfig::parse("[key_value_store.default]\ntype = \"spin\"\n").is_ok());
    }
}
