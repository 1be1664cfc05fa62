//! What the host offers and uses, read from `/proc` and `df`.

use crate::agent::Shared;
use crate::config::Config;
use crate::protocol::{Capacity, DeviceStatus, Usage};

fn meminfo_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Total and available MiB of the file system under `path`.
async fn disk_mb(path: &std::path::Path) -> (u64, u64) {
    let out = tokio::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .await;
    let Ok(out) = out else { return (0, 0) };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().nth(1) else {
        return (0, 0);
    };
    let cols: Vec<&str> = line.split_whitespace().collect();
    let kb = |i: usize| cols.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (kb(1) / 1024, kb(3) / 1024)
}

/// The host's capacity.
pub async fn capacity(cfg: &Config) -> Capacity {
    Capacity {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_mb: meminfo_kb("MemTotal:").unwrap_or(0) / 1024,
        disk_mb: disk_mb(&cfg.data_root).await.0,
        max_devices: cfg.max_devices,
        gpus: cfg.gpus.clone(),
    }
}

/// Current use of the host.
pub async fn usage(shared: &Shared) -> Usage {
    let (devices, ready) = {
        let inv = shared.inventory.lock().expect("inventory lock");
        (
            inv.len() as u32,
            inv.iter()
                .filter(|d| d.status == DeviceStatus::Ready)
                .count() as u32,
        )
    };
    let total = meminfo_kb("MemTotal:").unwrap_or(0);
    let avail = meminfo_kb("MemAvailable:").unwrap_or(0);
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Usage {
        devices,
        ready,
        memory_used_mb: total.saturating_sub(avail) / 1024,
        disk_free_mb: disk_mb(&shared.cfg.data_root).await.1,
        load1,
    }
}
