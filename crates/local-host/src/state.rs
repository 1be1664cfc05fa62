//! The data of one guest instance's store: WASI, WASI HTTP and the Spin
//! interfaces, tied to the component it runs.

use crate::app::{App, LoadedComponent};
use crate::bindings::fermyon::spin2_0_0::variables::{self, Error as VarError};
use crate::outbound::split_url;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Per-instance state.
pub struct State {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub hooks: OutboundHttp,
    pub component: Arc<LoadedComponent>,
}

impl State {
    /// Fresh state for one instance of `component`.
    pub fn new(app: Arc<App>, component: Arc<LoadedComponent>) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &component.environment {
            wasi.env(k, v);
        }
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHttp {
                app,
                component: component.clone(),
            },
            component,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl variables::Host for State {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, VarError>> {
        if crate::manifest::check_variable_name(&name).is_err() {
            return Ok(Err(VarError::InvalidName(name)));
        }
        Ok(self
            .component
            .variables
            .get(&name)
            .cloned()
            .ok_or(VarError::Undefined(name)))
    }
}

/// Outbound HTTP: `allowed_outbound_hosts` enforcement, and service chaining
/// to `http://<component>.spin.internal`, which never leaves the process.
pub struct OutboundHttp {
    app: Arc<App>,
    component: Arc<LoadedComponent>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        let uri = request.uri().to_string();
        let denied = match split_url(&uri) {
            Ok((scheme, host, port)) => {
                if self.component.policy.allows(&scheme, &host, port) {
                    None
                } else {
                    Some(format!("{scheme}://{host}:{port}"))
                }
            }
            Err(e) => Some(e),
        };
        if let Some(dest) = denied {
            tracing::warn!(component = %self.component.id, destination = %dest, "outbound http denied: not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if let Some(target) = host.strip_suffix(".spin.internal") {
            let app = self.app.clone();
            let target = target.to_string();
            return Box::new(async move {
                let resp = app.chain(&target, request).await.map_err(|e| {
                    wasmtime_wasi_http::Error::InternalError(Some(format!("{e:#}")))
                })?;
                Ok((
                    resp,
                    Box::new(async { Ok(()) }) as Box<dyn std::future::Future<Output = _> + Send>,
                ))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
