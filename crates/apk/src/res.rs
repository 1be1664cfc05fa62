//! Android's binary resource formats: the compiled `AndroidManifest.xml`
//! (binary XML) and `resources.arsc` (the resource table), as far as an
//! APK's identity needs them.

use crate::zip::{u16_at, u32_at};
use crate::ApkError;

const RES_STRING_POOL: u16 = 0x0001;
const RES_TABLE: u16 = 0x0002;
const RES_XML: u16 = 0x0003;
const RES_XML_START_ELEMENT: u16 = 0x0102;
const RES_XML_RESOURCE_MAP: u16 = 0x0180;
const RES_TABLE_PACKAGE: u16 = 0x0200;
const RES_TABLE_TYPE: u16 = 0x0201;

/// A typed value (`Res_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A string of the pool it came with.
    String(u32),
    /// A reference to a resource.
    Reference(u32),
    /// An integer (decimal, hex or boolean).
    Int(u32),
    /// Anything else.
    Other,
}

fn value(data_type: u8, data: u32) -> Value {
    match data_type {
        0x03 => Value::String(data),
        0x01 => Value::Reference(data),
        0x10..=0x12 => Value::Int(data),
        _ => Value::Other,
    }
}

fn bad(what: &str) -> ApkError {
    ApkError::BadManifest(what.into())
}

/// A string pool.
#[derive(Debug, Default)]
pub struct Strings {
    items: Vec<String>,
}

impl Strings {
    /// Parses the pool chunk at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, ApkError> {
        let trunc = || bad("a string pool is truncated");
        let header = u16_at(b, 2).ok_or_else(trunc)? as usize;
        let size = u32_at(b, 4).ok_or_else(trunc)? as usize;
        let b = b.get(..size).ok_or_else(trunc)?;
        let count = u32_at(b, 8).ok_or_else(trunc)? as usize;
        let utf8 = u32_at(b, 16).ok_or_else(trunc)? & (1 << 8) != 0;
        let start = u32_at(b, 20).ok_or_else(trunc)? as usize;
        if count > b.len() / 4 {
            return Err(trunc());
        }
        let mut items = Vec::with_capacity(count);
        for i in 0..count {
            let off = start + u32_at(b, header + 4 * i).ok_or_else(trunc)? as usize;
            items.push(if utf8 {
                // UTF-16 length, then UTF-8 length (each 1 or 2 bytes), then the bytes.
                let skip = |at: usize| -> Option<(usize, usize)> {
                    let first = *b.get(at)? as usize;
                    Some(if first & 0x80 != 0 {
                        (((first & 0x7f) << 8) | *b.get(at + 1)? as usize, at + 2)
                    } else {
                        (first, at + 1)
                    })
                };
                let (_, at) = skip(off).ok_or_else(trunc)?;
                let (len, at) = skip(at).ok_or_else(trunc)?;
                String::from_utf8_lossy(b.get(at..at + len).ok_or_else(trunc)?).into_owned()
            } else {
                let first = u16_at(b, off).ok_or_else(trunc)? as usize;
                let (len, at) = if first & 0x8000 != 0 {
                    let second = u16_at(b, off + 2).ok_or_else(trunc)? as usize;
                    (((first & 0x7fff) << 16) | second, off + 4)
                } else {
                    (first, off + 2)
                };
                let units: Vec<u16> = (0..len)
                    .map(|k| u16_at(b, at + 2 * k))
                    .collect::<Option<_>>()
                    .ok_or_else(trunc)?;
                String::from_utf16_lossy(&units)
            });
        }
        Ok(Self { items })
    }

    /// String `i`.
    pub fn get(&self, i: u32) -> Option<&str> {
        self.items.get(i as usize).map(String::as_str)
    }
}

/// An attribute of a start tag.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Its name.
    pub name: String,
    /// The framework resource id of its name, if it has one.
    pub id: Option<u32>,
    /// Its raw string value, if it has one.
    pub raw: Option<String>,
    /// Its typed value.
    pub value: Value,
}

/// A start tag with its depth (the root is 1).
#[derive(Debug, Clone)]
pub struct Element {
    /// Depth.
    pub depth: usize,
    /// Tag name.
    pub name: String,
    /// Attributes.
    pub attrs: Vec<Attr>,
}

/// A parsed binary XML document: its start tags in order, and its strings.
#[derive(Debug)]
pub struct Xml {
    /// Start tags.
    pub elements: Vec<Element>,
    /// The document's strings (for `Value::String`).
    pub strings: Strings,
}

/// Parses a binary XML document (`AndroidManifest.xml` in an APK).
pub fn parse_xml(b: &[u8]) -> Result<Xml, ApkError> {
    if u16_at(b, 0) != Some(RES_XML) {
        return Err(bad("AndroidManifest.xml is not binary XML"));
    }
    let header = u16_at(b, 2).ok_or_else(|| bad("truncated"))? as usize;
    let size = (u32_at(b, 4).ok_or_else(|| bad("truncated"))? as usize).min(b.len());
    let mut strings = Strings::default();
    let mut ids: Vec<u32> = Vec::new();
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut pos = header;
    while pos + 8 <= size {
        let kind = u16_at(b, pos).ok_or_else(|| bad("truncated"))?;
        let chunk_header = u16_at(b, pos + 2).ok_or_else(|| bad("truncated"))? as usize;
        let len = u32_at(b, pos + 4).ok_or_else(|| bad("truncated"))? as usize;
        if len < 8 || pos + len > size {
            return Err(bad("a chunk runs past the document"));
        }
        let c = &b[pos..pos + len];
        match kind {
            RES_STRING_POOL => strings = Strings::parse(c)?,
            RES_XML_RESOURCE_MAP => {
                ids = (0..(len - chunk_header) / 4)
                    .filter_map(|i| u32_at(c, chunk_header + 4 * i))
                    .collect();
            }
            RES_XML_START_ELEMENT => {
                depth += 1;
                let ext = chunk_header;
                let trunc = || bad("a start tag is truncated");
                let name = u32_at(c, ext + 4).ok_or_else(trunc)?;
                let attr_start = u16_at(c, ext + 8).ok_or_else(trunc)? as usize;
                let attr_size = u16_at(c, ext + 10).ok_or_else(trunc)? as usize;
                let count = u16_at(c, ext + 12).ok_or_else(trunc)? as usize;
                let mut attrs = Vec::with_capacity(count);
                for i in 0..count {
                    let a = ext + attr_start + i * attr_size;
                    let name = u32_at(c, a + 4).ok_or_else(trunc)?;
                    let raw = u32_at(c, a + 8).ok_or_else(trunc)?;
                    let data_type = *c.get(a + 15).ok_or_else(trunc)?;
                    let data = u32_at(c, a + 16).ok_or_else(trunc)?;
                    attrs.push(Attr {
                        name: strings.get(name).unwrap_or_default().to_owned(),
                        id: ids.get(name as usize).copied(),
                        raw: strings.get(raw).map(str::to_owned),
                        value: value(data_type, data),
                    });
                }
                elements.push(Element {
                    depth,
                    name: strings.get(name).unwrap_or_default().to_owned(),
                    attrs,
                });
            }
            0x0103 => depth = depth.saturating_sub(1),
            _ => {}
        }
        pos += len;
    }
    Ok(Xml { elements, strings })
}

/// One package of a resource table.
struct Package<'a> {
    id: u32,
    chunk: &'a [u8],
    header: usize,
}

/// A resource table (`resources.arsc`), for looking up references.
pub struct Table<'a> {
    strings: Strings,
    packages: Vec<Package<'a>>,
}

/// A resource value found in a table, and the density of its configuration.
#[derive(Debug)]
struct Found {
    value: Value,
    density: u16,
    default: bool,
}

impl<'a> Table<'a> {
    /// Parses the table's header, global strings and packages.
    pub fn parse(b: &'a [u8]) -> Result<Self, ApkError> {
        let bad = || ApkError::Corrupt("resources.arsc is not a resource table".into());
        if u16_at(b, 0) != Some(RES_TABLE) {
            return Err(bad());
        }
        let header = u16_at(b, 2).ok_or_else(bad)? as usize;
        let size = (u32_at(b, 4).ok_or_else(bad)? as usize).min(b.len());
        let mut strings = Strings::default();
        let mut packages = Vec::new();
        let mut pos = header;
        while pos + 8 <= size {
            let kind = u16_at(b, pos).ok_or_else(bad)?;
            let h = u16_at(b, pos + 2).ok_or_else(bad)? as usize;
            let len = u32_at(b, pos + 4).ok_or_else(bad)? as usize;
            if len < 8 || pos + len > size {
                return Err(bad());
            }
            let c = &b[pos..pos + len];
            match kind {
                RES_STRING_POOL => strings = Strings::parse(c)?,
                RES_TABLE_PACKAGE => packages.push(Package {
                    id: u32_at(c, 8).ok_or_else(bad)?,
                    chunk: c,
                    header: h,
                }),
                _ => {}
            }
            pos += len;
        }
        Ok(Self { strings, packages })
    }

    fn entries(&self, id: u32) -> Vec<Found> {
        let (pkg, ty, entry) = (id >> 24, (id >> 16) & 0xff, (id & 0xffff) as usize);
        let mut out = Vec::new();
        for p in self.packages.iter().filter(|p| p.id == pkg) {
            let c = p.chunk;
            let mut pos = p.header;
            while pos + 8 <= c.len() {
                let (Some(kind), Some(h), Some(len)) =
                    (u16_at(c, pos), u16_at(c, pos + 2), u32_at(c, pos + 4))
                else {
                    break;
                };
                let (h, len) = (h as usize, len as usize);
                if len < 8 || pos + len > c.len() {
                    break;
                }
                let t = &c[pos..pos + len];
                // Dense type chunks of this type (sparse ones are skipped).
                if kind == RES_TABLE_TYPE && u32::from(t[8]) == ty && t[9] & 0x01 == 0 {
                    if let Some(found) = Self::entry(t, h, entry) {
                        out.push(found);
                    }
                }
                pos += len;
            }
        }
        out
    }

    fn entry(t: &[u8], h: usize, entry: usize) -> Option<Found> {
        let count = u32_at(t, 12)? as usize;
        let start = u32_at(t, 16)? as usize;
        if entry >= count {
            return None;
        }
        let config = 20;
        let config_size = u32_at(t, config)? as usize;
        let cfg = t.get(config + 4..config + config_size.max(4))?;
        let density = u16_at(t, config + 14).unwrap_or(0);
        let default = cfg.iter().all(|&x| x == 0);
        let off = u32_at(t, h + 4 * entry)?;
        if off == 0xffff_ffff {
            return None;
        }
        let e = start + off as usize;
        let flags = u16_at(t, e + 2)?;
        if flags & 0x0001 != 0 {
            return None; // a bag (style, array): not a single value
        }
        let v = e + u16_at(t, e)? as usize;
        Some(Found {
            value: value(*t.get(v + 3)?, u32_at(t, v + 4)?),
            density,
            default,
        })
    }

    /// The string a reference ends at, preferring the default configuration
    /// (as `aapt dump badging` shows a label), following references.
    pub fn string(&self, mut id: u32) -> Option<String> {
        for _ in 0..8 {
            let found = self.entries(id);
            let best = found.iter().find(|f| f.default).or_else(|| found.first())?;
            match best.value {
                Value::String(i) => return self.strings.get(i).map(str::to_owned),
                Value::Reference(next) => id = next,
                _ => return None,
            }
        }
        None
    }

    /// The file a drawable reference names at `density` (160 is what aapt
    /// calls `application-icon-160`), else the default or the first one.
    pub fn file(&self, mut id: u32, density: u16) -> Option<String> {
        for _ in 0..8 {
            let found = self.entries(id);
            let best = found
                .iter()
                .find(|f| f.density == density)
                .or_else(|| found.iter().find(|f| f.default))
                .or_else(|| found.first())?;
            match best.value {
                Value::String(i) => return self.strings.get(i).map(str::to_owned),
                Value::Reference(next) => id = next,
                _ => return None,
            }
        }
        None
    }
}
