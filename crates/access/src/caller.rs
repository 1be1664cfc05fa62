//! Who is asking and what they may do: the [`Caller`] every component's
//! endpoints receive, with their permissions, their data scope per resource
//! and their field rules. The `user` component computes a user's [`Access`]
//! from their roles; it travels in `user.*` events to `auth`, which signs it
//! into access tokens (or answers it for an API key), so every component
//! decides locally, with no call to `user`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// How far a caller's view of a resource reaches, from narrowest to widest.
/// Within a tenant: own rows, rows of some departments, every row of the
/// tenant; `All` crosses tenants and is honoured only for callers who belong
/// to no tenant (platform staff), so a tenant's roles can never see another
/// tenant's data, however they are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Only rows the caller owns.
    Own,
    /// Rows of the listed departments, and the caller's own rows.
    Departments,
    /// Every row of the caller's tenant.
    Tenant,
    /// Every row of every tenant (platform staff only).
    All,
}

/// A resolved data scope: the level and, for [`Level::Departments`], which
/// departments (already expanded: "department and below" lists the subtree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The level.
    pub level: Level,
    /// Departments visible at [`Level::Departments`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<Uuid>,
}

impl Scope {
    /// Only one's own rows.
    pub const OWN: Scope = Scope {
        level: Level::Own,
        departments: Vec::new(),
    };

    /// The union of two scopes (roles add up).
    pub fn union(&self, other: &Scope) -> Scope {
        let level = self.level.max(other.level);
        let departments = if level == Level::Departments {
            let set: BTreeSet<Uuid> = self
                .departments
                .iter()
                .chain(&other.departments)
                .copied()
                .collect();
            set.into_iter().collect()
        } else {
            Vec::new()
        };
        Scope { level, departments }
    }
}

/// What a role hides or masks of a resource's fields in responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRule {
    /// Fields removed from responses.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hidden: BTreeSet<String>,
    /// Fields shown masked (`a***@example.com`, `138****5678`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub masked: BTreeSet<String>,
}

impl FieldRule {
    /// Whether the rule changes nothing.
    pub fn is_empty(&self) -> bool {
        self.hidden.is_empty() && self.masked.is_empty()
    }

    /// The union of two rules: restrictions add up, and hiding beats masking.
    pub fn union(&self, other: &FieldRule) -> FieldRule {
        let hidden: BTreeSet<String> = self.hidden.union(&other.hidden).cloned().collect();
        let masked = self
            .masked
            .union(&other.masked)
            .filter(|f| !hidden.contains(*f))
            .cloned()
            .collect();
        FieldRule { hidden, masked }
    }

    /// Applies the rule to one JSON object (top-level fields; `id` is never
    /// touched, so a hidden row stays addressable).
    pub fn apply(&self, value: &mut serde_json::Value) {
        let Some(obj) = value.as_object_mut() else {
            return;
        };
        for f in &self.hidden {
            if f != "id" {
                obj.remove(f);
            }
        }
        for f in &self.masked {
            if f == "id" {
                continue;
            }
            if let Some(v) = obj.get_mut(f) {
                *v = match v {
                    serde_json::Value::String(s) => serde_json::Value::String(mask(s)),
                    serde_json::Value::Null => serde_json::Value::Null,
                    _ => serde_json::Value::String("***".into()),
                };
            }
        }
    }
}

/// Masks a value: an email keeps the first character of its local part and
/// its domain; anything else keeps its first and last quarter.
pub fn mask(s: &str) -> String {
    if let Some((local, domain)) = s.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = s.chars().collect();
    let keep = chars.len() / 4;
    if keep == 0 {
        return "***".into();
    }
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 2 * keep))
}

/// A caller's effective access: the union over their roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Permission codes, `resource:action`, `resource:*` or `*`.
    #[serde(default)]
    pub permissions: BTreeSet<String>,
    /// Data scope per resource; `*` is the default for resources not listed.
    #[serde(default)]
    pub scopes: BTreeMap<String, Scope>,
    /// Field rules per resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldRule>,
    /// An API key's scopes: when set, a permission must also match one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<BTreeSet<String>>,
}

/// Whether a permission pattern grants `permission` (`resource:action`).
pub fn grants(pattern: &str, permission: &str) -> bool {
    if pattern == "*" || pattern == permission {
        return true;
    }
    match (pattern.strip_suffix(":*"), permission.split_once(':')) {
        (Some(res), Some((p_res, _))) => res == p_res,
        _ => false,
    }
}

impl Access {
    /// Whether the permission is granted (and, for an API key, within its scopes).
    pub fn allows(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| grants(p, permission))
            && self
                .limit
                .as_ref()
                .is_none_or(|l| l.iter().any(|p| grants(p, permission)))
    }

    /// The data scope of a resource (its own entry, else `*`, else own rows).
    pub fn scope(&self, resource: &str) -> Scope {
        self.scopes
            .get(resource)
            .or_else(|| self.scopes.get("*"))
            .cloned()
            .unwrap_or(Scope::OWN)
    }

    /// The field rule of a resource.
    pub fn fields(&self, resource: &str) -> FieldRule {
        self.fields.get(resource).cloned().unwrap_or_default()
    }
}

/// The tenant, department and owner of a row, for by-id visibility checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// The row's tenant.
    pub tenant: Option<Uuid>,
    /// The row's department.
    pub department: Option<Uuid>,
    /// The row's owner.
    pub owner: Option<Uuid>,
}

/// Which rows of a resource a caller may see, ready to become a query filter.
/// Every variant but `All` keeps the caller inside their own tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowFilter {
    /// No restriction (platform staff with scope `all`).
    All,
    /// Rows of one tenant (`None`: rows that belong to no tenant).
    Tenant(Option<Uuid>),
    /// Rows of these departments of the tenant, or owned by `owner`.
    Departments {
        /// The caller's tenant.
        tenant: Option<Uuid>,
        /// Visible departments.
        departments: Vec<Uuid>,
        /// The caller.
        owner: Uuid,
    },
    /// Rows owned by this user (in the caller's tenant).
    Own {
        /// The caller's tenant.
        tenant: Option<Uuid>,
        /// The caller.
        owner: Uuid,
    },
}

impl RowFilter {
    /// Whether a row passes the filter.
    pub fn admits(&self, row: RowRef) -> bool {
        match self {
            RowFilter::All => true,
            RowFilter::Tenant(t) => row.tenant == *t,
            RowFilter::Departments {
                tenant,
                departments,
                owner,
            } => {
                row.tenant == *tenant
                    && (row.owner == Some(*owner)
                        || row.department.is_some_and(|d| departments.contains(&d)))
            }
            RowFilter::Own { tenant, owner } => row.tenant == *tenant && row.owner == Some(*owner),
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Credential {
    /// A signed access token.
    Token,
    /// An API key (its id).
    ApiKey(Uuid),
}

/// The authenticated caller of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// User id.
    pub user_id: Uuid,
    /// Tenant, if the user belongs to one.
    pub tenant_id: Option<Uuid>,
    /// Department, if any.
    pub department_id: Option<Uuid>,
    /// Role codes.
    pub roles: Vec<String>,
    /// Effective permissions, scopes and field rules.
    pub access: Access,
    /// Token or API key.
    pub credential: Credential,
}

impl Caller {
    /// Whether the caller holds a permission.
    pub fn can(&self, permission: &str) -> bool {
        self.access.allows(permission)
    }

    /// Whether the caller has a role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller is platform staff holding every permission.
    pub fn is_platform_admin(&self) -> bool {
        self.tenant_id.is_none()
            && self.access.permissions.contains("*")
            && self.access.limit.is_none()
    }

    /// The rows of `resource` the caller may see.
    pub fn filter(&self, resource: &str) -> RowFilter {
        let scope = self.access.scope(resource);
        match scope.level {
            Level::All if self.tenant_id.is_none() => RowFilter::All,
            Level::All | Level::Tenant => RowFilter::Tenant(self.tenant_id),
            Level::Departments => RowFilter::Departments {
                tenant: self.tenant_id,
                departments: scope.departments,
                owner: self.user_id,
            },
            Level::Own => RowFilter::Own {
                tenant: self.tenant_id,
                owner: self.user_id,
            },
        }
    }

    /// Whether the caller may see one row of `resource`.
    pub fn sees(&self, resource: &str, row: RowRef) -> bool {
        self.filter(resource).admits(row)
    }

    /// Whether a row is in the caller's tenant (or, for platform staff with
    /// scope `all`, anywhere): for resources that are tenant-wide by nature
    /// (roles, departments).
    pub fn in_reach(&self, resource: &str, tenant: Option<Uuid>) -> bool {
        matches!(self.filter(resource), RowFilter::All) || tenant == self.tenant_id
    }

    /// Field rules for `resource`; none for the caller's own row.
    pub fn field_rule(&self, resource: &str, owner: Option<Uuid>) -> FieldRule {
        if owner == Some(self.user_id) {
            FieldRule::default()
        } else {
            self.access.fields(resource)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn caller(tenant: Option<Uuid>, access: Access) -> Caller {
        Caller {
            user_id: Uuid::from_u128(1),
            tenant_id: tenant,
            department_id: None,
            roles: vec![],
            access,
            credential: Credential::Token,
        }
    }

    #[test]
    fn permission_patterns_match_exactly_by_resource_or_everything() {
        assert!(grants("*", "user:read"));
        assert!(grants("user:*", "user:delete"));
        assert!(grants("user:read", "user:read"));
        assert!(!grants("user:read", "user:update"));
        assert!(!grants("user:*", "users:read"));
        assert!(!grants("use", "user:read"));
    }

    #[test]
    fn an_api_key_limit_narrows_but_never_widens_permissions() {
        let mut a = Access {
            permissions: set(&["user:read", "ticket:*"]),
            ..Access::default()
        };
        a.limit = Some(set(&["ticket:read", "tenant:*"]));
        assert!(a.allows("ticket:read"));
        assert!(!a.allows("ticket:create"));
        assert!(!a.allows("user:read"));
        assert!(
            !a.allows("tenant:read"),
            "a key cannot add what the user lacks"
        );
    }

    #[test]
    fn scopes_unite_to_the_widest_and_merge_departments() {
        let d1 = Scope {
            level: Level::Departments,
            departments: vec![Uuid::from_u128(5)],
        };
        let d2 = Scope {
            level: Level::Departments,
            departments: vec![Uuid::from_u128(6), Uuid::from_u128(5)],
        };
        assert_eq!(d1.union(&d2).departments.len(), 2);
        let t = Scope {
            level: Level::Tenant,
            departments: vec![],
        };
        assert_eq!(d1.union(&t).level, Level::Tenant);
        assert_eq!(Scope::OWN.union(&d1), d1);
    }

    #[test]
    fn scope_all_never_crosses_tenants_for_a_tenant_member() {
        let all = Access {
            scopes: [(
                "*".to_string(),
                Scope {
                    level: Level::All,
                    departments: vec![],
                },
            )]
            .into(),
            ..Access::default()
        };
        let a = Some(Uuid::from_u128(10));
        let b = Some(Uuid::from_u128(11));
        let member = caller(a, all.clone());
        assert_eq!(member.filter("user"), RowFilter::Tenant(a));
        let other = RowRef {
            tenant: b,
            department: None,
            owner: None,
        };
        assert!(!member.sees("user", other));
        assert!(caller(None, all).sees("user", other));
    }

    #[test]
    fn department_and_own_filters_admit_the_right_rows() {
        let t = Some(Uuid::from_u128(10));
        let dep = Uuid::from_u128(20);
        let c = caller(
            t,
            Access {
                scopes: [(
                    "ticket".to_string(),
                    Scope {
                        level: Level::Departments,
                        departments: vec![dep],
                    },
                )]
                .into(),
                ..Access::default()
            },
        );
        let row = |tenant, department, owner| RowRef {
            tenant,
            department,
            owner,
        };
        assert!(c.sees("ticket", row(t, Some(dep), None)));
        assert!(c.sees("ticket", row(t, None, Some(c.user_id))));
        assert!(!c.sees("ticket", row(t, Some(Uuid::from_u128(21)), None)));
        assert!(
            !c.sees("ticket", row(None, Some(dep), None)),
            "other tenant"
        );
        // Resources without a scope fall back to own rows.
        assert!(!c.sees("user", row(t, Some(dep), None)));
        assert!(c.sees("user", row(t, Some(dep), Some(c.user_id))));
    }

    #[test]
    fn field_rules_hide_and_mask_but_never_touch_the_id() {
        let rule = FieldRule {
            hidden: set(&["phone", "id"]),
            masked: set(&["email", "display_name", "version"]),
        };
        let mut v = json!({"id": "x", "email": "ann@example.com", "phone": "1",
                           "display_name": "Annabelle", "version": 3});
        rule.apply(&mut v);
        assert_eq!(
            v,
            json!({"id": "x", "email": "a***@example.com", "display_name": "An*****le", "version": "***"})
        );
        assert_eq!(mask("13812345678"), "13*******78");
        assert_eq!(mask("ab"), "***");
        let both = rule.union(&FieldRule {
            hidden: set(&["email"]),
            masked: BTreeSet::new(),
        });
        assert!(both.hidden.contains("email") && !both.masked.contains("email"));
    }

    #[test]
    fn a_caller_sees_their_own_row_unmasked() {
        let c = caller(
            None,
            Access {
                fields: [(
                    "user".to_string(),
                    FieldRule {
                        hidden: set(&["email"]),
                        masked: BTreeSet::new(),
                    },
                )]
                .into(),
                ..Access::default()
            },
        );
        assert!(c.field_rule("user", Some(c.user_id)).is_empty());
        assert!(!c.field_rule("user", Some(Uuid::from_u128(99))).is_empty());
    }
}
