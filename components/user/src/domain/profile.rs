//! User profiles: what the API shows, what can be created and changed, and
//! the identity snapshot that `user.*` events carry.

use crate::error::Error;
use platform::input::{self, Email, Name, Phone};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A role as a user's profile lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoleRef {
    /// Role id.
    pub id: Uuid,
    /// Role code.
    pub code: String,
}

/// A user's profile as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Profile {
    /// User id.
    pub id: Uuid,
    /// Email address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Phone number.
    pub phone: Option<String>,
    /// Tenant, if any.
    pub tenant_id: Option<Uuid>,
    /// Department, if any.
    pub department_id: Option<Uuid>,
    /// `active`, `locked` or `deleted`.
    pub status: String,
    /// Roles held.
    pub roles: Vec<RoleRef>,
    /// Free-form profile metadata.
    pub metadata: serde_json::Value,
    /// The language they read (BCP 47: `en`, `zh-CN`, …).
    pub locale: String,
    /// Increases with every change.
    pub version: i64,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

/// The identity snapshot every `user.*` event carries (its one definition
/// is in `crates/events`).
pub use platform::events::payload::Identity;

/// Largest metadata object, serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A profile to create from `auth`'s registration (already validated there;
/// checked again here).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Id chosen by `auth`.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
}

/// A validated new user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Id.
    pub id: Uuid,
    /// Email.
    pub email: Email,
    /// Display name.
    pub display_name: Name,
    /// Phone.
    pub phone: Option<Phone>,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Department.
    pub department_id: Option<Uuid>,
    /// Roles to hold.
    pub role_ids: Vec<Uuid>,
    /// The administrator who created the user (`None`: self-registration).
    pub created_by: Option<Uuid>,
    /// Their language.
    pub locale: Locale,
}

/// A language tag (BCP 47 shape: `en`, `zh-CN`, `pt-BR`), at most 35
/// characters; notifications fall back to its language, then English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    /// Parses a tag.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let mut parts = raw.split('-');
        let lang = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let ok = raw.len() <= 35
            && (2..=3).contains(&lang.len())
            && lang.chars().all(|c| c.is_ascii_alphabetic())
            && rest.len() <= 3
            && rest.iter().all(|p| {
                (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(Error::Invalid(
                "locale must be a language tag such as en or zh-CN".into(),
            ))
        }
    }

    /// English, the default.
    pub fn english() -> Self {
        Self("en".into())
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Registration {
    /// Validates a registration; self-registered users hold the `user` role.
    pub fn parse(self) -> Result<NewUser, Error> {
        Ok(NewUser {
            id: self.id,
            email: Email::parse(&self.email)?,
            display_name: Name::display_name(&self.display_name)?,
            phone: None,
            tenant_id: None,
            department_id: None,
            role_ids: vec![USER_ROLE],
            created_by: None,
            locale: Locale::english(),
        })
    }
}

/// The system role every self-registered user holds.
pub const USER_ROLE: Uuid = Uuid::from_u128(0xa004);
/// The system role with every permission.
pub const SUPER_ADMIN_ROLE: Uuid = Uuid::from_u128(0xa001);

/// `POST /users`: an administrator creates a user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Initial password (8 to 128 characters), set in `auth`.
    pub password: String,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Tenant (platform staff only; others create in their own tenant).
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// Department.
    #[serde(default)]
    pub department_id: Option<Uuid>,
    /// Roles (default: `user`).
    #[serde(default)]
    pub role_ids: Option<Vec<Uuid>>,
    /// Language (default `en`).
    #[serde(default)]
    pub locale: Option<String>,
}

/// Checks a new password's length (the hash is made in `auth`).
pub fn check_password(p: &str) -> Result<(), Error> {
    let n = p.chars().count();
    if !(8..=128).contains(&n) {
        return Err(Error::Invalid(
            "password must be 8 to 128 characters".into(),
        ));
    }
    Ok(())
}

impl CreateUser {
    /// Validates everything but references (tenant, department, roles), which
    /// the handler checks against the database.
    pub fn parse(
        self,
        tenant_id: Option<Uuid>,
        created_by: Uuid,
    ) -> Result<(NewUser, String), Error> {
        check_password(&self.password)?;
        let role_ids = self.role_ids.unwrap_or_else(|| vec![USER_ROLE]);
        if role_ids.len() > 20 {
            return Err(Error::Invalid("role_ids must have at most 20 roles".into()));
        }
        Ok((
            NewUser {
                id: Uuid::new_v4(),
                email: Email::parse(&self.email)?,
                display_name: Name::display_name(&self.display_name)?,
                phone: self.phone.as_deref().map(Phone::parse).transpose()?,
                tenant_id,
                department_id: self.department_id,
                role_ids,
                created_by: Some(created_by),
                locale: self
                    .locale
                    .as_deref()
                    .map(Locale::parse)
                    .transpose()?
                    .unwrap_or_else(Locale::english),
            },
            self.password,
        ))
    }
}

/// A change to a profile; absent fields stay as they are, `null` clears.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// New phone (`null` clears).
    #[serde(default, deserialize_with = "input::nullable")]
    pub phone: Option<Option<String>>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// New department (`null` clears; administrators only).
    #[serde(default, deserialize_with = "input::nullable")]
    pub department_id: Option<Option<Uuid>>,
    /// New language.
    #[serde(default)]
    pub locale: Option<String>,
}

/// A validated profile change.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// New display name.
    pub display_name: Option<Name>,
    /// New phone.
    pub phone: Option<Option<Phone>>,
    /// New metadata.
    pub metadata: Option<serde_json::Value>,
    /// New department.
    pub department_id: Option<Option<Uuid>>,
    /// New language.
    pub locale: Option<Locale>,
}

impl ProfilePatch {
    /// Checks the rules; an empty change is refused. `self_service` refuses
    /// the fields only administrators may change.
    pub fn parse(self, self_service: bool) -> Result<ProfileChange, Error> {
        if self.display_name.is_none()
            && self.phone.is_none()
            && self.metadata.is_none()
            && self.department_id.is_none()
            && self.locale.is_none()
        {
            return Err(Error::Invalid(
                "nothing to update: give display_name, phone, metadata, locale or department_id"
                    .into(),
            ));
        }
        if self_service && self.department_id.is_some() {
            return Err(Error::Invalid(
                "department_id is changed by an administrator".into(),
            ));
        }
        if let Some(m) = &self.metadata {
            input::metadata(m, MAX_METADATA_BYTES)?;
        }
        Ok(ProfileChange {
            display_name: self
                .display_name
                .as_deref()
                .map(Name::display_name)
                .transpose()?,
            phone: self
                .phone
                .map(|p| p.as_deref().map(Phone::parse).transpose())
                .transpose()?,
            metadata: self.metadata,
            department_id: self.department_id,
            locale: self.locale.as_deref().map(Locale::parse).transpose()?,
        })
    }
}

/// `PUT /users/:id/roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// The complete set of roles the user holds afterwards.
    pub role_ids: Vec<Uuid>,
}

/// `PUT /users/:id/password`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSet {
    /// The new password.
    pub password: String,
}

/// Filters of `GET /users`.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Substring of email, display name or phone.
    pub q: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Tenant (platform staff).
    pub tenant_id: Option<Uuid>,
    /// Department.
    pub department_id: Option<Uuid>,
    /// Holders of a role code.
    pub role: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_checked() {
        assert!(ProfilePatch::default().parse(false).is_err());
        let blank = ProfilePatch {
            display_name: Some("  ".into()),
            ..ProfilePatch::default()
        };
        assert!(blank.parse(false).is_err());
        let list = ProfilePatch {
            metadata: Some(serde_json::json!([1])),
            ..ProfilePatch::default()
        };
        assert!(list.parse(false).is_err());
        let big = ProfilePatch {
            metadata: Some(serde_json::json!({"k": "x".repeat(MAX_METADATA_BYTES)})),
            ..ProfilePatch::default()
        };
        assert!(big.parse(false).is_err());
        let dept = ProfilePatch {
            department_id: Some(None),
            ..ProfilePatch::default()
        };
        assert!(dept.clone().parse(true).is_err(), "self-service");
        assert!(dept.parse(false).is_ok());
        let ok = ProfilePatch {
            display_name: Some(" Ann ".into()),
            phone: Some(None),
            ..ProfilePatch::default()
        }
        .parse(true)
        .unwrap();
        assert_eq!(ok.display_name.unwrap().as_str(), "Ann");
        assert_eq!(ok.phone, Some(None));
    }

    #[test]
    fn a_locale_is_a_language_tag() {
        for ok in ["en", "zh-CN", "pt-BR", "zh-Hans-CN", "yue"] {
            assert_eq!(Locale::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "e",
            "english-language-tag-too-long-x",
            "zh_CN",
            "en-",
            "1a",
            "zh-CN-a-b-c-d",
        ] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn created_users_get_the_user_role_by_default_and_a_checked_password() {
        let c = CreateUser {
            email: "a@example.com".into(),
            display_name: "A".into(),
            password: "long enough".into(),
            phone: None,
            tenant_id: None,
            department_id: None,
            role_ids: None,
            locale: None,
        };
        let (u, _) = c.clone().parse(None, Uuid::nil()).unwrap();
        assert_eq!(u.role_ids, vec![USER_ROLE]);
        assert_eq!(u.locale.as_str(), "en");
        let short = CreateUser {
            password: "short".into(),
            ..c
        };
        assert!(short.parse(None, Uuid::nil()).is_err());
    }
}
