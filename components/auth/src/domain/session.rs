//! Refresh tokens and login lockout rules, free of I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A new opaque refresh token: 32 random bytes, base64url. Only its hash is stored.
pub fn new_refresh_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(B64.encode(bytes))
}

/// The stored form of a refresh token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The key failed logins are counted under: the trimmed, lower-cased email as
/// typed, whether or not it is valid or registered (so lockout reveals nothing).
pub fn email_key(raw: &str) -> String {
    raw.trim().to_lowercase().chars().take(254).collect()
}

/// Lockout settings.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    /// Consecutive failures that lock the email.
    pub max_failures: i32,
    /// How long the lock lasts, in seconds.
    pub lock_secs: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_only_as_hashes() {
        let a = new_refresh_token().unwrap();
        let b = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    #[test]
    fn the_email_key_ignores_case_and_spaces() {
        assert_eq!(email_key("  Ann@Example.COM "), "ann@example.com");
        assert_eq!(email_key(&"x".repeat(300)).len(), 254);
    }
}
