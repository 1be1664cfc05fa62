//! The event catalogue: every event type with its source and payload schema
//! version. Producers can only enqueue a type from here and consumers match on
//! these constants, so a spelling cannot drift; a unit test checks that
//! `docs/events.md` documents exactly this list.

/// One event type of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    /// `<aggregate>.<past-tense verb>`.
    pub name: &'static str,
    /// The producing component.
    pub source: &'static str,
    /// Version of the payload shape.
    pub schema_version: i32,
}

/// A user profile was created.
pub const USER_CREATED: EventType = EventType {
    name: "user.created",
    source: "user",
    schema_version: 1,
};
/// A user profile changed; the payload is the full identity snapshot.
pub const USER_UPDATED: EventType = EventType {
    name: "user.updated",
    source: "user",
    schema_version: 1,
};

/// Every event type.
pub const CATALOGUE: &[EventType] = &[USER_CREATED, USER_UPDATED];

#[cfg(test)]
mod tests {
    use super::*;

    /// `### `name` (source `x`, schema_version N)` headings of docs/events.md.
    fn documented() -> Vec<(String, String, i32)> {
        include_str!("../../../docs/events.md")
            .lines()
            .filter_map(|l| l.strip_prefix("### `"))
            .map(|l| {
                let (name, rest) = l.split_once("` (source `").expect("heading shape");
                let (source, rest) = rest
                    .split_once("`, schema_version ")
                    .expect("heading shape");
                let version = rest.trim_end_matches(')').parse().expect("version");
                (name.to_string(), source.to_string(), version)
            })
            .collect()
    }

    #[test]
    fn the_documented_catalogue_is_exactly_the_code_catalogue() {
        let mut code: Vec<_> = CATALOGUE
            .iter()
            .map(|t| (t.name.to_string(), t.source.to_string(), t.schema_version))
            .collect();
        let mut docs = documented();
        code.sort();
        docs.sort();
        assert_eq!(docs, code);
    }

    #[test]
    fn names_are_aggregate_dot_verb_and_unique() {
        for t in CATALOGUE {
            let (agg, verb) = t.name.split_once('.').expect("aggregate.verb");
            assert!(
                !agg.is_empty()
                    && !verb.is_empty()
                    && t.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
            );
            assert_eq!(CATALOGUE.iter().filter(|u| u.name == t.name).count(), 1);
        }
    }
}
