//! A user's effective access, computed from their roles: the union of the
//! roles' permissions, the widest data scope any role gives per resource, and
//! the field restrictions of all roles added up. Also the rules that keep
//! role administration from escalating privileges.

use access::{Access, FieldRule, Level, Scope};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// A data scope as configured on a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// Every row (platform staff; a tenant's members get their tenant).
    All,
    /// Every row of the caller's tenant.
    Tenant,
    /// Rows of the caller's department.
    Department,
    /// Rows of the caller's department and every department below it.
    DepartmentTree,
    /// Only the caller's own rows.
    SelfOnly,
    /// Rows of the listed departments.
    Custom,
}

impl ScopeKind {
    /// Every kind as stored and shown.
    pub const ALL: &[&str] = &[
        "all",
        "tenant",
        "department",
        "department_tree",
        "self",
        "custom",
    ];

    /// Parses a stored or requested kind.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "tenant" => Self::Tenant,
            "department" => Self::Department,
            "department_tree" => Self::DepartmentTree,
            "self" => Self::SelfOnly,
            "custom" => Self::Custom,
            _ => return None,
        })
    }

    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Tenant => "tenant",
            Self::Department => "department",
            Self::DepartmentTree => "department_tree",
            Self::SelfOnly => "self",
            Self::Custom => "custom",
        }
    }
}

/// One data-scope rule of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    /// Resource, or `*` for the role's default.
    pub resource: String,
    /// The kind.
    pub kind: ScopeKind,
    /// Departments of a `custom` rule.
    pub departments: Vec<Uuid>,
}

/// What one role grants.
#[derive(Debug, Clone, Default)]
pub struct RoleGrant {
    /// Permission patterns.
    pub permissions: Vec<String>,
    /// Data-scope rules.
    pub scopes: Vec<ScopeRule>,
    /// Field restrictions per resource.
    pub fields: Vec<(String, FieldRule)>,
}

/// Where the user sits in their tenant's department tree.
#[derive(Debug, Clone, Default)]
pub struct Org {
    /// The user's department.
    pub department: Option<Uuid>,
    /// That department and every department below it.
    pub subtree: Vec<Uuid>,
}

fn resolve(rule: Option<&ScopeRule>, org: &Org) -> Scope {
    let departments = |ids: Vec<Uuid>| {
        if ids.is_empty() {
            Scope::OWN
        } else {
            Scope {
                level: Level::Departments,
                departments: ids,
            }
        }
    };
    match rule.map(|r| r.kind) {
        None | Some(ScopeKind::SelfOnly) => Scope::OWN,
        Some(ScopeKind::All) => Scope {
            level: Level::All,
            departments: Vec::new(),
        },
        Some(ScopeKind::Tenant) => Scope {
            level: Level::Tenant,
            departments: Vec::new(),
        },
        Some(ScopeKind::Department) => departments(org.department.into_iter().collect()),
        Some(ScopeKind::DepartmentTree) => departments(org.subtree.clone()),
        Some(ScopeKind::Custom) => {
            departments(rule.map(|r| r.departments.clone()).unwrap_or_default())
        }
    }
}

impl RoleGrant {
    fn rule(&self, resource: &str) -> Option<&ScopeRule> {
        self.scopes
            .iter()
            .find(|r| r.resource == resource)
            .or_else(|| self.scopes.iter().find(|r| r.resource == "*"))
    }
}

/// The effective access of a user holding `roles`.
pub fn compute(roles: &[RoleGrant], org: &Org) -> Access {
    let permissions: BTreeSet<String> = roles
        .iter()
        .flat_map(|r| r.permissions.iter().cloned())
        .collect();
    let resources: BTreeSet<&str> = roles
        .iter()
        .flat_map(|r| r.scopes.iter().map(|s| s.resource.as_str()))
        .chain(["*"])
        .collect();
    let mut scopes = BTreeMap::new();
    for res in resources {
        let scope = roles
            .iter()
            .map(|r| resolve(r.rule(res), org))
            .reduce(|a, b| a.union(&b))
            .unwrap_or(Scope::OWN);
        scopes.insert(res.to_string(), scope);
    }
    let mut fields: BTreeMap<String, FieldRule> = BTreeMap::new();
    for (res, rule) in roles.iter().flat_map(|r| r.fields.iter()) {
        let merged = fields
            .get(res)
            .map_or_else(|| rule.clone(), |f| f.union(rule));
        if !merged.is_empty() {
            fields.insert(res.clone(), merged);
        }
    }
    Access {
        permissions,
        scopes,
        fields,
        limit: None,
    }
}

/// Whether a permission pattern is well formed: `*`, `resource:*` or
/// `resource:action`, with lower-case names.
pub fn valid_pattern(p: &str) -> bool {
    let name = |s: &str| {
        !s.is_empty() && s.len() <= 48 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    };
    p == "*"
        || p.split_once(':')
            .is_some_and(|(r, a)| name(r) && (a == "*" || name(a)))
}

/// Whether holding `held` covers granting pattern `wanted`: nobody can hand
/// out more than they have (no privilege escalation through roles).
pub fn covers(held: &BTreeSet<String>, wanted: &str) -> bool {
    held.iter().any(|p| {
        p == "*"
            || p == wanted
            || (p.ends_with(":*")
                && wanted != "*"
                && wanted.split_once(':').map(|(r, _)| r) == p.strip_suffix(":*"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(resource: &str, kind: ScopeKind) -> ScopeRule {
        ScopeRule {
            resource: resource.into(),
            kind,
            departments: vec![],
        }
    }

    #[test]
    fn roles_add_up_permissions_and_the_widest_scope_wins_per_resource() {
        let dep = Uuid::from_u128(1);
        let org = Org {
            department: Some(dep),
            subtree: vec![dep, Uuid::from_u128(2)],
        };
        let user = RoleGrant {
            permissions: vec!["ticket:read".into()],
            scopes: vec![rule("*", ScopeKind::SelfOnly)],
            fields: vec![],
        };
        let lead = RoleGrant {
            permissions: vec!["user:read".into(), "ticket:read".into()],
            scopes: vec![rule("user", ScopeKind::DepartmentTree)],
            fields: vec![],
        };
        let a = compute(&[user, lead], &org);
        assert_eq!(a.permissions.len(), 2);
        assert_eq!(a.scope("user").level, Level::Departments);
        assert_eq!(a.scope("user").departments.len(), 2);
        assert_eq!(a.scope("ticket").level, Level::Own, "falls back to *");
    }

    #[test]
    fn department_scopes_without_a_department_shrink_to_own_rows() {
        let r = RoleGrant {
            scopes: vec![rule("*", ScopeKind::Department)],
            ..RoleGrant::default()
        };
        assert_eq!(compute(&[r], &Org::default()).scope("user"), Scope::OWN);
        assert_eq!(compute(&[], &Org::default()).scope("user"), Scope::OWN);
    }

    #[test]
    fn field_restrictions_of_all_roles_add_up() {
        let hide = |f: &str| FieldRule {
            hidden: [f.to_string()].into(),
            masked: BTreeSet::new(),
        };
        let a = RoleGrant {
            fields: vec![("user".into(), hide("phone"))],
            ..RoleGrant::default()
        };
        let b = RoleGrant {
            fields: vec![("user".into(), hide("email"))],
            ..RoleGrant::default()
        };
        assert_eq!(
            compute(&[a, b], &Org::default())
                .fields("user")
                .hidden
                .len(),
            2
        );
    }

    #[test]
    fn patterns_are_checked_and_nobody_grants_beyond_what_they_hold() {
        for ok in ["*", "user:*", "user:read", "audit_log:read"] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "user",
            "User:read",
            "user:",
            ":read",
            "user:read:x",
            "*:read",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
        let held: BTreeSet<String> = ["user:*".to_string(), "ticket:read".to_string()].into();
        assert!(covers(&held, "user:delete"));
        assert!(covers(&held, "user:*"));
        assert!(covers(&held, "ticket:read"));
        assert!(!covers(&held, "ticket:*"));
        assert!(!covers(&held, "*"));
        assert!(!covers(&held, "tenant:read"));
        assert!(covers(&["*".to_string()].into(), "*"));
    }
}
