//! Roles, permissions, data scopes and field permissions as the API creates
//! and changes them.

use super::access::{valid_pattern, ScopeKind};
use crate::error::Error;
use platform::input::{Code, Name, Text};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use uuid::Uuid;

/// A role as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Role {
    /// Id.
    pub id: Uuid,
    /// Tenant; `null` for system roles.
    pub tenant_id: Option<Uuid>,
    /// Code, unique per tenant.
    pub code: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// System roles are changed only by platform staff.
    pub is_system: bool,
    /// Permission patterns.
    pub permissions: Vec<String>,
    /// Version.
    pub version: i64,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// Most permissions one role may list.
pub const MAX_PERMISSIONS: usize = 200;

/// Checks a list of permission patterns (no duplicates kept).
pub fn parse_permissions(list: Vec<String>) -> Result<BTreeSet<String>, Error> {
    if list.len() > MAX_PERMISSIONS {
        return Err(Error::Invalid(format!(
            "permissions must have at most {MAX_PERMISSIONS} entries"
        )));
    }
    list.into_iter()
        .map(|p| {
            if valid_pattern(&p) {
                Ok(p)
            } else {
                Err(Error::Invalid(format!(
                    "permission {p:?} must be *, resource:* or resource:action"
                )))
            }
        })
        .collect()
}

/// `POST /roles`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Permission patterns.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Tenant (platform staff only; `null` makes a system role).
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
}

/// A validated new role.
#[derive(Debug, Clone)]
pub struct NewRole {
    /// Code.
    pub code: Code,
    /// Name.
    pub name: Name,
    /// Description.
    pub description: String,
    /// Permissions.
    pub permissions: BTreeSet<String>,
}

fn description(d: Option<String>) -> Result<String, Error> {
    match d.as_deref().map(str::trim) {
        None | Some("") => Ok(String::new()),
        Some(s) => Ok(Text::parse(s, "description", 500)?.as_str().to_string()),
    }
}

impl CreateRole {
    /// Validates the fields.
    pub fn parse(self) -> Result<(NewRole, Option<Uuid>), Error> {
        Ok((
            NewRole {
                code: Code::parse(&self.code, "code")?,
                name: Name::parse(&self.name, "name", 64)?,
                description: description(self.description)?,
                permissions: parse_permissions(self.permissions)?,
            },
            self.tenant_id,
        ))
    }
}

/// `PATCH /roles/:id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
}

impl RolePatch {
    /// Validates; an empty patch is refused.
    pub fn parse(self) -> Result<(Option<Name>, Option<String>), Error> {
        if self.name.is_none() && self.description.is_none() {
            return Err(Error::Invalid(
                "nothing to update: give name or description".into(),
            ));
        }
        Ok((
            self.name
                .as_deref()
                .map(|n| Name::parse(n, "name", 64))
                .transpose()?,
            self.description.map(|d| description(Some(d))).transpose()?,
        ))
    }
}

/// `PUT /roles/:id/permissions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSet {
    /// The complete set afterwards.
    pub permissions: Vec<String>,
}

/// A catalogue permission as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Permission {
    /// `resource:action`.
    pub code: String,
    /// Resource.
    pub resource: String,
    /// Action.
    pub action: String,
    /// What it allows.
    pub description: String,
    /// Built in (cannot be deleted).
    pub is_system: bool,
}

/// `POST /permissions`: a custom permission for the catalogue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePermission {
    /// `resource:action`.
    pub code: String,
    /// What it allows.
    #[serde(default)]
    pub description: Option<String>,
}

impl CreatePermission {
    /// Validates: a concrete `resource:action`, no wildcard.
    pub fn parse(self) -> Result<(String, String, String, String), Error> {
        let code = self.code.trim().to_string();
        match code.split_once(':') {
            Some((r, a)) if valid_pattern(&code) && a != "*" => Ok((
                code.clone(),
                r.to_string(),
                a.to_string(),
                description(self.description)?,
            )),
            _ => Err(Error::Invalid(
                "code must be resource:action in lower case".into(),
            )),
        }
    }
}

/// Resources a data scope or field permission may name.
pub fn check_resource(r: &str) -> Result<(), Error> {
    let ok = r == "*"
        || (!r.is_empty()
            && r.len() <= 48
            && r.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "resource must be * or a lower-case resource name".into(),
        ))
    }
}

/// A data scope as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DataScope {
    /// Id.
    pub id: Uuid,
    /// Role.
    pub role_id: Uuid,
    /// Resource or `*`.
    pub resource: String,
    /// Kind.
    pub scope: String,
    /// Departments of a `custom` scope.
    pub department_ids: Vec<Uuid>,
    /// Last change.
    pub updated_at: String,
}

/// `POST /data-scopes` and `PUT /data-scopes/:id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataScopeInput {
    /// Role (POST only; ignored on PUT if equal).
    #[serde(default)]
    pub role_id: Option<Uuid>,
    /// Resource or `*`.
    pub resource: String,
    /// `all`, `tenant`, `department`, `department_tree`, `self` or `custom`.
    pub scope: String,
    /// Departments of a `custom` scope.
    #[serde(default)]
    pub department_ids: Vec<Uuid>,
}

impl DataScopeInput {
    /// Validates the fields (departments are checked against the tenant by the handler).
    pub fn parse(&self) -> Result<ScopeKind, Error> {
        check_resource(&self.resource)?;
        let kind = ScopeKind::parse(&self.scope).ok_or_else(|| {
            Error::Invalid(format!(
                "scope must be one of {}",
                ScopeKind::ALL.join(", ")
            ))
        })?;
        match kind {
            ScopeKind::Custom
                if self.department_ids.is_empty() || self.department_ids.len() > 500 =>
            {
                Err(Error::Invalid(
                    "a custom scope needs 1 to 500 department_ids".into(),
                ))
            }
            ScopeKind::Custom => Ok(kind),
            _ if !self.department_ids.is_empty() => Err(Error::Invalid(
                "department_ids are only for a custom scope".into(),
            )),
            _ => Ok(kind),
        }
    }
}

/// A field permission as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldPermission {
    /// Id.
    pub id: Uuid,
    /// Role.
    pub role_id: Uuid,
    /// Resource.
    pub resource: String,
    /// Fields removed from responses.
    pub hidden: Vec<String>,
    /// Fields masked in responses.
    pub masked: Vec<String>,
    /// Last change.
    pub updated_at: String,
}

/// `POST /field-permissions` and `PUT /field-permissions/:id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldPermissionInput {
    /// Role (POST only).
    #[serde(default)]
    pub role_id: Option<Uuid>,
    /// Resource.
    pub resource: String,
    /// Fields to hide.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// Fields to mask.
    #[serde(default)]
    pub masked: Vec<String>,
}

impl FieldPermissionInput {
    /// Validates: field names are snake_case, `id` cannot be restricted, a
    /// field is either hidden or masked.
    pub fn parse(&self) -> Result<(), Error> {
        check_resource(&self.resource)?;
        if self.resource == "*" {
            return Err(Error::Invalid("field permissions name one resource".into()));
        }
        if self.hidden.is_empty() && self.masked.is_empty() {
            return Err(Error::Invalid("give hidden or masked fields".into()));
        }
        if self.hidden.len() + self.masked.len() > 50 {
            return Err(Error::Invalid("at most 50 fields".into()));
        }
        for f in self.hidden.iter().chain(&self.masked) {
            let ok = !f.is_empty()
                && f.len() <= 48
                && f.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(Error::Invalid(format!(
                    "field {f:?} must be a snake_case field name"
                )));
            }
            if f == "id" {
                return Err(Error::Invalid("id cannot be hidden or masked".into()));
            }
        }
        if self.hidden.iter().any(|f| self.masked.contains(f)) {
            return Err(Error::Invalid("a field is either hidden or masked".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_inputs_are_checked() {
        let ok = CreateRole {
            code: "auditor".into(),
            name: "Auditor".into(),
            description: None,
            permissions: vec!["audit_log:read".into(), "audit_log:read".into()],
            tenant_id: None,
        };
        assert_eq!(ok.clone().parse().unwrap().0.permissions.len(), 1);
        let bad = CreateRole {
            permissions: vec!["everything".into()],
            ..ok.clone()
        };
        assert!(bad.parse().is_err());
        let bad_code = CreateRole {
            code: "Auditor!".into(),
            ..ok
        };
        assert!(bad_code.parse().is_err());
    }

    #[test]
    fn scope_and_field_inputs_are_checked() {
        let scope = |s: &str, d: Vec<Uuid>| DataScopeInput {
            role_id: None,
            resource: "user".into(),
            scope: s.into(),
            department_ids: d,
        };
        assert!(scope("tenant", vec![]).parse().is_ok());
        assert!(scope("planet", vec![]).parse().is_err());
        assert!(scope("custom", vec![]).parse().is_err());
        assert!(scope("custom", vec![Uuid::nil()]).parse().is_ok());
        assert!(scope("tenant", vec![Uuid::nil()]).parse().is_err());
        let fields = |h: &[&str], m: &[&str]| FieldPermissionInput {
            role_id: None,
            resource: "user".into(),
            hidden: h.iter().map(|s| s.to_string()).collect(),
            masked: m.iter().map(|s| s.to_string()).collect(),
        };
        assert!(fields(&["phone"], &["email"]).parse().is_ok());
        assert!(fields(&["id"], &[]).parse().is_err());
        assert!(fields(&["phone"], &["phone"]).parse().is_err());
        assert!(fields(&["Phone"], &[]).parse().is_err());
        assert!(fields(&[], &[]).parse().is_err());
    }
}
