//! Operations the agent carries out inside a running phone (shell, logcat,
//! screenshot, files, apps, the package list, the properties): their inputs
//! as validated types, their limits, the agent command each becomes, and
//! what the control plane records from the agent's result. `packages` and
//! `properties` have no agent operation of their own: they run fixed shell
//! commands (`pm list packages`, `getprop`) whose output is parsed here, and
//! are recorded under their own kind, so that they need no `device:shell`
//! and a caller never sees that a shell ran.

use crate::domain::status::{Desired, Observed};
use crate::error::Error;
use agent_protocol::messages::Operation as AgentOp;
use agent_protocol::spec::{DeviceId, DevicePath, PackageName};
use std::collections::BTreeMap;

/// Longest shell command, in characters.
pub const MAX_COMMAND_CHARS: usize = 4096;
/// Longest shell timeout the agent accepts (ms).
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// The agent's shell timeout when none is given (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Most logcat lines one request may ask for (the agent's limit).
pub const MAX_LOG_LINES: u32 = 5000;
/// Logcat lines when none are asked for.
pub const DEFAULT_LOG_LINES: u32 = 200;
/// Largest file a push takes. The request body is held whole in the
/// component and stored as it is (`operation_contents`) until the node's
/// agent fetches it over signed HTTP; only its length and digest travel in
/// the command on Redis. 8 MiB keeps a Spin instance's memory small.
pub const MAX_PUSH_BYTES: usize = 8 << 20;
/// Longest APK URL.
pub const MAX_URL_CHARS: usize = 2048;
/// How long a finished operation keeps its payload (file contents,
/// screenshots, logs, shell output): the agent's own replay window, after
/// which the agent drops them from its host too.
pub const PAYLOAD_WINDOW_SECS: i32 = 15 * 60;

/// What `packages` runs inside the phone.
const PACKAGES_COMMAND: &str = "pm list packages";
/// What `properties` runs inside the phone.
const PROPERTIES_COMMAND: &str = "getprop";
/// Output cap for the fixed commands: the agent's most, so that a phone
/// with many packages or properties is listed whole.
const FIXED_COMMAND_OUTPUT: usize = 1 << 20;

/// Every operation kind, lifecycle ones included (the `kind` filter of the
/// operations list).
pub const KINDS: &[&str] = &[
    "create",
    "start",
    "stop",
    "restart",
    "delete",
    "shell",
    "logcat",
    "screenshot",
    "push_file",
    "pull_file",
    "install_apk",
    "uninstall_apk",
    "packages",
    "properties",
    "snapshot",
    "restore",
    "delete_snapshot",
    "recover",
];

/// A shell command: 1 to 4096 characters, no NUL (it becomes an argument
/// of `sh -c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand(String);

impl ShellCommand {
    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a command.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let n = raw.chars().count();
        if n == 0 || n > MAX_COMMAND_CHARS || raw.contains('\0') || raw.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "command must be 1-{MAX_COMMAND_CHARS} characters, not blank, without NUL"
            )));
        }
        Ok(Self(raw.to_string()))
    }
}

/// A shell timeout in milliseconds: 1 to 300000.
pub fn timeout_ms(raw: Option<u64>) -> Result<Option<u64>, Error> {
    match raw {
        Some(t) if !(1..=MAX_TIMEOUT_MS).contains(&t) => Err(Error::Invalid(format!(
            "timeout_ms must be from 1 to {MAX_TIMEOUT_MS}"
        ))),
        t => Ok(t),
    }
}

/// Logcat's `lines`: 1 to 5000, 200 when absent.
pub fn log_lines(raw: Option<&str>) -> Result<u32, Error> {
    match raw {
        None => Ok(DEFAULT_LOG_LINES),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LINES).contains(n))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "lines must be an integer from 1 to {MAX_LOG_LINES}"
                ))
            }),
    }
}

/// A path inside the phone: absolute, without `.` or `..` segments,
/// printable ASCII, at most 1024 bytes (the agent's rule).
pub fn device_path(raw: Option<&str>) -> Result<DevicePath, Error> {
    let raw = raw.ok_or_else(|| Error::Invalid("path is required".into()))?;
    DevicePath::parse(raw).map_err(|_| {
        Error::Invalid(
            "path must be an absolute file path (printable ASCII, at most 1024 bytes) without '.' or '..' segments"
                .into(),
        )
    })
}

/// An Android package name (`com.example.app`).
pub fn package(raw: &str) -> Result<PackageName, Error> {
    PackageName::parse(raw).map_err(|_| {
        Error::Invalid(
            "package must be dotted segments of letters, digits and '_', each starting with a letter"
                .into(),
        )
    })
}

/// An APK's sha256: 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a digest.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() == 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(raw.to_string()))
        } else {
            Err(Error::Invalid(
                "sha256 must be 64 lower-case hex digits".into(),
            ))
        }
    }
}

/// Where the agent downloads an APK: an `http` or `https` URL with a host
/// and no user name or password, or a path on the control plane (`/...`,
/// which the agent resolves against the address it reaches the control
/// plane at: how `app`'s signed links travel), printable ASCII, at most
/// 2048 characters.
/// Which hosts and paths are allowed is the node's own policy
/// (`apk_url_prefixes`), checked by the agent before it connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApkUrl(String);

impl ApkUrl {
    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a URL.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Invalid(format!(
                "url must be an http or https URL with a host and without credentials, or a path beginning with /, at most {MAX_URL_CHARS} characters"
            ))
        };
        if raw.len() > MAX_URL_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        if raw.starts_with('/') && !raw.starts_with("//") {
            return Ok(Self(raw.to_string()));
        }
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .ok_or_else(bad)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if host.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        Ok(Self(raw.to_string()))
    }
}

/// A device operation, its input already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    /// `sh -c <command>` inside the phone.
    Shell {
        /// The command.
        command: ShellCommand,
        /// The agent's timeout (its default when absent).
        timeout_ms: Option<u64>,
    },
    /// The last lines of logcat.
    Logcat {
        /// How many.
        lines: u32,
    },
    /// A PNG of the screen.
    Screenshot,
    /// Write a file.
    PushFile {
        /// Where.
        path: DevicePath,
        /// Its contents (at most [`MAX_PUSH_BYTES`]); the agent fetches
        /// them apart from the command.
        content: Vec<u8>,
    },
    /// Read a file.
    PullFile {
        /// Where.
        path: DevicePath,
    },
    /// Download, check and install an APK.
    InstallApk {
        /// From where.
        url: ApkUrl,
        /// Its digest.
        sha256: Sha256Hex,
    },
    /// Remove a package.
    UninstallApk {
        /// Which.
        package: PackageName,
    },
    /// The installed packages.
    Packages,
    /// The system properties.
    Properties,
}

impl DeviceOp {
    /// The operation kind recorded for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Shell { .. } => "shell",
            Self::Logcat { .. } => "logcat",
            Self::Screenshot => "screenshot",
            Self::PushFile { .. } => "push_file",
            Self::PullFile { .. } => "pull_file",
            Self::InstallApk { .. } => "install_apk",
            Self::UninstallApk { .. } => "uninstall_apk",
            Self::Packages => "packages",
            Self::Properties => "properties",
        }
    }

    /// Seconds until the operation fails with `timeout`: the agent's own
    /// time for it, with room for a queue on a busy node (32 operations
    /// run at once) and for the report to arrive.
    pub fn timeout_secs(&self) -> i32 {
        match self {
            Self::Shell { timeout_ms, .. } => {
                let ms = timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
                ms.div_ceil(1000) as i32 + 60
            }
            // A download of up to 1 GiB, then `pm install` (300 s).
            Self::InstallApk { .. } => 900,
            _ => 120,
        }
    }

    /// The agent's operation for it, and the contents the agent fetches
    /// apart from the command (a push's file, named in the command only by
    /// its length and sha256, so that no file passes through Redis).
    pub fn into_agent(self, device_id: DeviceId) -> (AgentOp, Option<Vec<u8>>) {
        let fixed = |command: &str| AgentOp::Shell {
            device_id: device_id.clone(),
            command: command.to_string(),
            timeout_ms: None,
            max_output_bytes: Some(FIXED_COMMAND_OUTPUT),
        };
        let op = match self {
            Self::Shell {
                command,
                timeout_ms,
            } => AgentOp::Shell {
                device_id,
                command: command.0,
                timeout_ms,
                max_output_bytes: None,
            },
            Self::Logcat { lines } => AgentOp::Logcat {
                device_id,
                lines: Some(lines),
            },
            Self::Screenshot => AgentOp::Screenshot { device_id },
            Self::PushFile { path, content } => {
                let op = AgentOp::PushFile {
                    device_id,
                    path,
                    bytes: content.len() as u64,
                    sha256: agent_protocol::messages::sha256_hex(&content),
                };
                return (op, Some(content));
            }
            Self::PullFile { path } => AgentOp::PullFile { device_id, path },
            Self::InstallApk { url, sha256 } => AgentOp::InstallApk {
                device_id,
                url: url.0,
                sha256: sha256.0,
            },
            Self::UninstallApk { package } => AgentOp::UninstallApk { device_id, package },
            Self::Packages => fixed(PACKAGES_COMMAND),
            Self::Properties => fixed(PROPERTIES_COMMAND),
        };
        (op, None)
    }
}

/// Whether a device takes device operations now: it must be seen running
/// and still be meant to run. The message says why not (a 409).
pub fn ready(desired: Desired, observed: Observed) -> Result<(), String> {
    match (observed, desired) {
        (Observed::Running, Desired::Running) => Ok(()),
        (Observed::Running, Desired::Stopped) => Err("the device is stopping".into()),
        (Observed::Running, Desired::Deleted) => Err("the device is being deleted".into()),
        (observed, _) => Err(format!(
            "the device is {}, not running: start it first",
            observed.as_str()
        )),
    }
}

/// Why an operation failed: a stable code and a message.
pub type Failure = (&'static str, String);

/// What an operation of `kind` records from the agent's successful result:
/// the output itself, or for `packages` and `properties` what is parsed
/// from the fixed command's output (a command that exited non-zero fails
/// the operation).
pub fn recorded_result(
    kind: &str,
    output: &serde_json::Value,
) -> Result<serde_json::Value, Failure> {
    match kind {
        "packages" => {
            let (stdout, truncated) = fixed_output("listing packages", output)?;
            Ok(serde_json::json!({"packages": parse_packages(stdout), "truncated": truncated}))
        }
        "properties" => {
            let (stdout, truncated) = fixed_output("reading properties", output)?;
            Ok(serde_json::json!({"properties": parse_properties(stdout), "truncated": truncated}))
        }
        _ => Ok(output.clone()),
    }
}

/// The stdout of a fixed command, and whether it was cut off.
fn fixed_output<'a>(what: &str, output: &'a serde_json::Value) -> Result<(&'a str, bool), Failure> {
    match output["exit_code"].as_i64() {
        Some(0) => {}
        code => {
            let stderr: String = output["stderr"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .chars()
                .take(500)
                .collect();
            let code =
                code.map_or_else(|| "no exit code".to_string(), |c| format!("exit code {c}"));
            return Err((
                "device_command_failed",
                format!("{what} failed ({code}): {stderr}"),
            ));
        }
    }
    let stdout = output["stdout"].as_str().ok_or_else(|| {
        (
            "payload_expired",
            format!("{what}: the agent's answer no longer holds the output"),
        )
    })?;
    Ok((stdout, output["truncated"].as_bool().unwrap_or(false)))
}

/// The package names in `pm list packages` output (`package:<name>`
/// lines), sorted, each once; lines that are not a package name are skipped.
pub fn parse_packages(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("package:"))
        .map(str::trim)
        .filter(|name| PackageName::parse(name).is_ok())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The properties in `getprop` output: `[key]: [value]` lines. A value
/// may span lines (it ends at the line that ends with `]`); a value cut off
/// at the end of the output, and lines of any other shape, are skipped.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some((key, mut value)) = open.take() {
            value.push('\n');
            match line.strip_suffix(']') {
                Some(end) => {
                    value.push_str(end);
                    props.insert(key, value);
                }
                None => {
                    value.push_str(line);
                    open = Some((key, value));
                }
            }
            continue;
        }
        let Some((key, value)) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("]: ["))
        else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        match value.strip_suffix(']') {
            Some(v) => {
                props.insert(key.to_string(), v.to_string());
            }
            None => open = Some((key.to_string(), value.to_string())),
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dev() -> DeviceId {
        DeviceId::parse("d1").unwrap()
    }

    #[test]
    fn getprop_lines_become_properties_and_other_lines_are_skipped() {
        let out = "[androidboot.redroid_width]: [720]\n\
                   [ro.build.version.release]: [14]\r\n\
                   [empty]: []\n\
                   [spaced key]: [a [b] c]\n\
                   garbage line\n\
                   []: [no key]\n\
                   [multi]: [first\nsecond]\n\
                   [cut]: [never closed";
        let p = parse_properties(out);
        assert_eq!(p["androidboot.redroid_width"], "720");
        assert_eq!(p["ro.build.version.release"], "14");
        assert_eq!(p["empty"], "");
        assert_eq!(p["spaced key"], "a [b] c");
        assert_eq!(p["multi"], "first\nsecond");
        assert!(!p.contains_key("cut") && !p.contains_key(""));
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(parse_properties("").is_empty());
    }

    #[test]
    fn pm_lines_become_sorted_unique_package_names() {
        let out = "package:com.b.app\npackage:android\r\n  package:com.a_b.x \n\
                   package:com.b.app\nPackage list:\npackage:\npackage:not a name\npackage:/data/app/x.apk=com.c\n";
        assert_eq!(parse_packages(out), ["android", "com.a_b.x", "com.b.app"]);
        assert!(parse_packages("").is_empty());
    }

    #[test]
    fn packages_and_properties_record_parsed_output_and_fail_on_a_bad_exit() {
        let ok =
            json!({"exit_code": 0, "stdout": "package:com.x\n", "stderr": "", "truncated": false});
        assert_eq!(
            recorded_result("packages", &ok).unwrap(),
            json!({"packages": ["com.x"], "truncated": false})
        );
        let props =
            json!({"exit_code": 0, "stdout": "[a]: [1]\n", "stderr": "", "truncated": true});
        assert_eq!(
            recorded_result("properties", &props).unwrap(),
            json!({"properties": {"a": "1"}, "truncated": true})
        );
        let bad = json!({"exit_code": 127, "stdout": "", "stderr": "sh: pm: not found\n", "truncated": false});
        let (code, message) = recorded_result("packages", &bad).unwrap_err();
        assert_eq!(code, "device_command_failed");
        assert_eq!(
            message,
            "listing packages failed (exit code 127): sh: pm: not found"
        );
        let expired = json!({"exit_code": 0, "truncated": false});
        assert_eq!(
            recorded_result("properties", &expired).unwrap_err().0,
            "payload_expired"
        );
        // Everything else records the agent's output as it is.
        let shell = json!({"exit_code": 3, "stdout": "x", "stderr": "", "truncated": false});
        assert_eq!(recorded_result("shell", &shell).unwrap(), shell);
    }

    #[test]
    fn inputs_are_checked_against_their_rules() {
        assert!(ShellCommand::parse("echo hi").is_ok());
        assert!(ShellCommand::parse(&"x".repeat(MAX_COMMAND_CHARS)).is_ok());
        for bad in ["", "   ", "a\0b"] {
            assert!(ShellCommand::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ShellCommand::parse(&"x".repeat(MAX_COMMAND_CHARS + 1)).is_err());
        assert_eq!(timeout_ms(None).unwrap(), None);
        assert_eq!(
            timeout_ms(Some(MAX_TIMEOUT_MS)).unwrap(),
            Some(MAX_TIMEOUT_MS)
        );
        assert!(timeout_ms(Some(0)).is_err() && timeout_ms(Some(MAX_TIMEOUT_MS + 1)).is_err());
        assert_eq!(log_lines(None).unwrap(), 200);
        assert_eq!(log_lines(Some("5000")).unwrap(), 5000);
        for bad in ["0", "5001", "-1", "x", ""] {
            assert!(log_lines(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(device_path(Some("/data/local/tmp/a b.txt")).is_ok());
        for bad in [
            None,
            Some(""),
            Some("rel/x"),
            Some("/"),
            Some("/a/../b"),
            Some("/a/./b"),
            Some("/a/"),
            Some("/a\nb"),
        ] {
            assert!(device_path(bad).is_err(), "{bad:?}");
        }
        assert!(package("com.example.app").is_ok());
        for bad in ["", "com..x", "1com.x", "com.ex-ample", "com.x."] {
            assert!(package(bad).is_err(), "{bad:?}");
        }
        let digest = "0123456789abcdef".repeat(4);
        assert!(Sha256Hex::parse(&digest).is_ok());
        for bad in [
            digest.to_uppercase(),
            digest[1..].to_string(),
            format!("{}g", &digest[1..]),
        ] {
            assert!(Sha256Hex::parse(&bad).is_err(), "{bad:?}");
        }
        for ok in [
            "http://cp.example/apks/a.apk",
            "https://10.0.0.1:8443/a.apk?x=1",
            "/api/v1/app/files/x?expires=1&sig=ab",
        ] {
            assert!(ApkUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://cp.example/a.apk",
            "cp.example/a.apk",
            "http:///a.apk",
            "http://:80/a.apk",
            "http://user:pw@cp.example/a.apk",
            "http://cp.example/a b.apk",
            "HTTP://cp.example/a.apk",
            "//cp.example/a.apk",
        ] {
            assert!(ApkUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(ApkUrl::parse(&format!("http://h/{}", "a".repeat(MAX_URL_CHARS))).is_err());
    }

    #[test]
    fn each_operation_has_its_kind_deadline_and_agent_command() {
        let shell = DeviceOp::Shell {
            command: ShellCommand::parse("echo hi").unwrap(),
            timeout_ms: Some(1500),
        };
        assert_eq!((shell.kind(), shell.timeout_secs()), ("shell", 62));
        assert_eq!(
            serde_json::to_value(shell.into_agent(dev()).0).unwrap(),
            json!({"op": "shell", "device_id": "d1", "command": "echo hi", "timeout_ms": 1500, "max_output_bytes": null})
        );
        // packages and properties are fixed shell commands under their own kind.
        for (op, kind, command) in [
            (DeviceOp::Packages, "packages", "pm list packages"),
            (DeviceOp::Properties, "properties", "getprop"),
        ] {
            assert_eq!(op.kind(), kind);
            let v = serde_json::to_value(op.into_agent(dev()).0).unwrap();
            assert_eq!(
                (v["op"].as_str(), v["command"].as_str()),
                (Some("shell"), Some(command))
            );
            assert_eq!(v["max_output_bytes"], 1 << 20);
        }
        let push = DeviceOp::PushFile {
            path: device_path(Some("/sdcard/a.bin")).unwrap(),
            content: vec![0, 1, 2, 255],
        };
        assert_eq!(push.kind(), "push_file");
        let (op, content) = push.into_agent(dev());
        // The digest was computed with coreutils' sha256sum.
        assert_eq!(
            serde_json::to_value(op).unwrap(),
            json!({"op": "push_file", "device_id": "d1", "path": "/sdcard/a.bin", "bytes": 4,
                   "sha256": "3d1f57c984978ef98a18378c8166c1cb8ede02c03eeb6aee7e2f121dfeee3e56"})
        );
        assert_eq!(content, Some(vec![0, 1, 2, 255]));
        let install = DeviceOp::InstallApk {
            url: ApkUrl::parse("http://cp.example/a.apk").unwrap(),
            sha256: Sha256Hex::parse(&"a".repeat(64)).unwrap(),
        };
        assert_eq!(
            (install.kind(), install.timeout_secs()),
            ("install_apk", 900)
        );
        for op in [
            DeviceOp::Logcat { lines: 10 },
            DeviceOp::Screenshot,
            DeviceOp::PullFile {
                path: device_path(Some("/a")).unwrap(),
            },
            DeviceOp::UninstallApk {
                package: package("com.x").unwrap(),
            },
        ] {
            let kind = op.kind();
            assert!(KINDS.contains(&kind));
            assert_eq!(
                serde_json::to_value(op.into_agent(dev()).0).unwrap()["op"],
                kind
            );
        }
    }

    #[test]
    fn only_a_running_device_that_is_meant_to_run_takes_operations() {
        assert!(ready(Desired::Running, Observed::Running).is_ok());
        assert_eq!(
            ready(Desired::Running, Observed::Booting).unwrap_err(),
            "the device is booting, not running: start it first"
        );
        assert_eq!(
            ready(Desired::Stopped, Observed::Running).unwrap_err(),
            "the device is stopping"
        );
        assert!(ready(Desired::Deleted, Observed::Running).is_err());
        assert!(ready(Desired::Stopped, Observed::Stopped).is_err());
    }
}
