//! Real APKs, made in the test with Debian's Android tools (`aapt`,
//! `zipalign`, `apksigner`, installed by `cargo xtask setup`), read by
//! `apk::inspect` and compared with what `aapt dump badging` and
//! `apksigner verify --print-certs` say about the same files; and damaged
//! ones refused.
//!
//! Debian has no `android.jar`, so the test first builds a stand-in
//! framework package with `aapt package -x`: the `android:` attributes a
//! manifest uses, pinned to their real framework ids with `public.xml`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `cargo xtask setup` for the Android tools)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(path: &Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const FRAMEWORK_ATTRS: &[(&str, &str, &str)] = &[
    ("label", "string|reference", "0x01010001"),
    ("icon", "reference", "0x01010002"),
    ("name", "string", "0x01010003"),
    ("minSdkVersion", "integer|string", "0x0101020c"),
    ("versionCode", "integer", "0x0101021b"),
    ("versionName", "string", "0x0101021c"),
    ("targetSdkVersion", "integer|string", "0x01010270"),
];

/// A 1×1 PNG.
fn png() -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let crc = apk::crc32(&[kind, data].concat());
        c.extend_from_slice(&crc.to_be_bytes());
        c
    }
    // An uncompressed deflate stream of one scanline (filter 0, one RGB pixel).
    let raw = [0u8, 0xff, 0, 0];
    let mut z = vec![0x78, 0x01, 0x01, 4, 0, !4u8, 0xff];
    z.extend_from_slice(&raw);
    let adler = {
        let (mut a, mut b) = (1u32, 0u32);
        for x in raw {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    };
    z.extend_from_slice(&adler.to_be_bytes());
    let mut ihdr = 1u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    [
        b"\x89PNG\r\n\x1a\n".to_vec(),
        chunk(b"IHDR", &ihdr),
        chunk(b"IDAT", &z),
        chunk(b"IEND", &[]),
    ]
    .concat()
}

struct Tools {
    dir: tempfile::TempDir,
    framework: PathBuf,
    keystore: PathBuf,
}

impl Tools {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fw = dir.path().join("fw");
        write(
            &fw.join("AndroidManifest.xml"),
            b"<manifest package=\"android\"/>",
        );
        let (mut attrs, mut public) = (String::new(), String::new());
        for (name, format, id) in FRAMEWORK_ATTRS {
            attrs.push_str(&format!("<attr name=\"{name}\" format=\"{format}\"/>\n"));
            public.push_str(&format!(
                "<public type=\"attr\" name=\"{name}\" id=\"{id}\"/>\n"
            ));
        }
        write(
            &fw.join("res/values/attrs.xml"),
            format!("<resources>\n{attrs}</resources>").as_bytes(),
        );
        write(
            &fw.join("res/values/public.xml"),
            format!("<resources>\n{public}</resources>").as_bytes(),
        );
        let framework = dir.path().join("framework.apk");
        run(Command::new("aapt")
            .args(["package", "-f", "-x", "-M"])
            .arg(fw.join("AndroidManifest.xml"))
            .arg("-S")
            .arg(fw.join("res"))
            .arg("-F")
            .arg(&framework));
        let keystore = dir.path().join("ks.p12");
        run(Command::new("keytool")
            .args(["-genkeypair", "-keystore"])
            .arg(&keystore)
            .args([
                "-storetype",
                "PKCS12",
                "-storepass",
                "secret",
                "-keypass",
                "secret",
                "-alias",
                "k",
                "-keyalg",
                "RSA",
                "-keysize",
                "2048",
                "-dname",
                "CN=cloudphone-test",
                "-validity",
                "1000",
            ]));
        Self {
            dir,
            framework,
            keystore,
        }
    }

    /// Builds, aligns and signs an APK from `manifest` (with a label string,
    /// an icon and native libraries for `abis`); `schemes` are apksigner's
    /// `--v1/v2/v3-signing-enabled`; `None` leaves it unsigned.
    fn apk(
        &self,
        name: &str,
        manifest: &str,
        abis: &[&str],
        schemes: Option<[bool; 3]>,
    ) -> PathBuf {
        let src = self.dir.path().join(name);
        write(&src.join("AndroidManifest.xml"), manifest.as_bytes());
        write(
            &src.join("res/values/strings.xml"),
            b"<resources><string name=\"app_name\">Hello Cloud</string></resources>",
        );
        write(&src.join("res/drawable/icon.png"), &png());
        let unsigned = self.dir.path().join(format!("{name}.unsigned.apk"));
        run(Command::new("aapt")
            .args(["package", "-f", "-M"])
            .arg(src.join("AndroidManifest.xml"))
            .arg("-S")
            .arg(src.join("res"))
            .arg("-I")
            .arg(&self.framework)
            .arg("-F")
            .arg(&unsigned));
        for abi in abis {
            let lib = format!("lib/{abi}/libhello.so");
            write(&src.join(&lib), b"\x7fELF not really");
            run(Command::new("aapt")
                .current_dir(&src)
                .arg("add")
                .arg(&unsigned)
                .arg(&lib));
        }
        let aligned = self.dir.path().join(format!("{name}.aligned.apk"));
        run(Command::new("zipalign")
            .args(["-f", "4"])
            .arg(&unsigned)
            .arg(&aligned));
        let Some([v1, v2, v3]) = schemes else {
            return aligned;
        };
        let out = self.dir.path().join(format!("{name}.apk"));
        run(Command::new("apksigner")
            .args(["sign", "--ks"])
            .arg(&self.keystore)
            .args(["--ks-pass", "pass:secret", "--min-sdk-version", "21"])
            .args(["--v1-signing-enabled", &v1.to_string()])
            .args(["--v2-signing-enabled", &v2.to_string()])
            .args(["--v3-signing-enabled", &v3.to_string()])
            .arg("--out")
            .arg(&out)
            .arg(&aligned));
        out
    }
}

const MANIFEST: &str = r#"<manifest xmlns:android="http://schemas.android.com/apk/res/android"
    package="com.example.hello" android:versionCode="42" android:versionName="1.2.3">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="30"/>
  <uses-permission android:name="android.permission.INTERNET"/>
  <uses-permission android:name="android.permission.CAMERA"/>
  <application android:label="@string/app_name" android:icon="@drawable/icon"/>
</manifest>"#;

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
    let tools = Tools::new();
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
    let tools = Tools::new();
    let good = std::fs::read(tools.apk("hello", MANIFEST, &[], Some([true, true, false]))).unwrap();
    // Not a zip.
    assert_eq!(
        apk::inspect(&b"hello, this is text".to_vec()),
        Err(apk::ApkError::NotZip)
    );
    // Truncated: the end record is gone, or the directory is.
    assert_eq!(
        apk::inspect(&good[..good.len() / 2].to_vec()),
        Err(apk::ApkError::NotZip)
    );
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
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("readme.txt"), b"no manifest here");
    let zip = dir.path().join("plain.zip");
    run(Command::new("aapt")
        .current_dir(dir.path())
        .arg("add")
        .arg(&zip)
        .arg("readme.txt"));
    assert_eq!(
        apk::inspect(&std::fs::read(&zip).unwrap()),
        Err(apk::ApkError::NoManifest)
    );
    // A zip bomb: an entry of 1 GiB of zeros, deflated to about a megabyte.
    let zeros = dir.path().join("zeros.bin");
    let f = std::fs::File::create(&zeros).unwrap();
    f.set_len(1 << 30).unwrap();
    let bomb = dir.path().join("bomb.apk");
    std::fs::copy(tools.dir.path().join("hello.apk"), &bomb).unwrap();
    run(Command::new("aapt")
        .current_dir(dir.path())
        .arg("add")
        .arg(&bomb)
        .arg("zeros.bin"));
    assert!(matches!(
        apk::inspect(&std::fs::read(&bomb).unwrap()),
        Err(apk::ApkError::Bomb(_))
    ));
}
