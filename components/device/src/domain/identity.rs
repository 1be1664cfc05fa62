//! What a device says it is and how it reaches the network, set through
//! redroid's boot arguments (docs/agent-protocol.md): the Android properties
//! users ask for (brand, manufacturer, model, device, product name, build
//! fingerprint, serial number) and a per-device proxy and DNS servers.
//!
//! redroid reads an HTTP proxy (`static`) or a PAC file (`pac`) and DNS
//! servers from its boot arguments; it reads no SOCKS proxy, so one is
//! refused rather than silently ignored. The Android id (`Settings.Secure`)
//! is no boot property: Android makes a new one when `/data` is wiped, which
//! is what renewing a device does.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The properties a device reports about itself; each optional (absent:
/// the image's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `ro.product.brand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// `ro.product.manufacturer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// `ro.product.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `ro.product.device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `ro.product.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// `ro.build.fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `ro.serialno` (through `androidboot.serialno`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// A proxy redroid applies to the whole device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Proxy {
    /// An HTTP proxy (redroid's `static`), with hosts that bypass it.
    Http {
        /// Host name or address.
        host: String,
        /// Port, 1-65535.
        port: u16,
        /// Hosts reached directly (at most 32).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// A proxy auto-config file.
    Pac {
        /// The PAC file's http(s) URL.
        url: String,
    },
}

/// A device's network settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Its proxy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    /// DNS servers (IPv4 or IPv6 addresses), at most 4; empty: the host's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
}

/// What a property value may be: 1-92 printable ASCII characters (Android's
/// property value limit), no quotes or backslashes.
fn value_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 92
        && v.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'))
        && v.trim() == v
}

/// A host name or address: 1-253 of letters, digits, `.`, `-`, `:` (IPv6).
fn host_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && !h.starts_with(['-', '.'])
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

impl Identity {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in self.fields() {
            if let Some(v) = v {
                let ok = if name == "serial" {
                    !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric())
                } else if name == "fingerprint" {
                    value_ok(v) && !v.contains(' ')
                } else {
                    value_ok(v)
                };
                if !ok {
                    return Err(Error::Invalid(format!(
                        "identity.{name} must be {}",
                        match name {
                            "serial" => "1-32 letters and digits",
                            "fingerprint" => "1-92 printable characters without spaces or quotes",
                            _ => "1-92 printable characters without quotes or backslashes",
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    fn fields(&self) -> [(&'static str, Option<&String>); 7] {
        [
            ("brand", self.brand.as_ref()),
            ("manufacturer", self.manufacturer.as_ref()),
            ("model", self.model.as_ref()),
            ("device", self.device.as_ref()),
            ("product", self.product.as_ref()),
            ("fingerprint", self.fingerprint.as_ref()),
            ("serial", self.serial.as_ref()),
        ]
    }

    /// The boot arguments that set it.
    pub fn boot_args(&self, out: &mut BTreeMap<String, String>) {
        for (name, v) in self.fields() {
            if let Some(v) = v {
                let key = match name {
                    "fingerprint" => "ro.build.fingerprint".to_string(),
                    "serial" => "androidboot.serialno".to_string(),
                    "product" => "ro.product.name".to_string(),
                    other => format!("ro.product.{other}"),
                };
                out.insert(key, v.clone());
            }
        }
    }

    /// A serial number no other device is likely to have: 16 upper-case hex
    /// digits from `random`.
    pub fn fresh_serial(random: [u8; 8]) -> String {
        random.iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl Network {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), Error> {
        if self.dns.len() > 4 {
            return Err(Error::Invalid("network.dns takes at most 4 servers".into()));
        }
        match &self.proxy {
            None => {}
            Some(Proxy::Http {
                host,
                port,
                exclude,
            }) => {
                if !host_ok(host) {
                    return Err(Error::Invalid(
                        "network.proxy.host must be a host name or address".into(),
                    ));
                }
                if *port == 0 {
                    return Err(Error::Invalid("network.proxy.port must be 1-65535".into()));
                }
                if exclude.len() > 32
                    || exclude
                        .iter()
                        .any(|h| !host_ok(h.strip_prefix("*.").unwrap_or(h)))
                {
                    return Err(Error::Invalid(
                        "network.proxy.exclude takes at most 32 host names (*.example.com allowed)"
                            .into(),
                    ));
                }
            }
            Some(Proxy::Pac { url }) => {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.len() <= 512
                    && url
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b','));
                if !ok {
                    return Err(Error::Invalid(
                        "network.proxy.url must be an http(s) URL of at most 512 characters".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The boot arguments that set it (redroid's `androidboot.redroid_net_*`).
    pub fn boot_args(&self, out: &mut BTreeMap<String, String>) {
        if !self.dns.is_empty() {
            out.insert(
                "androidboot.redroid_net_ndns".into(),
                self.dns.len().to_string(),
            );
            for (i, ip) in self.dns.iter().enumerate() {
                out.insert(
                    format!("androidboot.redroid_net_dns{}", i + 1),
                    ip.to_string(),
                );
            }
        }
        match &self.proxy {
            None => {}
            Some(Proxy::Http {
                host,
                port,
                exclude,
            }) => {
                out.insert("androidboot.redroid_net_proxy_type".into(), "static".into());
                out.insert("androidboot.redroid_net_proxy_host".into(), host.clone());
                out.insert(
                    "androidboot.redroid_net_proxy_port".into(),
                    port.to_string(),
                );
                if !exclude.is_empty() {
                    out.insert(
                        "androidboot.redroid_net_proxy_exclude_list".into(),
                        exclude.join(","),
                    );
                }
            }
            Some(Proxy::Pac { url }) => {
                out.insert("androidboot.redroid_net_proxy_type".into(), "pac".into());
                out.insert("androidboot.redroid_net_proxy_pac".into(), url.clone());
            }
        }
    }
}

/// Parses a network setting from JSON, naming a SOCKS proxy's refusal.
pub fn parse_network(v: serde_json::Value) -> Result<Network, Error> {
    if v.pointer("/proxy/type")
        .and_then(|t| t.as_str())
        .is_some_and(|t| t.starts_with("socks"))
    {
        return Err(Error::Invalid(
            "network.proxy.type socks is not supported: redroid reads only an http proxy or a pac file from its boot parameters".into(),
        ));
    }
    let n: Network =
        serde_json::from_value(v).map_err(|e| Error::Invalid(format!("network: {e}")))?;
    n.validate()?;
    Ok(n)
}

/// Parses an identity from JSON.
pub fn parse_identity(v: serde_json::Value) -> Result<Identity, Error> {
    let i: Identity =
        serde_json::from_value(v).map_err(|e| Error::Invalid(format!("identity: {e}")))?;
    i.validate()?;
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_identity_becomes_product_properties_and_the_serial_a_boot_argument() {
        let i = parse_identity(json!({"brand": "google", "model": "Pixel 8 Pro",
            "fingerprint": "google/husky/husky:14/AP1A/1:user/release-keys", "serial": "ABC123"}))
        .unwrap();
        let mut args = BTreeMap::new();
        i.boot_args(&mut args);
        assert_eq!(args["ro.product.brand"], "google");
        assert_eq!(args["ro.product.model"], "Pixel 8 Pro");
        assert_eq!(
            args["ro.build.fingerprint"],
            "google/husky/husky:14/AP1A/1:user/release-keys"
        );
        assert_eq!(args["androidboot.serialno"], "ABC123");
        assert_eq!(args.len(), 4);
        assert!(parse_identity(json!({"model": "x\"y"})).is_err());
        assert!(parse_identity(json!({"model": ""})).is_err());
        assert!(parse_identity(json!({"model": "a".repeat(93)})).is_err());
        assert!(parse_identity(json!({"serial": "ab-12"})).is_err());
        assert!(parse_identity(json!({"fingerprint": "a b"})).is_err());
        assert!(parse_identity(json!({"imei": "1"})).is_err());
        assert_eq!(
            Identity::fresh_serial([0xab, 1, 2, 3, 4, 5, 6, 0xff]),
            "AB010203040506FF"
        );
    }

    #[test]
    fn a_network_becomes_redroids_proxy_and_dns_arguments_and_socks_is_refused() {
        let n = parse_network(
            json!({"proxy": {"type": "http", "host": "proxy.corp", "port": 3128,
            "exclude": ["*.internal", "10.0.0.1"]}, "dns": ["1.1.1.1", "2606:4700::1111"]}),
        )
        .unwrap();
        let mut args = BTreeMap::new();
        n.boot_args(&mut args);
        assert_eq!(args["androidboot.redroid_net_proxy_type"], "static");
        assert_eq!(args["androidboot.redroid_net_proxy_host"], "proxy.corp");
        assert_eq!(args["androidboot.redroid_net_proxy_port"], "3128");
        assert_eq!(
            args["androidboot.redroid_net_proxy_exclude_list"],
            "*.internal,10.0.0.1"
        );
        assert_eq!(args["androidboot.redroid_net_ndns"], "2");
        assert_eq!(args["androidboot.redroid_net_dns2"], "2606:4700::1111");
        let pac =
            parse_network(json!({"proxy": {"type": "pac", "url": "https://wpad.corp/proxy.pac"}}))
                .unwrap();
        let mut args = BTreeMap::new();
        pac.boot_args(&mut args);
        assert_eq!(args["androidboot.redroid_net_proxy_type"], "pac");
        let err = |v| format!("{:?}", parse_network(v).unwrap_err());
        assert!(
            err(json!({"proxy": {"type": "socks5", "host": "h", "port": 1080}})).contains("socks")
        );
        assert!(err(json!({"proxy": {"type": "http", "host": "h", "port": 0}})).contains("port"));
        assert!(err(json!({"proxy": {"type": "http", "host": "a b", "port": 1}})).contains("host"));
        assert!(
            err(json!({"proxy": {"type": "pac", "url": "file:///etc/passwd"}})).contains("url")
        );
        assert!(
            err(json!({"dns": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"]}))
                .contains("dns")
        );
        assert!(err(json!({"dns": ["not-an-ip"]})).contains("network"));
    }
}
