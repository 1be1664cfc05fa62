//! Spin's HTTP route syntax and precedence: exact paths (`/a/b`), parameter
//! segments (`/users/:id`), and trailing wildcards (`/a/...`, which also match
//! `/a`). When several routes match, the most specific wins, compared segment
//! by segment: a literal beats a parameter, which beats a wildcard, and an
//! exact end beats a wildcard.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route as written in the manifest.
    pub raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// What matched a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the route in the router.
    pub index: usize,
    /// `(name, value)` of each `:name` segment.
    pub params: Vec<(String, String)>,
    /// The part of the path after the route's fixed prefix (`spin-path-info`).
    pub path_info: String,
}

impl Route {
    /// Compiles a manifest route.
    pub fn parse(raw: &str) -> Result<Self> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} must start with '/'");
        }
        let (body, wildcard) = match raw.strip_suffix("/...") {
            Some(b) => (b, true),
            None if raw == "/..." => ("", true),
            None => (raw, false),
        };
        let mut segments = Vec::new();
        for part in body.split('/').filter(|s| !s.is_empty()) {
            if part.contains("...") {
                bail!("route {raw:?}: '...' is only allowed at the end");
            }
            segments.push(match part.strip_prefix(':') {
                Some(name) if !name.is_empty() => Segment::Param(name.to_string()),
                Some(_) => bail!("route {raw:?}: a parameter needs a name"),
                None => Segment::Literal(part.to_string()),
            });
        }
        Ok(Self {
            raw: raw.to_string(),
            segments,
            wildcard,
        })
    }

    /// The route without its wildcard suffix (`spin-component-route`).
    pub fn component_route(&self) -> String {
        self.raw
            .strip_suffix("/...")
            .unwrap_or(&self.raw)
            .to_string()
    }

    /// The `:param` values and path info if this route matches `path`.
    pub fn matches(&self, path: &str) -> Option<(Vec<(String, String)>, String)> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(&parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), (*part).to_string())),
            }
        }
        let rest = &parts[self.segments.len()..];
        let path_info = if rest.is_empty() {
            String::new()
        } else {
            let mut s = format!("/{}", rest.join("/"));
            if path.ends_with('/') {
                s.push('/');
            }
            s
        };
        Some((params, path_info))
    }

    /// Sort key: smaller is more specific.
    fn specificity(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 1,
                Segment::Param(_) => 2,
            })
            .collect();
        key.push(if self.wildcard { 3 } else { 0 });
        key
    }
}

/// All public routes of the app.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds a router; routes keep their index for the caller's lookups.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The route at an index.
    pub fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// Finds the most specific route for a path.
    pub fn find(&self, path: &str) -> Option<RouteMatch> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                r.matches(path)
                    .map(|(params, path_info)| (index, r, params, path_info))
            })
            .min_by(|a, b| a.1.specificity().cmp(&b.1.specificity()))
            .map(|(index, _, params, path_info)| RouteMatch {
                index,
                params,
                path_info,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[&str]) -> Router {
        Router::new(routes.iter().map(|r| Route::parse(r).unwrap()).collect())
    }

    #[test]
    fn exact_beats_param_beats_wildcard() {
        let r = router(&["/...", "/users/...", "/users/:id", "/users/me"]);
        assert_eq!(r.find("/users/me").unwrap().index, 3);
        let m = r.find("/users/42").unwrap();
        assert_eq!(
            (m.index, m.params.clone()),
            (2, vec![("id".to_string(), "42".to_string())])
        );
        let m = r.find("/users/42/devices").unwrap();
        assert_eq!((m.index, m.path_info.as_str()), (1, "/42/devices"));
        assert_eq!(r.find("/other").unwrap().index, 0);
    }

    #[test]
    fn a_wildcard_matches_its_own_prefix_and_longer_prefixes_win() {
        let r = router(&["/api/...", "/api/v1/auth/..."]);
        let m = r.find("/api/v1/auth").unwrap();
        assert_eq!((m.index, m.path_info.as_str()), (1, ""));
        assert_eq!(r.find("/api/v1/auth/login").unwrap().path_info, "/login");
        assert_eq!(r.find("/api/v2").unwrap().index, 0);
        assert!(router(&["/a"]).find("/a/b").is_none());
    }
}
