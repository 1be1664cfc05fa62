//! Password hashing with Argon2id (memory-hard), at the one of OWASP's
//! equivalent minimum settings that takes the least memory: 7 MiB, 5 passes,
//! 1 lane (as strong as 19 MiB with 2 passes, by OWASP's table, for the same
//! work). Memory is what a login flood multiplies, so it is the cost kept
//! small; the hashing slots bound how many run at once (`handlers::hashing`).
//! Hashes made with other settings (the earlier 19 MiB, 2 passes) still
//! verify, and a login replaces them ([`is_current`]). Login against an
//! unknown email verifies a dummy hash with the same parameters, so both
//! cases cost the same.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB.
pub const M_COST: u32 = 7 * 1024;
/// Passes.
pub const T_COST: u32 = 5;
/// Lanes.
pub const P_COST: u32 = 1;

fn argon2() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(M_COST, T_COST, P_COST, None).expect("valid params"),
    )
}

/// A hash of a password that does not exist, with the production parameters.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=7168,t=5,p=1$c29tZXNhbHRzb21lc2FsdA$9rI7UXl8OLWzE5D/0PeE9Y7Gq0b2mzKcQ1cA0rYx7EI";

/// Whether a stored hash was made with today's parameters (a login replaces
/// one that was not).
pub fn is_current(phc: &str) -> bool {
    phc.strip_prefix("$argon2id$v=19$")
        .and_then(|rest| rest.split('$').next())
        == Some(&format!("m={M_COST},t={T_COST},p={P_COST}")[..])
}

/// Hashes a password with a fresh random salt into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a stored PHC string; malformed hashes never match.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"));
        assert!(is_current(&h));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn a_hash_made_with_the_earlier_parameters_still_verifies_and_is_not_current() {
        let old = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19 * 1024, 2, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let h = old
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!is_current(&h));
        assert!(is_current(DUMMY_HASH));
    }

    #[test]
    fn the_dummy_hash_parses_so_unknown_emails_cost_a_full_verify() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify("anything", DUMMY_HASH));
    }
}
