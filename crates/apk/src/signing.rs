//! Which signing schemes an APK carries and who signed it: the APK Signing
//! Block (v2, v3, v3.1) before the central directory, and JAR signing (v1)
//! under `META-INF/`. The signer's certificate digest is the sha256 of the
//! DER certificate, as `apksigner verify --print-certs` prints it: from v3
//! when present, else v2, else v1. Nothing here verifies a signature;
//! Android does that at install time, and the platform records who signed.

use crate::zip::{u32_at, u64_at, Archive};
use crate::{ApkError, Source};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 16] = b"APK Sig Block 42";
const V2: u32 = 0x7109_871a;
const V3: u32 = 0xf053_68c0;
const V31: u32 = 0x1b93_ad61;
/// The largest signing block read.
const MAX_BLOCK: u64 = 16 << 20;

/// What an APK's signatures say.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Signing {
    /// JAR signing (`META-INF/*.SF` with a signature block file).
    pub v1: bool,
    /// APK Signature Scheme v2.
    pub v2: bool,
    /// APK Signature Scheme v3 (or v3.1).
    pub v3: bool,
    /// Lower-case hex sha256 of the first signer's certificate.
    pub certificate_sha256: Option<String>,
}

/// The pairs of the APK Signing Block, if the APK has one.
fn block_pairs(src: &dyn Source, zip: &Archive) -> Result<Vec<(u32, Vec<u8>)>, ApkError> {
    let end = zip.directory_offset;
    if end < 32 {
        return Ok(Vec::new());
    }
    let footer = src.read(end - 24, 24)?;
    if &footer[8..] != MAGIC {
        return Ok(Vec::new());
    }
    let size = u64_at(&footer, 0).unwrap_or(0);
    if size > MAX_BLOCK || size + 8 > end || size < 24 {
        return Err(ApkError::Corrupt("the APK signing block's size".into()));
    }
    let block = src.read(end - size - 8, (size + 8) as usize)?;
    if u64_at(&block, 0) != Some(size) {
        return Err(ApkError::Corrupt(
            "the APK signing block's sizes differ".into(),
        ));
    }
    let pairs = &block[8..block.len() - 24];
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 12 <= pairs.len() {
        let len = u64_at(pairs, pos).unwrap_or(0) as usize;
        if len < 4 || pos + 8 + len > pairs.len() {
            return Err(ApkError::Corrupt("an APK signing block pair".into()));
        }
        let id = u32_at(pairs, pos + 8).unwrap_or(0);
        out.push((id, pairs[pos + 12..pos + 8 + len].to_vec()));
        pos += 8 + len;
    }
    Ok(out)
}

/// A length-prefixed (u32) field at `pos`: its bytes and where the next starts.
fn prefixed(b: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let len = u32_at(b, pos)? as usize;
    let body = b.get(pos + 4..pos + 4 + len)?;
    Some((body, pos + 4 + len))
}

/// The first certificate of the first signer of a v2 or v3 scheme block:
/// signers → signer → signed data → (digests, certificates) → certificate.
fn first_certificate(scheme: &[u8]) -> Option<Vec<u8>> {
    let (signers, _) = prefixed(scheme, 0)?;
    let (signer, _) = prefixed(signers, 0)?;
    let (signed, _) = prefixed(signer, 0)?;
    let (_digests, next) = prefixed(signed, 0)?;
    let (certs, _) = prefixed(signed, next)?;
    let (cert, _) = prefixed(certs, 0)?;
    Some(cert.to_vec())
}

/// A DER element at `pos`: tag, contents range, and where the next starts.
fn der(b: &[u8], pos: usize) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let tag = *b.get(pos)?;
    let first = *b.get(pos + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, pos + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(pos + 2 + i)? as usize;
        }
        (len, pos + 2 + n)
    };
    let end = start.checked_add(len)?;
    (end <= b.len()).then_some((tag, start..end, end))
}

/// The first certificate of a PKCS #7 SignedData (a JAR signature block):
/// ContentInfo { oid, [0] { SignedData { version, digests, content,
/// [0] certificates, … } } }.
fn pkcs7_certificate(b: &[u8]) -> Option<Vec<u8>> {
    let (_, info, _) = der(b, 0)?;
    let (_, _oid, next) = der(b, info.start)?;
    let (_, explicit, _) = der(b, next)?;
    let (_, signed, _) = der(b, explicit.start)?;
    let mut pos = signed.start;
    while pos < signed.end {
        let (tag, body, next) = der(b, pos)?;
        if tag == 0xa0 {
            let (_, _, end) = der(b, body.start)?;
            return Some(b[body.start..end].to_vec());
        }
        pos = next;
    }
    None
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Reads an APK's signing.
pub fn read(src: &dyn Source, zip: &Archive) -> Result<Signing, ApkError> {
    let pairs = block_pairs(src, zip)?;
    let scheme = |id: u32| pairs.iter().find(|(i, _)| *i == id).map(|(_, v)| v);
    let v3 = scheme(V3).or_else(|| scheme(V31));
    let v2 = scheme(V2);
    let upper = |n: &str| n.to_ascii_uppercase();
    let meta: Vec<_> = zip
        .entries
        .iter()
        .filter(|e| upper(&e.name).starts_with("META-INF/") && !e.name[9..].contains('/'))
        .collect();
    let v1_block = meta.iter().find(|e| {
        let n = upper(&e.name);
        n.ends_with(".RSA") || n.ends_with(".DSA") || n.ends_with(".EC")
    });
    let v1 = v1_block.is_some() && meta.iter().any(|e| upper(&e.name).ends_with(".SF"));
    let mut cert = v3.or(v2).and_then(|s| first_certificate(s));
    if cert.is_none() && v1 {
        let block = zip.read(src, v1_block.expect("v1 has a block"), 1 << 20)?;
        cert = pkcs7_certificate(&block);
    }
    Ok(Signing {
        v1,
        v2: v2.is_some(),
        v3: v3.is_some(),
        certificate_sha256: cert.map(|c| sha256_hex(&c)),
    })
}
