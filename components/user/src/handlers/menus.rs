//! Menus of the web console. Everyone gets their own menu tree filtered by
//! their permissions; platform staff manage the entries.

use super::{audit, db, platform_wide, Call};
use crate::domain::org::{menu_tree, MenuInput};
use crate::error::{Error, Result};
use crate::repo;
use platform::db::DbError;
use spin_sdk::http::Response;
use uuid::Uuid;

/// `GET /me/menus`: the caller's menu tree.
pub fn mine(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    let tree = menu_tree(repo::org::menus(&db()?)?, &|p| caller.can(p));
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": tree}),
    ))
}

/// `GET /menus`: every entry, as a flat list.
pub fn list(_call: &Call) -> Result<Response> {
    Ok(platform::http::json(
        200,
        &serde_json::json!({"items": repo::org::menus(&db()?)?}),
    ))
}

/// `POST /menus`: creates a menu item.
pub fn create(call: &Call) -> Result<Response> {
    put(call, false)
}

/// `PUT /menus/:id`: replaces a menu item.
pub fn replace(call: &Call) -> Result<Response> {
    put(call, true)
}

fn put(call: &Call, replace: bool) -> Result<Response> {
    let caller = call.caller()?;
    if !platform_wide(caller, "menu") {
        return Err(Error::Forbidden(
            "menus are managed by platform staff".into(),
        ));
    }
    let id = if replace {
        call.id("id", "menu")?
    } else {
        Uuid::new_v4()
    };
    let menu = call.body::<MenuInput>()?.parse(id)?;
    let db = db()?;
    let m = db.transaction(|tx| {
        let before = if replace {
            Some(repo::org::find_menu(tx, id)?.ok_or(Error::NotFound("menu"))?)
        } else {
            None
        };
        if let Some(p) = menu.parent_id {
            repo::org::find_menu(tx, p)?
                .ok_or_else(|| Error::Invalid("parent_id names no menu".into()))?;
            if replace && repo::org::menu_is_ancestor(tx, id, p)? {
                return Err(Error::Conflict("a menu cannot move under itself".into()));
            }
        }
        repo::org::upsert_menu(tx, &menu, !replace).map_err(|e| match e {
            DbError::Unique(_) => Error::Conflict("a menu with this code already exists".into()),
            e => e.into(),
        })?;
        let mut entry = audit(
            call,
            if replace {
                "menu.update"
            } else {
                "menu.create"
            },
            "menu",
            id,
            None,
        )
        .after(&menu);
        if let Some(b) = &before {
            entry = entry.before(b);
        }
        repo::audit::record(tx, &entry)?;
        Ok::<_, Error>(menu)
    })?;
    Ok(platform::http::json(if replace { 200 } else { 201 }, &m))
}

/// `DELETE /menus/:id`: an entry without children.
pub fn delete(call: &Call) -> Result<Response> {
    let caller = call.caller()?;
    if !platform_wide(caller, "menu") {
        return Err(Error::Forbidden(
            "menus are managed by platform staff".into(),
        ));
    }
    let id = call.id("id", "menu")?;
    let db = db()?;
    db.transaction(|tx| {
        let before = repo::org::find_menu(tx, id)?.ok_or(Error::NotFound("menu"))?;
        if !repo::org::delete_menu(tx, id)? {
            return Err(Error::Conflict("the menu has children".into()));
        }
        repo::audit::record(
            tx,
            &audit(call, "menu.delete", "menu", id, None).before(&before),
        )?;
        Ok(())
    })?;
    Ok(platform::http::no_content())
}
