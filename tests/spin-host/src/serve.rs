//! Serving the component: one fresh instance per request, as Spin runs HTTP components.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::Request;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView, default_send_request,
};

use crate::kv::Kv;
use crate::manifest::{AllowedHost, Component};
use crate::spin_apis::{self, SpinState};

/// The engine, the pre-linked component and what every instance may reach.
pub(crate) struct Host {
    engine: Engine,
    pre: ServicePre<Ctx>,
    kv: Arc<Kv>,
    route: Component,
    stores: Arc<BTreeSet<String>>,
    variables: Arc<HashMap<String, String>>,
    allowed: Arc<Vec<AllowedHost>>,
}

struct Ctx {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Outbound,
    spin: SpinState,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound HTTP limited to `allowed_outbound_hosts`; anything else is denied as Spin denies
/// it (`HTTP-request-denied`).
struct Outbound {
    allowed: Arc<Vec<AllowedHost>>,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>
    {
        _ = fut;
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = uri.host().unwrap_or_default().to_owned();
        if !self.allowed.iter().any(|a| a.allows(&scheme, &host, port)) {
            tracing::warn!(%scheme, %host, port, "outbound request denied");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (res, io) = default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}

impl Host {
    /// Compiles the component and links the interfaces it may import.
    pub(crate) fn new(route: Component, kv: Arc<Kv>) -> wasmtime::Result<Host> {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        // Spin's engine preallocates instance slots (the pooling allocator): an instance per
        // request then costs a slot, not fresh mappings.
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(256)
            .total_memories(256)
            .total_tables(256)
            // Reused slots keep their first pages mapped: a request's instance then starts
            // without page faults on the memory every request touches.
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(1 << 20);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let component = wasmtime::component::Component::from_file(&engine, &route.source)
            .with_context(|| format!("loading {}", route.source.display()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        spin_apis::add_to_linker(&mut linker, |ctx: &mut Ctx| &mut ctx.spin)?;
        let pre = ServicePre::new(linker.instantiate_pre(&component)?)?;
        Ok(Host {
            engine,
            pre,
            kv,
            stores: Arc::new(route.key_value_stores.clone()),
            variables: Arc::new(route.variables.clone()),
            allowed: Arc::new(route.allowed_outbound_hosts.clone()),
            route,
        })
    }

    /// Whether a path is routed to the component.
    pub(crate) fn routes(&self, path: &str) -> bool {
        self.route.routes(path)
    }

    /// Runs one request in a fresh instance. The answer carries `server-timing` with the
    /// instantiation and the handling time (BENCHMARKS.md).
    pub(crate) async fn handle(
        &self,
        req: http::Request<Incoming>,
    ) -> wasmtime::Result<http::Response<Full<Bytes>>> {
        let start = Instant::now();
        let mut store = Store::new(
            &self.engine,
            Ctx {
                table: ResourceTable::new(),
                wasi: WasiCtx::builder().inherit_stderr().inherit_stdout().build(),
                http: WasiHttpCtx::new(),
                hooks: Outbound {
                    allowed: Arc::clone(&self.allowed),
                },
                spin: SpinState {
                    kv: Arc::clone(&self.kv),
                    stores: Arc::clone(&self.stores),
                    variables: Arc::clone(&self.variables),
                    table: ResourceTable::new(),
                },
            },
        );
        let service = self.pre.instantiate_async(&mut store).await?;
        let instantiated = start.elapsed();
        let (req, io) = Request::from_http(&mut store.data_mut().hooks, req);
        let resp = store
            .run_concurrent(async |store| {
                let (resp, ()) = tokio::try_join!(
                    async {
                        let resp = match service.handle(store, req).await? {
                            Ok(resp) => resp,
                            Err(code) => wasmtime::bail!("the component answered {code:?}"),
                        };
                        let resp = store.with(|store| resp.into_http(store, async { Ok(()) }))?;
                        let (parts, body) = resp.into_parts();
                        let body = body.collect().await.context("response body")?.to_bytes();
                        wasmtime::error::Ok(http::Response::from_parts(parts, body))
                    },
                    async { io.await.context("request body") }
                )?;
                wasmtime::error::Ok(resp)
            })
            .await??;
        let total = start.elapsed();
        let (mut parts, body) = resp.into_parts();
        let timing = format!(
            "instantiate;dur={:.3}, handle;dur={:.3}",
            instantiated.as_secs_f64() * 1e3,
            (total - instantiated).as_secs_f64() * 1e3
        );
        if let Ok(value) = http::HeaderValue::from_str(&timing) {
            parts.headers.insert("server-timing", value);
        }
        Ok(http::Response::from_parts(parts, Full::new(body)))
    }
}
