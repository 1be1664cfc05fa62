//! `app` follows `device`'s events: `apk.*` move install records on (by the
//! device and the file's sha256, or the package for uninstalls), each
//! change with its `app.*` event in the same transaction; `device.deleted`
//! ends the records of a deleted device. Applying an event twice changes
//! nothing the second time: each transition only leaves the statuses it
//! follows.

use crate::handlers::installs::enqueue;
use crate::repo::{self, installs::Outcome};
use platform::consumer::{HandlerError, Source, Sources};
use platform::db::Db;
use platform::events::catalogue::{
    EventType, APK_INSTALLED, APK_INSTALL_FAILED, APK_INSTALL_STARTED, APK_UNINSTALLED,
    APK_UNINSTALL_FAILED, APP_INSTALLED, APP_INSTALL_FAILED, APP_UNINSTALLED, DEVICE_DELETED,
};
use platform::events::payload::ApkOperation;
use platform::outbox::Envelope;
use platform::Problem;

/// What `app` consumes: `device`'s events.
pub struct Consumer;

impl Sources for Consumer {
    const SOURCES: &'static [Source] = &[Source {
        name: "device",
        feed_url: "http://device.spin.internal/api/v1/device/internal/events",
        handler: apply,
        resync,
    }];
}

/// The error of a failed operation, for people.
fn reason(p: &ApkOperation) -> String {
    match (&p.error_code, &p.error) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (_, Some(m)) => m.clone(),
        (Some(c), None) => c.clone(),
        (None, None) => "failed".into(),
    }
}

fn apply(db: &Db, env: &Envelope) -> Result<(), HandlerError> {
    if env.is(&DEVICE_DELETED) {
        let id = env
            .payload
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .ok_or_else(|| HandlerError::Rejected("device.deleted without payload.id".into()))?;
        for i in repo::installs::device_gone(db, id)? {
            let event = if i.status == "failed" {
                &APP_INSTALL_FAILED
            } else {
                &APP_UNINSTALLED
            };
            enqueue(db, event, &i, None)?;
        }
        return Ok(());
    }
    let kinds: [(&EventType, Option<&EventType>); 5] = [
        (&APK_INSTALL_STARTED, None),
        (&APK_INSTALLED, Some(&APP_INSTALLED)),
        (&APK_INSTALL_FAILED, Some(&APP_INSTALL_FAILED)),
        (&APK_UNINSTALLED, Some(&APP_UNINSTALLED)),
        (&APK_UNINSTALL_FAILED, None),
    ];
    let Some((kind, then)) = kinds.into_iter().find(|(k, _)| env.is(k)) else {
        return Ok(());
    };
    let p: ApkOperation = env.payload().map_err(HandlerError::Rejected)?;
    let why = reason(&p);
    let (key, outcome) = match kind.name {
        n if n == APK_INSTALL_STARTED.name => (
            p.sha256.clone(),
            Outcome::Started(p.operation_id.ok_or_else(|| {
                HandlerError::Rejected("apk.install_started without operation_id".into())
            })?),
        ),
        n if n == APK_INSTALLED.name => (p.sha256.clone(), Outcome::Installed(p.operation_id)),
        n if n == APK_INSTALL_FAILED.name => (
            p.sha256.clone(),
            Outcome::InstallFailed(p.operation_id, &why),
        ),
        n if n == APK_UNINSTALLED.name => (p.package.clone(), Outcome::Uninstalled(p.operation_id)),
        _ => (
            p.package.clone(),
            Outcome::UninstallFailed(p.operation_id, &why),
        ),
    };
    // An install of a file that is not in the catalogue (or an operation
    // whose command was pruned) names nothing here.
    let Some(key) = key else {
        return Ok(());
    };
    let changed = repo::installs::apply(db, p.device_id, &key, &outcome)?;
    if changed.is_empty() && p.sha256.is_some() {
        // The install's records may not be committed yet: `device` ran it
        // while `app` was still recording what it asked for. Retried.
        if let Some(by) = p.requested_by {
            if repo::installs::being_asked(db, by, &key)? {
                return Err(HandlerError::Db(platform::db::DbError::Other(
                    "the install request is still being recorded".into(),
                )));
            }
        }
    }
    for i in changed {
        if matches!(outcome, Outcome::Installed(_)) {
            repo::catalogue::count(db, i.version_id, repo::catalogue::Count::Install)?;
        }
        if let Some(event) = then {
            enqueue(db, event, &i, None)?;
        }
    }
    Ok(())
}

/// After `device`'s feed was pruned past the cursor, the outcomes of the
/// records still on their way cannot come: they end as failed (an
/// uninstall: still installed), saying so, to be asked for again.
fn resync(_ctx: &platform::http::Ctx) -> Result<(), Problem> {
    let db = Db::open()?;
    db.transaction(|tx| {
        for i in repo::installs::outcome_lost(tx)? {
            if i.status == "failed" {
                enqueue(tx, &APP_INSTALL_FAILED, &i, None)?;
            }
        }
        Ok::<_, platform::db::DbError>(())
    })?;
    Ok(())
}
