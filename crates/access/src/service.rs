//! Service credentials: who may call another component's internal endpoints.
//!
//! Every component (and the scheduler) holds one secret of its own, its
//! [`ComponentKey`], and nothing of any other component. From it derive
//! - its **service token** `<component>.<base64url(32 bytes)>`, sent as
//!   `x-service-token` on calls to other components' internal endpoints;
//! - for event producers, the **seed of its Ed25519 event-signing key**
//!   (`events::EventSigner`).
//!
//! Callees hold only the sha256 of each caller's token
//! ([`ServiceTokenHashes`], the app variable `service_token_hashes`), and
//! each internal route names the callers it accepts, so stealing one
//! component's secrets lets an attacker call exactly the internal routes
//! that component may call, and stealing a callee's configuration lets them
//! call nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The request header that carries a service token.
pub const HEADER: &str = "x-service-token";

/// Why a key or token setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    /// A configuration value is malformed.
    #[error("invalid service key configuration: {0}")]
    BadConfig(String),
}

/// A component's own secret: 32 bytes, configured as base64url.
#[derive(Clone)]
pub struct ComponentKey([u8; 32]);

impl std::fmt::Debug for ComponentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentKey(..)")
    }
}

impl ComponentKey {
    /// Parses the base64url setting of a component key.
    pub fn parse(setting: &str) -> Result<Self, ServiceError> {
        B64.decode(setting.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Self)
            .ok_or_else(|| {
                ServiceError::BadConfig("component key must be 32 bytes of base64url".into())
            })
    }

    /// A key from raw bytes (tools and tests generate them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The base64url setting of this key.
    pub fn setting(&self) -> String {
        B64.encode(self.0)
    }

    fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The service token of `component` (the component this key belongs to).
    pub fn service_token(&self, component: &str) -> String {
        format!(
            "{component}.{}",
            B64.encode(self.derive("cloudphone/service-token/v1"))
        )
    }

    /// The key this component seals its secrets at rest with, for one
    /// purpose (`access::seal`).
    pub fn seal_key(&self, purpose: &str) -> [u8; 32] {
        self.derive(&format!("cloudphone/seal/{purpose}/v1"))
    }

    /// The seed of this component's Ed25519 event-signing key.
    pub fn event_signing_seed(&self) -> [u8; 32] {
        self.derive("cloudphone/event-signing/v1")
    }
}

/// sha256 (hex) of a service token, as `service_token_hashes` lists it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The callees' view: the sha256 of every caller's service token, from
/// `caller:hex[,caller:hex...]`.
#[derive(Debug, Clone)]
pub struct ServiceTokenHashes(Vec<(String, [u8; 32])>);

impl ServiceTokenHashes {
    /// Parses the `service_token_hashes` setting.
    pub fn parse(setting: &str) -> Result<Self, ServiceError> {
        let mut out = Vec::new();
        for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, hash) = part
                .split_once(':')
                .ok_or_else(|| ServiceError::BadConfig("expected caller:sha256hex".into()))?;
            let hash: [u8; 32] = hex::decode(hash)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    ServiceError::BadConfig(format!("hash of {name} is not sha256 hex"))
                })?;
            if !valid_name(name) {
                return Err(ServiceError::BadConfig(format!("bad caller name {name:?}")));
            }
            out.push((name.to_string(), hash));
        }
        Ok(Self(out))
    }

    /// The caller a presented token belongs to, if it is one of `allowed`
    /// and its hash matches (compared in constant time).
    pub fn verify<'a>(&self, token: &str, allowed: &[&'a str]) -> Option<&'a str> {
        let (name, _) = token.split_once('.')?;
        let caller = allowed.iter().find(|a| **a == name)?;
        let (_, expected) = self.0.iter().find(|(n, _)| n == name)?;
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let diff = given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(*caller)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_for_its_caller_and_only_where_that_caller_is_allowed() {
        let user = ComponentKey::from_bytes([1; 32]);
        let sched = ComponentKey::from_bytes([2; 32]);
        let hashes = ServiceTokenHashes::parse(&format!(
            "user:{},scheduler:{}",
            token_hash(&user.service_token("user")),
            token_hash(&sched.service_token("scheduler"))
        ))
        .unwrap();
        let t = user.service_token("user");
        assert_eq!(hashes.verify(&t, &["auth", "user"]), Some("user"));
        assert_eq!(hashes.verify(&t, &["scheduler"]), None);
        // A token presented under another caller's name fails its hash.
        let renamed = t.replacen("user.", "scheduler.", 1);
        assert_eq!(hashes.verify(&renamed, &["scheduler"]), None);
        assert_eq!(hashes.verify("garbage", &["user"]), None);
        assert_eq!(hashes.verify("", &["user"]), None);
    }

    /// The fixed test vector of docs/architecture.md ("Secrets"), computed
    /// independently (Python's hmac and hashlib): key = 32 bytes of 0x07.
    #[test]
    fn derivation_matches_the_documented_test_vector() {
        let k = ComponentKey::from_bytes([7; 32]);
        assert_eq!(k.setting(), "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc");
        let token = k.service_token("scheduler");
        assert_eq!(
            token,
            "scheduler.0w9RfjH6guz3gQpjXGGH_CrkdLq9SgnHQ5vbIyvbpMg"
        );
        assert_eq!(
            token_hash(&token),
            "63ac113aaff0afcf83870d109c42a93e6392b9d0ecaeb9720ca95d788391641d"
        );
        assert_eq!(
            B64.encode(k.event_signing_seed()),
            "V2dLQCVlI3mBcPdTi54boj7dUOsdbeGnBCfedsS6teo"
        );
    }

    #[test]
    fn malformed_settings_are_configuration_errors() {
        assert!(ComponentKey::parse("short").is_err());
        assert!(ServiceTokenHashes::parse("user").is_err());
        assert!(ServiceTokenHashes::parse("user:abcd").is_err());
        assert!(ServiceTokenHashes::parse(&format!("Us/er:{}", "0".repeat(64))).is_err());
        assert!(ServiceTokenHashes::parse("").unwrap().0.is_empty());
    }
}
