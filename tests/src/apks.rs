//! Real APKs for tests, made with Debian's Android tools (`aapt`,
//! `zipalign`, `apksigner`, `keytool`; installed by `cargo xtask setup`).
//!
//! Debian has no `android.jar`, so [`ApkTools::new`] first builds a
//! stand-in framework package with `aapt package -x`: the `android:`
//! attributes a manifest uses, pinned to their real framework ids with
//! `public.xml`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a tool; its stdout (panics with its output when it fails).
pub fn run(cmd: &mut Command) -> String {
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

/// Writes a file, making its directory.
pub fn write(path: &Path, text: &[u8]) {
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
pub fn png() -> Vec<u8> {
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

/// A work directory with the stand-in framework and a signing key.
pub struct ApkTools {
    /// Where everything is made.
    pub dir: PathBuf,
    framework: PathBuf,
    keystore: PathBuf,
}

impl Default for ApkTools {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ApkTools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ApkTools {
    /// The framework stand-in and a 2048-bit RSA key (`CN=cloudphone-test`).
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("apk-tools-{}", uuid::Uuid::new_v4().simple()));
        let fw = dir.join("fw");
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
        let framework = dir.join("framework.apk");
        run(Command::new("aapt")
            .args(["package", "-f", "-x", "-M"])
            .arg(fw.join("AndroidManifest.xml"))
            .arg("-S")
            .arg(fw.join("res"))
            .arg("-F")
            .arg(&framework));
        let keystore = dir.join("ks.p12");
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

    /// An APK of `manifest` with native code for `abis` and an
    /// incompressible asset of `mib` MiB (stored, as media is), signed with
    /// apksigner's default schemes: one that travels in several chunks.
    pub fn big_apk(&self, name: &str, manifest: &str, abis: &[&str], mib: usize) -> PathBuf {
        let mut x: u32 = 0x1234_5678;
        let noise: Vec<u8> = (0..mib << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        self.with_asset(name, manifest, abis, "assets/noise.bin", &noise)
    }

    /// An APK of `manifest` the test image's `pm` installs: it names its
    /// package in a stored (uncompressed) `package=<name>` asset, which is
    /// how that `pm` tells what it installed.
    pub fn installable(&self, name: &str, manifest: &str, package: &str) -> PathBuf {
        let marker = format!("package={package}\n");
        self.with_asset(name, manifest, &[], "assets/pm.txt", marker.as_bytes())
    }

    /// An APK of `manifest` and `abis` with one more file, stored
    /// uncompressed, signed with apksigner's default schemes.
    fn with_asset(
        &self,
        name: &str,
        manifest: &str,
        abis: &[&str],
        path: &str,
        bytes: &[u8],
    ) -> PathBuf {
        let unsigned = self.apk(name, manifest, abis, None);
        let assets = self.dir.join(format!("{name}-assets"));
        write(&assets.join(path), bytes);
        let ext = path.rsplit('.').next().unwrap_or_default();
        run(Command::new("aapt")
            .current_dir(&assets)
            .args(["add", "-0", ext])
            .arg(&unsigned)
            .arg(path));
        let signed = self.dir.join(format!("{name}-signed.apk"));
        run(Command::new("apksigner")
            .args(["sign", "--ks"])
            .arg(&self.keystore)
            .args([
                "--ks-pass",
                "pass:secret",
                "--min-sdk-version",
                "21",
                "--out",
            ])
            .arg(&signed)
            .arg(&unsigned));
        signed
    }

    /// Builds, aligns and signs an APK from `manifest` (with a label string,
    /// an icon and native libraries for `abis`); `schemes` are apksigner's
    /// `--v1/v2/v3-signing-enabled`; `None` leaves it unsigned.
    pub fn apk(
        &self,
        name: &str,
        manifest: &str,
        abis: &[&str],
        schemes: Option<[bool; 3]>,
    ) -> PathBuf {
        let src = self.dir.join(name);
        write(&src.join("AndroidManifest.xml"), manifest.as_bytes());
        write(
            &src.join("res/values/strings.xml"),
            b"<resources><string name=\"app_name\">Hello Cloud</string></resources>",
        );
        write(&src.join("res/drawable/icon.png"), &png());
        let unsigned = self.dir.join(format!("{name}.unsigned.apk"));
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
        let aligned = self.dir.join(format!("{name}.aligned.apk"));
        run(Command::new("zipalign")
            .args(["-f", "4"])
            .arg(&unsigned)
            .arg(&aligned));
        let Some([v1, v2, v3]) = schemes else {
            return aligned;
        };
        let out = self.dir.join(format!("{name}.apk"));
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

/// A manifest with a version, SDK levels, two permissions, a label and an icon.
pub const MANIFEST: &str = r#"<manifest xmlns:android="http://schemas.android.com/apk/res/android"
    package="com.example.hello" android:versionCode="42" android:versionName="1.2.3">
  <uses-sdk android:minSdkVersion="21" android:targetSdkVersion="30"/>
  <uses-permission android:name="android.permission.INTERNET"/>
  <uses-permission android:name="android.permission.CAMERA"/>
  <application android:label="@string/app_name" android:icon="@drawable/icon"/>
</manifest>"#;

/// Uploads `bytes` in chunks as `token`; the completion's answer.
pub fn upload(
    app: &crate::TestApp,
    token: &str,
    bytes: &[u8],
    complete: serde_json::Value,
) -> reqwest::blocking::Response {
    let u = crate::expect_json(
        app.post(
            "/api/v1/app/uploads",
            &serde_json::json!({"size": bytes.len()}),
            Some(token),
        ),
        201,
    );
    let id = u["id"].as_str().unwrap();
    let chunk = u["chunk_bytes"].as_u64().unwrap() as usize;
    assert_eq!(
        u["chunks"].as_u64().unwrap() as usize,
        bytes.len().div_ceil(chunk)
    );
    for (seq, part) in bytes.chunks(chunk).enumerate() {
        let r = app.call_raw(
            "PUT",
            &format!("/api/v1/app/uploads/{id}/chunks/{seq}"),
            "application/octet-stream",
            part.to_vec(),
            Some(token),
        );
        assert_eq!(r.status(), 204, "chunk {seq}");
    }
    app.post(
        &format!("/api/v1/app/uploads/{id}/complete"),
        &complete,
        Some(token),
    )
}
