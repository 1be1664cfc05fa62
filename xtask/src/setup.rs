//! Installs and starts what the project needs, idempotently. Everything comes
//! from Debian's packages (see ../shared/platform-notes.md).

use anyhow::{bail, Context, Result};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn listening(addr: &str) -> bool {
    TcpStream::connect_timeout(
        &addr.parse().expect("valid address"),
        Duration::from_millis(300),
    )
    .is_ok()
}

fn apt_install(args: &[&str]) -> Result<()> {
    println!("xtask: apt-get install {}", args.join(" "));
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q"])
        .args(args);
    run(&mut cmd)
}

fn apt_update() -> Result<()> {
    run(Command::new("apt-get").args(["update", "-q"]))
}

const BACKPORTS: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";

/// Debian's Rust with std sources for `-Zbuild-std`, lld, and a wasip2 libc.
pub fn wasm_toolchain() -> Result<()> {
    let ready = Path::new("/usr/lib/rustlib/src/rust/library/std").exists()
        && Path::new("/usr/lib/wasm32-wasip2/libc.a").exists()
        && Path::new("/usr/bin/rustc").exists()
        && have("lld-22")
        && Path::new("/usr/bin/clippy-driver").exists();
    if ready {
        return Ok(());
    }
    if !Path::new(BACKPORTS).exists() {
        std::fs::write(
            BACKPORTS,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .context("cannot add bookworm-backports (run as root)")?;
    }
    apt_update()?;
    apt_install(&[
        "rustc-web",
        "cargo-web",
        "rust-web-src",
        "rust-web-llvm",
        "rust-web-clippy",
        "lld-22",
    ])?;
    apt_install(&["-t", "bookworm-backports", "wasi-libc"])
}

/// Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379, installed and
/// started if needed.
pub fn services() -> Result<()> {
    if !listening("127.0.0.1:5432") {
        if !have("pg_ctlcluster") {
            apt_update()?;
            apt_install(&["postgresql"])?;
        }
        let versions =
            std::fs::read_dir("/etc/postgresql").context("no postgres cluster configured")?;
        for v in versions.flatten() {
            let v = v.file_name().to_string_lossy().to_string();
            let _ = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &v, "main", "start"])
                .status();
        }
        wait_for("127.0.0.1:5432", "postgres")?;
    }
    postgres_capacity()?;
    if !listening("127.0.0.1:6379") {
        if !have("redis-server") {
            apt_update()?;
            apt_install(&["redis-server"])?;
        }
        run(Command::new("redis-server").args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ]))?;
        wait_for("127.0.0.1:6379", "redis")?;
    }
    Ok(())
}

/// Raises the server's `max_connections` to what every role's limit needs
/// (`migrator::admin::SERVER_MAX_CONNECTIONS`) when it is lower, restarting
/// the cluster (the setting is read at start only).
fn postgres_capacity() -> Result<()> {
    use migrator::admin::{psql, SERVER_MAX_CONNECTIONS};
    let current: u32 = psql("SHOW max_connections")
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .trim()
        .parse()
        .context("max_connections")?;
    if current >= SERVER_MAX_CONNECTIONS {
        return Ok(());
    }
    println!("xtask: raising Postgres max_connections from {current} to {SERVER_MAX_CONNECTIONS} (restart)");
    psql(&format!(
        "ALTER SYSTEM SET max_connections = {SERVER_MAX_CONNECTIONS}"
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let versions =
        std::fs::read_dir("/etc/postgresql").context("no postgres cluster configured")?;
    for v in versions.flatten() {
        let v = v.file_name().to_string_lossy().to_string();
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &v,
            "main",
            "restart",
        ]))?;
    }
    wait_for("127.0.0.1:5432", "postgres")
}

/// Socket of the Podman service that serves the Docker Engine API.
pub const PODMAN_SOCKET: &str = "/run/cloudphone/podman.sock";

/// Podman with the two settings this kernel needs, serving the Docker API.
pub fn podman() -> Result<()> {
    if !have("podman") || !have("runc") || !Path::new("/bin/busybox").exists() {
        apt_update()?;
        apt_install(&[
            "podman",
            "runc",
            "netavark",
            "aardvark-dns",
            "slirp4netns",
            "fuse-overlayfs",
            "uidmap",
            "iptables",
            "busybox-static",
        ])?;
    }
    let conf = Path::new("/etc/containers/containers.conf");
    let current = std::fs::read_to_string(conf).unwrap_or_default();
    if !current.contains("runtime = \"runc\"") || !current.contains("nofile=20000:20000") {
        std::fs::create_dir_all("/etc/containers")?;
        std::fs::write(
            conf,
            "# Written by cargo xtask setup: Debian's crun refuses this kernel's cgroup layout, and\n\
             # the sandbox cannot raise rlimits to Podman's defaults.\n\
             [containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\n[engine]\nruntime = \"runc\"\n",
        )?;
    }
    let ping = || {
        Command::new("curl")
            .args(["-sf", "--unix-socket", PODMAN_SOCKET, "http://d/_ping"])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A long-running service was seen to stop starting containers ("write
    // child: broken pipe") while still answering pings: every setup starts
    // it afresh (containers and images stay; a running agent reconnects).
    if ping() {
        let _ = Command::new("pkill")
            .args([
                "-f",
                &format!("podman system service --time=0 unix://{PODMAN_SOCKET}"),
            ])
            .status();
        for _ in 0..50 {
            if !ping() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if !ping() {
        std::fs::create_dir_all("/run/cloudphone")?;
        let _ = std::fs::remove_file(PODMAN_SOCKET);
        Command::new("podman")
            .args([
                "system",
                "service",
                "--time=0",
                &format!("unix://{PODMAN_SOCKET}"),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start podman system service")?;
        for _ in 0..100 {
            if ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("podman service did not come up on {PODMAN_SOCKET}");
    }
    Ok(())
}

fn wait_for(addr: &str, what: &str) -> Result<()> {
    for _ in 0..100 {
        if listening(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not start listening on {addr}")
}

/// Debian's Android tools, with which the APK tests make real APKs
/// (`aapt`, `zipalign`, `apksigner`; `keytool` comes with the JRE
/// `apksigner` needs).
pub fn android_tools() -> Result<()> {
    if !["aapt", "zipalign", "apksigner", "keytool"]
        .iter()
        .all(|b| have(b))
    {
        apt_update()?;
        apt_install(&["aapt", "zipalign", "apksigner"])?;
    }
    Ok(())
}

/// The `openssl` command, with which the Alipay tests sign as Alipay
/// does (an RSA2 signer independent of the component's).
pub fn openssl() -> Result<()> {
    if !have("openssl") {
        apt_update()?;
        apt_install(&["openssl"])?;
    }
    Ok(())
}

/// Everything.
pub fn all() -> Result<()> {
    wasm_toolchain()?;
    services()?;
    android_tools()?;
    openssl()?;
    podman()
}
