//! Departments: a tree per tenant. Moving a department moves its subtree;
//! a department cannot move under itself, the tree is at most
//! `MAX_DEPTH` deep, and only empty departments can be deleted. A change of
//! the tree recomputes the access of users whose data scope depends on it.

use super::{
    acting_tenant, audit, db, paged, platform_wide, publish_after_commit, search_query, uuid_query,
    Call,
};
use crate::domain::org::{
    is_cycle, CreateDepartment, Department, DepartmentPatch, MoveDepartment, MAX_DEPTH,
};
use crate::error::{Error, Result};
use crate::repo;
use access::Caller;
use platform::db::{Db, DbError};
use platform::events::catalogue::USER_UPDATED;
use spin_sdk::http::Response;
use uuid::Uuid;

fn visible(db: &Db, caller: &Caller, id: Uuid) -> Result<(Department, String)> {
    match repo::org::find_department(db, id)? {
        Some((d, path)) if caller.in_reach("department", d.tenant_id) => Ok((d, path)),
        _ => Err(Error::NotFound("department")),
    }
}

fn sibling_conflict(e: DbError) -> Error {
    match e {
        DbError::Unique(_) => Error::Conflict("a sibling department has this name".into()),
        e => e.into(),
    }
}

fn check_manager(db: &Db, tenant: Option<Uuid>, manager: Option<Uuid>) -> Result<()> {
    if let Some(m) = manager {
        match repo::users::find(db, m)? {
            Some(u) if u.tenant_id == tenant => {}
            _ => {
                return Err(Error::Invalid(
                    "manager_id names no user of this tenant".into(),
                ))
            }
        }
    }
    Ok(())
}

fn refresh_scoped_users(db: &Db, tenant: Option<Uuid>) -> Result<usize> {
    let users = repo::snapshot::department_scoped_users(db, tenant)?;
    Ok(repo::snapshot::emit_all(db, &users, &USER_UPDATED)?)
}

fn tenant_filter(call: &Call, caller: &Caller) -> Result<std::result::Result<Option<Uuid>, ()>> {
    let asked = uuid_query(call, "tenant_id")?;
    Ok(if platform_wide(caller, "department") && asked.is_none() {
        Err(())
    } else {
        Ok(acting_tenant(caller, "department", asked)?)
    })
}

/// `GET /departments?parent_id=&q=&tenant_id=&page=&per_page=` (`parent_id=root` for the top level).
pub fn list(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let parent = match call.query("parent_id").as_deref() {
        None => None,
        Some("root") => Some(None),
        Some(p) => Some(Some(Uuid::parse_str(p).map_err(|_| {
            Error::Invalid("parent_id must be a uuid or root".into())
        })?)),
    };
    let tenant = tenant_filter(call, caller)?;
    let (items, total) = repo::org::list_departments(
        &db()?,
        tenant,
        parent,
        None,
        search_query(call)?.as_deref(),
        page,
    )?;
    Ok(paged(items, page, total))
}

#[derive(serde::Serialize)]
struct Node {
    #[serde(flatten)]
    department: Department,
    children: Vec<Node>,
}

fn nest(parent: Option<Uuid>, all: &[Department]) -> Vec<Node> {
    let mut nodes: Vec<Node> = all
        .iter()
        .filter(|d| d.parent_id == parent)
        .map(|d| Node {
            department: d.clone(),
            children: nest(Some(d.id), all),
        })
        .collect();
    nodes.sort_by(|a, b| {
        (a.department.sort, &a.department.name).cmp(&(b.department.sort, &b.department.name))
    });
    nodes
}

const TREE_LIMIT: i64 = 5000;

/// `GET /departments/tree?tenant_id=`: the whole tree, nested.
pub fn tree(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let tenant = tenant_filter(call, caller)?;
    let page = platform::http::Page {
        page: 1,
        per_page: TREE_LIMIT,
    };
    let (all, total) = repo::org::list_departments(&db()?, tenant, None, None, None, page)?;
    if total > TREE_LIMIT {
        return Err(Error::Conflict(format!(
            "the tree has over {TREE_LIMIT} departments: page through GET /departments"
        )));
    }
    let roots: Vec<Option<Uuid>> = all
        .iter()
        .filter(|d| d.parent_id.is_none_or(|p| !all.iter().any(|x| x.id == p)))
        .map(|d| d.parent_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let items: Vec<Node> = roots.into_iter().flat_map(|r| nest(r, &all)).collect();
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": items}),
    ))
}

/// `GET /departments/:id/subtree?page=&per_page=`: the department and everything below it.
pub fn subtree(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let page = call.page()?;
    let db = db()?;
    let (d, path) = visible(&db, caller, call.id("id", "department")?)?;
    let (items, total) =
        repo::org::list_departments(&db, Ok(d.tenant_id), None, Some(&path), None, page)?;
    Ok(paged(items, page, total))
}

/// `GET /departments/:id`.
pub fn get(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let (d, _) = visible(&db()?, caller, call.id("id", "department")?)?;
    Ok(platform::http::json(200, &d))
}

/// `POST /departments`.
pub fn create(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let (new, asked) = call.body::<CreateDepartment>()?.parse()?;
    let tenant = acting_tenant(caller, "department", asked)?;
    let db = db()?;
    let d = db.transaction(|tx| {
        repo::org::lock_tree(tx, tenant)?;
        check_manager(tx, tenant, new.manager_id)?;
        if let Some(t) = tenant {
            repo::org::find_tenant(tx, t)?
                .ok_or_else(|| Error::Invalid("tenant_id names no tenant".into()))?;
        }
        let parent = match new.parent_id {
            None => None,
            Some(p) => match repo::org::find_department(tx, p)? {
                Some((pd, path)) if pd.tenant_id == tenant => Some((path, pd.depth)),
                _ => {
                    return Err(Error::Invalid(
                        "parent_id names no department of this tenant".into(),
                    ))
                }
            },
        };
        if parent
            .as_ref()
            .is_some_and(|(_, depth)| *depth + 1 > MAX_DEPTH)
        {
            return Err(Error::Conflict(format!(
                "departments nest at most {MAX_DEPTH} deep"
            )));
        }
        let id = repo::org::insert_department(
            tx,
            tenant,
            &new,
            parent.as_ref().map(|(p, d)| (p.as_str(), *d)),
        )
        .map_err(sibling_conflict)?;
        refresh_scoped_users(tx, tenant)?;
        let (d, _) = repo::org::find_department(tx, id)?.ok_or(Error::NotFound("department"))?;
        repo::audit::record(
            tx,
            &audit(call, "department.create", "department", id, tenant).after(&d),
        )?;
        Ok::<_, Error>(d)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(201, &d))
}

/// `PATCH /departments/:id`.
pub fn patch(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "department")?;
    let change = call.body::<DepartmentPatch>()?.parse()?;
    let db = db()?;
    let d = db.transaction(|tx| {
        let (before, _) = visible(tx, caller, id)?;
        check_manager(tx, before.tenant_id, change.manager_id.flatten())?;
        repo::org::update_department(tx, id, &change).map_err(sibling_conflict)?;
        let (after, _) =
            repo::org::find_department(tx, id)?.ok_or(Error::NotFound("department"))?;
        repo::audit::record(
            tx,
            &audit(call, "department.update", "department", id, after.tenant_id)
                .before(&before)
                .after(&after),
        )?;
        Ok::<_, Error>(after)
    })?;
    Ok(platform::http::json(200, &d))
}

/// `POST /departments/:id/move`.
pub fn move_to(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "department")?;
    let parent = call.body::<MoveDepartment>()?.parent()?;
    let db = db()?;
    let d = db.transaction(|tx| {
        let (first, _) = visible(tx, caller, id)?;
        repo::org::lock_tree(tx, first.tenant_id)?;
        // Read again under the lock: a concurrent move may have changed paths.
        let (before, path) = visible(tx, caller, id)?;
        let (new_path, new_depth) = match parent {
            None => (format!("/{id}/"), 0),
            Some(p) => {
                let (parent, parent_path) = match repo::org::find_department(tx, p)? {
                    Some((pd, pp)) if pd.tenant_id == before.tenant_id => (pd, pp),
                    _ => {
                        return Err(Error::Invalid(
                            "parent_id names no department of this tenant".into(),
                        ))
                    }
                };
                if is_cycle(&path, &parent_path) {
                    return Err(Error::Conflict(
                        "a department cannot move under itself".into(),
                    ));
                }
                (format!("{parent_path}{id}/"), parent.depth + 1)
            }
        };
        let delta = new_depth - before.depth;
        if repo::org::subtree_depth(tx, &path)? + delta > MAX_DEPTH {
            return Err(Error::Conflict(format!(
                "departments nest at most {MAX_DEPTH} deep"
            )));
        }
        repo::org::move_department(tx, id, &path, parent, &new_path, delta)
            .map_err(sibling_conflict)?;
        refresh_scoped_users(tx, before.tenant_id)?;
        let (after, _) =
            repo::org::find_department(tx, id)?.ok_or(Error::NotFound("department"))?;
        repo::audit::record(
            tx,
            &audit(call, "department.move", "department", id, after.tenant_id)
                .before(&before)
                .after(&after),
        )?;
        Ok::<_, Error>(after)
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::json(200, &d))
}

/// `DELETE /departments/:id`: only a department without children or members.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let id = call.id("id", "department")?;
    let db = db()?;
    db.transaction(|tx| {
        let (before, _) = visible(tx, caller, id)?;
        repo::org::lock_tree(tx, before.tenant_id)?;
        let (children, members) = repo::org::department_usage(tx, id)?;
        if children > 0 || members > 0 {
            return Err(Error::Conflict(format!(
                "the department has {children} sub-departments and {members} members"
            )));
        }
        repo::org::delete_department(tx, id)?;
        refresh_scoped_users(tx, before.tenant_id)?;
        repo::audit::record(
            tx,
            &audit(
                call,
                "department.delete",
                "department",
                id,
                before.tenant_id,
            )
            .before(&before),
        )?;
        Ok::<_, Error>(())
    })?;
    publish_after_commit(call, &db);
    Ok(platform::http::no_content())
}
