//! Signed events: producers sign each event they publish to Redis with
//! HMAC-SHA256 under the app's internal token, and consumers drop a pub/sub
//! message whose signature does not verify. Redis is shared with the
//! runtime agents on every host, so anyone who can publish there could
//! otherwise forge an identity (and so a token) or an audit entry. Events
//! pulled from a producer's feed come over authenticated chaining and need
//! no signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The field of an event that carries its signature.
pub const SIG: &str = "sig";

/// The signature of an event: HMAC-SHA256 (hex) of its JSON without the
/// `sig` field, serialized as it is. Producers sign what they send;
/// consumers parse what they received (which keeps its field order) and
/// check it.
pub fn sign_event(key: &str, event: &serde_json::Value) -> String {
    let mut unsigned = event.clone();
    if let Some(obj) = unsigned.as_object_mut() {
        obj.remove(SIG);
    }
    let bytes = serde_json::to_vec(&unsigned).expect("json serializes");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&bytes);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether an event carries a valid signature (compared in constant time).
pub fn verify_event(key: &str, event: &serde_json::Value) -> bool {
    let Some(given) = event.get(SIG).and_then(|v| v.as_str()) else {
        return false;
    };
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let mut unsigned = event.clone();
    if let Some(obj) = unsigned.as_object_mut() {
        obj.remove(SIG);
    }
    let bytes = serde_json::to_vec(&unsigned).expect("json serializes");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(&bytes);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_event_verifies_and_any_change_breaks_it() {
        let mut e =
            serde_json::json!({"id": "1", "type": "user.updated", "payload": {"email": "a@b.c"}});
        e[SIG] = sign_event("k", &e).into();
        assert!(verify_event("k", &e));
        assert!(!verify_event("other key", &e));
        let mut forged = e.clone();
        forged["payload"]["email"] = "evil@b.c".into();
        assert!(!verify_event("k", &forged));
        let mut unsigned = e.clone();
        unsigned.as_object_mut().unwrap().remove(SIG);
        assert!(!verify_event("k", &unsigned));
        // What the consumer parses from the wire verifies as sent.
        let wire = serde_json::to_vec(&e).unwrap();
        assert!(verify_event("k", &serde_json::from_slice(&wire).unwrap()));
    }
}
