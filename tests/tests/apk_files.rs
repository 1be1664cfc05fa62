//! Real APKs, made with Debian's Android tools (`e2e::apks`), read by
//! `apk::inspect` and compared with what `aapt dump badging` and
//! `apksigner verify --print-certs` say about the same files; and damaged
//! or hostile ones refused with their reason.

use e2e::apks::{run, write, ApkTools, MANIFEST};
use std::path::Path;
use std::process::Command;

/// The value of `key='…'` in aapt's badging line starting with `prefix`.
fn badging(text: &str, prefix: &str, key: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    let rest = if key.is_empty() {
        line.strip_prefix(prefix)?
    } else {
        line.split(&format!("{key}='")).nth(1)?
    };
    Some(rest.trim_start_matches('\'').split('\'').next()?.to_owned())
}

fn inspect(path: &Path) -> Result<apk::ApkInfo, apk::ApkError> {
    apk::inspect(&std::fs::read(path).unwrap())
}

#[test]
fn what_inspect_reads_is_what_aapt_and_apksigner_say() {
    let tools = ApkTools::new();
    let path = tools.apk(
        "hello",
        MANIFEST,
        &["arm64-v8a", "x86_64"],
        Some([true, true, true]),
    );
    let info = inspect(&path).expect("a valid APK");
    let dump = run(Command::new("aapt").args(["dump", "badging"]).arg(&path));
    assert_eq!(
        Some(info.package.clone()),
        badging(&dump, "package:", "name")
    );
    assert_eq!(
        Some(info.version_code.to_string()),
        badging(&dump, "package:", "versionCode")
    );
    assert_eq!(info.version_name, badging(&dump, "package:", "versionName"));
    assert_eq!(
        Some(info.min_sdk.to_string()),
        badging(&dump, "sdkVersion:", "")
    );
    assert_eq!(
        info.target_sdk.map(|n| n.to_string()),
        badging(&dump, "targetSdkVersion:", "")
    );
    assert_eq!(info.label, badging(&dump, "application-label:", ""));
    assert_eq!(info.icon, badging(&dump, "application-icon-160:", ""));
    let permissions: Vec<String> = dump
        .lines()
        .filter(|l| l.starts_with("uses-permission:"))
        .filter_map(|l| badging(l, "uses-permission:", "name"))
        .collect();
    assert_eq!(info.permissions, permissions);
    let native: Vec<String> = dump
        .lines()
        .find(|l| l.starts_with("native-code:"))
        .map(|l| {
            l["native-code:".len()..]
                .split('\'')
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(info.abis, native);
    // The values themselves, so a parser and aapt that agreed on nothing fail.
    assert_eq!(
        (
            info.package.as_str(),
            info.version_code,
            info.label.as_deref()
        ),
        ("com.example.hello", 42, Some("Hello Cloud"))
    );

    let certs = run(Command::new("apksigner")
        .args(["verify", "--print-certs", "-v"])
        .arg(&path));
    let digest = certs
        .lines()
        .find_map(|l| l.strip_prefix("Signer #1 certificate SHA-256 digest: "))
        .expect("apksigner prints the digest");
    assert_eq!(info.signing.certificate_sha256.as_deref(), Some(digest));
    let scheme = |n: &str| {
        certs.contains(&format!("Verified using {n} scheme"))
            && certs.lines().any(|l| {
                l.starts_with(&format!("Verified using {n} scheme")) && l.ends_with("true")
            })
    };
    assert_eq!(
        (info.signing.v1, info.signing.v2, info.signing.v3),
        (scheme("v1"), scheme("v2"), scheme("v3"))
    );
    assert!(info.signing.v1 && info.signing.v2 && info.signing.v3);

    // v1 alone: the certificate comes from the JAR signature block.
    let v1 = tools.apk("v1only", MANIFEST, &[], Some([true, false, false]));
    let info = inspect(&v1).unwrap();
    assert_eq!(
        (info.signing.v1, info.signing.v2, info.signing.v3),
        (true, false, false)
    );
    assert_eq!(info.signing.certificate_sha256.as_deref(), Some(digest));
    assert!(info.abis.is_empty());

    // Unsigned: read, and said to be unsigned.
    let unsigned = tools.apk("unsigned", MANIFEST, &[], None);
    let info = inspect(&unsigned).unwrap();
    assert_eq!(info.signing, apk::Signing::default());
}

#[test]
fn damaged_and_hostile_files_are_refused_with_the_reason() {
    let tools = ApkTools::new();
    let good = std::fs::read(tools.apk("hello", MANIFEST, &[], Some([true, true, false]))).unwrap();
    // Not a zip.
    assert_eq!(
        apk::inspect(&b"hello, this is text".to_vec()),
        Err(apk::ApkError::NotZip)
    );
    // Truncated: the end record is gone, or the directory is.
    assert!(matches!(
        apk::inspect(&good[..good.len() / 2].to_vec()),
        Err(apk::ApkError::Truncated(_))
    ));
    let tail = good.len() - 22;
    let mut cut = good[..100].to_vec();
    cut.extend_from_slice(&good[tail..]);
    assert!(matches!(
        apk::inspect(&cut),
        Err(apk::ApkError::Truncated(_))
    ));
    // A flipped byte inside the manifest's data fails its CRC or its inflate.
    let name = b"AndroidManifest.xml";
    let at = good
        .windows(name.len())
        .position(|w| w == name)
        .expect("the local header names the manifest");
    let mut flipped = good.clone();
    flipped[at + name.len() + 10] ^= 0xff;
    assert!(
        matches!(apk::inspect(&flipped), Err(apk::ApkError::Corrupt(_))),
        "{:?}",
        apk::inspect(&flipped)
    );
    // A zip without a manifest.
    let dir = ApkTools::new();
    write(&dir.dir.as_path().join("readme.txt"), b"no manifest here");
    let zip = dir.dir.as_path().join("plain.zip");
    run(Command::new("aapt")
        .current_dir(dir.dir.as_path())
        .arg("add")
        .arg(&zip)
        .arg("readme.txt"));
    assert_eq!(
        apk::inspect(&std::fs::read(&zip).unwrap()),
        Err(apk::ApkError::NoManifest)
    );
    // A zip bomb: an entry of 1 GiB of zeros, deflated to about a megabyte.
    let zeros = dir.dir.as_path().join("zeros.bin");
    let f = std::fs::File::create(&zeros).unwrap();
    f.set_len(1 << 30).unwrap();
    let bomb = dir.dir.as_path().join("bomb.apk");
    std::fs::copy(tools.dir.as_path().join("hello.apk"), &bomb).unwrap();
    run(Command::new("aapt")
        .current_dir(dir.dir.as_path())
        .arg("add")
        .arg(&bomb)
        .arg("zeros.bin"));
    assert!(matches!(
        apk::inspect(&std::fs::read(&bomb).unwrap()),
        Err(apk::ApkError::Bomb(_))
    ));
}
