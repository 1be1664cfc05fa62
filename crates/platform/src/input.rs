//! Validated inputs shared by components: each rule lives in one fallible
//! constructor, and domain and repo code take only these types. Errors are
//! 400s naming the field.

use crate::Problem;
use serde::{Deserialize, Deserializer};

/// An email address: trimmed, at most 254 characters, one `@`, a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses and normalises (domain lower-cased) an email address.
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let s = raw.trim();
        let bad = || Problem::invalid("email is not a valid address");
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') {
            return Err(bad());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A human-readable single-line name: trimmed, 1 to `max` characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Checks a name for `field`.
    pub fn parse(raw: &str, field: &str, max: usize) -> Result<Self, Problem> {
        let s = raw.trim();
        let n = s.chars().count();
        if n == 0 || n > max || s.chars().any(char::is_control) {
            return Err(Problem::invalid(format!(
                "{field} must be 1 to {max} characters without control characters"
            )));
        }
        Ok(Self(s.to_string()))
    }

    /// A display name of a person (1 to 64 characters).
    pub fn display_name(raw: &str) -> Result<Self, Problem> {
        Self::parse(raw, "display_name", 64)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text (ticket bodies, descriptions): 1 to `max` characters; newlines
/// and tabs allowed, other control characters not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// Checks text for `field`.
    pub fn parse(raw: &str, field: &str, max: usize) -> Result<Self, Problem> {
        let s = raw.trim();
        let n = s.chars().count();
        if n == 0
            || n > max
            || s.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(Problem::invalid(format!(
                "{field} must be 1 to {max} characters"
            )));
        }
        Ok(Self(s.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A machine code (role, tenant, menu codes): 1 to 64 of lower-case ASCII
/// letters, digits, `_`, `-` and `.`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// Checks a code for `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, Problem> {
        let s = raw.trim();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || c == '.'
            });
        if !ok {
            return Err(Problem::invalid(format!(
                "{field} must be 1 to 64 of a-z, 0-9, _, - and ., starting with a letter"
            )));
        }
        Ok(Self(s.to_string()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number: `+` and 5 to 20 digits, spaces and dashes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number.
    pub fn parse(raw: &str) -> Result<Self, Problem> {
        let s: String = raw.chars().filter(|c| *c != ' ' && *c != '-').collect();
        let digits = s.strip_prefix('+').unwrap_or(&s);
        if !(5..=20).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(Problem::invalid(
                "phone must be 5 to 20 digits, optionally starting with +",
            ));
        }
        Ok(Self(s))
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A field of a PATCH body that distinguishes "absent" (`None`) from
/// "set to null" (`Some(None)`): use with
/// `#[serde(default, deserialize_with = "platform::input::nullable")]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A nested struct that must be given as a JSON object (serde alone would
/// also read it from an array): use with
/// `#[serde(deserialize_with = "platform::input::object")]`.
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    if !v.is_object() {
        return Err(serde::de::Error::custom("expected a json object"));
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

/// [`object`] for an optional field (absent or `null`: none): use with
/// `#[serde(default, deserialize_with = "platform::input::optional_object")]`.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    if !v.is_object() {
        return Err(serde::de::Error::custom("expected a json object"));
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Whether a container image reference is one an agent may pull: a
/// repository path, a tag or digest (at most 200 characters), nothing that
/// reads as an option or a path.
pub fn image_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(['-', '/', '.'])
        && !s.contains("..")
        && s.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '/' | ':' | '.' | '-' | '_' | '@')
        })
}

/// A JSON object of free-form metadata, at most `max_bytes` serialized.
pub fn metadata(v: &serde_json::Value, max_bytes: usize) -> Result<(), Problem> {
    if !v.is_object() {
        return Err(Problem::invalid("metadata must be a json object"));
    }
    if serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()) > max_bytes {
        return Err(Problem::invalid(format!(
            "metadata must be at most {max_bytes} bytes"
        )));
    }
    Ok(())
}

/// A query parameter that must be a UUID when present.
pub fn uuid_param(value: Option<String>, name: &str) -> Result<Option<uuid::Uuid>, Problem> {
    value
        .map(|v| {
            uuid::Uuid::parse_str(&v)
                .map_err(|_| Problem::invalid(format!("{name} must be a uuid")))
        })
        .transpose()
}

/// A query parameter that must be `true` or `false` when present.
pub fn bool_param(value: Option<String>, name: &str) -> Result<Option<bool>, Problem> {
    match value.as_deref() {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Problem::invalid(format!("{name} must be true or false"))),
    }
}

/// A query parameter that must be one of `allowed` when present.
pub fn one_of(
    value: Option<String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<String>, Problem> {
    match value {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(_) => Err(Problem::invalid(format!(
            "{name} must be one of {}",
            allowed.join(", ")
        ))),
        None => Ok(None),
    }
}

/// An RFC 3339 time as the UTC timestamp the databases store; 400 naming
/// `field` otherwise.
pub fn rfc3339(raw: &str, field: &str) -> Result<chrono::NaiveDateTime, Problem> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.naive_utc())
        .map_err(|_| Problem::invalid(format!("{field} must be an RFC 3339 time")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_true_or_false_or_absent() {
        assert_eq!(bool_param(None, "active").unwrap(), None);
        assert_eq!(
            bool_param(Some("true".into()), "active").unwrap(),
            Some(true)
        );
        assert_eq!(
            bool_param(Some("false".into()), "active").unwrap(),
            Some(false)
        );
        assert!(bool_param(Some("1".into()), "active").is_err());
    }

    #[test]
    fn emails_are_checked_and_their_domain_lower_cased() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "Ann@example.com"
        );
        for bad in [
            "",
            "a",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "@b.c",
            "a@-b.c",
            "a@b..c",
            &format!("{}@b.c", "x".repeat(65)),
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_codes_texts_and_phones_have_their_rules() {
        assert!(Name::display_name("   ").is_err());
        assert!(Name::display_name("a\u{7}b").is_err());
        assert!(Name::display_name(&"x".repeat(65)).is_err());
        assert_eq!(Name::display_name(" Ann ").unwrap().as_str(), "Ann");
        assert!(Code::parse("ops_team-2.eu", "code").is_ok());
        for bad in ["", "Ops", "1ops", "a b", "a/b", &"a".repeat(65)] {
            assert!(Code::parse(bad, "code").is_err(), "{bad:?}");
        }
        assert!(Text::parse("line one\nline two", "body", 100).is_ok());
        assert!(Text::parse("bell\u{7}", "body", 100).is_err());
        assert_eq!(
            Phone::parse("+86 138-1234-5678").unwrap().as_str(),
            "+8613812345678"
        );
        assert!(Phone::parse("12ab5").is_err());
    }

    #[test]
    fn nullable_tells_absent_from_null() {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "nullable")]
            d: Option<Option<u8>>,
        }
        let absent: P = serde_json::from_str("{}").unwrap();
        let null: P = serde_json::from_str(r#"{"d": null}"#).unwrap();
        let set: P = serde_json::from_str(r#"{"d": 3}"#).unwrap();
        assert_eq!((absent.d, null.d, set.d), (None, Some(None), Some(Some(3))));
    }
}
