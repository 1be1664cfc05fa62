//! Secrets at rest: what a component must keep but must not store in the
//! clear (a pending email with a password-reset link, a node's HMAC
//! secret) is sealed with XChaCha20-Poly1305 under a key derived from the
//! component's own key ([`crate::service::ComponentKey::seal_key`]), so a
//! copy of the database alone reveals nothing. Sealed form:
//! 24-byte random nonce followed by the ciphertext and its 16-byte tag.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Wrong key, wrong purpose, or the bytes were changed.
    #[error("sealed value does not open")]
    Open,
    /// No randomness for a nonce.
    #[error("no randomness: {0}")]
    Random(String),
}

/// Seals `plain` under `key`; `purpose` is bound in (associated data), so a
/// value sealed for one use cannot be passed off as another.
pub fn seal(key: &[u8; 32], purpose: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: purpose.as_bytes(),
            },
        )
        .map_err(|_| SealError::Open)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] made with the same key and purpose.
pub fn open(key: &[u8; 32], purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < 24 + 16 {
        return Err(SealError::Open);
    }
    let (nonce, body) = sealed.split_at(24);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: purpose.as_bytes(),
            },
        )
        .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_purpose() {
        let k = [9u8; 32];
        let s = seal(&k, "mail", b"reset token abc").unwrap();
        assert!(!s.windows(3).any(|w| w == b"abc"));
        assert_eq!(open(&k, "mail", &s).unwrap(), b"reset token abc");
        assert_eq!(open(&[8u8; 32], "mail", &s), Err(SealError::Open));
        assert_eq!(open(&k, "node", &s), Err(SealError::Open));
        let mut bent = s.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert_eq!(open(&k, "mail", &bent), Err(SealError::Open));
        assert_eq!(open(&k, "mail", b"short"), Err(SealError::Open));
        // A fresh nonce each time.
        assert_ne!(
            seal(&k, "mail", b"x").unwrap(),
            seal(&k, "mail", b"x").unwrap()
        );
    }
}
