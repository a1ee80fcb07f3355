//! Native local host for edgefront: serves the platform-neutral functions over HTTP/1.1 with
//! in-memory ports, and forwards event batches and sketch deltas to the origin when one is
//! configured.
//!
//! Key design choice: this crate only adapts — hyper requests become `http::Request<Bytes>`,
//! ports are the in-memory components of `edgefront-functions` plus an HTTP origin client and
//! the system clock. Any rule that is not about hosting belongs in `functions` or `shared`.

pub mod keys;
mod origin;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgefront_functions::memory::{MemoryCatalog, MemoryCounters, MemoryKv};
use edgefront_functions::ports::{Environment, Ports};
use edgefront_functions::problem::ApiError;
use edgefront_functions::{App, Config, InternalDetail, flush, sync};
use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{CatalogSnapshot, demo_catalog};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use origin::HttpOrigin;
use telemetry::EdgeMetrics;

/// The ports of the local host.
pub type LocalPorts = Ports<MemoryCatalog, MemoryKv, MemoryCounters, HttpOrigin, SystemEnv>;
/// The app as the local host runs it.
pub type LocalApp = App<LocalPorts>;

/// System clock, OS randomness and a node name.
#[derive(Debug, Clone)]
pub struct SystemEnv {
    node: String,
}

impl SystemEnv {
    /// An environment naming this node `node`.
    pub fn new(node: impl Into<String>) -> Self {
        SystemEnv { node: node.into() }
    }
}

impl Environment for SystemEnv {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }

    fn random_id(&self) -> String {
        use base64::Engine as _;
        let bytes: [u8; 16] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn edge_node(&self) -> &str {
        &self.node
    }
}

/// How to run the local edge host.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Where dev keys live.
    pub data_dir: PathBuf,
    /// Demo catalog size.
    pub products: usize,
    /// Origin base URL to forward to, if any.
    pub origin_url: Option<String>,
    /// This node's name.
    pub edge_node: String,
    /// How often to flush to the origin and poll it for a new catalog.
    pub flush_interval: Duration,
    /// API limits and defaults.
    pub config: Config,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
            data_dir: PathBuf::from("data"),
            products: 10_000,
            origin_url: None,
            edge_node: "local".to_owned(),
            flush_interval: Duration::from_secs(2),
            config: Config::default(),
        }
    }
}

/// A running edge host.
#[derive(Debug)]
pub struct RunningEdge {
    /// The bound address.
    pub addr: SocketAddr,
    /// The app (for in-process inspection in tests).
    pub app: Arc<LocalApp>,
    /// The host's metrics.
    pub metrics: Arc<EdgeMetrics>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl RunningEdge {
    /// Base URL, e.g. `http://127.0.0.1:8787`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, flushes once more, and waits for the server task.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        flush::flush(&self.app.ports).await;
    }
}

/// Builds the app: dev keys from the data dir, the demo catalog, in-memory ports.
pub fn build_app(opts: &EdgeOptions) -> anyhow::Result<LocalApp> {
    let keyring = keys::load_or_create(&opts.data_dir)?;
    let snapshot = CatalogSnapshot::build_with_promotions(
        1,
        demo_catalog(opts.products, 42),
        demo_promotions(),
    )?;
    let ports = Ports {
        catalog: MemoryCatalog::new(snapshot),
        kv: MemoryKv::new(),
        counters: MemoryCounters::new(opts.config.counter_retention_minutes),
        origin: HttpOrigin::new(opts.origin_url.clone())?,
        env: SystemEnv::new(opts.edge_node.clone()),
    };
    Ok(App::new(ports, keyring, opts.config.clone()))
}

/// Binds and serves until shut down; also runs the periodic flush to the origin.
pub async fn spawn(opts: EdgeOptions) -> anyhow::Result<RunningEdge> {
    let app = Arc::new(build_app(&opts)?);
    let listener = TcpListener::bind(opts.addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let metrics = Arc::new(EdgeMetrics::new());
    let server = tokio::spawn(serve(listener, app.clone(), metrics.clone(), rx.clone()));
    tokio::spawn(flush_loop(
        app.clone(),
        metrics.clone(),
        opts.flush_interval,
        rx,
    ));
    Ok(RunningEdge {
        addr,
        app,
        metrics,
        shutdown: tx,
        server,
    })
}

async fn flush_loop(
    app: Arc<LocalApp>,
    metrics: Arc<EdgeMetrics>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut catalog_etag: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match sync::refresh_catalog(&app.ports, catalog_etag.as_deref()).await {
                    Ok(Some((etag, snapshot))) => {
                        tracing::info!(version = snapshot.version(), "catalog updated from the origin");
                        app.ports.catalog.publish(snapshot);
                        catalog_etag = Some(etag);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "catalog refresh failed; keeping the current one"),
                }
                let report = flush::flush(&app.ports).await;
                metrics.flushed(&report);
                if let Some(e) = report.error {
                    tracing::warn!(error = %e, left = report.batches_left, "flush to origin failed; will retry");
                } else if report.batches_sent > 0 || report.sketches_sent {
                    tracing::debug!(batches = report.batches_sent, sketches = report.sketches_sent, "flushed to origin");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn serve(
    listener: TcpListener,
    app: Arc<LocalApp>,
    metrics: Arc<EdgeMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        let metrics = metrics.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(observed(&app, &metrics, req).await)
                        }
                    });
                    if let Err(e) = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// Serves `/metrics` itself; everything else goes to the functions, counted per route and
/// logged at debug with the request's trace id (from the functions' `traceresponse`).
async fn observed(
    app: &LocalApp,
    metrics: &EdgeMetrics,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" && req.method() == http::Method::GET {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(metrics.render())));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    let started = std::time::Instant::now();
    let route = edgefront_functions::request::route_template(req.uri().path());
    let method = req.method().clone();
    let resp = handle(app, req).await;
    let elapsed = started.elapsed();
    let status = resp.status();
    metrics
        .requests
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    metrics
        .latency
        .with_label_values(&[route, method.as_str()])
        .observe(elapsed.as_secs_f64());
    if tracing::enabled!(tracing::Level::DEBUG) {
        let trace_id = resp
            .headers()
            .get(edgefront_functions::TRACE_RESPONSE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
            .unwrap_or_default();
        tracing::debug!(
            trace_id,
            %method,
            route,
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            "answered"
        );
    }
    resp
}

async fn handle(app: &LocalApp, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    // The platform supplies geo headers; a local host has no geo lookup, so client-sent ones
    // are dropped rather than trusted.
    for h in edgefront_functions::GEO_HEADERS {
        parts.headers.remove(h);
    }
    // Read at most one byte past the largest limit, so the functions can answer 413 precisely.
    let cap = app.config().max_events_body_bytes + 1;
    let resp = match Limited::new(body, cap).collect().await {
        Ok(collected) => {
            let method = parts.method.clone();
            let path = parts.uri.path().to_owned();
            let resp = app
                .handle(http::Request::from_parts(parts, collected.to_bytes()))
                .await;
            if let Some(InternalDetail(detail)) = resp.extensions().get::<InternalDetail>() {
                tracing::error!(%method, %path, status = resp.status().as_u16(), %detail, "request failed");
            }
            resp
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            ApiError::PayloadTooLarge(app.config().max_events_body_bytes).to_response()
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            ApiError::InvalidJson("the body could not be read".to_owned()).to_response()
        }
    };
    resp.map(Full::new)
}
