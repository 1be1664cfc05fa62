//! Types and rules of `user`, free of I/O.

use serde::Serialize;
use uuid::Uuid;

/// A user's profile as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Profile {
    /// User id.
    pub id: Uuid,
    /// Email address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Tenant, if any.
    pub tenant_id: Option<Uuid>,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    /// Role codes.
    pub roles: Vec<String>,
    /// Free-form profile metadata.
    pub metadata: serde_json::Value,
    /// Increases with every change.
    pub version: i64,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

/// A profile to create, from the already-validated registration in `auth`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Id chosen by `auth`.
    pub id: Uuid,
    /// Email, validated by `auth`.
    pub email: String,
    /// Display name, validated by `auth`.
    pub display_name: String,
}

impl NewUser {
    /// Defends the table against a caller that skipped validation.
    pub fn check(&self) -> Result<(), crate::error::Error> {
        let bad = |m: &str| Err(crate::error::Error::Invalid(m.into()));
        if self.email.is_empty() || self.email.len() > 254 || !self.email.contains('@') {
            return bad("email is not a valid address");
        }
        let n = self.display_name.chars().count();
        if n == 0 || n > 64 {
            return bad("display_name must be 1 to 64 characters");
        }
        Ok(())
    }
}

/// A change to one's own profile; absent fields stay as they are.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// New display name.
    pub display_name: Option<String>,
    /// New metadata (replaces the old object).
    pub metadata: Option<serde_json::Value>,
}

/// Largest metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

impl ProfileUpdate {
    /// Checks the rules; an empty update is refused.
    pub fn check(&mut self) -> Result<(), crate::error::Error> {
        let bad = |m: &str| Err(crate::error::Error::Invalid(m.into()));
        if self.display_name.is_none() && self.metadata.is_none() {
            return bad("nothing to update: give display_name or metadata");
        }
        if let Some(name) = &mut self.display_name {
            *name = name.trim().to_string();
            let n = name.chars().count();
            if n == 0 || n > 64 || name.chars().any(char::is_control) {
                return bad("display_name must be 1 to 64 characters without control characters");
            }
        }
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return bad("metadata must be a json object");
            }
            if serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_METADATA_BYTES {
                return bad("metadata must be at most 8 KiB");
            }
        }
        Ok(())
    }
}

/// The identity fields other components copy, as carried by `user.*` events.
pub fn identity_payload(p: &Profile) -> serde_json::Value {
    serde_json::json!({
        "id": p.id, "email": p.email, "display_name": p.display_name,
        "tenant_id": p.tenant_id, "status": p.status, "roles": p.roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_checked() {
        let mut empty = ProfileUpdate {
            display_name: None,
            metadata: None,
        };
        assert!(empty.check().is_err());
        let mut blank = ProfileUpdate {
            display_name: Some("  ".into()),
            metadata: None,
        };
        assert!(blank.check().is_err());
        let mut list = ProfileUpdate {
            display_name: None,
            metadata: Some(serde_json::json!([1])),
        };
        assert!(list.check().is_err());
        let big = serde_json::json!({"k": "x".repeat(MAX_METADATA_BYTES)});
        assert!(ProfileUpdate {
            display_name: None,
            metadata: Some(big)
        }
        .check()
        .is_err());
        let mut ok = ProfileUpdate {
            display_name: Some(" Ann ".into()),
            metadata: Some(serde_json::json!({"a": 1})),
        };
        assert!(ok.check().is_ok());
        assert_eq!(ok.display_name.as_deref(), Some("Ann"));
    }
}
