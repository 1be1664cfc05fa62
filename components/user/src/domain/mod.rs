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
