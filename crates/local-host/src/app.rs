//! The loaded application: every component compiled once at start-up, and the
//! dispatch of HTTP requests, Redis messages and cron ticks to fresh instances.

use crate::bindings::{CronTriggerPre, ImportsHost, RedisTriggerPre};
use crate::manifest::{Manifest, RouteDecl};
use crate::outbound::OutboundPolicy;
use crate::pg::PgPool;
use crate::redis_host::RedisPool;
use crate::routes::{Route, Router};
use crate::state::State;
use crate::variables::Variables;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// One component, compiled and ready to instantiate.
pub struct LoadedComponent {
    /// Component id from the manifest.
    pub id: String,
    /// Its rendered `allowed_outbound_hosts`.
    pub policy: OutboundPolicy,
    /// Its rendered variables.
    pub variables: HashMap<String, String>,
    /// Guest environment.
    pub environment: Vec<(String, String)>,
    /// Its Postgres pool.
    pub pg: Arc<PgPool>,
    /// Its Redis connections.
    pub redis: RedisPool,
    proxy: Option<ProxyPre<State>>,
    redis_trigger: Option<RedisTriggerPre<State>>,
    cron_trigger: Option<CronTriggerPre<State>>,
}

/// A matched route: the route, its `:param` values and the path below it.
type Routed<'a> = (&'a Route, Vec<(String, String)>, String);

/// The running application.
pub struct App {
    engine: Engine,
    components: HashMap<String, Arc<LoadedComponent>>,
    router: Router,
    route_components: Vec<String>,
    /// The manifest the app came from.
    pub manifest: Manifest,
    /// Resolved application variables.
    pub variables: Variables,
    /// Instances that inbound requests, Redis messages and cron ticks may
    /// have alive at once ([`ENTRY_INSTANCES`]); beyond it they wait, first
    /// come first served, instead of failing to instantiate.
    entries: Arc<tokio::sync::Semaphore>,
}

/// Options for loading the app.
pub struct LoadOptions {
    /// `spin.toml`.
    pub manifest: PathBuf,
    /// `--variable name=value` pairs.
    pub cli_variables: Vec<(String, String)>,
    /// Where compiled components are cached between starts.
    pub cache_dir: Option<PathBuf>,
    /// The runtime configuration (`--runtime-config-file`).
    pub runtime: crate::runtime_config::RuntimeConfig,
}

/// Most instances alive at once (the pooling allocator's reservation).
const MAX_INSTANCES: u32 = 256;

/// Instances entering the app from outside (HTTP requests, Redis messages,
/// cron ticks) alive at once; the rest of [`MAX_INSTANCES`] is for the
/// chained requests they make, which never wait (a request waiting for a
/// slot for its own chained call could wait forever).
pub const ENTRY_INSTANCES: usize = 192;

fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // A fresh instance per request is cheap only with pre-reserved slots.
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES * 2)
        .total_tables(MAX_INSTANCES * 4)
        .max_memory_size(256 << 20)
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(16);
    let mut pooled = config.clone();
    pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(e) => Ok(e),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; allocating instances on demand");
            Ok(Engine::new(&config)?)
        }
    }
}

/// Compiles a component, or loads it from the cache when the same bytes were
/// compiled by the same engine before.
fn compile(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read component {} (build it with `cargo xtask build`)",
            path.display()
        )
    })?;
    let Some(cache_dir) = cache_dir else {
        return Ok(Component::new(engine, &bytes)?);
    };
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let key = hex::encode(hasher.finalize());
    let cached = cache_dir.join(format!("{key}.cwasm"));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (it is part of the file name), into
        // a cache directory that only this host writes.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, file = %cached.display(), "ignoring unusable cache entry")
            }
        }
    }
    let component = Component::new(engine, &bytes)?;
    std::fs::create_dir_all(cache_dir)?;
    let tmp = cache_dir.join(format!("{key}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, &cached)?;
    Ok(component)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl App {
    /// Loads the manifest, resolves variables and compiles every component.
    pub fn load(opts: LoadOptions) -> Result<Arc<Self>> {
        let manifest = Manifest::load(&opts.manifest)?;
        let variables =
            Variables::resolve(&manifest, &opts.cli_variables, |k| std::env::var(k).ok())?;
        let engine = engine()?;
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        ImportsHost::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;

        let mut public: Vec<(Route, String)> = Vec::new();
        for t in &manifest.http {
            if let RouteDecl::Path(p) = &t.route {
                public.push((Route::parse(p)?, t.component.clone()));
            }
        }
        let http_components: std::collections::HashSet<&str> =
            manifest.http.iter().map(|t| t.component.as_str()).collect();
        let redis_components: std::collections::HashSet<&str> = manifest
            .redis
            .iter()
            .map(|t| t.component.as_str())
            .collect();
        let cron_components: std::collections::HashSet<&str> =
            manifest.cron.iter().map(|t| t.component.as_str()).collect();

        let started = std::time::Instant::now();
        let mut components = HashMap::new();
        // One set of pools for the app, as Spin's outbound Postgres keeps.
        let pg = Arc::new(PgPool::new(opts.runtime.pg_max_connections));
        for (id, decl) in &manifest.components {
            let t0 = std::time::Instant::now();
            let path = manifest.dir.join(&decl.source);
            let component = compile(&engine, &path, opts.cache_dir.as_deref())
                .with_context(|| format!("component {id:?}"))?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {id:?} imports something this host does not provide")
                })?;
            let hosts = decl
                .allowed_outbound_hosts
                .iter()
                .map(|h| variables.render(h))
                .collect::<Result<Vec<_>>>()?;
            let policy =
                OutboundPolicy::new(&hosts).with_context(|| format!("component {id:?}"))?;
            let mut vars = HashMap::new();
            for (name, template) in &decl.variables {
                vars.insert(
                    name.clone(),
                    variables
                        .render(template)
                        .with_context(|| format!("component {id:?}"))?,
                );
            }
            let proxy = if http_components.contains(id.as_str()) {
                Some(
                    ProxyPre::new(pre.clone())
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component {id:?} does not export wasi:http/incoming-handler")
                        })?,
                )
            } else {
                None
            };
            let redis_trigger = if redis_components.contains(id.as_str()) {
                Some(
                    RedisTriggerPre::new(pre.clone())
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component {id:?} does not export fermyon:spin/inbound-redis")
                        })?,
                )
            } else {
                None
            };
            let cron_trigger = if cron_components.contains(id.as_str()) {
                Some(
                    CronTriggerPre::new(pre.clone())
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component {id:?} does not export handle-cron-event")
                        })?,
                )
            } else {
                None
            };
            tracing::info!(component = %id, ms = t0.elapsed().as_millis() as u64, "component ready");
            components.insert(
                id.clone(),
                Arc::new(LoadedComponent {
                    id: id.clone(),
                    policy,
                    variables: vars,
                    environment: decl.environment.clone().into_iter().collect(),
                    pg: pg.clone(),
                    redis: RedisPool::default(),
                    proxy,
                    redis_trigger,
                    cron_trigger,
                }),
            );
        }
        tracing::info!(
            components = components.len(),
            ms = started.elapsed().as_millis() as u64,
            "all components ready"
        );
        let (routes, route_components): (Vec<_>, Vec<_>) = public.into_iter().unzip();
        Ok(Arc::new(Self {
            engine,
            components,
            router: Router::new(routes),
            route_components,
            manifest,
            variables,
            entries: Arc::new(tokio::sync::Semaphore::new(ENTRY_INSTANCES)),
        }))
    }

    fn component(&self, id: &str) -> Result<&Arc<LoadedComponent>> {
        self.components
            .get(id)
            .ok_or_else(|| anyhow!("no component {id:?}"))
    }

    /// A place for one more instance entering the app, waited for.
    async fn entry(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.entries
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow!("the app is shutting down"))
    }

    fn store(self: &Arc<Self>, component: &Arc<LoadedComponent>) -> Store<State> {
        Store::new(&self.engine, State::new(self.clone(), component.clone()))
    }

    /// The public routes and the component serving each, for the start-up banner.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.route_components
            .iter()
            .enumerate()
            .map(|(i, c)| (self.router.route(i).raw.clone(), c.clone()))
            .collect()
    }

    /// Serves a request that arrived on the HTTP trigger.
    pub async fn handle_http<B>(
        self: &Arc<Self>,
        req: http::Request<B>,
        client: std::net::SocketAddr,
    ) -> Result<Option<http::Response<HyperOutgoingBody>>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Some(m) = self.router.find(req.uri().path()) else {
            return Ok(None);
        };
        let component = self.component(&self.route_components[m.index])?.clone();
        let route = self.router.route(m.index).clone();
        self.run_http(
            &component,
            Some((&route, m.params, m.path_info)),
            req,
            client,
        )
        .await
        .map(Some)
    }

    /// Serves a chained request (`http://<id>.spin.internal/...`) in-process,
    /// as Spin does: a synthetic match of the wildcard route `/...`, so the
    /// component sees `spin-path-info` = the whole path (not the path below
    /// its own route), `spin-matched-route` = `/...`, an empty
    /// `spin-component-route`, no `spin-path-match-*`, and the client
    /// address `0.0.0.0:0`.
    pub async fn chain<B>(
        self: &Arc<Self>,
        target: &str,
        req: http::Request<B>,
    ) -> Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let component = self.component(target)?.clone();
        let client: std::net::SocketAddr = ([0, 0, 0, 0], 0).into();
        self.run_http(&component, None, req, client).await
    }

    async fn run_http<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        routed: Option<Routed<'_>>,
        req: http::Request<B>,
        client: std::net::SocketAddr,
    ) -> Result<http::Response<HyperOutgoingBody>>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let proxy = component
            .proxy
            .clone()
            .ok_or_else(|| anyhow!("component {:?} has no http trigger", component.id))?;
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // Spin takes the host of `spin-full-url` from the Host header, and
        // strips a chained request's Host (`*.spin.internal`): "localhost".
        let chained = routed.is_none();
        if chained {
            parts.headers.remove(http::header::HOST);
        }
        let authority = if chained {
            "localhost".to_string()
        } else {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                .unwrap_or_else(|| "localhost".to_string())
        };
        let full_url = format!("http://{authority}{path_and_query}");
        parts.uri = full_url.parse()?;
        let h = &mut parts.headers;
        let set = |h: &mut http::HeaderMap, k: &str, v: &str| {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k),
                http::HeaderValue::try_from(v),
            ) {
                h.insert(k, v);
            }
        };
        set(h, "spin-full-url", &full_url);
        set(h, "spin-base-path", "/");
        set(h, "spin-client-addr", &client.to_string());
        match routed {
            Some((route, params, path_info)) => {
                set(h, "spin-path-info", &path_info);
                set(h, "spin-matched-route", &route.raw);
                set(h, "spin-raw-component-route", &route.raw);
                set(h, "spin-component-route", &route.component_route());
                for (k, v) in params {
                    set(h, &format!("spin-path-match-{k}"), &v);
                }
            }
            None => {
                set(h, "spin-path-info", parts.uri.path());
                set(h, "spin-matched-route", "/...");
                set(h, "spin-raw-component-route", "/...");
                set(h, "spin-component-route", "");
            }
        }
        let req = http::Request::from_parts(parts, body);

        // Chained requests (no route) run in their caller's place.
        let entry = if chained {
            None
        } else {
            Some(self.entry().await?)
        };
        let mut store = self.store(component);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let task = tokio::task::spawn(async move {
            // Held until the instance (and the store) is gone.
            let _entry = entry;
            let proxy = proxy.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => bail!("component {:?} failed the request: {code:?}", component.id),
            Err(_) => {
                match task.await {
                    Ok(Ok(())) => bail!("component {:?} never set a response", component.id),
                    Ok(Err(e)) => Err(anyhow::Error::from(e)
                        .context(format!("component {:?} trapped", component.id))),
                    Err(e) => Err(anyhow!(e)),
                }
            }
        }
    }

    /// Delivers one Redis message to a component's `handle-message`.
    pub async fn handle_redis(self: &Arc<Self>, id: &str, payload: Vec<u8>) -> Result<()> {
        let component = self.component(id)?.clone();
        let pre = component
            .redis_trigger
            .clone()
            .ok_or_else(|| anyhow!("component {id:?} has no redis trigger"))?;
        let _entry = self.entry().await?;
        let mut store = self.store(&component);
        let instance = pre.instantiate_async(&mut store).await?;
        match instance
            .fermyon_spin_inbound_redis()
            .call_handle_message(&mut store, &payload)
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) => bail!("component {id:?} returned {e:?}"),
        }
    }

    /// Runs one cron tick of a component.
    pub async fn handle_cron(self: &Arc<Self>, id: &str, timestamp: u64) -> Result<()> {
        let component = self.component(id)?.clone();
        let pre = component
            .cron_trigger
            .clone()
            .ok_or_else(|| anyhow!("component {id:?} has no cron trigger"))?;
        let _entry = self.entry().await?;
        let mut store = self.store(&component);
        let instance = pre.instantiate_async(&mut store).await?;
        let metadata = crate::bindings::cron::Metadata { timestamp };
        match instance
            .call_handle_cron_event(&mut store, metadata)
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) => bail!("component {id:?} returned {e:?}"),
        }
    }
}
