//! Placement: which node a new device goes to. A pure function over the
//! nodes as the caller locked them (capacity, overcommit, what is already
//! placed, labels, taints, zone, status), so that a decision is atomic when
//! the caller holds the nodes' row locks, and testable and benchmarkable
//! without a database.
//!
//! Hard constraints: the node is online and schedulable (not cordoned,
//! draining, in maintenance, disabled or unreachable); every `NoSchedule`
//! and `NoExecute` taint is tolerated; the node selector's labels all match;
//! the zone and region match when asked for; CPU and memory fit within
//! capacity × the node's overcommit ratio; disk fits without overcommit; the
//! node has a free device slot; a free GPU slot when the device needs one.
//! Soft: a `PreferNoSchedule` taint that is not tolerated puts the node
//! behind every untainted one. Among the rest the strategy decides, then the
//! node's priority, then its id (so a decision is deterministic).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the fitting nodes are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Fill the most utilized node first (fewest nodes in use).
    Binpack,
    /// Spread devices: the node with the fewest devices first.
    Spread,
    /// The node with the lowest utilization after placement first.
    LeastLoaded,
}

impl Strategy {
    /// Parses a strategy name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "binpack" => Some(Self::Binpack),
            "spread" => Some(Self::Spread),
            "least_loaded" => Some(Self::LeastLoaded),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Binpack => "binpack",
            Self::Spread => "spread",
            Self::LeastLoaded => "least_loaded",
        }
    }
}

/// What a taint does to devices that do not tolerate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Never place there.
    NoSchedule,
    /// Place there only if nothing else fits.
    PreferNoSchedule,
    /// Never place there, and devices already there are moved off by a drain.
    NoExecute,
}

/// A node taint: `key[=value]:effect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (empty for none).
    #[serde(default)]
    pub value: String,
    /// Effect.
    pub effect: Effect,
}

/// A device's toleration: matches a taint by key, and value unless empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    /// Key.
    pub key: String,
    /// Value; empty matches any value.
    #[serde(default)]
    pub value: String,
}

impl Toleration {
    fn tolerates(&self, t: &Taint) -> bool {
        self.key == t.key && (self.value.is_empty() || self.value == t.value)
    }
}

/// Resources, in the units the agent uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: i64,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// Disk in GiB.
    pub disk_gb: i64,
    /// Devices.
    pub devices: i64,
    /// GPU slots.
    pub gpus: i64,
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Online and schedulable (not cordoned, draining, in maintenance,
    /// disabled or unreachable).
    pub schedulable: bool,
    /// Region.
    pub region: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Higher wins a tie.
    pub priority: i32,
    /// What the node has (`devices` = max devices, `gpus` = GPU slots).
    pub capacity: Resources,
    /// CPU overcommit in percent (400 = ×4).
    pub cpu_overcommit_pct: i64,
    /// Memory overcommit in percent (200 = ×2).
    pub memory_overcommit_pct: i64,
    /// What devices placed there already take.
    pub used: Resources,
}

/// What a new device needs and where it may go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Its resources (`devices` is ignored: always 1).
    pub needs: Resources,
    /// Zone, if required.
    pub zone: Option<String>,
    /// Region, if required.
    pub region: Option<String>,
    /// Labels the node must carry.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the device tolerates.
    pub tolerations: Vec<Toleration>,
}

impl Request {
    /// A request with no zone, region, selector or tolerations: any node
    /// that has room (batches, pools, clones, recoveries).
    pub fn anywhere(needs: Resources) -> Self {
        Self {
            needs,
            zone: None,
            region: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

/// The outcome of a placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The chosen node.
    pub node_id: String,
    /// The strategy used.
    pub strategy: &'static str,
    /// Nodes that fitted.
    pub fitting: usize,
    /// Nodes considered.
    pub considered: usize,
    /// Why this node, for operators.
    pub reason: String,
}

/// Why a node was refused (counted for the error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    NotSchedulable,
    Location,
    Selector,
    Taint,
    Devices,
    Cpu,
    Memory,
    Disk,
    Gpu,
}

fn allowed(cap: i64, pct: i64) -> i64 {
    cap.saturating_mul(pct) / 100
}

fn check(n: &NodeView, r: &Request) -> Result<bool, Refusal> {
    if !n.schedulable {
        return Err(Refusal::NotSchedulable);
    }
    if r.zone.as_ref().is_some_and(|z| n.zone.as_ref() != Some(z))
        || r.region
            .as_ref()
            .is_some_and(|g| n.region.as_ref() != Some(g))
    {
        return Err(Refusal::Location);
    }
    if r.node_selector
        .iter()
        .any(|(k, v)| n.labels.get(k) != Some(v))
    {
        return Err(Refusal::Selector);
    }
    let mut preferred_not = false;
    for t in &n.taints {
        if r.tolerations.iter().any(|tol| tol.tolerates(t)) {
            continue;
        }
        match t.effect {
            Effect::NoSchedule | Effect::NoExecute => return Err(Refusal::Taint),
            Effect::PreferNoSchedule => preferred_not = true,
        }
    }
    if n.used.devices + 1 > n.capacity.devices {
        return Err(Refusal::Devices);
    }
    if n.used.cpu_millis + r.needs.cpu_millis > allowed(n.capacity.cpu_millis, n.cpu_overcommit_pct)
    {
        return Err(Refusal::Cpu);
    }
    if n.used.memory_mb + r.needs.memory_mb > allowed(n.capacity.memory_mb, n.memory_overcommit_pct)
    {
        return Err(Refusal::Memory);
    }
    if n.used.disk_gb + r.needs.disk_gb > n.capacity.disk_gb {
        return Err(Refusal::Disk);
    }
    if r.needs.gpus > 0 && n.used.gpus + r.needs.gpus > n.capacity.gpus {
        return Err(Refusal::Gpu);
    }
    Ok(preferred_not)
}

/// Utilization after placing `r` on `n`: the larger of CPU and memory, in
/// millionths of the overcommitted capacity.
fn utilization_after(n: &NodeView, r: &Request) -> i64 {
    let frac = |used: i64, cap: i64| {
        if cap <= 0 {
            1_000_000
        } else {
            used.saturating_mul(1_000_000) / cap
        }
    };
    frac(
        n.used.cpu_millis + r.needs.cpu_millis,
        allowed(n.capacity.cpu_millis, n.cpu_overcommit_pct),
    )
    .max(frac(
        n.used.memory_mb + r.needs.memory_mb,
        allowed(n.capacity.memory_mb, n.memory_overcommit_pct),
    ))
}

/// Chooses a node, or says why none fits (a message for the user).
pub fn place(nodes: &[NodeView], r: &Request, strategy: Strategy) -> Result<Decision, String> {
    let mut refusals: BTreeMap<Refusal, usize> = BTreeMap::new();
    // (preferred-not, strategy key, -priority, id): smallest wins.
    let mut best: Option<((bool, i64, i32), &NodeView)> = None;
    let mut fitting = 0;
    for n in nodes {
        match check(n, r) {
            Err(why) => *refusals.entry(why).or_default() += 1,
            Ok(preferred_not) => {
                fitting += 1;
                let util = utilization_after(n, r);
                let key = match strategy {
                    Strategy::Binpack => -util,
                    Strategy::LeastLoaded => util,
                    Strategy::Spread => n.used.devices,
                };
                let rank = (preferred_not, key, -n.priority);
                let better = match &best {
                    None => true,
                    Some((b, bn)) => rank < *b || (rank == *b && n.id < bn.id),
                };
                if better {
                    best = Some((rank, n));
                }
            }
        }
    }
    match best {
        Some(((preferred_not, _, _), n)) => Ok(Decision {
            node_id: n.id.clone(),
            strategy: strategy.name(),
            fitting,
            considered: nodes.len(),
            reason: format!(
                "{} of {} nodes fit; {} chose {} ({} devices, {}% utilized after placement{})",
                fitting,
                nodes.len(),
                strategy.name(),
                n.id,
                n.used.devices + 1,
                utilization_after(n, r) / 10_000,
                if preferred_not {
                    ", despite a PreferNoSchedule taint"
                } else {
                    ""
                }
            ),
        }),
        None => Err(explain(nodes.len(), r, &refusals)),
    }
}

fn explain(total: usize, r: &Request, refusals: &BTreeMap<Refusal, usize>) -> String {
    let mut place = String::new();
    if let Some(z) = &r.zone {
        place.push_str(&format!(" in zone {z}"));
    }
    if let Some(g) = &r.region {
        place.push_str(&format!(" in region {g}"));
    }
    if total == 0 {
        return format!("no node is enrolled{place}");
    }
    let need = |why: Refusal| match why {
        Refusal::NotSchedulable => "online and schedulable".to_string(),
        Refusal::Location => "in the requested zone or region".to_string(),
        Refusal::Selector => format!("labels {:?}", r.node_selector),
        Refusal::Taint => "no taint the device does not tolerate".to_string(),
        Refusal::Devices => "a free device slot".to_string(),
        Refusal::Cpu => format!("{}m free cpu", r.needs.cpu_millis),
        Refusal::Memory => format!("{} MiB free memory", r.needs.memory_mb),
        Refusal::Disk => format!("{} GiB free disk", r.needs.disk_gb),
        Refusal::Gpu => "a free gpu slot".to_string(),
    };
    // The constraint that stopped the most nodes first.
    let mut by_count: Vec<(&Refusal, &usize)> = refusals.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let detail: Vec<String> = by_count
        .iter()
        .map(|(why, n)| format!("{n} without {}", need(**why)))
        .collect();
    let (first, _) = by_count[0];
    format!(
        "no node with {}{place} ({} of {total} nodes: {})",
        need(*first),
        refusals.values().sum::<usize>(),
        detail.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, devices_used: i64, cpu_used: i64) -> NodeView {
        NodeView {
            id: id.into(),
            schedulable: true,
            region: Some("cn".into()),
            zone: Some("sh-1".into()),
            labels: BTreeMap::new(),
            taints: vec![],
            priority: 0,
            capacity: Resources {
                cpu_millis: 8000,
                memory_mb: 16384,
                disk_gb: 500,
                devices: 10,
                gpus: 0,
            },
            cpu_overcommit_pct: 400,
            memory_overcommit_pct: 200,
            used: Resources {
                cpu_millis: cpu_used,
                memory_mb: devices_used * 2048,
                disk_gb: devices_used * 16,
                devices: devices_used,
                gpus: 0,
            },
        }
    }

    fn req(cpu: i64) -> Request {
        Request {
            needs: Resources {
                cpu_millis: cpu,
                memory_mb: 2048,
                disk_gb: 16,
                devices: 1,
                gpus: 0,
            },
            ..Request::default()
        }
    }

    #[test]
    fn each_strategy_picks_as_documented() {
        let nodes = [node("a", 1, 2000), node("b", 5, 10000), node("c", 3, 6000)];
        let pick = |s| place(&nodes, &req(2000), s).unwrap().node_id;
        assert_eq!(pick(Strategy::Binpack), "b", "the fullest that fits");
        assert_eq!(pick(Strategy::LeastLoaded), "a", "the emptiest");
        assert_eq!(pick(Strategy::Spread), "a", "the fewest devices");
    }

    #[test]
    fn capacity_counts_overcommit_and_a_full_node_gets_nothing() {
        // 8 cores x4 = 32000m allowed; 31000 used leaves 1000.
        let nodes = [node("a", 2, 31000)];
        assert!(place(&nodes, &req(1000), Strategy::Binpack).is_ok());
        let e = place(&nodes, &req(2000), Strategy::Binpack).unwrap_err();
        assert!(e.starts_with("no node with 2000m free cpu"), "{e}");
        let mut full = node("f", 10, 0);
        full.used.memory_mb = 0;
        assert!(place(&[full], &req(100), Strategy::Spread)
            .unwrap_err()
            .contains("a free device slot"));
    }

    #[test]
    fn cordoned_tainted_and_mismatched_nodes_are_refused_with_reasons() {
        let mut cordoned = node("a", 0, 0);
        cordoned.schedulable = false;
        let mut tainted = node("b", 0, 0);
        tainted.taints.push(Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: Effect::NoSchedule,
        });
        let mut elsewhere = node("c", 0, 0);
        elsewhere.zone = Some("bj-1".into());
        let mut r = req(1000);
        r.zone = Some("sh-1".into());
        let e = place(
            &[cordoned.clone(), tainted.clone(), elsewhere],
            &r,
            Strategy::Spread,
        )
        .unwrap_err();
        assert!(e.contains("in zone sh-1"), "{e}");
        assert!(e.contains("1 without online and schedulable"), "{e}");
        assert!(e.contains("1 without no taint"), "{e}");
        // A toleration opens the tainted node.
        r.tolerations.push(Toleration {
            key: "dedicated".into(),
            value: String::new(),
        });
        assert_eq!(
            place(&[cordoned, tainted], &r, Strategy::Spread)
                .unwrap()
                .node_id,
            "b"
        );
    }

    #[test]
    fn prefer_no_schedule_only_when_nothing_else_fits_and_selectors_match_labels() {
        let mut soft = node("a", 0, 0);
        soft.taints.push(Taint {
            key: "spot".into(),
            value: String::new(),
            effect: Effect::PreferNoSchedule,
        });
        let busy = node("b", 9, 30000);
        assert_eq!(
            place(&[soft.clone(), busy], &req(1000), Strategy::LeastLoaded)
                .unwrap()
                .node_id,
            "b"
        );
        let d = place(&[soft], &req(1000), Strategy::LeastLoaded).unwrap();
        assert!(d.reason.contains("PreferNoSchedule"));
        let mut labelled = node("l", 0, 0);
        labelled.labels.insert("gpu".into(), "amd".into());
        let mut r = req(1000);
        r.node_selector.insert("gpu".into(), "amd".into());
        assert_eq!(
            place(&[node("x", 0, 0), labelled], &r, Strategy::Binpack)
                .unwrap()
                .node_id,
            "l"
        );
    }

    #[test]
    fn gpus_priority_and_ties_decide_deterministically() {
        let mut g = node("g", 0, 0);
        g.capacity.gpus = 1;
        let mut r = req(1000);
        r.needs.gpus = 1;
        assert_eq!(
            place(&[node("n", 0, 0), g.clone()], &r, Strategy::Spread)
                .unwrap()
                .node_id,
            "g"
        );
        g.used.gpus = 1;
        assert!(place(&[g], &r, Strategy::Spread)
            .unwrap_err()
            .contains("gpu"));
        let mut high = node("z", 0, 0);
        high.priority = 5;
        assert_eq!(
            place(&[node("a", 0, 0), high], &req(1000), Strategy::Spread)
                .unwrap()
                .node_id,
            "z"
        );
        assert_eq!(
            place(
                &[node("b", 0, 0), node("a", 0, 0)],
                &req(1000),
                Strategy::Spread
            )
            .unwrap()
            .node_id,
            "a"
        );
        assert_eq!(
            place(&[], &req(1), Strategy::Spread).unwrap_err(),
            "no node is enrolled"
        );
    }
}
