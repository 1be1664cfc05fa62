//! API keys and password-reset tokens, free of I/O: formats, hashing and the
//! rules of what a key may be created with.

use crate::error::Error;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use platform::auth::API_KEY_PREFIX;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A new API key: `cpk_` + 8 hex characters (the visible prefix) + `_` + 32
/// random bytes in base64url. Returns (key, prefix).
pub fn new_key() -> Result<(String, String), String> {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    let prefix = format!("{API_KEY_PREFIX}{}", hex::encode(id));
    Ok((format!("{prefix}_{}", B64.encode(secret)), prefix))
}

/// The stored form of a key or token: sha256, hex. Keys and tokens carry 256
/// random bits, so a fast hash is enough (no dictionary to attack).
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a string has the shape of an API key (checked before any lookup).
pub fn looks_like_key(key: &str) -> bool {
    key.len() == 4 + 8 + 1 + 43
        && key.starts_with(API_KEY_PREFIX)
        && key.is_char_boundary(12)
        && key[4..12].chars().all(|c| c.is_ascii_hexdigit())
        && key.as_bytes()[12] == b'_'
        && key[13..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `POST /api-keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A name to recognise the key by.
    pub name: String,
    /// Permission patterns the key is limited to (within the user's own).
    pub scopes: Vec<String>,
    /// Days until the key expires (1 to 3650; absent: never).
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

/// Most scopes one key may list.
pub const MAX_SCOPES: usize = 50;

impl CreateKey {
    /// Validates: a name, 1 to 50 well-formed scopes, a sane expiry.
    pub fn check(&self) -> Result<(), Error> {
        platform::input::Name::parse(&self.name, "name", 64)?;
        if self.scopes.is_empty() || self.scopes.len() > MAX_SCOPES {
            return Err(Error::Invalid(format!(
                "scopes must list 1 to {MAX_SCOPES} permissions"
            )));
        }
        if let Some(p) = self.scopes.iter().find(|p| !valid_scope(p)) {
            return Err(Error::Invalid(format!(
                "scope {p:?} must be *, resource:* or resource:action"
            )));
        }
        if self
            .expires_in_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            return Err(Error::Invalid(
                "expires_in_days must be from 1 to 3650".into(),
            ));
        }
        Ok(())
    }
}

fn valid_scope(p: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    };
    p == "*"
        || p.split_once(':')
            .is_some_and(|(r, a)| name(r) && (a == "*" || name(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_visible_prefix_and_a_checkable_shape() {
        let (key, prefix) = new_key().unwrap();
        assert!(key.starts_with(&prefix));
        assert_eq!(prefix.len(), 12);
        assert!(looks_like_key(&key), "{key}");
        assert_ne!(new_key().unwrap().0, key);
        assert!(!looks_like_key("cpk_zz"));
        assert!(!looks_like_key(&key.replace('_', "!")));
        assert_eq!(hash(&key).len(), 64);
    }

    #[test]
    fn key_requests_are_checked() {
        let ok = CreateKey {
            name: "ci".into(),
            scopes: vec!["device:read".into()],
            expires_in_days: Some(30),
        };
        assert!(ok.check().is_ok());
        assert!(CreateKey {
            scopes: vec![],
            ..ok
        }
        .check()
        .is_err());
        let bad = CreateKey {
            name: "ci".into(),
            scopes: vec!["devices".into()],
            expires_in_days: None,
        };
        assert!(bad.check().is_err());
        let long = CreateKey {
            name: "ci".into(),
            scopes: vec!["*".into()],
            expires_in_days: Some(0),
        };
        assert!(long.check().is_err());
    }
}
