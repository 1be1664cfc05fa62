//! What a notification says: the default templates
//! (`templates/defaults.json`), one per event type meant for people
//! (`Audience::People` in the catalogue), each in English and Simplified
//! Chinese, rendered with minijinja against the event's payload. Undefined
//! variables are errors, not blanks: a template that names a field its
//! event does not carry fails its test. At run time a payload that still
//! lacks one (a field a producer left out) is rendered leniently, the
//! missing value blank, and logged: the user hears of the event anyway.

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The locales every template has; the first is the fallback.
pub const LOCALES: &[&str] = &["en", "zh-CN"];

/// A template's texts in one locale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// Short title (plain text).
    pub title: String,
    /// Body (plain text).
    pub body: String,
}

/// The template of one event type.
#[derive(Debug, Clone, Deserialize)]
pub struct Template {
    /// The payload field naming the user to tell.
    pub recipient: Option<String>,
    /// Texts by locale.
    #[serde(flatten)]
    pub texts: BTreeMap<String, Text>,
}

/// The default templates, by event type.
pub fn defaults() -> &'static BTreeMap<String, Template> {
    static DEFAULTS: OnceLock<BTreeMap<String, Template>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        serde_json::from_str(include_str!("../templates/defaults.json"))
            .expect("templates/defaults.json is valid (tested)")
    })
}

/// The locale to use of those a template has: `wanted` exactly, else one
/// of its language (`zh` → `zh-CN`), else English.
pub fn pick<'a>(t: &'a Template, wanted: Option<&str>) -> (&'a str, &'a Text) {
    let lang = |l: &str| l.split(['-', '_']).next().unwrap_or(l).to_ascii_lowercase();
    let found = wanted.and_then(|w| {
        t.texts
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(w))
            .or_else(|| t.texts.iter().find(|(l, _)| lang(l) == lang(w)))
    });
    let (l, text) = found
        .or_else(|| t.texts.get_key_value(LOCALES[0]))
        .or_else(|| t.texts.iter().next())
        .expect("a template has a text (tested)");
    (l.as_str(), text)
}

/// Formats minor units with two decimals (none for currencies without
/// minor units): `money(9900)` is `99.00`, `money(500, "JPY")` is `500`.
fn money(minor: i64, currency: Option<String>) -> String {
    if matches!(currency.as_deref(), Some("JPY" | "KRW" | "VND")) {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02}", m / 100, m % 100)
}

fn environment(html: bool, undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    env.add_filter("money", money);
    if html {
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    } else {
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    }
    env
}

/// Renders one template source against `payload` (plain text, or HTML
/// with every value escaped).
pub fn render_source(
    source: &str,
    payload: &serde_json::Value,
    html: bool,
) -> Result<String, String> {
    environment(html, UndefinedBehavior::Strict)
        .render_str(source, minijinja::value::Serde(payload))
        .map_err(|e| e.to_string())
}

/// [`render_source`], but a variable the payload lacks renders blank; the
/// strict error, if there was one, is returned beside the text.
fn render_forgiving(
    source: &str,
    payload: &serde_json::Value,
) -> Result<(String, Option<String>), String> {
    match render_source(source, payload, false) {
        Ok(text) => Ok((text, None)),
        Err(strict) => environment(false, UndefinedBehavior::Lenient)
            .render_str(source, minijinja::value::Serde(payload))
            .map(|text| (text, Some(strict)))
            .map_err(|e| e.to_string()),
    }
}

/// A notification's texts, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The locale used.
    pub locale: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
}

/// Renders an event type's template in the locale nearest `wanted`
/// (strictly: any missing variable is an error; what the tests check every
/// template with).
#[cfg(test)]
pub fn render(
    t: &Template,
    wanted: Option<&str>,
    payload: &serde_json::Value,
) -> Result<Rendered, String> {
    let (locale, text) = pick(t, wanted);
    Ok(Rendered {
        locale: locale.to_string(),
        title: render_source(&text.title, payload, false)?,
        body: render_source(&text.body, payload, false)?,
    })
}

/// [`render`] as the consumer runs it: what a payload lacks renders blank
/// and is reported (`Some(why)`) for the log; an error only for a template
/// that cannot render at all.
pub fn render_for_delivery(
    t: &Template,
    wanted: Option<&str>,
    payload: &serde_json::Value,
) -> Result<(Rendered, Option<String>), String> {
    let (locale, text) = pick(t, wanted);
    let (title, a) = render_forgiving(&text.title, payload)?;
    let (body, b) = render_forgiving(&text.body, payload)?;
    Ok((
        Rendered {
            locale: locale.to_string(),
            title,
            body,
        },
        a.or(b),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::events::catalogue::{Audience, CATALOGUE};

    /// The example payload docs/events.md gives each event type (following
    /// "Payload as `x`" to x's).
    fn documented_payloads() -> BTreeMap<String, serde_json::Value> {
        let docs = include_str!("../../../docs/events.md");
        let mut sections: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in docs.lines() {
            if let Some(rest) = line.strip_prefix("### `") {
                let name = rest.split('`').next().unwrap_or_default().to_string();
                sections.insert(name.clone(), String::new());
                current = Some(name);
            } else if line.starts_with("## ") {
                current = None;
            } else if let Some(c) = &current {
                let s = sections.get_mut(c).expect("section");
                s.push_str(line);
                s.push('\n');
            }
        }
        let block = |text: &str| -> Option<serde_json::Value> {
            let start = text.find("```json\n")? + "```json\n".len();
            let end = start + text[start..].find("```")?;
            Some(serde_json::from_str(&text[start..end]).expect("documented payload is JSON"))
        };
        let mut out = BTreeMap::new();
        for (name, text) in &sections {
            let mut seen = vec![name.clone()];
            let mut t = text.clone();
            loop {
                if let Some(v) = block(&t) {
                    out.insert(name.clone(), v);
                    break;
                }
                let flat = t.split_whitespace().collect::<Vec<_>>().join(" ");
                let refers = ["ayload as `", "ayload is that of `"]
                    .iter()
                    .find_map(|p| flat.split(p).nth(1))
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                let Some(other) = refers else {
                    break;
                };
                if seen.contains(&other) {
                    break;
                }
                seen.push(other.clone());
                t = sections.get(&other).cloned().unwrap_or_default();
            }
        }
        // `"...": "the device fields of device.created"` stands for that
        // event's fields.
        let names: Vec<String> = out.keys().cloned().collect();
        for name in names {
            let mut v = out[&name].clone();
            let base = v
                .get("...")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.rsplit(' ').next())
                .and_then(|other| out.get(other).cloned());
            if let (Some(serde_json::Value::Object(base)), Some(obj)) = (base, v.as_object_mut()) {
                obj.remove("...");
                for (k, val) in base {
                    obj.entry(k).or_insert(val);
                }
                out.insert(name, v);
            }
        }
        out
    }

    #[test]
    fn every_event_meant_for_people_has_a_template_in_every_locale_and_nothing_else_has_one() {
        let templates = defaults();
        for e in CATALOGUE {
            let has = templates.get(e.name);
            match e.audience {
                Audience::People(_) => {
                    let t = has.unwrap_or_else(|| {
                        panic!("{} is meant for people but has no template", e.name)
                    });
                    for l in LOCALES {
                        assert!(t.texts.contains_key(*l), "{}: no {l} text", e.name);
                    }
                    assert!(t.recipient.is_some(), "{}: no recipient", e.name);
                }
                Audience::Internal => {
                    assert!(has.is_none(), "{} is internal but has a template", e.name)
                }
            }
        }
        for name in templates.keys() {
            assert!(
                CATALOGUE.iter().any(|e| e.name == name),
                "a template for {name}, which is not in the catalogue"
            );
        }
    }

    #[test]
    fn every_template_renders_its_events_documented_payload_and_names_a_user_in_it() {
        let payloads = documented_payloads();
        for (name, t) in defaults() {
            let p = payloads
                .get(name)
                .unwrap_or_else(|| panic!("{name}: docs/events.md shows no payload"));
            let field = t.recipient.as_deref().unwrap_or_default();
            assert!(p.get(field).is_some(), "{name}: the payload has no {field}");
            for l in LOCALES {
                let r = render(t, Some(l), p).unwrap_or_else(|e| panic!("{name} ({l}): {e}"));
                assert!(
                    !r.title.trim().is_empty() && !r.body.trim().is_empty(),
                    "{name} ({l})"
                );
                assert!(
                    !r.title.contains("{{") && !r.body.contains("{%"),
                    "{name} ({l})"
                );
            }
        }
    }

    #[test]
    fn a_missing_variable_is_an_error_and_html_is_escaped() {
        let p = serde_json::json!({"name": "<b>x</b>", "amount_minor": 12345});
        assert!(render_source("{{ nope }}", &p, false).is_err());
        assert_eq!(
            render_source("{{ name }}", &p, true).unwrap(),
            "&lt;b&gt;x&lt;&#x2f;b&gt;"
        );
        assert_eq!(render_source("{{ name }}", &p, false).unwrap(), "<b>x</b>");
        assert_eq!(
            render_source("{{ amount_minor | money }}", &p, false).unwrap(),
            "123.45"
        );
        assert_eq!(money(-5, None), "-0.05");
        assert_eq!(money(500, Some("JPY".into())), "500");
    }

    #[test]
    fn delivery_renders_what_a_payload_lacks_blank_and_says_so() {
        let t: Template = serde_json::from_value(serde_json::json!({
            "recipient": "owner_id",
            "en": {"title": "{{ name }} failed", "body": "Because {{ reason }}.{% if extra %} {{ extra }}{% endif %}"}
        }))
        .unwrap();
        let full = serde_json::json!({"name": "P1", "reason": "r", "extra": null});
        let (r, why) = render_for_delivery(&t, None, &full).unwrap();
        assert_eq!(
            (r.title.as_str(), r.body.as_str(), why),
            ("P1 failed", "Because r.", None)
        );
        let lacking = serde_json::json!({"name": "P1"});
        let (r, why) = render_for_delivery(&t, None, &lacking).unwrap();
        assert_eq!(
            (r.title.as_str(), r.body.as_str()),
            ("P1 failed", "Because .")
        );
        assert!(why.is_some());
        assert!(render(&t, None, &lacking).is_err());
    }

    #[test]
    fn the_locale_falls_back_to_the_language_then_english() {
        let t: Template = serde_json::from_value(serde_json::json!({
            "recipient": "user_id",
            "en": {"title": "Hi", "body": "Hello"},
            "zh-CN": {"title": "你好", "body": "您好"}
        }))
        .unwrap();
        assert_eq!(pick(&t, Some("zh-CN")).0, "zh-CN");
        assert_eq!(pick(&t, Some("zh")).0, "zh-CN");
        assert_eq!(pick(&t, Some("zh_TW")).0, "zh-CN");
        assert_eq!(pick(&t, Some("fr")).0, "en");
        assert_eq!(pick(&t, None).0, "en");
    }
}
