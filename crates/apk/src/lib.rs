//! What an APK says about itself, read from the file alone, never from the
//! uploader's word: its package, version, SDK levels, label, icon,
//! permissions, native ABIs and signing. It reads through a [`Source`]
//! (random access by offset), so a large APK costs only its central
//! directory and the few entries read (the manifest, the resource table, a
//! JAR signature block), each bounded; the `app` component reads its
//! stored chunks this way. Refusals are typed ([`ApkError`]): not a zip,
//! truncated, corrupt, a zip bomb, no manifest.

mod res;
mod signing;
mod zip;

pub use signing::Signing;
pub use zip::crc32;

use serde::Serialize;

/// The largest manifest read.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The largest resource table read.
pub const MAX_RESOURCES: u64 = 64 << 20;

/// Random access to an APK's bytes.
pub trait Source {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// `len` bytes from `offset`; shorter only past the end (an error).
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, ApkError>;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl dyn Source + '_ {
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, ApkError> {
        if offset + len as u64 > self.len() {
            return Err(ApkError::Truncated(format!(
                "{len} bytes at {offset} of a {}-byte file",
                self.len()
            )));
        }
        let b = self.read_at(offset, len)?;
        if b.len() != len {
            return Err(ApkError::Truncated(format!("{len} bytes at {offset}")));
        }
        Ok(b)
    }
}

fn slice_at(b: &[u8], offset: u64, len: usize) -> Result<Vec<u8>, ApkError> {
    let start = usize::try_from(offset).map_err(|_| ApkError::Truncated("offset".into()))?;
    b.get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| ApkError::Truncated(format!("{len} bytes at {offset}")))
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, ApkError> {
        slice_at(self, offset, len)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, ApkError> {
        slice_at(self, offset, len)
    }
}

/// Why a file is not an APK this platform takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApkError {
    /// Not a zip archive at all.
    #[error("not a zip archive")]
    NotZip,
    /// Cut off.
    #[error("the file is truncated: {0}")]
    Truncated(String),
    /// Damaged.
    #[error("the file is corrupt: {0}")]
    Corrupt(String),
    /// Entries that inflate far beyond their size.
    #[error("a zip bomb: {0}")]
    Bomb(String),
    /// Beyond what is read.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A zip feature APKs do not use.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A zip without `AndroidManifest.xml`.
    #[error("no AndroidManifest.xml: not an APK")]
    NoManifest,
    /// A manifest that does not say what an APK must.
    #[error("AndroidManifest.xml: {0}")]
    BadManifest(String),
    /// The source could not be read.
    #[error("reading the file failed: {0}")]
    Read(String),
}

/// What an APK says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApkInfo {
    /// `package`.
    pub package: String,
    /// `android:versionCode` (with `versionCodeMajor` in the high 32 bits).
    pub version_code: i64,
    /// `android:versionName`.
    pub version_name: Option<String>,
    /// `uses-sdk android:minSdkVersion` (1 when absent, as Android reads it).
    pub min_sdk: u32,
    /// `uses-sdk android:targetSdkVersion`, when stated.
    pub target_sdk: Option<u32>,
    /// The application's label (resolved from the resources when a reference).
    pub label: Option<String>,
    /// The application's icon file at 160 dpi or the default.
    pub icon: Option<String>,
    /// `uses-permission` names, in order.
    pub permissions: Vec<String>,
    /// ABIs with native code under `lib/`, sorted.
    pub abis: Vec<String>,
    /// Signing schemes and signer.
    pub signing: Signing,
}

const ATTR_LABEL: u32 = 0x0101_0001;
const ATTR_ICON: u32 = 0x0101_0002;
const ATTR_NAME: u32 = 0x0101_0003;
const ATTR_MIN_SDK: u32 = 0x0101_020c;
const ATTR_VERSION_CODE: u32 = 0x0101_021b;
const ATTR_VERSION_NAME: u32 = 0x0101_021c;
const ATTR_TARGET_SDK: u32 = 0x0101_0270;
const ATTR_VERSION_CODE_MAJOR: u32 = 0x0101_0576;

/// The attribute known by framework id `id` (or, without one, by `name`).
fn attr<'a>(e: &'a res::Element, id: u32, name: &str) -> Option<&'a res::Attr> {
    e.attrs
        .iter()
        .find(|a| a.id == Some(id))
        .or_else(|| e.attrs.iter().find(|a| a.id.is_none() && a.name == name))
}

/// Inspects an APK.
pub fn inspect(src: &dyn Source) -> Result<ApkInfo, ApkError> {
    let zip = zip::Archive::open(src)?;
    let manifest = zip
        .find("AndroidManifest.xml")
        .ok_or(ApkError::NoManifest)?;
    let xml = res::parse_xml(&zip.read(src, manifest, MAX_MANIFEST)?)?;
    let resources = match zip.find("resources.arsc") {
        Some(e) => Some(zip.read(src, e, MAX_RESOURCES)?),
        None => None,
    };
    let table = resources.as_deref().map(res::Table::parse).transpose()?;
    let text = |a: &res::Attr| -> Option<String> {
        match a.value {
            res::Value::String(i) => xml.strings.get(i).map(str::to_owned),
            res::Value::Reference(id) => table.as_ref()?.string(id),
            _ => a.raw.clone(),
        }
    };
    let int = |a: &res::Attr| -> Option<u32> {
        match a.value {
            res::Value::Int(n) => Some(n),
            _ => text(a)?.trim().parse().ok(),
        }
    };
    let root = xml
        .elements
        .first()
        .filter(|e| e.name == "manifest")
        .ok_or_else(|| ApkError::BadManifest("its root is not <manifest>".into()))?;
    let package = root
        .attrs
        .iter()
        .find(|a| a.name == "package")
        .and_then(text)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApkError::BadManifest("no package name".into()))?;
    let version_code = attr(root, ATTR_VERSION_CODE, "versionCode")
        .and_then(int)
        .ok_or_else(|| ApkError::BadManifest("no versionCode".into()))?;
    let major = attr(root, ATTR_VERSION_CODE_MAJOR, "versionCodeMajor")
        .and_then(int)
        .unwrap_or(0);
    let elements = &xml.elements;
    let child = |name: &'static str| {
        elements
            .iter()
            .filter(move |e| e.depth == 2 && e.name == name)
    };
    let sdk = child("uses-sdk").next();
    let permissions = child("uses-permission")
        .chain(child("uses-permission-sdk-23"))
        .filter_map(|e| attr(e, ATTR_NAME, "name").and_then(text))
        .collect();
    let application = child("application").next();
    let icon = application
        .and_then(|e| attr(e, ATTR_ICON, "icon"))
        .and_then(|a| match a.value {
            res::Value::Reference(id) => table.as_ref()?.file(id, 160),
            _ => text(a),
        });
    let mut abis: Vec<String> = zip
        .entries
        .iter()
        .filter_map(|e| {
            let rest = e.name.strip_prefix("lib/")?;
            let (abi, file) = rest.split_once('/')?;
            (!abi.is_empty() && !file.is_empty()).then(|| abi.to_owned())
        })
        .collect();
    abis.sort();
    abis.dedup();
    Ok(ApkInfo {
        version_code: (i64::from(major) << 32) | i64::from(version_code),
        version_name: attr(root, ATTR_VERSION_NAME, "versionName").and_then(text),
        min_sdk: sdk
            .and_then(|e| attr(e, ATTR_MIN_SDK, "minSdkVersion"))
            .and_then(int)
            .unwrap_or(1),
        target_sdk: sdk
            .and_then(|e| attr(e, ATTR_TARGET_SDK, "targetSdkVersion"))
            .and_then(int),
        label: application
            .and_then(|e| attr(e, ATTR_LABEL, "label"))
            .and_then(text),
        icon,
        permissions,
        abis,
        signing: signing::read(src, &zip)?,
        package,
    })
}
