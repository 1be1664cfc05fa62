//! A local Alipay for the payment tests (Alipay cannot be reached from
//! here): keys made with the `openssl` command, the merchant's page-pay
//! request checked and Alipay's asynchronous notifications signed with it,
//! exactly as Alipay documents RSA2: SHA256withRSA (PKCS#1 v1.5) over the
//! parameters with a non-empty value, but `sign` (and, in a notification,
//! `sign_type`), sorted by name, joined `name=value` with `&`. The signer is
//! OpenSSL, not `billing`'s code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The app id the tests configure.
pub const APP_ID: &str = "2021000000000001";
/// Where the payer would be sent (never reached).
pub const GATEWAY: &str = "https://openapi.alipay.test/gateway.do";

/// The merchant's and Alipay's key pairs, in a scratch directory.
pub struct Keys {
    dir: PathBuf,
    /// The merchant's private key, PKCS#8 DER in base64 (as Alipay's
    /// tools give it).
    pub merchant_private: String,
    /// Alipay's public key, SPKI DER in base64 (as Alipay's console shows it).
    pub alipay_public: String,
}

fn openssl(args: &[&str], input: Option<&Path>) -> Vec<u8> {
    let mut c = Command::new("openssl");
    c.args(args);
    if let Some(i) = input {
        c.stdin(std::fs::File::open(i).expect("input"));
    }
    let out = c.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64 runs");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    String::from_utf8(c.wait_with_output().expect("base64").stdout).expect("ascii")
}

impl Keys {
    /// Makes two 2048-bit RSA key pairs.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("alipay-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        for who in ["merchant", "alipay"] {
            let key = dir.join(format!("{who}.pem"));
            openssl(
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    key.to_str().expect("utf-8"),
                ],
                None,
            );
            let public = dir.join(format!("{who}.pub.pem"));
            openssl(
                &[
                    "pkey",
                    "-in",
                    key.to_str().expect("utf-8"),
                    "-pubout",
                    "-out",
                    public.to_str().expect("utf-8"),
                ],
                None,
            );
        }
        let path = |f: &str| dir.join(f).to_str().expect("utf-8").to_string();
        let merchant_private = b64(&openssl(
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &path("merchant.pem"),
                "-outform",
                "DER",
            ],
            None,
        ));
        let alipay_public = b64(&openssl(
            &[
                "pkey",
                "-in",
                &path("alipay.pem"),
                "-pubout",
                "-outform",
                "DER",
            ],
            None,
        ));
        Self {
            dir,
            merchant_private,
            alipay_public,
        }
    }

    /// The settings that enable Alipay in `billing`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("SPIN_VARIABLE_ALIPAY_GATEWAY".into(), GATEWAY.into()),
            ("SPIN_VARIABLE_ALIPAY_APP_ID".into(), APP_ID.into()),
            (
                "SPIN_VARIABLE_ALIPAY_PRIVATE_KEY".into(),
                self.merchant_private.clone(),
            ),
            (
                "SPIN_VARIABLE_ALIPAY_PUBLIC_KEY".into(),
                self.alipay_public.clone(),
            ),
            (
                "SPIN_VARIABLE_ALIPAY_NOTIFY_URL".into(),
                "https://cloudphone.test/api/v1/billing/webhooks/alipay".into(),
            ),
        ]
    }

    /// Checks a page-pay URL's signature with the merchant's public key, as
    /// Alipay would, and returns its parameters.
    pub fn verify_request(&self, url: &str) -> BTreeMap<String, String> {
        let query = url
            .strip_prefix(&format!("{GATEWAY}?"))
            .expect("the gateway's URL");
        let params = crate::form::parse(query);
        let sign = params.get("sign").expect("a sign").clone();
        let ok = self.openssl_verify("merchant.pub.pem", &content(&params, false), &sign);
        assert!(ok, "the merchant's request signature does not verify");
        params
    }

    fn openssl_verify(&self, public: &str, content: &str, sign_b64: &str) -> bool {
        let data = self.dir.join("content.txt");
        std::fs::write(&data, content).expect("write");
        let sig_b64 = self.dir.join("sig.b64");
        std::fs::write(&sig_b64, sign_b64).expect("write");
        let sig = self.dir.join("sig.bin");
        openssl(
            &[
                "base64",
                "-d",
                "-A",
                "-in",
                sig_b64.to_str().expect("utf-8"),
                "-out",
                sig.to_str().expect("utf-8"),
            ],
            None,
        );
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                self.dir.join(public).to_str().expect("utf-8"),
                "-signature",
                sig.to_str().expect("utf-8"),
                data.to_str().expect("utf-8"),
            ])
            .output()
            .expect("openssl runs")
            .status
            .success()
    }

    /// A notification form body signed with Alipay's key (`by_merchant`:
    /// with the merchant's instead, a forgery).
    pub fn notification(&self, params: &BTreeMap<String, String>, by_merchant: bool) -> Vec<u8> {
        let data = self.dir.join("notify.txt");
        std::fs::write(&data, content(params, true)).expect("write");
        let key = if by_merchant {
            "merchant.pem"
        } else {
            "alipay.pem"
        };
        let sig = openssl(
            &[
                "dgst",
                "-sha256",
                "-sign",
                self.dir.join(key).to_str().expect("utf-8"),
                data.to_str().expect("utf-8"),
            ],
            None,
        );
        let mut all = params.clone();
        all.insert("sign".into(), b64(&sig));
        crate::form::write(&all).into_bytes()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The parameters of a notification about trade `out_trade_no`.
pub fn notify(
    notify_id: &str,
    out_trade_no: &str,
    status: &str,
    amount: &str,
    sent_unix: i64,
) -> BTreeMap<String, String> {
    let time = beijing(sent_unix);
    [
        ("notify_id", notify_id),
        ("notify_type", "trade_status_sync"),
        ("notify_time", &time),
        ("app_id", APP_ID),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("trade_no", "2026120722001400000000000001"),
        ("out_trade_no", out_trade_no),
        ("trade_status", status),
        ("total_amount", amount),
        ("receipt_amount", amount),
        ("subject", "cloudphone"),
        ("gmt_payment", &time),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time.
pub fn beijing(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix + 8 * 3600, 0)
        .expect("a time")
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn content(params: &BTreeMap<String, String>, notification: bool) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign" && !(notification && *k == "sign_type"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}
