//! A device's lifecycle policy, free of I/O: when it expires (with a
//! warning ahead and deletion after a grace period), when an idle session
//! (no client heartbeat for its idle timeout) or a session longer than its
//! maximum is stopped, and, from the same rules, the one instant the
//! lifecycle job must next look at the device. [`plan`] says what is due at
//! a given time; [`next_due`] is what every write stores, so the job reads
//! only due rows instead of scanning every device.
//!
//! Idle and session rules apply only while a session is live: the owner
//! wants the device running and its agent reports it running. Expiry
//! applies to every device not deleted. Warnings are marks on the device
//! (`expiry_warned_at`, `idle_warned_at`): an expiry warning is cleared when
//! an administrator changes the expiry, an idle warning counts only if it
//! is newer than the session's last sign of life, so a heartbeat after a
//! warning re-arms it without a write of its own.

use crate::domain::status::{Action, Desired, Observed};
use crate::error::Error;
use chrono::{NaiveDateTime, TimeDelta};

/// The longest idle timeout or session length (30 days), in seconds.
pub const MAX_TIMEOUT_SECS: i64 = 30 * 24 * 3600;
/// How far ahead an expiry may be set (about ten years), in seconds.
pub const MAX_EXPIRY_AHEAD_SECS: i64 = 10 * 366 * 24 * 3600;

/// A time as the API and events show it (RFC 3339, UTC, microseconds).
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// An idle timeout or maximum session length a user sets, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(i32);

impl Timeout {
    /// `secs` for `field`, between the deployment's minimum and 30 days.
    pub fn parse(field: &str, secs: i64, min_secs: i64) -> Result<Self, Error> {
        let min = min_secs.clamp(1, MAX_TIMEOUT_SECS);
        if !(min..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(Error::Invalid(format!(
                "{field} must be {min} to {MAX_TIMEOUT_SECS} seconds, or null for none"
            )));
        }
        Ok(Self(secs as i32))
    }

    /// The seconds.
    pub fn secs(self) -> i32 {
        self.0
    }
}

/// When a device expires, as an administrator sets it: in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(NaiveDateTime);

impl Expiry {
    /// An RFC 3339 time after `now` (UTC) and within about ten years.
    pub fn parse(raw: &str, now: NaiveDateTime) -> Result<Self, Error> {
        let bad = || Error::Invalid("expires_at must be an RFC 3339 time in the future".into());
        if raw.len() > 64 {
            return Err(bad());
        }
        let at = chrono::DateTime::parse_from_rfc3339(raw)
            .map_err(|_| bad())?
            .naive_utc();
        if at <= now || at > now + TimeDelta::seconds(MAX_EXPIRY_AHEAD_SECS) {
            return Err(bad());
        }
        Ok(Self(at))
    }

    /// The time (UTC).
    pub fn at(self) -> NaiveDateTime {
        self.0
    }
}

/// The deployment's lifecycle settings (Spin variables), in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long before its expiry a device's owner is warned.
    pub expiry_warning_secs: i64,
    /// How long an expired (stopped) device is kept before it is deleted.
    pub expiry_grace_secs: i64,
    /// How long before an idle stop the owner is warned; at most half the
    /// device's idle timeout.
    pub idle_warning_secs: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            expiry_warning_secs: 24 * 3600,
            expiry_grace_secs: 72 * 3600,
            idle_warning_secs: 300,
        }
    }
}

/// What the lifecycle rules read of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// What its owner asked for.
    pub desired: Desired,
    /// What its agent reports.
    pub observed: Observed,
    /// When it expires.
    pub expires_at: Option<NaiveDateTime>,
    /// When its owner was warned of that expiry.
    pub expiry_warned_at: Option<NaiveDateTime>,
    /// Stop it after this long without a client heartbeat (while running).
    pub idle_timeout_secs: Option<i64>,
    /// Stop it after running this long.
    pub max_session_secs: Option<i64>,
    /// The last client heartbeat.
    pub last_client_heartbeat_at: Option<NaiveDateTime>,
    /// When its agent last saw it start running.
    pub session_started_at: Option<NaiveDateTime>,
    /// When its owner was last warned that it is idle.
    pub idle_warned_at: Option<NaiveDateTime>,
}

/// Why the control plane, not the owner, stops or deletes a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// It reached its expiry: stopped.
    Expired,
    /// Its session reached its maximum length: stopped.
    SessionEnded,
    /// No client heartbeat within its idle timeout: stopped.
    Idle,
    /// The grace period after its expiry is over: deleted.
    GraceOver,
    /// An administrator released it: deleted now.
    Released,
    /// Its owner's balance was suspended (billing's exhaustion policy):
    /// stopped.
    BalanceExhausted,
}

impl Cause {
    /// The lifecycle action it takes.
    pub fn action(self) -> Action {
        match self {
            Self::Expired | Self::SessionEnded | Self::Idle | Self::BalanceExhausted => {
                Action::Stop
            }
            Self::GraceOver | Self::Released => Action::Delete,
        }
    }

    /// Whether the rules (the job), not a person, decide it: then it must
    /// still be due when it is carried out.
    pub fn scheduled(self) -> bool {
        !matches!(self, Self::Released | Self::BalanceExhausted)
    }
}

/// A warning the owner gets ahead of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// The device expires at `expires_at`.
    Expiry,
    /// The device will be stopped for idleness at its idle deadline.
    Idle,
}

/// What is due at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Warnings due, in the order they are sent (always before the action).
    pub warnings: Vec<Warning>,
    /// The action due, with its cause: deletion before any stop, then
    /// expiry, session length, idleness.
    pub action: Option<Cause>,
    /// The next due time once the warnings are recorded (the action's own
    /// time when one is due; `None`: nothing will come due).
    pub next: Option<NaiveDateTime>,
}

/// Something that comes due at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Warn(Warning),
    Act(Cause),
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

impl State {
    /// Whether a session is live: wanted running and seen running.
    pub fn session_live(&self) -> bool {
        self.desired == Desired::Running
            && self.observed == Observed::Running
            && self.session_started_at.is_some()
    }

    /// The last sign of life of the session: its start or the last client
    /// heartbeat, whichever is later.
    fn last_activity(&self) -> Option<NaiveDateTime> {
        let start = self.session_started_at?;
        Some(
            self.last_client_heartbeat_at
                .map_or(start, |h| h.max(start)),
        )
    }

    /// When the live session is stopped unless a client heartbeat comes.
    pub fn idle_deadline(&self) -> Option<NaiveDateTime> {
        if !self.session_live() {
            return None;
        }
        Some(self.last_activity()? + secs(self.idle_timeout_secs?))
    }

    /// When the live session reaches its maximum length.
    pub fn session_ends_at(&self) -> Option<NaiveDateTime> {
        if !self.session_live() {
            return None;
        }
        Some(self.session_started_at? + secs(self.max_session_secs?))
    }

    /// When an expired device is deleted.
    pub fn delete_at(&self, s: &Settings) -> Option<NaiveDateTime> {
        Some(self.expires_at? + secs(s.expiry_grace_secs.max(0)))
    }

    /// How long before the idle deadline the warning goes out.
    fn idle_lead(&self, s: &Settings) -> i64 {
        let half = self.idle_timeout_secs.unwrap_or(0) / 2;
        s.idle_warning_secs.clamp(0, half.max(0))
    }

    /// Everything still to come, each at its instant (past instants are
    /// due now).
    fn pending(&self, s: &Settings) -> Vec<(NaiveDateTime, Due)> {
        let mut out = Vec::new();
        if self.desired == Desired::Deleted {
            return out;
        }
        if let Some(expires) = self.expires_at {
            if self.expiry_warned_at.is_none() {
                let at = expires - secs(s.expiry_warning_secs.max(0));
                out.push((at, Due::Warn(Warning::Expiry)));
            }
            if self.desired == Desired::Running {
                out.push((expires, Due::Act(Cause::Expired)));
            }
            if let Some(at) = self.delete_at(s) {
                out.push((at, Due::Act(Cause::GraceOver)));
            }
        }
        if let Some(deadline) = self.idle_deadline() {
            let warned = match (self.idle_warned_at, self.last_activity()) {
                (Some(w), Some(last)) => w >= last,
                _ => false,
            };
            if !warned {
                let at = deadline - secs(self.idle_lead(s));
                out.push((at, Due::Warn(Warning::Idle)));
            }
            out.push((deadline, Due::Act(Cause::Idle)));
        }
        if let Some(end) = self.session_ends_at() {
            out.push((end, Due::Act(Cause::SessionEnded)));
        }
        out
    }
}

/// The first instant anything is due (what the device's `lifecycle_due_at`
/// holds), whether past or future; `None` when nothing ever will be.
pub fn next_due(state: &State, s: &Settings) -> Option<NaiveDateTime> {
    state.pending(s).into_iter().map(|(at, _)| at).min()
}

/// What is due at `now`, and the next due time once its warnings are
/// recorded.
pub fn plan(state: &State, s: &Settings, now: NaiveDateTime) -> Plan {
    let due: Vec<Due> = state
        .pending(s)
        .into_iter()
        .filter(|(at, _)| *at <= now)
        .map(|(_, d)| d)
        .collect();
    let mut warnings = Vec::new();
    for w in [Warning::Expiry, Warning::Idle] {
        if due.contains(&Due::Warn(w)) {
            warnings.push(w);
        }
    }
    let action = [
        Cause::GraceOver,
        Cause::Expired,
        Cause::SessionEnded,
        Cause::Idle,
    ]
    .into_iter()
    .find(|c| due.contains(&Due::Act(*c)));
    let mut after = state.clone();
    for w in &warnings {
        match w {
            Warning::Expiry => after.expiry_warned_at = Some(now),
            Warning::Idle => after.idle_warned_at = Some(now),
        }
    }
    Plan {
        warnings,
        action,
        next: next_due(&after, s),
    }
}

/// Whether the owner may start the device at `now`: not once it expired
/// (an administrator may extend it).
pub fn may_start(state: &State, now: NaiveDateTime) -> Result<(), Error> {
    match state.expires_at {
        Some(at) if at <= now => Err(Error::Conflict(format!(
            "the device expired at {}; an administrator may extend it",
            rfc3339(at)
        ))),
        _ => Ok(()),
    }
}

/// Whether a device takes client heartbeats: its owner wants it running
/// and it runs, is coming up, or is on a node that went silent (where it
/// may well run on, and a client that keeps using it should not see it
/// stopped for idleness when the node is back).
pub fn takes_heartbeats(desired: Desired, observed: Observed) -> bool {
    desired == Desired::Running
        && matches!(
            observed,
            Observed::Running | Observed::Booting | Observed::Unknown
        )
}

/// Whether a change of the observed status starts a new session. A device
/// coming back from `unknown` (its node was silent) may have run all along,
/// so that does not restart the clocks of a session already recorded.
pub fn session_starts(from: Observed, to: Observed, recorded: bool) -> bool {
    to == Observed::Running && from != Observed::Running && (from != Observed::Unknown || !recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0)
            .unwrap()
            .naive_utc()
    }

    fn settings() -> Settings {
        Settings {
            expiry_warning_secs: 100,
            expiry_grace_secs: 1000,
            idle_warning_secs: 30,
        }
    }

    /// A device running since t(0), no policy.
    fn running() -> State {
        State {
            desired: Desired::Running,
            observed: Observed::Running,
            expires_at: None,
            expiry_warned_at: None,
            idle_timeout_secs: None,
            max_session_secs: None,
            last_client_heartbeat_at: None,
            session_started_at: Some(t(0)),
            idle_warned_at: None,
        }
    }

    fn at(state: &State, now: i64) -> Plan {
        plan(state, &settings(), t(now))
    }

    #[test]
    fn a_device_without_policy_is_never_due() {
        assert_eq!(next_due(&running(), &settings()), None);
        assert_eq!(
            at(&running(), 1_000_000),
            Plan {
                warnings: vec![],
                action: None,
                next: None
            }
        );
    }

    #[test]
    fn expiry_warns_ahead_then_stops_at_the_instant_then_deletes_after_the_grace() {
        let mut s = running();
        s.expires_at = Some(t(500));
        // Due first: the warning, 100 s ahead.
        assert_eq!(next_due(&s, &settings()), Some(t(400)));
        // One second before: nothing.
        let p = at(&s, 399);
        assert_eq!((p.warnings.len(), p.action), (0, None));
        // At the boundary: the warning, then the stop is next.
        let p = at(&s, 400);
        assert_eq!(p.warnings, vec![Warning::Expiry]);
        assert_eq!((p.action, p.next), (None, Some(t(500))));
        s.expiry_warned_at = Some(t(400));
        assert_eq!(at(&s, 499).action, None);
        let p = at(&s, 500);
        assert_eq!((p.warnings.len(), p.action), (0, Some(Cause::Expired)));
        // Stopped for it: deletion after the grace period is what remains.
        s.desired = Desired::Stopped;
        assert_eq!(next_due(&s, &settings()), Some(t(1500)));
        assert_eq!(at(&s, 1499).action, None);
        assert_eq!(at(&s, 1500).action, Some(Cause::GraceOver));
        assert_eq!(Cause::GraceOver.action(), Action::Delete);
        assert_eq!(Cause::Expired.action(), Action::Stop);
    }

    #[test]
    fn a_late_job_sends_the_warning_first_and_acts_in_the_same_pass() {
        let mut s = running();
        s.expires_at = Some(t(500));
        let p = at(&s, 700);
        assert_eq!(p.warnings, vec![Warning::Expiry]);
        assert_eq!(p.action, Some(Cause::Expired));
        // Days late: deletion wins over the stop, still warned first.
        let p = at(&s, 5000);
        assert_eq!(p.warnings, vec![Warning::Expiry]);
        assert_eq!(p.action, Some(Cause::GraceOver));
    }

    #[test]
    fn a_stopped_device_is_warned_and_deleted_but_has_no_expiry_stop() {
        let mut s = running();
        s.desired = Desired::Stopped;
        s.observed = Observed::Stopped;
        s.expires_at = Some(t(500));
        s.expiry_warned_at = Some(t(400));
        assert_eq!(at(&s, 600).action, None);
        assert_eq!(next_due(&s, &settings()), Some(t(1500)));
    }

    #[test]
    fn a_deleted_device_has_nothing_due_ever() {
        let mut s = running();
        s.desired = Desired::Deleted;
        s.expires_at = Some(t(10));
        s.idle_timeout_secs = Some(60);
        s.max_session_secs = Some(60);
        assert_eq!(next_due(&s, &settings()), None);
        assert_eq!(at(&s, 1_000_000).action, None);
        assert!(at(&s, 1_000_000).warnings.is_empty());
    }

    #[test]
    fn idle_warns_at_the_lead_and_stops_at_the_deadline() {
        let mut s = running();
        s.idle_timeout_secs = Some(600);
        // Lead 30 s (the setting; half the timeout is more).
        assert_eq!(next_due(&s, &settings()), Some(t(570)));
        assert_eq!(at(&s, 569).warnings, vec![]);
        let p = at(&s, 570);
        assert_eq!((p.warnings, p.action), (vec![Warning::Idle], None));
        assert_eq!(p.next, Some(t(600)));
        s.idle_warned_at = Some(t(570));
        assert_eq!(at(&s, 599).action, None);
        let p = at(&s, 600);
        assert_eq!((p.warnings.len(), p.action), (0, Some(Cause::Idle)));
        assert_eq!(s.idle_deadline(), Some(t(600)));
    }

    #[test]
    fn the_idle_warning_lead_is_at_most_half_the_timeout() {
        let mut s = running();
        s.idle_timeout_secs = Some(10);
        assert_eq!(next_due(&s, &settings()), Some(t(5)));
        s.idle_timeout_secs = Some(1);
        // Half of one second is nothing: warned and stopped at once, in order.
        let p = at(&s, 1);
        assert_eq!(
            (p.warnings, p.action),
            (vec![Warning::Idle], Some(Cause::Idle))
        );
    }

    #[test]
    fn a_heartbeat_moves_the_idle_deadline_and_re_arms_the_warning() {
        let mut s = running();
        s.idle_timeout_secs = Some(600);
        s.idle_warned_at = Some(t(570));
        s.last_client_heartbeat_at = Some(t(580));
        assert_eq!(s.idle_deadline(), Some(t(1180)));
        // The old warning predates the heartbeat: a new one is due ahead.
        assert_eq!(next_due(&s, &settings()), Some(t(1150)));
        assert_eq!(at(&s, 600).action, None);
        // A heartbeat older than the session start counts from the start.
        s.last_client_heartbeat_at = Some(t(-5000));
        s.idle_warned_at = None;
        assert_eq!(s.idle_deadline(), Some(t(600)));
    }

    #[test]
    fn idle_and_session_rules_apply_only_to_a_live_session() {
        for (desired, observed) in [
            (Desired::Stopped, Observed::Stopped),
            (Desired::Stopped, Observed::Running),
            (Desired::Running, Observed::Booting),
            (Desired::Running, Observed::Creating),
            (Desired::Running, Observed::Failed),
            (Desired::Running, Observed::Unknown),
            (Desired::Running, Observed::Stopped),
        ] {
            let mut s = running();
            s.idle_timeout_secs = Some(60);
            s.max_session_secs = Some(60);
            s.desired = desired;
            s.observed = observed;
            assert_eq!(next_due(&s, &settings()), None, "{desired:?}/{observed:?}");
            assert_eq!(s.idle_deadline(), None);
        }
        // Running without a recorded start: no clock to count from.
        let mut s = running();
        s.idle_timeout_secs = Some(60);
        s.session_started_at = None;
        assert_eq!(next_due(&s, &settings()), None);
    }

    #[test]
    fn a_session_ends_at_its_maximum_whatever_the_heartbeats() {
        let mut s = running();
        s.max_session_secs = Some(3600);
        s.last_client_heartbeat_at = Some(t(3599));
        assert_eq!(s.session_ends_at(), Some(t(3600)));
        assert_eq!(at(&s, 3599).action, None);
        assert_eq!(at(&s, 3600).action, Some(Cause::SessionEnded));
    }

    #[test]
    fn the_strongest_cause_wins_when_several_are_due() {
        let mut s = running();
        s.idle_timeout_secs = Some(100);
        s.idle_warned_at = Some(t(90));
        s.max_session_secs = Some(100);
        assert_eq!(at(&s, 100).action, Some(Cause::SessionEnded));
        s.expires_at = Some(t(100));
        s.expiry_warned_at = Some(t(0));
        assert_eq!(at(&s, 100).action, Some(Cause::Expired));
        // The earliest of all of them is the due time.
        s.expires_at = Some(t(50));
        assert_eq!(next_due(&s, &settings()), Some(t(50)));
    }

    #[test]
    fn timeouts_and_expiries_are_parsed_with_their_bounds() {
        assert_eq!(
            Timeout::parse("idle_timeout_secs", 60, 60).unwrap().secs(),
            60
        );
        assert!(Timeout::parse("idle_timeout_secs", 59, 60).is_err());
        assert!(Timeout::parse("idle_timeout_secs", 0, 0).is_err());
        assert!(Timeout::parse("idle_timeout_secs", -5, 1).is_err());
        assert!(Timeout::parse("max_session_secs", MAX_TIMEOUT_SECS, 60).is_ok());
        assert!(Timeout::parse("max_session_secs", MAX_TIMEOUT_SECS + 1, 60).is_err());
        let now = t(0);
        let e = Expiry::parse("2027-01-16T08:00:00+08:00", now).unwrap();
        assert_eq!(rfc3339(e.at()), "2027-01-16T00:00:00.000000Z");
        for bad in [
            "2020-01-01T00:00:00Z",
            "tomorrow",
            "2027-01-15",
            "2999-01-01T00:00:00Z",
            "",
        ] {
            assert!(Expiry::parse(bad, now).is_err(), "{bad}");
        }
        // Exactly now is not in the future.
        assert!(Expiry::parse(&rfc3339(now), now).is_err());
    }

    #[test]
    fn an_expired_device_may_not_start_until_extended() {
        let mut s = running();
        s.desired = Desired::Stopped;
        assert!(may_start(&s, t(0)).is_ok());
        s.expires_at = Some(t(10));
        assert!(may_start(&s, t(9)).is_ok());
        assert!(matches!(may_start(&s, t(10)), Err(Error::Conflict(_))));
    }

    #[test]
    fn heartbeats_are_taken_while_the_device_runs_or_may_run() {
        assert!(takes_heartbeats(Desired::Running, Observed::Running));
        assert!(takes_heartbeats(Desired::Running, Observed::Booting));
        assert!(takes_heartbeats(Desired::Running, Observed::Unknown));
        assert!(!takes_heartbeats(Desired::Running, Observed::Stopped));
        assert!(!takes_heartbeats(Desired::Running, Observed::Creating));
        assert!(!takes_heartbeats(Desired::Running, Observed::Failed));
        assert!(!takes_heartbeats(Desired::Stopped, Observed::Running));
        assert!(!takes_heartbeats(Desired::Deleted, Observed::Running));
    }

    #[test]
    fn sessions_start_when_a_device_comes_up_but_not_when_its_node_comes_back() {
        assert!(session_starts(Observed::Booting, Observed::Running, true));
        assert!(session_starts(Observed::Stopped, Observed::Running, true));
        assert!(session_starts(Observed::Creating, Observed::Running, false));
        assert!(!session_starts(Observed::Unknown, Observed::Running, true));
        assert!(session_starts(Observed::Unknown, Observed::Running, false));
        assert!(!session_starts(Observed::Running, Observed::Running, false));
        assert!(!session_starts(Observed::Booting, Observed::Stopped, false));
        assert!(Cause::Idle.scheduled() && !Cause::Released.scheduled());
    }
}
