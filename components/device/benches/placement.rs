//! Placement speed: one decision over 100 nodes, and 1,000 devices placed
//! one after another over 100 nodes (each decision sees the previous ones'
//! usage, as the locked rows do), for every strategy. Prints figures; asserts
//! nothing about time. Run with `cargo bench -p device` or `cargo xtask bench`.

use device::placement::{place, Effect, NodeView, Request, Resources, Strategy, Taint};
use std::collections::BTreeMap;
use std::time::Instant;

fn fleet(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| NodeView {
            id: format!("node-{i:03}"),
            schedulable: i % 25 != 7,
            region: Some("cn".into()),
            zone: Some(format!("sh-{}", i % 3)),
            labels: BTreeMap::from([(
                "class".to_string(),
                if i % 2 == 0 { "a" } else { "b" }.to_string(),
            )]),
            taints: if i % 10 == 3 {
                vec![Taint {
                    key: "gpu".into(),
                    value: String::new(),
                    effect: Effect::PreferNoSchedule,
                }]
            } else {
                Vec::new()
            },
            priority: (i % 4) as i32,
            capacity: Resources {
                cpu_millis: 64_000,
                memory_mb: 262_144,
                disk_gb: 4_000,
                devices: 40,
                gpus: 0,
            },
            cpu_overcommit_pct: 400,
            memory_overcommit_pct: 150,
            used: Resources::default(),
        })
        .collect()
}

fn request() -> Request {
    Request {
        needs: Resources {
            cpu_millis: 2_000,
            memory_mb: 4_096,
            disk_gb: 16,
            devices: 1,
            gpus: 0,
        },
        ..Request::default()
    }
}

fn main() {
    let r = request();
    for strategy in [Strategy::Binpack, Strategy::Spread, Strategy::LeastLoaded] {
        // One decision over 100 empty-ish nodes, averaged.
        let nodes = fleet(100);
        let rounds = 20_000;
        let t = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(place(std::hint::black_box(&nodes), &r, strategy).expect("fits"));
        }
        let one = t.elapsed() / rounds;
        // 1,000 in a row, each on the usage the previous left.
        let mut nodes = fleet(100);
        let t = Instant::now();
        for _ in 0..1_000 {
            let d = place(&nodes, &r, strategy).expect("fits");
            let n = nodes.iter_mut().find(|n| n.id == d.node_id).expect("node");
            n.used.cpu_millis += r.needs.cpu_millis;
            n.used.memory_mb += r.needs.memory_mb;
            n.used.disk_gb += r.needs.disk_gb;
            n.used.devices += 1;
        }
        let thousand = t.elapsed();
        let busiest = nodes.iter().map(|n| n.used.devices).max().unwrap_or(0);
        println!(
            "placement {:<12} one decision over 100 nodes: {:>7.1} µs   1,000 placements over 100 nodes: {:>7.1} ms   (busiest node: {busiest} devices)",
            strategy.name(),
            one.as_secs_f64() * 1e6,
            thousand.as_secs_f64() * 1e3,
        );
    }
}
