//! Signed pub/sub messages. Redis is shared with the runtime agents on every
//! host, so a consumer applies a pub/sub message only if the producer named
//! in its envelope signed it. Each producer signs with its own Ed25519 key
//! (derived from its component key, `access::service`); consumers hold only
//! the public keys (`event_public_keys`), so no consumer, and no stolen
//! consumer configuration, can forge another component's event.
//!
//! Wire format (one Redis message):
//!
//! ```text
//! {"event":<envelope JSON, exactly the signed bytes>,"sig":"<base64url signature>"}
//! ```
//!
//! The signature is Ed25519 over `cloudphone-event-v1\n` followed by the
//! `event` value's bytes exactly as they appear in the message, so no
//! canonical JSON is needed: the consumer verifies the bytes it received.
//! The fixed test vector below is also in `docs/events.md`.

use crate::Envelope;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Deserialize;
use serde_json::value::RawValue;

const DOMAIN: &[u8] = b"cloudphone-event-v1\n";

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// Not the wire format, or the envelope inside does not parse.
    #[error("not a signed event message: {0}")]
    Malformed(String),
    /// The envelope names a source this consumer has no key for.
    #[error("no public key for source {0:?}")]
    UnknownSource(String),
    /// The signature does not verify under the source's key.
    #[error("invalid signature")]
    BadSignature,
    /// A key setting is malformed (configuration error).
    #[error("invalid event key configuration: {0}")]
    BadKey(String),
}

/// A producer's signing key.
pub struct EventSigner {
    source: String,
    key: SigningKey,
}

impl EventSigner {
    /// The signer of `source` from its 32-byte seed.
    pub fn from_seed(source: &str, seed: [u8; 32]) -> Self {
        Self {
            source: source.to_string(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The `source:base64url(public key)` entry for `event_public_keys`.
    pub fn public_setting(&self) -> String {
        format!(
            "{}:{}",
            self.source,
            B64.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// Signs already-serialized envelope bytes into a wire message.
    pub fn sign_bytes(&self, event: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(DOMAIN.len() + event.len());
        input.extend_from_slice(DOMAIN);
        input.extend_from_slice(event);
        let sig = B64.encode(self.key.sign(&input).to_bytes());
        let mut out = Vec::with_capacity(event.len() + sig.len() + 20);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(event);
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(sig.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    /// Signs an envelope into a wire message.
    pub fn sign(&self, envelope: &Envelope) -> Vec<u8> {
        self.sign_bytes(&serde_json::to_vec(envelope).expect("envelope serializes"))
    }
}

/// A consumer's public keys, one per producing source.
pub struct EventVerifier {
    keys: Vec<(String, VerifyingKey)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    sig: String,
}

impl EventVerifier {
    /// Parses `source:base64url(key)[,source:base64url(key)...]`.
    pub fn parse(setting: &str) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (source, key) = part
                .split_once(':')
                .ok_or_else(|| SignatureError::BadKey("expected source:key".into()))?;
            let bytes: [u8; 32] = B64
                .decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    SignatureError::BadKey(format!("key of {source} is not 32 bytes"))
                })?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| SignatureError::BadKey(e.to_string()))?;
            keys.push((source.to_string(), key));
        }
        Ok(Self { keys })
    }

    /// Verifies a wire message and returns its envelope.
    pub fn verify(&self, message: &[u8]) -> Result<Envelope, SignatureError> {
        let wire: Wire = serde_json::from_slice(message)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let envelope: Envelope = serde_json::from_str(wire.event.get())
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let key = self
            .keys
            .iter()
            .find(|(s, _)| *s == envelope.source)
            .map(|(_, k)| k)
            .ok_or_else(|| SignatureError::UnknownSource(envelope.source.clone()))?;
        let sig: [u8; 64] = B64
            .decode(&wire.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::BadSignature)?;
        let mut input = Vec::with_capacity(DOMAIN.len() + wire.event.get().len());
        input.extend_from_slice(DOMAIN);
        input.extend_from_slice(wire.event.get().as_bytes());
        key.verify(&input, &Signature::from_bytes(&sig))
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(envelope)
    }
}

/// The two public settings of an app, from its components' keys (tools
/// and tests generate keys, then configure these): `service_token_hashes`
/// (`name:sha256hex` of each service token) and `event_public_keys`
/// (`name:base64url` of each event-signing key).
pub fn public_settings(keys: &[(&str, access::service::ComponentKey)]) -> (String, String) {
    let hashes = keys
        .iter()
        .map(|(name, key)| {
            format!(
                "{name}:{}",
                access::service::token_hash(&key.service_token(name))
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let public = keys
        .iter()
        .map(|(name, key)| EventSigner::from_seed(name, key.event_signing_seed()).public_setting())
        .collect::<Vec<_>>()
        .join(",");
    (hashes, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed test vector of `docs/events.md`: seed 32 bytes of 0x2a,
    /// source `user`, this exact event text.
    const VECTOR_EVENT: &str = r#"{"id":"00000000-0000-0000-0000-000000000001","type":"user.updated","schema_version":2,"source":"user","aggregate_id":"00000000-0000-0000-0000-0000000000aa","aggregate_version":3,"occurred_at":"2026-01-01T00:00:00.000000Z","payload":{}}"#;
    const VECTOR_PUBLIC: &str = "user:GX9rI-FshTLGq8g4-s1ep4m-DHaykgM0A5v6iz02jWE";
    const VECTOR_SIG: &str =
        "3gVIa1jGFA7xrPRkqEi3BoxfqDmwXLPzD9IMG5t761HgpINF33F34XaZQIqMDQgHzHnMwdW_6rP2n_ovM1OrCg";

    fn signer() -> EventSigner {
        EventSigner::from_seed("user", [0x2a; 32])
    }

    #[test]
    fn the_documented_test_vector_holds() {
        let s = signer();
        assert_eq!(s.public_setting(), VECTOR_PUBLIC);
        let wire = s.sign_bytes(VECTOR_EVENT.as_bytes());
        let expected = format!("{{\"event\":{VECTOR_EVENT},\"sig\":\"{VECTOR_SIG}\"}}");
        assert_eq!(String::from_utf8(wire).unwrap(), expected);
        let v = EventVerifier::parse(VECTOR_PUBLIC).unwrap();
        assert_eq!(v.verify(expected.as_bytes()).unwrap().aggregate_version, 3);
    }

    #[test]
    fn forged_reserialized_foreign_and_unsigned_messages_are_refused() {
        let s = signer();
        let v = EventVerifier::parse(&s.public_setting()).unwrap();
        let wire = String::from_utf8(s.sign_bytes(VECTOR_EVENT.as_bytes())).unwrap();
        let forged = wire.replace("\"aggregate_version\":3", "\"aggregate_version\":4");
        assert_eq!(
            v.verify(forged.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        // Whitespace changes the signed bytes too: only exact bytes verify.
        let spaced = wire.replace("\"schema_version\":2", "\"schema_version\": 2");
        assert_eq!(
            v.verify(spaced.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        // Another producer's key cannot sign for `user`.
        let auth = EventSigner::from_seed("user", [1; 32]);
        let foreign = auth.sign_bytes(VECTOR_EVENT.as_bytes());
        assert_eq!(v.verify(&foreign), Err(SignatureError::BadSignature));
        // A source without a configured key.
        let other = VECTOR_EVENT.replace("\"source\":\"user\"", "\"source\":\"billing\"");
        assert!(matches!(
            v.verify(&s.sign_bytes(other.as_bytes())),
            Err(SignatureError::UnknownSource(_))
        ));
        assert!(matches!(
            v.verify(VECTOR_EVENT.as_bytes()),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(v.verify(b"[]"), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn a_signed_envelope_round_trips() {
        let s = signer();
        let v = EventVerifier::parse(&s.public_setting()).unwrap();
        let env = Envelope::new(
            &crate::catalogue::USER_UPDATED,
            "x",
            7,
            "2026-01-01T00:00:00Z",
            &serde_json::json!({"a": [1, 2]}),
        );
        assert_eq!(v.verify(&s.sign(&env)).unwrap(), env);
    }
}
