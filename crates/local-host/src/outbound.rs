//! `allowed_outbound_hosts` with Spin's syntax and matching rules:
//! `scheme://host[:port]`, where scheme, host and port may be `*`, a host may
//! be `*.domain`, a port may be a range `a..b`, and an omitted port means the
//! scheme's default port.

use anyhow::{anyhow, bail, Result};

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Pattern,
    host: Pattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

/// The scheme's well-known port, used when an address or rule omits it.
pub fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "http" => 80,
        "https" => 443,
        "postgres" | "postgresql" => 5432,
        "redis" => 6379,
        "rediss" => 6380,
        "mysql" => 3306,
        "mqtt" => 1883,
        _ => return None,
    })
}

impl AllowedHost {
    /// Parses one rendered entry.
    pub fn parse(entry: &str) -> Result<Self> {
        let (scheme, rest) = entry.split_once("://").ok_or_else(|| {
            anyhow!("allowed host {entry:?} has no scheme: write e.g. https://{entry}")
        })?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            bail!("allowed host {entry:?} must not contain a path");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let scheme_pat = if scheme == "*" {
            Pattern::Any
        } else {
            Pattern::Exact(scheme.to_ascii_lowercase())
        };
        let host_pat = if host == "*" {
            Pattern::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            Pattern::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
        } else if host.is_empty() {
            bail!("allowed host {entry:?} has no host");
        } else {
            Pattern::Exact(host.to_ascii_lowercase())
        };
        let port_pat = match port {
            Some("*") => PortPattern::Any,
            Some(p) if p.contains("..") => {
                let (a, b) = p.split_once("..").expect("checked");
                PortPattern::Range(a.parse()?, b.parse::<u16>()?.saturating_sub(1))
            }
            Some(p) => {
                let p: u16 = p
                    .parse()
                    .map_err(|_| anyhow!("allowed host {entry:?} has an invalid port"))?;
                PortPattern::Range(p, p)
            }
            None => match scheme {
                "*" => PortPattern::Any,
                s => {
                    let p = default_port(s).ok_or_else(|| {
                        anyhow!("allowed host {entry:?} needs a port: scheme {s:?} has no default")
                    })?;
                    PortPattern::Range(p, p)
                }
            },
        };
        Ok(Self {
            scheme: scheme_pat,
            host: host_pat,
            port: port_pat,
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = match &self.scheme {
            Pattern::Any => true,
            Pattern::Exact(s) => s == scheme,
            Pattern::Suffix(_) => false,
        };
        let host_ok = match &self.host {
            Pattern::Any => true,
            Pattern::Exact(h) => h == host,
            Pattern::Suffix(s) => host.ends_with(s.as_str()),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Range(a, b) => (a..=b).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's whole allow list.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    rules: Vec<AllowedHost>,
}

impl OutboundPolicy {
    /// Parses rendered entries.
    pub fn new(entries: &[String]) -> Result<Self> {
        Ok(Self {
            rules: entries
                .iter()
                .map(|e| AllowedHost::parse(e))
                .collect::<Result<_>>()?,
        })
    }

    /// Whether a connection to `scheme://host:port` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.rules.iter().any(|r| r.matches(&scheme, &host, port))
    }

    /// Checks a full address such as `postgres://user:pw@db:5432/name`.
    pub fn check_url(&self, address: &str) -> Result<(), String> {
        let (scheme, host, port) = split_url(address)?;
        if self.allows(&scheme, &host, port) {
            Ok(())
        } else {
            // Spin's words, so logs read the same on both hosts.
            tracing::warn!(destination = %format!("{scheme}://{host}:{port}"), "Outbound network destination not allowed");
            Err(format!("address {scheme}://{host}:{port} is not permitted"))
        }
    }
}

/// Splits `scheme://[user[:pw]@]host[:port][/...]` into its scheme, host and port.
pub fn split_url(address: &str) -> Result<(String, String, u16), String> {
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| "address must be a URL such as scheme://host:port".to_string())?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let (h, after) = stripped.split_once(']').ok_or("invalid ipv6 address")?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.to_string())),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("address has no host".to_string());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {p:?}"))?,
        None => default_port(&scheme).ok_or_else(|| format!("scheme {scheme:?} needs a port"))?,
    };
    Ok((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn default_ports_wildcards_and_ranges() {
        let p = policy(&[
            "postgres://127.0.0.1",
            "http://*.spin.internal",
            "redis://localhost:*",
            "https://x.io:8000..8010",
        ]);
        assert!(p.check_url("postgres://u:pw@127.0.0.1/db").is_ok());
        assert!(p.check_url("postgres://127.0.0.1:5433/db").is_err());
        assert!(p.check_url("http://auth.spin.internal/x").is_ok());
        assert!(p.check_url("https://auth.spin.internal/x").is_err());
        assert!(p.check_url("redis://localhost:7000").is_ok());
        assert!(p.check_url("https://x.io:8009").is_ok());
        assert!(p.check_url("https://x.io:8010").is_err());
        assert!(p.check_url("http://example.com").is_err());
    }

    #[test]
    fn nothing_is_allowed_by_default_and_everything_by_star() {
        assert!(policy(&[]).check_url("http://127.0.0.1").is_err());
        assert!(policy(&["*://*:*"])
            .check_url("postgres://db.internal:1/x")
            .is_ok());
    }

    #[test]
    fn malformed_entries_are_rejected() {
        assert!(AllowedHost::parse("example.com").is_err());
        assert!(AllowedHost::parse("foo://example.com").is_err());
        assert!(AllowedHost::parse("https://example.com/path").is_err());
    }
}
