//! The event catalogue: every event type with its source and payload schema
//! version. Producers can only enqueue a type from here and consumers match on
//! these constants, so a spelling cannot drift; a unit test checks that
//! `docs/events.md` documents exactly this list.

/// One event type of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// `<aggregate>.<past-tense verb>`.
    pub name: &'static str,
    /// The producing component.
    pub source: &'static str,
    /// Version of the payload shape.
    pub schema_version: i32,
    /// Whether people hear of it (`notification` tells the user it names,
    /// in their category's channels), or only components.
    pub audience: Audience,
}

/// Who an event is for, besides the components that consume it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Components only.
    Internal,
    /// The user it is about, too: `notification` has a template for it.
    People(Category),
}

/// What a notification is about: users choose channels per category
/// (`security` cannot be turned off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The account itself (welcome).
    Account,
    /// Sign-in, passwords, keys, locks.
    Security,
    /// Quota limits.
    Quota,
    /// The user's phones.
    Device,
    /// Apps: reviews and installs.
    App,
    /// Money: balances, orders, payments, invoices.
    Billing,
}

impl Category {
    /// Its name (`account`, `security`, …).
    pub fn name(self) -> &'static str {
        match self {
            Category::Account => "account",
            Category::Security => "security",
            Category::Quota => "quota",
            Category::Device => "device",
            Category::App => "app",
            Category::Billing => "billing",
        }
    }
}

/// A user was created (registration or an administrator). Every `user.*`
/// event carries the full identity snapshot after the change.
pub const USER_CREATED: EventType = EventType {
    name: "user.created",
    source: "user",
    schema_version: 2,
    audience: Audience::People(Category::Account),
};
/// A user's profile, status or effective access changed.
pub const USER_UPDATED: EventType = EventType {
    name: "user.updated",
    source: "user",
    schema_version: 2,
    audience: Audience::Internal,
};
/// A user was deleted: consumers drop what they keep of them.
pub const USER_DELETED: EventType = EventType {
    name: "user.deleted",
    source: "user",
    schema_version: 2,
    audience: Audience::Internal,
};
/// The roles a user holds changed.
pub const USER_ROLES_CHANGED: EventType = EventType {
    name: "user.roles_changed",
    source: "user",
    schema_version: 2,
    audience: Audience::Internal,
};
/// An administrator locked a user: their sessions end.
pub const USER_LOCKED: EventType = EventType {
    name: "user.locked",
    source: "user",
    schema_version: 2,
    audience: Audience::People(Category::Security),
};
/// A quota limit was hit (a refused reservation or minutes used up), once a day at most.
pub const QUOTA_EXCEEDED: EventType = EventType {
    name: "quota.exceeded",
    source: "user",
    schema_version: 1,
    audience: Audience::People(Category::Quota),
};

/// Someone asked to reset a password (the token itself never travels in an event).
pub const CREDENTIAL_RESET_REQUESTED: EventType = EventType {
    name: "credential.reset_requested",
    source: "auth",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A password changed (by its owner, a reset, or an administrator).
pub const CREDENTIAL_PASSWORD_CHANGED: EventType = EventType {
    name: "credential.password_changed",
    source: "auth",
    schema_version: 1,
    audience: Audience::People(Category::Security),
};
/// An API key was created.
pub const API_KEY_CREATED: EventType = EventType {
    name: "api_key.created",
    source: "auth",
    schema_version: 1,
    audience: Audience::People(Category::Security),
};
/// An API key was revoked or deleted.
pub const API_KEY_REVOKED: EventType = EventType {
    name: "api_key.revoked",
    source: "auth",
    schema_version: 1,
    audience: Audience::People(Category::Security),
};

/// A device was created and placed (its container is being made).
pub const DEVICE_CREATED: EventType = EventType {
    name: "device.created",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device booted and runs (observed).
pub const DEVICE_STARTED: EventType = EventType {
    name: "device.started",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device stopped (observed).
pub const DEVICE_STOPPED: EventType = EventType {
    name: "device.stopped",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device and its data were removed.
pub const DEVICE_DELETED: EventType = EventType {
    name: "device.deleted",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device failed (its agent gave up; the reason says why).
pub const DEVICE_FAILED: EventType = EventType {
    name: "device.failed",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// Any change of a device's observed status.
pub const DEVICE_STATUS_CHANGED: EventType = EventType {
    name: "device.status_changed",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device's first-boot steps (its template's apps, properties and
/// commands) all succeeded, or one failed (`reason` says which).
pub const DEVICE_PROVISIONED: EventType = EventType {
    name: "device.provisioned",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A snapshot of a device was taken (its image and data are on its node).
pub const SNAPSHOT_CREATED: EventType = EventType {
    name: "snapshot.created",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// Taking a snapshot failed (`error` says why).
pub const SNAPSHOT_FAILED: EventType = EventType {
    name: "snapshot.failed",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device was restored from one of its snapshots.
pub const SNAPSHOT_RESTORED: EventType = EventType {
    name: "snapshot.restored",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A snapshot's image and data were removed from its node.
pub const SNAPSHOT_DELETED: EventType = EventType {
    name: "snapshot.deleted",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A device's expiry is near (its owner's warning; payload `lifecycle.expires_at`).
pub const DEVICE_EXPIRING: EventType = EventType {
    name: "device.expiring",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device reached its expiry and was stopped; it is deleted after the grace period.
pub const DEVICE_EXPIRED: EventType = EventType {
    name: "device.expired",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A running device had no client heartbeat for a while: it is stopped at its idle deadline.
pub const DEVICE_IDLE_WARNING: EventType = EventType {
    name: "device.idle_warning",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device was stopped: no client heartbeat within its idle timeout.
pub const DEVICE_IDLE_STOPPED: EventType = EventType {
    name: "device.idle_stopped",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device was stopped: its session reached the maximum length.
pub const DEVICE_SESSION_ENDED: EventType = EventType {
    name: "device.session_ended",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device was taken back and deleted: by an administrator, or after its expiry's grace period.
pub const DEVICE_RELEASED: EventType = EventType {
    name: "device.released",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A device was made again on another node after its node was lost (or an
/// operator recovered it); `reason` says from where and what was lost.
pub const DEVICE_RECOVERED: EventType = EventType {
    name: "device.recovered",
    source: "device",
    schema_version: 1,
    audience: Audience::People(Category::Device),
};
/// A node was enrolled.
pub const NODE_ENROLLED: EventType = EventType {
    name: "node.enrolled",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A node's status changed (online, unreachable, maintenance, draining, disabled).
pub const NODE_STATUS_CHANGED: EventType = EventType {
    name: "node.status_changed",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};

/// A user's install of an APK on a device started on its node (the
/// operation was sent).
pub const APK_INSTALL_STARTED: EventType = EventType {
    name: "apk.install_started",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// The device installed the APK.
pub const APK_INSTALLED: EventType = EventType {
    name: "apk.installed",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// Installing the APK failed (`error` says why), or could not start.
pub const APK_INSTALL_FAILED: EventType = EventType {
    name: "apk.install_failed",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// The device uninstalled a package.
pub const APK_UNINSTALLED: EventType = EventType {
    name: "apk.uninstalled",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// Uninstalling a package failed (`error` says why).
pub const APK_UNINSTALL_FAILED: EventType = EventType {
    name: "apk.uninstall_failed",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A version entered the catalogue from an upload.
pub const APP_UPLOADED: EventType = EventType {
    name: "app.uploaded",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};
/// Someone asked for a version to be installed on a device.
pub const APP_INSTALL_REQUESTED: EventType = EventType {
    name: "app.install_requested",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A version is installed on a device.
pub const APP_INSTALLED: EventType = EventType {
    name: "app.installed",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};
/// Installing a version on a device failed.
pub const APP_INSTALL_FAILED: EventType = EventType {
    name: "app.install_failed",
    source: "app",
    schema_version: 1,
    audience: Audience::People(Category::App),
};
/// A version was uninstalled from a device (asked for, or found gone).
pub const APP_UNINSTALLED: EventType = EventType {
    name: "app.uninstalled",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};

/// A version's owner asked for it to be public.
pub const APP_REVIEW_REQUESTED: EventType = EventType {
    name: "app.review_requested",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};
/// A reviewer approved a version: its application is public.
pub const APP_APPROVED: EventType = EventType {
    name: "app.approved",
    source: "app",
    schema_version: 1,
    audience: Audience::People(Category::App),
};
/// A reviewer rejected a version (`comment` says why).
pub const APP_REJECTED: EventType = EventType {
    name: "app.rejected",
    source: "app",
    schema_version: 1,
    audience: Audience::People(Category::App),
};
/// A reviewer asked for changes to a version (`comment` says which).
pub const APP_CHANGES_REQUESTED: EventType = EventType {
    name: "app.changes_requested",
    source: "app",
    schema_version: 1,
    audience: Audience::People(Category::App),
};
/// A version was withdrawn: no longer downloaded or installed.
pub const APP_WITHDRAWN: EventType = EventType {
    name: "app.withdrawn",
    source: "app",
    schema_version: 1,
    audience: Audience::Internal,
};

/// A device began a run interval (its agent saw it running): the metering
/// source. `aggregate_id` is the run's id, version 1.
pub const DEVICE_RUN_STARTED: EventType = EventType {
    name: "device.run_started",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};

/// A device's run interval ended (it stopped, failed, was deleted or
/// reassigned), with its final length. `aggregate_id` is the run's id,
/// version 2.
pub const DEVICE_RUN_ENDED: EventType = EventType {
    name: "device.run_ended",
    source: "device",
    schema_version: 1,
    audience: Audience::Internal,
};

/// An operator posted a movement to a user's balance (a recorded
/// recharge, a reward, a correction, a manual charge, hold or refund).
pub const BALANCE_ADJUSTED: EventType = EventType {
    name: "balance.adjusted",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A user's spendable balance fell below the low-balance threshold.
pub const BALANCE_LOW: EventType = EventType {
    name: "balance.low",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A user's balance ran out: usage is now owed.
pub const BALANCE_EXHAUSTED: EventType = EventType {
    name: "balance.exhausted",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A balance stayed exhausted past the grace period: the user's phones are
/// stopped and none of theirs starts until it is restored (`device`).
pub const BALANCE_SUSPENDED: EventType = EventType {
    name: "balance.suspended",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// Money ended a suspended balance's exhaustion: phones may start again.
pub const BALANCE_RESTORED: EventType = EventType {
    name: "balance.restored",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// An order was paid (its payment taken; fulfilment follows).
pub const ORDER_PAID: EventType = EventType {
    name: "order.paid",
    source: "billing",
    schema_version: 1,
    audience: Audience::Internal,
};

/// An order was fulfilled: what its plan grants is granted.
pub const ORDER_FULFILLED: EventType = EventType {
    name: "order.fulfilled",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// An order failed or was cancelled; everything its saga held was given
/// back.
pub const ORDER_FAILED: EventType = EventType {
    name: "order.failed",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// Part or all of an order's payment was refunded.
pub const ORDER_REFUNDED: EventType = EventType {
    name: "order.refunded",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A payment was taken (from the balance, or confirmed by a provider).
pub const PAYMENT_SUCCEEDED: EventType = EventType {
    name: "payment.succeeded",
    source: "billing",
    schema_version: 1,
    audience: Audience::Internal,
};

/// A provider confirmed a payment: the money was recharged to the payer's
/// balance (and pays their order, if it was for one).
pub const PAYMENT_RECEIVED: EventType = EventType {
    name: "payment.received",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A provider reported a failed attempt to pay (the payer may try again
/// until the payment or its order is given up).
pub const PAYMENT_FAILED: EventType = EventType {
    name: "payment.failed",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// A monthly invoice was issued (or issued already paid).
pub const INVOICE_ISSUED: EventType = EventType {
    name: "invoice.issued",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// What an invoice left due was paid.
pub const INVOICE_PAID: EventType = EventType {
    name: "invoice.paid",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// An invoice passed its due date unpaid.
pub const INVOICE_OVERDUE: EventType = EventType {
    name: "invoice.overdue",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// An operator voided an invoice.
pub const INVOICE_VOIDED: EventType = EventType {
    name: "invoice.voided",
    source: "billing",
    schema_version: 1,
    audience: Audience::People(Category::Billing),
};

/// Every event type.
pub const CATALOGUE: &[EventType] = &[
    USER_CREATED,
    USER_UPDATED,
    USER_DELETED,
    USER_ROLES_CHANGED,
    USER_LOCKED,
    QUOTA_EXCEEDED,
    CREDENTIAL_RESET_REQUESTED,
    CREDENTIAL_PASSWORD_CHANGED,
    API_KEY_CREATED,
    API_KEY_REVOKED,
    DEVICE_CREATED,
    DEVICE_STARTED,
    DEVICE_STOPPED,
    DEVICE_DELETED,
    DEVICE_FAILED,
    DEVICE_STATUS_CHANGED,
    DEVICE_PROVISIONED,
    SNAPSHOT_CREATED,
    SNAPSHOT_FAILED,
    SNAPSHOT_RESTORED,
    SNAPSHOT_DELETED,
    DEVICE_EXPIRING,
    DEVICE_EXPIRED,
    DEVICE_IDLE_WARNING,
    DEVICE_IDLE_STOPPED,
    DEVICE_SESSION_ENDED,
    DEVICE_RELEASED,
    DEVICE_RECOVERED,
    NODE_ENROLLED,
    NODE_STATUS_CHANGED,
    APK_INSTALL_STARTED,
    APK_INSTALLED,
    APK_INSTALL_FAILED,
    APK_UNINSTALLED,
    APK_UNINSTALL_FAILED,
    APP_UPLOADED,
    APP_INSTALL_REQUESTED,
    APP_INSTALLED,
    APP_INSTALL_FAILED,
    APP_UNINSTALLED,
    APP_REVIEW_REQUESTED,
    APP_APPROVED,
    APP_REJECTED,
    APP_CHANGES_REQUESTED,
    APP_WITHDRAWN,
    DEVICE_RUN_STARTED,
    DEVICE_RUN_ENDED,
    BALANCE_ADJUSTED,
    BALANCE_LOW,
    BALANCE_EXHAUSTED,
    BALANCE_SUSPENDED,
    BALANCE_RESTORED,
    ORDER_PAID,
    ORDER_FULFILLED,
    ORDER_FAILED,
    ORDER_REFUNDED,
    PAYMENT_SUCCEEDED,
    PAYMENT_RECEIVED,
    PAYMENT_FAILED,
    INVOICE_ISSUED,
    INVOICE_PAID,
    INVOICE_OVERDUE,
    INVOICE_VOIDED,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `### `name` (source `x`, schema_version N)` headings of docs/events.md.
    fn documented() -> Vec<(String, String, i32)> {
        include_str!("../../../docs/events.md")
            .lines()
            .filter_map(|l| l.strip_prefix("### `"))
            .map(|l| {
                let (name, rest) = l.split_once("` (source `").expect("heading shape");
                let (source, rest) = rest
                    .split_once("`, schema_version ")
                    .expect("heading shape");
                let version = rest.trim_end_matches(')').parse().expect("version");
                (name.to_string(), source.to_string(), version)
            })
            .collect()
    }

    #[test]
    fn the_documented_audiences_are_exactly_the_code_audiences() {
        let docs = include_str!("../../../docs/events.md");
        let table = docs
            .split("**Meant for people.**")
            .nth(1)
            .expect("docs/events.md has the people table");
        let mut documented: Vec<(String, String)> = Vec::new();
        for line in table
            .lines()
            .skip_while(|l| !l.starts_with("| category"))
            .skip(2)
        {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let category = cells[1].trim_matches('`').to_string();
            for e in cells[2].split(", ") {
                documented.push((e.trim_matches('`').to_string(), category.clone()));
            }
        }
        documented.sort();
        let mut code: Vec<(String, String)> = CATALOGUE
            .iter()
            .filter_map(|e| match e.audience {
                Audience::People(c) => Some((e.name.to_string(), c.name().to_string())),
                Audience::Internal => None,
            })
            .collect();
        code.sort();
        assert_eq!(documented, code);
    }

    #[test]
    fn the_documented_catalogue_is_exactly_the_code_catalogue() {
        let mut code: Vec<_> = CATALOGUE
            .iter()
            .map(|t| (t.name.to_string(), t.source.to_string(), t.schema_version))
            .collect();
        let mut docs = documented();
        code.sort();
        docs.sort();
        assert_eq!(docs, code);
    }

    #[test]
    fn names_are_aggregate_dot_verb_and_unique() {
        for t in CATALOGUE {
            let (agg, verb) = t.name.split_once('.').expect("aggregate.verb");
            assert!(
                !agg.is_empty()
                    && !verb.is_empty()
                    && t.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            );
            assert_eq!(CATALOGUE.iter().filter(|u| u.name == t.name).count(), 1);
        }
    }
}
