//! A component's route table as data: one row per route, carrying its
//! method, path pattern, [`Guard`] and handler, so adding a route is one line
//! (plus its row in `docs/api.md`, which a unit test in each component
//! compares with the table). [`serve`] authenticates a request as the
//! route's guard demands before its handler runs, so no handler can forget
//! to check who is asking, and unauthenticated routes are visible in the
//! table.
//!
//! Paths are matched on the request's own path below the component's base
//! (`/api/v1/<component>`), never on `spin-path-info`: Spin delivers a
//! chained request (`http://<component>.spin.internal/...`) as a synthetic
//! match of the wildcard route whose `spin-path-info` is the whole path, so
//! the same route must be found either way.

use crate::auth::{self, KeyVerifier};
use crate::http::Ctx;
use crate::Problem;
use access::Caller;
use spin_sdk::http::{Method, Request, Response};
use uuid::Uuid;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone (health, register, login, ...).
    Public,
    /// Only the listed components (or `scheduler`), each with its own
    /// service token (`access::service`).
    Service(&'static [&'static str]),
    /// Any authenticated caller (access token or API key).
    Authenticated,
    /// A caller who signed in (an access token, not an API key): account
    /// changes such as one's password or profile.
    Session,
    /// An authenticated caller holding this permission.
    Permission(&'static str),
    /// A node's runtime agent, by the HMAC signature of the request under
    /// that node's secret (the component's [`Component::agent`] checks it;
    /// the route's `:node_id` names the node).
    Agent,
}

impl Guard {
    /// How `docs/api.md` names the guard.
    pub fn label(&self) -> String {
        match self {
            Guard::Public => "public".into(),
            Guard::Service(callers) => format!("service: {}", callers.join(", ")),
            Guard::Authenticated => "authenticated".into(),
            Guard::Session => "session".into(),
            Guard::Permission(p) => (*p).into(),
            Guard::Agent => "agent".into(),
        }
    }
}

/// What a route runs: the authenticated call in, a response or the
/// component's error out.
pub type Handler<E> = fn(&Call) -> Result<Response, E>;

/// One route: `path` is relative to the component's base route, with
/// `:name` segments captured as parameters (`users/:id/roles`).
pub struct Route<E: 'static> {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: &'static str,
    /// Path pattern.
    pub path: &'static str,
    /// Who may call it.
    pub guard: Guard,
    /// What it does.
    pub handler: Handler<E>,
}

/// A table row.
pub const fn route<E>(
    method: &'static str,
    path: &'static str,
    guard: Guard,
    handler: Handler<E>,
) -> Route<E> {
    Route {
        method,
        path,
        guard,
        handler,
    }
}

/// Checks a runtime agent's signed request for the node named in the path;
/// returns the node id.
pub type AgentVerifier = fn(&Ctx, &Request, &Params) -> Result<String, Problem>;

/// A component: its name (which is also its base route `/api/v1/<name>`),
/// its route table and how it verifies API keys (and, for `device`, agents).
pub struct Component<E: 'static> {
    /// `auth`, `user`, ...
    pub name: &'static str,
    /// The route table.
    pub routes: &'static [Route<E>],
    /// How API keys are verified.
    pub keys: KeyVerifier,
    /// How agents' requests are verified (`Guard::Agent` routes).
    pub agent: Option<AgentVerifier>,
}

/// The name of a request method.
pub fn method_name(m: &Method) -> &str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(s) => s,
    }
}

/// The captured `:name` segments of a matched route.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// A captured segment (empty if the route has no such parameter).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A captured segment that must be a UUID; anything else is a 404, as
    /// no such resource can exist.
    pub fn uuid(&self, name: &str, what: &str) -> Result<Uuid, Problem> {
        Uuid::parse_str(self.get(name)).map_err(|_| Problem::not_found(what))
    }
}

/// Who the request comes from, as established by the route's guard.
#[derive(Debug, Clone)]
pub enum Who {
    /// Nobody in particular (public route).
    Anonymous,
    /// Another component or the scheduler, by name.
    Service(&'static str),
    /// A node's runtime agent, by node id.
    Agent(String),
    /// An authenticated user.
    Caller(Caller),
}

/// A request matched to a route and authenticated.
pub struct Call<'a> {
    /// Request id and path.
    pub ctx: &'a Ctx,
    /// The request.
    pub req: &'a Request,
    /// Captured path parameters.
    pub params: Params,
    /// The authenticated party.
    pub who: Who,
}

impl Call<'_> {
    /// The authenticated caller (routes guarded by `Authenticated` or a permission).
    pub fn caller(&self) -> Result<&Caller, Problem> {
        match &self.who {
            Who::Caller(c) => Ok(c),
            _ => Err(Problem::unauthenticated("authentication required")),
        }
    }

    /// The node of an `Agent` route.
    pub fn agent(&self) -> Result<&str, Problem> {
        match &self.who {
            Who::Agent(n) => Ok(n),
            _ => Err(Problem::unauthenticated("agent signature required")),
        }
    }

    /// The calling component of a `Service` route.
    pub fn service(&self) -> Option<&'static str> {
        match self.who {
            Who::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, Problem> {
        crate::http::body(self.req)
    }

    /// A UUID path parameter; 404 for `what` if it is not one.
    pub fn id(&self, name: &str, what: &str) -> Result<Uuid, Problem> {
        self.params.uuid(name, what)
    }

    /// A query-string parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        crate::http::query_param(self.req, name)
    }

    /// Pagination from the query string.
    pub fn page(&self) -> Result<crate::http::Page, Problem> {
        crate::http::Page::from_request(self.req)
    }
}

fn matches(pattern: &'static str, segments: &[&str]) -> Option<(Params, usize)> {
    let pat: Vec<&'static str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    if pat.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    let mut literals = 0;
    for (p, s) in pat.iter().zip(segments) {
        if let Some(name) = p.strip_prefix(':') {
            if s.is_empty() {
                return None;
            }
            params.push((name, (*s).to_string()));
        } else if p == s {
            literals += 1;
        } else {
            return None;
        }
    }
    Some((Params(params), literals))
}

/// Finds the route for a request (404 if no path matches, 405 if only the
/// method is wrong; a literal segment beats a parameter).
fn find<'r, E>(
    routes: &'r [Route<E>],
    ctx: &Ctx,
    req: &Request,
) -> Result<(&'r Route<E>, Params), Problem> {
    let path = ctx.path();
    let method = method_name(req.method());
    let mut best: Option<(&Route<E>, Params, usize)> = None;
    let mut path_matched = false;
    for r in routes {
        let Some((params, literals)) = matches(r.path, &path) else {
            continue;
        };
        path_matched = true;
        if r.method == method && best.as_ref().is_none_or(|(_, _, l)| literals > *l) {
            best = Some((r, params, literals));
        }
    }
    match best {
        Some((route, params, _)) => Ok((route, params)),
        None if path_matched => Err(crate::http::method_not_allowed(req.method())),
        None => Err(Problem::not_found("route")),
    }
}

/// Authenticates a request as a guard demands (401, or 403 for a missing
/// permission or a service that may not call the route).
fn authenticate<E>(
    component: &Component<E>,
    guard: Guard,
    ctx: &Ctx,
    req: &Request,
    params: &Params,
) -> Result<Who, Problem> {
    let keys = component.keys;
    Ok(match guard {
        Guard::Agent => match component.agent {
            Some(verify) => Who::Agent(verify(ctx, req, params)?),
            None => {
                return Err(Problem::internal(
                    "an agent route without an agent verifier",
                ))
            }
        },
        Guard::Public => Who::Anonymous,
        Guard::Service(callers) => Who::Service(auth::require_service(req, callers)?),
        Guard::Authenticated => Who::Caller(auth::authenticate(req, ctx, keys)?),
        Guard::Session => {
            let caller = auth::authenticate(req, ctx, keys)?;
            if caller.credential != access::Credential::Token {
                return Err(Problem::new(
                    403,
                    "forbidden",
                    "this needs a signed-in session, not an api key",
                ));
            }
            Who::Caller(caller)
        }
        Guard::Permission(p) => {
            let caller = auth::authenticate(req, ctx, keys)?;
            if !caller.can(p) {
                return Err(Problem::new(
                    403,
                    "forbidden",
                    format!("permission {p} is required"),
                ));
            }
            Who::Caller(caller)
        }
    })
}

/// Serves one request of a component: request id, route lookup,
/// authentication, the handler, and the common error body for any failure.
pub fn serve<E: Into<Problem>>(component: &Component<E>, req: Request) -> Response {
    crate::http::respond(component.name, req, |ctx, req| {
        let (route, params) = find(component.routes, ctx, req)?;
        let who = authenticate(component, route.guard, ctx, req, &params)?;
        let call = Call {
            ctx,
            req,
            params,
            who,
        };
        (route.handler)(&call).map_err(Into::into)
    })
}

/// The routes of a component whose domain has only its health routes so far.
pub const HEALTH_ONLY: &[Route<Problem>] = &[
    route("GET", "health", Guard::Public, crate::http::health),
    route("GET", "health/live", Guard::Public, crate::http::live),
];

/// Serves a component that has only [`HEALTH_ONLY`].
pub fn serve_health_only(name: &'static str, req: Request) -> Response {
    serve(
        &Component {
            name,
            routes: HEALTH_ONLY,
            keys: KeyVerifier::Chained,
            agent: None,
        },
        req,
    )
}

/// The rows of the route table as `docs/api.md` lists them:
/// `(METHOD, /api/v1/<component>/<path>, guard)`.
pub fn documented_rows<E>(component: &str, routes: &[Route<E>]) -> Vec<(String, String, String)> {
    routes
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                format!("/api/v1/{component}/{}", r.path),
                r.guard.label(),
            )
        })
        .collect()
}

/// The rows `docs/api.md` lists for a component (its `## <component>` section),
/// for the unit test that keeps the docs and the table equal.
pub fn rows_in_api_doc(doc: &str, component: &str) -> Vec<(String, String, String)> {
    let heading = format!("## `{component}`");
    let mut rows = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        if !inside || !line.starts_with("| ") || line.starts_with("| method") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || cells[1].starts_with("---") {
            continue;
        }
        rows.push((
            cells[1].to_string(),
            cells[2].trim_matches('`').to_string(),
            cells[3].trim_matches('`').to_string(),
        ));
    }
    rows
}

/// The unit test every component runs: `docs/api.md` lists exactly its table.
pub fn assert_documented<E>(doc: &str, component: &str, routes: &[Route<E>]) {
    assert_eq!(
        rows_in_api_doc(doc, component),
        documented_rows(component, routes),
        "docs/api.md and the route table of {component} differ"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_capture_parameters_and_count_literals() {
        let (p, lit) = matches("users/:id/roles", &["users", "42", "roles"]).unwrap();
        assert_eq!((p.get("id"), lit), ("42", 2));
        assert!(matches("users/:id", &["users"]).is_none());
        assert!(matches("users/:id", &["roles", "1"]).is_none());
        assert_eq!(matches("users/stats", &["users", "stats"]).unwrap().1, 2);
    }

    #[test]
    fn api_doc_rows_are_read_from_the_components_section() {
        let doc = "## `user`\n\n| method | path | access | what |\n|---|---|---|---|\n\
                   | GET | `/api/v1/user/users` | `user:read` | list |\n## `auth`\n| POST | `/x` | public | y |\n";
        assert_eq!(
            rows_in_api_doc(doc, "user"),
            vec![(
                "GET".to_string(),
                "/api/v1/user/users".to_string(),
                "user:read".to_string()
            )]
        );
    }

    #[test]
    fn service_guards_are_labelled_with_their_callers() {
        assert_eq!(
            Guard::Service(&["scheduler", "auth"]).label(),
            "service: scheduler, auth"
        );
    }
}
