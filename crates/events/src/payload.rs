//! Typed payloads of the catalogue's events (`docs/events.md` shows each as
//! JSON). Producers serialize these and consumers parse them, so a field
//! cannot be spelled two ways.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The identity snapshot every `user.*` event carries (schema version 2):
/// everything `auth` needs to issue a token without calling `user`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// User id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Tenant.
    pub tenant_id: Option<Uuid>,
    /// Department.
    pub department_id: Option<Uuid>,
    /// `active`, `locked` or `deleted`.
    pub status: String,
    /// Whether the tenant (if any) is active.
    pub tenant_active: bool,
    /// Role codes.
    pub roles: Vec<String>,
    /// Effective access.
    pub access: access::Access,
    /// The language they read (BCP 47; `en` when an event predates it).
    #[serde(default = "english")]
    pub locale: String,
}

fn english() -> String {
    "en".into()
}

/// `quota.exceeded` (schema version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QuotaExceeded {
    /// Whose quota.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// What was refused, for people.
    pub reason: String,
    /// Limits by name.
    pub limits: serde_json::Value,
    /// Usage by name.
    pub used: serde_json::Value,
    /// Reserved amounts by name.
    pub reserved: serde_json::Value,
    /// Minutes used today and this month.
    pub minutes: serde_json::Value,
}

/// `credential.reset_requested` (schema version 1). The token never
/// travels in an event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResetRequested {
    /// Whose password.
    pub user_id: Uuid,
    /// When the token stops working, RFC 3339.
    pub expires_at: String,
}

/// `credential.password_changed` (schema version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PasswordChanged {
    /// Whose password.
    pub user_id: Uuid,
    /// `change` (by its owner), `reset` (by token) or `admin`.
    pub how: String,
}

/// `api_key.created` and `api_key.revoked` (schema version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    /// Key id.
    pub id: Uuid,
    /// Whose key.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Who created or revoked it.
    pub actor_id: Uuid,
    /// The key's name.
    pub name: String,
    /// Its visible prefix.
    pub prefix: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it expires, RFC 3339.
    pub expires_at: Option<String>,
}

/// `snapshot.created`, `.failed`, `.restored` and `.deleted` (schema
/// version 1): the snapshot after the change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Snapshot id.
    pub id: Uuid,
    /// The device it was taken of.
    pub device_id: Uuid,
    /// The device's owner.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Its name.
    pub name: String,
    /// `ready`, `failed`, `deleted`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// `device.created`, `.started`, `.stopped`, `.deleted`, `.failed` and
/// `.status_changed` (schema version 1): the device after the change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Device {
    /// Device id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Whose it is.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Where it runs.
    pub node_id: Option<String>,
    /// What its owner asked for: `running`, `stopped`, `deleted`.
    pub desired_status: String,
    /// What its agent reports: `creating`, `booting`, `running`, `stopped`,
    /// `failed`, `deleted`, `unknown`.
    pub observed_status: String,
    /// The observed status before (on status changes).
    pub previous_status: Option<String>,
    /// Why (failures).
    pub reason: Option<String>,
    /// Its spec (cpu_cores, memory_mb, storage_gb, display, android_version, image, gpu_mode).
    pub spec: serde_json::Value,
}

/// `device.expiring`, `.expired`, `.idle_warning`, `.idle_stopped`,
/// `.session_ended` and `.released` (schema version 1): the device after
/// the change, as in the other `device.*` events, with its lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceLifecycle {
    /// The device.
    #[serde(flatten)]
    pub device: Device,
    /// Its lifecycle at the time.
    pub lifecycle: Lifecycle,
}

/// A device's lifecycle in its events; times are RFC 3339 (UTC).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Lifecycle {
    /// When it expires.
    pub expires_at: Option<String>,
    /// When it is deleted once expired (the expiry plus the grace period).
    pub delete_at: Option<String>,
    /// Its idle timeout in seconds.
    pub idle_timeout_secs: Option<i64>,
    /// When it is stopped unless a client heartbeat comes (while running).
    pub idle_deadline: Option<String>,
    /// The last client heartbeat.
    pub last_client_heartbeat_at: Option<String>,
    /// Its maximum session length in seconds.
    pub max_session_secs: Option<i64>,
    /// When its current (or last) session started.
    pub session_started_at: Option<String>,
    /// Who released it (`device.released` by an administrator; null when
    /// it was released after its expiry's grace period).
    pub released_by: Option<Uuid>,
}

/// `node.enrolled` and `node.status_changed` (schema version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Node id.
    pub id: String,
    /// Its status after the change.
    pub status: String,
    /// Its status before (on changes).
    pub previous_status: Option<String>,
}

/// `apk.install_started`, `.installed`, `.install_failed`, `.uninstalled`
/// and `.uninstall_failed` of `device` (schema version 1): one install or
/// uninstall a user asked for on one device. The aggregate is the
/// operation (versions 1 started, 2 ended); an install that could not
/// start has no operation (aggregate `<batch>:<seq>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApkOperation {
    /// The device's operation, when there is one.
    pub operation_id: Option<Uuid>,
    /// The device.
    pub device_id: Uuid,
    /// Its owner, when known.
    pub owner_id: Option<Uuid>,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// Who asked.
    pub requested_by: Option<Uuid>,
    /// Installs: the APK's sha256.
    pub sha256: Option<String>,
    /// Uninstalls: the package.
    pub package: Option<String>,
    /// A stable code when it failed.
    pub error_code: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// `app.uploaded` (schema version 1): a version that entered the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppVersion {
    /// The version.
    pub version_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Package name.
    pub package: String,
    /// Version code.
    pub version_code: i64,
    /// Version name.
    pub version_name: Option<String>,
    /// Label.
    pub label: Option<String>,
    /// Who uploaded it.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `private`, `tenant` or `public`.
    pub visibility: String,
    /// The file's sha256.
    pub sha256: String,
}

/// `app.install_requested`, `.installed`, `.install_failed` and
/// `.uninstalled` (schema version 1): an install record after the change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppInstall {
    /// The install record.
    pub install_id: Uuid,
    /// The device.
    pub device_id: Uuid,
    /// The version.
    pub version_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Package name.
    pub package: String,
    /// Label, for people.
    pub label: Option<String>,
    /// Who asked.
    pub requested_by: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `pending`, `installing`, `installed`, `failed`, `uninstalling`, `uninstalled`.
    pub status: String,
    /// Why it failed (or was found gone).
    pub error: Option<String>,
}

/// `app.review_requested`, `.approved`, `.rejected`, `.changes_requested`
/// and `.withdrawn` (schema version 1): a version after a step of its
/// review; the aggregate is the version, its version the trail's length.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppReview {
    /// The version.
    pub version_id: Uuid,
    /// Its application.
    pub application_id: Uuid,
    /// Package name.
    pub package: String,
    /// Version code.
    pub version_code: i64,
    /// Label.
    pub label: Option<String>,
    /// Who uploaded it (to tell).
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `pending`, `approved`, `rejected`, `changes_requested` (or as before, on a withdrawal).
    pub review_status: String,
    /// `active` or `withdrawn`.
    pub status: String,
    /// Who took the step.
    pub actor_id: Uuid,
    /// What they said.
    pub comment: Option<String>,
}

/// `balance.adjusted` (schema version 1): a ledger transaction on a user's
/// balance, amounts in minor units of `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerPosting {
    /// The ledger transaction.
    pub transaction_id: Uuid,
    /// Whose balance.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// `recharge`, `charge`, `freeze`, `unfreeze`, `settle`, `refund`,
    /// `reward` or `adjustment`.
    pub kind: String,
    /// ISO 4217.
    pub currency: String,
    /// What the user's balances gained (negative: lost).
    pub amount_minor: i64,
    /// The available balance after it.
    pub available_minor: i64,
    /// The frozen balance after it.
    pub frozen_minor: i64,
    /// Who posted it.
    pub actor_id: Option<Uuid>,
    /// Why.
    pub reason: String,
    /// What it is about.
    pub reference: Option<String>,
}

/// `device.run_started` and `device.run_ended` (schema version 1): one
/// interval a device ran, the one source metering charges from. Times are
/// RFC 3339 UTC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceRun {
    /// The interval's id (its position in `device`'s `device_runs`; `id`
    /// in `device`'s list of runs).
    #[serde(alias = "id")]
    pub run_id: i64,
    /// The device.
    pub device_id: Uuid,
    /// Its owner, who pays.
    pub owner_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The node it ran on.
    pub node_id: Option<String>,
    /// The spec it ran with (`cpu_cores`, `memory_mb`, `storage_gb`, `gpu_mode`, ...).
    pub spec: serde_json::Value,
    /// When it began running.
    pub started_at: String,
    /// When it stopped running (null while it runs).
    pub ended_at: Option<String>,
    /// Why it ended: the status it left `running` for, `deleted`,
    /// `node_lost`, `assigned`.
    pub end_reason: Option<String>,
}

/// `balance.low` and `balance.exhausted` (schema version 1): where a
/// user's balance in one currency stands, in minor units.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BalanceAlert {
    /// Whose balance.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// ISO 4217.
    pub currency: String,
    /// `low` or `exhausted`.
    pub state: String,
    /// The available balance.
    pub available_minor: i64,
    /// Its credit limit.
    pub credit_limit_minor: i64,
    /// Owed for usage not covered (zero or negative).
    pub owed_minor: i64,
    /// The low-balance threshold (of available plus credit limit).
    pub threshold_minor: i64,
}

/// `balance.suspended` and `balance.restored` (schema version 1): whether
/// a user's phones may run, for their balance in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BalanceSuspension {
    /// Whose balance.
    pub user_id: Uuid,
    /// ISO 4217.
    pub currency: String,
    /// Suspended (true) or restored (false).
    pub suspended: bool,
    /// Since when it was exhausted (RFC 3339).
    pub exhausted_since: Option<String>,
}

/// `order.*` and `payment.succeeded` (schema version 1): an order after the
/// change, amounts in minor units of `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrderChange {
    /// The order.
    pub order_id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The plan.
    pub plan_id: Uuid,
    /// Its name when bought.
    pub plan_name: String,
    /// `pending`, `paid`, `fulfilled`, `cancelled`, `expired`, `refunded`, `failed`.
    pub status: String,
    /// Total.
    pub amount_minor: i64,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// How it was paid (`balance`).
    pub pay_with: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// Until when what it grants lasts.
    pub period_end: Option<String>,
}

/// `payment.received` and `payment.failed` (schema version 1): a payment
/// by a provider after the change, amounts in minor units of `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentChange {
    /// The payment.
    pub payment_id: Uuid,
    /// The payer.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The order it pays (none: a top-up of the balance).
    pub order_id: Option<Uuid>,
    /// `stripe`.
    pub provider: String,
    /// `succeeded`, `failed`.
    pub status: String,
    /// Asked for.
    pub amount_minor: i64,
    /// Received (once succeeded).
    pub received_minor: Option<i64>,
    /// ISO 4217.
    pub currency: String,
    /// The provider's reason for a failure.
    pub error: Option<String>,
}

/// `invoice.*` (schema version 1): an invoice after the change, amounts in
/// minor units of `currency`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoiceChange {
    /// The invoice.
    pub invoice_id: Uuid,
    /// Its number (`INV-YYYYMM-NNNNNN`).
    pub number: String,
    /// Whose.
    pub user_id: Uuid,
    /// Their tenant.
    pub tenant_id: Option<Uuid>,
    /// The month it covers, `YYYY-MM`.
    pub period: String,
    /// `issued`, `paid`, `overdue`, `void`.
    pub status: String,
    /// ISO 4217.
    pub currency: String,
    /// Total, tax included.
    pub total_minor: i64,
    /// The tax in it.
    pub tax_minor: i64,
    /// What was left to pay at issue.
    pub amount_due_minor: i64,
    /// When it is due (RFC 3339).
    pub due_at: Option<String>,
}
