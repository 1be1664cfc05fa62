//! Access tokens for cloudphone: `auth` signs them with an Ed25519 key, and
//! every other component verifies them with the public keys only, so no
//! component but `auth` can mint a token. Tokens are compact JWTs
//! (`alg = EdDSA`) with a key id, so keys rotate without logging anyone out:
//! a new key signs, old public keys keep verifying until their tokens expire.
//!
//! The [`caller`] module is the shared access library: the caller's
//! permissions, data scopes (turned into row filters) and field rules.
//! [`service`] holds the service credentials components call each other's
//! internal endpoints with, and [`seal`] the encryption of secrets at rest.
//!
//! Pure Rust with no Spin dependency: used by the components (wasm32) and by
//! native tests and tools alike.

pub mod caller;
pub mod seal;
pub mod service;

pub use caller::{Access, Caller, Credential, FieldRule, Level, RowFilter, RowRef, Scope};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Issuer written into and required from every token.
pub const ISSUER: &str = "cloudphone-auth";

/// Why a token or key was refused. Messages are safe to show to clients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token is not three base64url parts of valid JSON.
    #[error("malformed token")]
    Malformed,
    /// The token names a key this component does not know.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Wrong issuer, algorithm or token type.
    #[error("token not accepted")]
    NotAccepted,
    /// A key setting is malformed (configuration error, not a client error).
    #[error("invalid key configuration: {0}")]
    BadKey(String),
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The user's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<Uuid>,
    /// The user's department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dept: Option<Uuid>,
    /// Role codes.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Effective permissions, data scopes and field rules.
    #[serde(default)]
    pub acc: Access,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Unique token id.
    pub jti: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// A private signing key with its id (held by `auth` only).
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
}

impl TokenSigner {
    /// Parses `kid:base64url(32-byte seed)`.
    pub fn parse(setting: &str) -> Result<Self, TokenError> {
        let (kid, seed) = setting
            .trim()
            .split_once(':')
            .ok_or_else(|| TokenError::BadKey("expected kid:seed".into()))?;
        check_kid(kid)?;
        let seed: [u8; 32] = B64
            .decode(seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TokenError::BadKey("seed must be 32 bytes of base64url".into()))?;
        Ok(Self {
            kid: kid.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a `kid:base64url` setting for [`TokenVerifier`].
    pub fn public_setting(&self) -> String {
        format!(
            "{}:{}",
            self.kid,
            B64.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// Signs claims into a compact token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.kid.clone(),
        };
        let h = B64.encode(serde_json::to_vec(&header).expect("header serializes"));
        let p = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{h}.{p}");
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
    }
}

/// The public keys a component accepts (every component holds these).
pub struct TokenVerifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl TokenVerifier {
    /// Parses `kid:base64url(pubkey)[,kid:base64url(pubkey)...]`.
    pub fn parse(setting: &str) -> Result<Self, TokenError> {
        let mut keys = Vec::new();
        for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, key) = part
                .split_once(':')
                .ok_or_else(|| TokenError::BadKey("expected kid:key".into()))?;
            check_kid(kid)?;
            let bytes: [u8; 32] = B64
                .decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    TokenError::BadKey("public key must be 32 bytes of base64url".into())
                })?;
            let key =
                VerifyingKey::from_bytes(&bytes).map_err(|e| TokenError::BadKey(e.to_string()))?;
            keys.push((kid.to_string(), key));
        }
        if keys.is_empty() {
            return Err(TokenError::BadKey("no public keys configured".into()));
        }
        Ok(Self { keys })
    }

    /// Verifies a compact token at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "EdDSA" || header.typ != "JWT" {
            return Err(TokenError::NotAccepted);
        }
        let key = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == header.kid)
            .map(|(_, k)| k)
            .ok_or(TokenError::UnknownKey)?;
        let sig: [u8; 64] = B64
            .decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        key.verify(signing_input.as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_json(p)?;
        if claims.iss != ISSUER {
            return Err(TokenError::NotAccepted);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn check_kid(kid: &str) -> Result<(), TokenError> {
    if kid.is_empty()
        || kid.len() > 64
        || !kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(TokenError::BadKey(
            "key id must be 1-64 of [A-Za-z0-9_-]".into(),
        ));
    }
    Ok(())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = B64.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

impl Claims {
    /// The caller these claims describe.
    pub fn into_caller(self) -> Caller {
        Caller {
            user_id: self.sub,
            tenant_id: self.tid,
            department_id: self.dept,
            roles: self.roles,
            access: self.acc,
            credential: Credential::Token,
        }
    }
}

/// Generates a new `kid:seed` signing-key setting from 32 random bytes.
pub fn signing_key_setting(kid: &str, seed: [u8; 32]) -> String {
    format!("{kid}:{}", B64.encode(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::from_u128(7),
            tid: None,
            dept: None,
            roles: vec!["user".into()],
            acc: Access::default(),
            iat: 0,
            exp,
            iss: ISSUER.into(),
            jti: Uuid::from_u128(9),
        }
    }

    fn pair(kid: &str, byte: u8) -> (TokenSigner, TokenVerifier) {
        let s = TokenSigner::parse(&signing_key_setting(kid, [byte; 32])).unwrap();
        let v = TokenVerifier::parse(&s.public_setting()).unwrap();
        (s, v)
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_claims() {
        let (s, v) = pair("k1", 1);
        let t = s.sign(&claims(100));
        assert_eq!(v.verify(&t, 50).unwrap(), claims(100));
    }

    #[test]
    fn expired_tampered_foreign_and_garbage_tokens_are_refused() {
        let (s, v) = pair("k1", 1);
        let t = s.sign(&claims(100));
        assert_eq!(v.verify(&t, 100), Err(TokenError::Expired));
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 3, 'A');
        assert!(v.verify(&tampered, 50).is_err());
        let (other, _) = pair("k1", 2);
        assert_eq!(
            v.verify(&other.sign(&claims(100)), 50),
            Err(TokenError::BadSignature)
        );
        let (unknown, _) = pair("k2", 1);
        assert_eq!(
            v.verify(&unknown.sign(&claims(100)), 50),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(v.verify("nope", 0), Err(TokenError::Malformed));
        assert_eq!(v.verify("a.b.c.d", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn several_public_keys_verify_during_rotation() {
        let (old, _) = pair("old", 1);
        let (new, _) = pair("new", 2);
        let v = TokenVerifier::parse(&format!(
            "{},{}",
            old.public_setting(),
            new.public_setting()
        ))
        .unwrap();
        assert!(v.verify(&old.sign(&claims(100)), 1).is_ok());
        assert!(v.verify(&new.sign(&claims(100)), 1).is_ok());
    }

    #[test]
    fn malformed_key_settings_are_configuration_errors() {
        assert!(matches!(
            TokenSigner::parse("nokid"),
            Err(TokenError::BadKey(_))
        ));
        assert!(matches!(
            TokenSigner::parse("k:short"),
            Err(TokenError::BadKey(_))
        ));
        assert!(matches!(
            TokenVerifier::parse(""),
            Err(TokenError::BadKey(_))
        ));
        assert!(matches!(
            TokenVerifier::parse("bad/kid:AAAA"),
            Err(TokenError::BadKey(_))
        ));
    }
}
