//! Just enough of ZIP to read an APK: the end record, the central
//! directory, and single entries, stored or deflated, each inflated only up
//! to a bound and checked against its CRC-32. Nothing is read that the
//! caller did not ask for, so a 512 MiB APK costs the directory and the few
//! entries read.

use crate::{ApkError, Source};

const EOCD: u32 = 0x0605_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;
/// The end record and the longest comment it may have.
const EOCD_SEARCH: u64 = 22 + 0xffff;
/// The largest central directory read (a few hundred thousand entries).
pub const MAX_DIRECTORY: u64 = 32 << 20;
/// The most entries an APK may have.
const MAX_ENTRIES: usize = 200_000;
/// A ratio of uncompressed to compressed size no real APK entry has, over
/// this size: a zip bomb.
const BOMB_RATIO: u64 = 100;
const BOMB_MIN: u64 = 16 << 20;
/// The most all entries may claim to inflate to.
const MAX_TOTAL: u64 = 8 << 30;

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One entry of the central directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    /// Its size once inflated, as the directory says.
    pub size: u64,
    local: u64,
}

/// An open archive: its directory and where it starts.
#[derive(Debug)]
pub struct Archive {
    /// The entries, in directory order.
    pub entries: Vec<Entry>,
    /// Where the central directory starts (the APK signing block ends there).
    pub directory_offset: u64,
}

impl Archive {
    /// Reads the end record and the central directory.
    pub fn open(src: &dyn Source) -> Result<Self, ApkError> {
        let len = src.len();
        if len < 22 {
            return Err(ApkError::NotZip);
        }
        let tail_len = EOCD_SEARCH.min(len);
        let tail = src.read(len - tail_len, tail_len as usize)?;
        let Some(at) = (0..=tail.len() - 22)
            .rev()
            .find(|&i| u32_at(&tail, i) == Some(EOCD))
        else {
            // A zip's first entry without its end: cut off.
            return Err(if u32_at(&src.read(0, 4)?, 0) == Some(LOCAL) {
                ApkError::Truncated("the end of the archive is missing".into())
            } else {
                ApkError::NotZip
            });
        };
        let eocd_offset = len - tail_len + at as u64;
        let e = &tail[at..];
        let bad = || ApkError::NotZip;
        let (disk, cd_disk) = (u16_at(e, 4).ok_or_else(bad)?, u16_at(e, 6).ok_or_else(bad)?);
        if disk != 0 || cd_disk != 0 {
            return Err(ApkError::Unsupported("a multi-disk zip".into()));
        }
        let count = u16_at(e, 10).ok_or_else(bad)? as usize;
        let cd_size = u64::from(u32_at(e, 12).ok_or_else(bad)?);
        let cd_offset = u64::from(u32_at(e, 16).ok_or_else(bad)?);
        if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            return Err(ApkError::Unsupported("zip64 (an APK over 4 GiB)".into()));
        }
        if cd_offset + cd_size > eocd_offset {
            return Err(ApkError::Truncated("the central directory".into()));
        }
        if cd_size > MAX_DIRECTORY {
            return Err(ApkError::TooLarge("the central directory".into()));
        }
        let cd = src.read(cd_offset, cd_size as usize)?;
        let mut entries = Vec::with_capacity(count.min(MAX_ENTRIES));
        let mut pos = 0usize;
        let mut total = 0u64;
        for _ in 0..count {
            if entries.len() >= MAX_ENTRIES {
                return Err(ApkError::TooLarge(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let trunc = || ApkError::Truncated("a central directory entry".into());
            if u32_at(&cd, pos) != Some(CENTRAL) {
                return Err(trunc());
            }
            let method = u16_at(&cd, pos + 10).ok_or_else(trunc)?;
            let crc = u32_at(&cd, pos + 16).ok_or_else(trunc)?;
            let compressed = u64::from(u32_at(&cd, pos + 20).ok_or_else(trunc)?);
            let size = u64::from(u32_at(&cd, pos + 24).ok_or_else(trunc)?);
            let name_len = u16_at(&cd, pos + 28).ok_or_else(trunc)? as usize;
            let extra = u16_at(&cd, pos + 30).ok_or_else(trunc)? as usize;
            let comment = u16_at(&cd, pos + 32).ok_or_else(trunc)? as usize;
            let local = u64::from(u32_at(&cd, pos + 42).ok_or_else(trunc)?);
            let name = cd.get(pos + 46..pos + 46 + name_len).ok_or_else(trunc)?;
            let name = String::from_utf8_lossy(name).into_owned();
            if compressed == 0xffff_ffff || size == 0xffff_ffff || local == 0xffff_ffff {
                return Err(ApkError::Unsupported(format!("zip64 entry {name}")));
            }
            if local + compressed > cd_offset {
                return Err(ApkError::Truncated(format!("entry {name}")));
            }
            if size > BOMB_MIN && size > compressed.saturating_mul(BOMB_RATIO) {
                return Err(ApkError::Bomb(format!(
                    "{name} claims {size} bytes from {compressed}"
                )));
            }
            total += size;
            if total > MAX_TOTAL {
                return Err(ApkError::Bomb(format!(
                    "its entries claim more than {MAX_TOTAL} bytes"
                )));
            }
            entries.push(Entry {
                name,
                method,
                crc,
                compressed,
                size,
                local,
            });
            pos += 46 + name_len + extra + comment;
        }
        Ok(Self {
            entries,
            directory_offset: cd_offset,
        })
    }

    /// The entry named `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// An entry's contents, at most `max` bytes once inflated.
    pub fn read(&self, src: &dyn Source, e: &Entry, max: u64) -> Result<Vec<u8>, ApkError> {
        if e.size > max {
            return Err(ApkError::TooLarge(format!(
                "{} ({} bytes, at most {max} read)",
                e.name, e.size
            )));
        }
        let head = src.read(e.local, 30)?;
        let trunc = || ApkError::Truncated(format!("entry {}", e.name));
        if u32_at(&head, 0) != Some(LOCAL) {
            return Err(trunc());
        }
        let skip = 30
            + u64::from(u16_at(&head, 26).ok_or_else(trunc)?)
            + u64::from(u16_at(&head, 28).ok_or_else(trunc)?);
        let data = src.read(e.local + skip, e.compressed as usize)?;
        let out = match e.method {
            0 if e.compressed == e.size => data,
            0 => {
                return Err(ApkError::Corrupt(format!(
                    "stored entry {} sizes differ",
                    e.name
                )))
            }
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(&data, e.size as usize)
                .map_err(|err| match err.status {
                    miniz_oxide::inflate::TINFLStatus::HasMoreOutput => {
                        ApkError::Bomb(format!("{} inflates beyond its stated size", e.name))
                    }
                    _ => ApkError::Corrupt(format!("{} does not inflate", e.name)),
                })?,
            m => {
                return Err(ApkError::Unsupported(format!(
                    "compression method {m} of {}",
                    e.name
                )))
            }
        };
        if out.len() as u64 != e.size {
            return Err(ApkError::Corrupt(format!(
                "{} is {} bytes, not {}",
                e.name,
                out.len(),
                e.size
            )));
        }
        if crc32(&out) != e.crc {
            return Err(ApkError::Corrupt(format!("{} fails its CRC-32", e.name)));
        }
        Ok(out)
    }
}

/// CRC-32 (IEEE), as ZIP uses it.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }
}
