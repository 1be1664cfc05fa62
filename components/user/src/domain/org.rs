//! Tenants, departments and menus as the API creates and changes them.

use crate::error::Error;
use platform::input::{self, Code, Email, Name};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A tenant as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Id.
    pub id: Uuid,
    /// Code, unique.
    pub code: String,
    /// Name.
    pub name: String,
    /// `active` or `suspended`: a suspended tenant's users cannot log in.
    pub status: String,
    /// Contact email.
    pub contact_email: Option<String>,
    /// Most users the tenant may have (`null`: no limit).
    pub max_users: Option<i32>,
    /// Most devices the tenant may have (`null`: no limit).
    pub max_devices: Option<i32>,
    /// When the tenant's contract ends.
    pub expires_at: Option<String>,
    /// Users in the tenant (not deleted).
    pub user_count: i64,
    /// Version.
    pub version: i64,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// `POST /tenants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Contact email.
    #[serde(default)]
    pub contact_email: Option<String>,
    /// User limit.
    #[serde(default)]
    pub max_users: Option<i32>,
    /// Device limit.
    #[serde(default)]
    pub max_devices: Option<i32>,
    /// Contract end, RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A validated new tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Code.
    pub code: Code,
    /// Name.
    pub name: Name,
    /// Contact.
    pub contact_email: Option<Email>,
    /// User limit.
    pub max_users: Option<i32>,
    /// Device limit.
    pub max_devices: Option<i32>,
    /// Contract end.
    pub expires_at: Option<chrono::NaiveDateTime>,
}

fn limit(v: Option<i32>, field: &str) -> Result<Option<i32>, Error> {
    match v {
        Some(n) if !(0..=1_000_000).contains(&n) => {
            Err(Error::Invalid(format!("{field} must be from 0 to 1000000")))
        }
        v => Ok(v),
    }
}

impl CreateTenant {
    /// Validates the fields.
    pub fn parse(self) -> Result<NewTenant, Error> {
        Ok(NewTenant {
            code: Code::parse(&self.code, "code")?,
            name: Name::parse(&self.name, "name", 128)?,
            contact_email: self
                .contact_email
                .as_deref()
                .map(Email::parse)
                .transpose()?,
            max_users: limit(self.max_users, "max_users")?,
            max_devices: limit(self.max_devices, "max_devices")?,
            expires_at: self
                .expires_at
                .as_deref()
                .map(|t| super::parse_time(t, "expires_at"))
                .transpose()?,
        })
    }
}

/// `PATCH /tenants/:id`; `null` clears a limit or the contact.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// `active` or `suspended`.
    #[serde(default)]
    pub status: Option<String>,
    /// Contact.
    #[serde(default, deserialize_with = "input::nullable")]
    pub contact_email: Option<Option<String>>,
    /// User limit.
    #[serde(default, deserialize_with = "input::nullable")]
    pub max_users: Option<Option<i32>>,
    /// Device limit.
    #[serde(default, deserialize_with = "input::nullable")]
    pub max_devices: Option<Option<i32>>,
    /// Contract end.
    #[serde(default, deserialize_with = "input::nullable")]
    pub expires_at: Option<Option<String>>,
}

/// A validated tenant change.
#[derive(Debug, Clone, Default)]
pub struct TenantChange {
    /// New name.
    pub name: Option<Name>,
    /// New status.
    pub status: Option<&'static str>,
    /// Contact.
    pub contact_email: Option<Option<Email>>,
    /// User limit.
    pub max_users: Option<Option<i32>>,
    /// Device limit.
    pub max_devices: Option<Option<i32>>,
    /// Contract end.
    pub expires_at: Option<Option<chrono::NaiveDateTime>>,
}

impl TenantPatch {
    /// Validates; an empty patch is refused.
    pub fn parse(self) -> Result<TenantChange, Error> {
        if self.name.is_none()
            && self.status.is_none()
            && self.contact_email.is_none()
            && self.max_users.is_none()
            && self.max_devices.is_none()
            && self.expires_at.is_none()
        {
            return Err(Error::Invalid("nothing to update".into()));
        }
        Ok(TenantChange {
            name: self
                .name
                .as_deref()
                .map(|n| Name::parse(n, "name", 128))
                .transpose()?,
            status: match self.status.as_deref() {
                None => None,
                Some("active") => Some("active"),
                Some("suspended") => Some("suspended"),
                Some(_) => return Err(Error::Invalid("status must be active or suspended".into())),
            },
            contact_email: self
                .contact_email
                .map(|c| c.as_deref().map(Email::parse).transpose())
                .transpose()?,
            max_users: self.max_users.map(|v| limit(v, "max_users")).transpose()?,
            max_devices: self
                .max_devices
                .map(|v| limit(v, "max_devices"))
                .transpose()?,
            expires_at: self
                .expires_at
                .map(|t| {
                    t.as_deref()
                        .map(|t| super::parse_time(t, "expires_at"))
                        .transpose()
                })
                .transpose()?,
        })
    }
}

/// A department as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Department {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Parent; `null` at the top.
    pub parent_id: Option<Uuid>,
    /// Name, unique among siblings.
    pub name: String,
    /// Optional code.
    pub code: Option<String>,
    /// Manager.
    pub manager_id: Option<Uuid>,
    /// Order among siblings.
    pub sort: i32,
    /// Depth from the top (0).
    pub depth: i32,
    /// Version.
    pub version: i64,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// `POST /departments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDepartment {
    /// Name.
    pub name: String,
    /// Parent.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// Code.
    #[serde(default)]
    pub code: Option<String>,
    /// Manager.
    #[serde(default)]
    pub manager_id: Option<Uuid>,
    /// Order.
    #[serde(default)]
    pub sort: Option<i32>,
    /// Tenant (platform staff only).
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
}

/// A validated new department.
#[derive(Debug, Clone)]
pub struct NewDepartment {
    /// Name.
    pub name: Name,
    /// Parent.
    pub parent_id: Option<Uuid>,
    /// Code.
    pub code: Option<Code>,
    /// Manager.
    pub manager_id: Option<Uuid>,
    /// Order.
    pub sort: i32,
}

/// Deepest a department tree may go.
pub const MAX_DEPTH: i32 = 15;

fn sort(v: Option<i32>) -> Result<i32, Error> {
    match v.unwrap_or(0) {
        n if (-100_000..=100_000).contains(&n) => Ok(n),
        _ => Err(Error::Invalid("sort must be from -100000 to 100000".into())),
    }
}

impl CreateDepartment {
    /// Validates the fields.
    pub fn parse(self) -> Result<(NewDepartment, Option<Uuid>), Error> {
        Ok((
            NewDepartment {
                name: Name::parse(&self.name, "name", 128)?,
                parent_id: self.parent_id,
                code: self
                    .code
                    .as_deref()
                    .map(|c| Code::parse(c, "code"))
                    .transpose()?,
                manager_id: self.manager_id,
                sort: sort(self.sort)?,
            },
            self.tenant_id,
        ))
    }
}

/// `PATCH /departments/:id` (moving is `POST /departments/:id/move`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentPatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New code.
    #[serde(default, deserialize_with = "input::nullable")]
    pub code: Option<Option<String>>,
    /// New manager.
    #[serde(default, deserialize_with = "input::nullable")]
    pub manager_id: Option<Option<Uuid>>,
    /// New order.
    #[serde(default)]
    pub sort: Option<i32>,
}

/// A validated department change.
#[derive(Debug, Clone, Default)]
pub struct DepartmentChange {
    /// Name.
    pub name: Option<Name>,
    /// Code.
    pub code: Option<Option<Code>>,
    /// Manager.
    pub manager_id: Option<Option<Uuid>>,
    /// Order.
    pub sort: Option<i32>,
}

impl DepartmentPatch {
    /// Validates; an empty patch is refused.
    pub fn parse(self) -> Result<DepartmentChange, Error> {
        if self.name.is_none()
            && self.code.is_none()
            && self.manager_id.is_none()
            && self.sort.is_none()
        {
            return Err(Error::Invalid("nothing to update".into()));
        }
        Ok(DepartmentChange {
            name: self
                .name
                .as_deref()
                .map(|n| Name::parse(n, "name", 128))
                .transpose()?,
            code: self
                .code
                .map(|c| c.as_deref().map(|c| Code::parse(c, "code")).transpose())
                .transpose()?,
            manager_id: self.manager_id,
            sort: self.sort.map(|s| sort(Some(s))).transpose()?,
        })
    }
}

/// `POST /departments/:id/move`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveDepartment {
    /// The new parent; `null` moves it to the top. Required.
    #[serde(default, deserialize_with = "input::nullable")]
    pub parent_id: Option<Option<Uuid>>,
}

impl MoveDepartment {
    /// The new parent (`None`: the top); the field must be given.
    pub fn parent(&self) -> Result<Option<Uuid>, Error> {
        self.parent_id
            .ok_or_else(|| Error::Invalid("parent_id is required (null moves to the top)".into()))
    }
}

/// Whether moving the department at `path` under `new_parent_path` would put
/// it inside its own subtree.
pub fn is_cycle(path: &str, new_parent_path: &str) -> bool {
    new_parent_path.starts_with(path)
}

/// A menu entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Menu {
    /// Id.
    pub id: Uuid,
    /// Parent.
    pub parent_id: Option<Uuid>,
    /// Code, unique.
    pub code: String,
    /// Name.
    pub name: String,
    /// Console path.
    pub path: String,
    /// Icon name.
    pub icon: Option<String>,
    /// Order.
    pub sort: i32,
    /// Permission needed to see it; `null`: shown when any child is.
    pub permission: Option<String>,
    /// Hidden menus are never shown.
    pub visible: bool,
    /// Children (in trees).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Menu>,
}

/// `POST /menus` and `PUT /menus/:id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuInput {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Console path, starting with `/`.
    pub path: String,
    /// Parent.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// Icon.
    #[serde(default)]
    pub icon: Option<String>,
    /// Order.
    #[serde(default)]
    pub sort: Option<i32>,
    /// Permission needed.
    #[serde(default)]
    pub permission: Option<String>,
    /// Visible (default true).
    #[serde(default)]
    pub visible: Option<bool>,
}

impl MenuInput {
    /// Validates into a menu (without children).
    pub fn parse(self, id: Uuid) -> Result<Menu, Error> {
        let path = self.path.trim();
        if !path.starts_with('/')
            || path.len() > 256
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Invalid(
                "path must start with / and have no spaces (at most 256)".into(),
            ));
        }
        if let Some(p) = &self.permission {
            if !super::access::valid_pattern(p) {
                return Err(Error::Invalid("permission must be resource:action".into()));
            }
        }
        Ok(Menu {
            id,
            parent_id: self.parent_id,
            code: Code::parse(&self.code, "code")?.as_str().to_string(),
            name: Name::parse(&self.name, "name", 64)?.as_str().to_string(),
            path: path.to_string(),
            icon: self
                .icon
                .as_deref()
                .map(|i| Code::parse(i, "icon").map(|c| c.as_str().to_string()))
                .transpose()?,
            sort: sort(self.sort)?,
            permission: self.permission,
            visible: self.visible.unwrap_or(true),
            children: Vec::new(),
        })
    }
}

/// Arranges menus into a tree, keeping only what `allowed` lets the caller
/// see: an entry with a permission shows if the caller holds it; one without
/// shows if any child shows. Siblings are ordered by `sort`, then code.
pub fn menu_tree(all: Vec<Menu>, allowed: &dyn Fn(&str) -> bool) -> Vec<Menu> {
    fn build(
        parent: Option<Uuid>,
        all: &[Menu],
        allowed: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> Vec<Menu> {
        if depth > 10 {
            return Vec::new();
        }
        let mut out: Vec<Menu> = all
            .iter()
            .filter(|m| m.parent_id == parent && m.visible)
            .filter_map(|m| {
                let children = build(Some(m.id), all, allowed, depth + 1);
                let show = match &m.permission {
                    Some(p) => allowed(p),
                    None => !children.is_empty(),
                };
                show.then(|| Menu {
                    children,
                    ..m.clone()
                })
            })
            .collect();
        out.sort_by(|a, b| (a.sort, &a.code).cmp(&(b.sort, &b.code)));
        out
    }
    build(None, &all, allowed, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu(id: u128, parent: Option<u128>, sort: i32, perm: Option<&str>) -> Menu {
        Menu {
            id: Uuid::from_u128(id),
            parent_id: parent.map(Uuid::from_u128),
            code: format!("m{id}"),
            name: "M".into(),
            path: "/m".into(),
            icon: None,
            sort,
            permission: perm.map(str::to_string),
            visible: true,
            children: vec![],
        }
    }

    #[test]
    fn menus_show_by_permission_and_parents_only_with_a_visible_child() {
        let all = vec![
            menu(1, None, 2, Some("device:read")),
            menu(2, None, 1, None),
            menu(3, Some(2), 0, Some("user:read")),
            menu(4, None, 3, None),
            menu(5, Some(4), 0, Some("tenant:create")),
        ];
        let tree = menu_tree(all, &|p| p == "device:read" || p == "user:read");
        let codes: Vec<&str> = tree.iter().map(|m| m.code.as_str()).collect();
        assert_eq!(codes, ["m2", "m1"]);
        assert_eq!(tree[0].children.len(), 1);
    }

    #[test]
    fn tenant_and_department_inputs_are_checked() {
        let t = CreateTenant {
            code: "acme".into(),
            name: "Acme".into(),
            contact_email: Some("ops@acme.example".into()),
            max_users: Some(10),
            max_devices: None,
            expires_at: Some("2027-01-01T00:00:00Z".into()),
        };
        assert!(t.clone().parse().is_ok());
        assert!(CreateTenant {
            max_users: Some(-1),
            ..t.clone()
        }
        .parse()
        .is_err());
        assert!(CreateTenant {
            expires_at: Some("soon".into()),
            ..t
        }
        .parse()
        .is_err());
        assert!(TenantPatch::default().parse().is_err());
        assert!(TenantPatch {
            status: Some("gone".into()),
            ..TenantPatch::default()
        }
        .parse()
        .is_err());
        assert!(is_cycle("/a/b/", "/a/b/c/"));
        assert!(is_cycle("/a/b/", "/a/b/"));
        assert!(!is_cycle("/a/b/", "/a/"));
    }
}
