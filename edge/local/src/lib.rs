//! Native local host for edgefront: serves the platform-neutral functions over HTTP/1.1 with
//! in-memory ports and a durable event outbox (one file per node, [`FileKv`]), and forwards
//! event batches and sketch deltas to the origin when one is configured.
//!
//! Key design choice: this crate only adapts — hyper requests become `http::Request<Bytes>`,
//! ports are the in-memory components of `edgefront-functions` plus an HTTP origin client and
//! the system clock. Any rule that is not about hosting belongs in `functions` or `shared`.

pub mod file_kv;
pub mod keys;
mod limiter;
mod origin;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edgefront_functions::memory::{MemoryCatalog, MemoryCounters};
use edgefront_functions::ports::{Environment, Ports};
use edgefront_functions::problem::ApiError;
use edgefront_functions::rate_limit::ClientIp;
use edgefront_functions::{App, BodyTooLarge, Config, InternalDetail, flush, sync};
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

pub use file_kv::FileKv;
pub use limiter::GcraLimiter;
pub use origin::{HttpOrigin, OriginTimeouts};
use telemetry::EdgeMetrics;

/// The ports of the local host: the event outbox in a file, the rest in memory.
pub type LocalPorts =
    Ports<MemoryCatalog, FileKv, MemoryCounters, HttpOrigin, SystemEnv, GcraLimiter>;
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
    /// Where dev keys and the event outbox (`edge-<node>.redb`) live.
    pub data_dir: PathBuf,
    /// Demo catalog size.
    pub products: usize,
    /// Origin base URL to forward to, if any.
    pub origin_url: Option<String>,
    /// This node's name.
    pub edge_node: String,
    /// How often to flush to the origin and poll it for a new catalog.
    pub flush_interval: Duration,
    /// How long calls to the origin may take.
    pub origin_timeouts: OriginTimeouts,
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
            origin_timeouts: OriginTimeouts::default(),
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
        if let Err(e) = self.app.ports.kv.sync().await {
            tracing::warn!(error = %e, "outbox sync at shutdown failed");
        }
    }
}

/// The file of `edge_node`'s event outbox in `data_dir`: `edge-<node>.redb`, the node name
/// kept to letters, digits, `.`, `_` and `-`.
pub fn outbox_path(data_dir: &std::path::Path, edge_node: &str) -> PathBuf {
    let node: String = edge_node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    data_dir.join(format!("edge-{node}.redb"))
}

/// Builds the app: dev keys from the data dir, the demo catalog, the event outbox in
/// [`outbox_path`] (batches queued before a crash are delivered after the restart), the rest in
/// memory.
pub fn build_app(opts: &EdgeOptions) -> anyhow::Result<LocalApp> {
    let keyring = keys::load_or_create(&opts.data_dir)?;
    let kv = FileKv::open(&outbox_path(&opts.data_dir, &opts.edge_node))?;
    let snapshot = CatalogSnapshot::build_with_promotions(
        1,
        demo_catalog(opts.products, 42),
        demo_promotions(),
    )?;
    let ports = Ports {
        catalog: MemoryCatalog::new(snapshot),
        kv,
        counters: MemoryCounters::new(opts.config.counter_retention_minutes),
        origin: HttpOrigin::with_timeouts(opts.origin_url.clone(), opts.origin_timeouts)?,
        env: SystemEnv::new(opts.edge_node.clone()),
        limiter: GcraLimiter::new(),
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
                // Quota state of clients gone quiet is dropped on the same timer.
                app.ports.limiter.retain_recent();
                // One flush sends a bounded number of batches; while a backlog is left and the
                // origin keeps taking them, go on now instead of at the next tick (else delivery
                // is capped at one flush's worth per tick: 128 requests a second, measured).
                loop {
                    let report = flush::flush(&app.ports).await;
                    metrics.flushed(&report);
                    if let Some(e) = report.error {
                        tracing::warn!(error = %e, left = report.batches_left, "flush to origin failed; will retry");
                        break;
                    }
                    if report.batches_sent > 0 || report.sketches_sent {
                        tracing::debug!(batches = report.batches_sent, sketches = report.sketches_sent, "flushed to origin");
                    }
                    if report.batches_left == 0 || report.batches_sent == 0 || *stop.borrow() {
                        break;
                    }
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
                let (stream, peer) = match accepted {
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
                            Ok::<_, std::convert::Infallible>(observed(&app, &metrics, peer, req).await)
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
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    if req.uri().path() == "/metrics" && req.method() == http::Method::GET {
        let mut resp = hyper::Response::new(Full::new(Bytes::from(metrics.render())));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        edgefront_functions::cors::security_headers(resp.headers_mut());
        return resp;
    }
    let started = std::time::Instant::now();
    let route = edgefront_functions::request::route_template(req.uri().path());
    let method = req.method().clone();
    let resp = handle(app, peer, req).await;
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

async fn handle(
    app: &LocalApp,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    // The platform supplies geo headers; a local host has no geo lookup, so client-sent ones
    // are dropped rather than trusted.
    for h in edgefront_functions::GEO_HEADERS {
        parts.headers.remove(h);
    }
    // The client is the socket's peer: no header can claim another address.
    parts
        .extensions
        .insert(ClientIp(peer.ip().to_canonical().to_string()));
    // At most the route's limit is read: a declared length over it is refused unread, and a
    // body without one (chunked) is cut off there. The functions then answer 413 with every
    // header an answer carries.
    let limit = app.config().body_limit(parts.uri.path());
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = if declared.is_some_and(|n| n > limit as u64) {
        parts.extensions.insert(BodyTooLarge);
        Bytes::new()
    } else {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                parts.extensions.insert(BodyTooLarge);
                Bytes::new()
            }
            Err(e) => {
                tracing::debug!(error = %e, "request body could not be read");
                let mut resp =
                    ApiError::InvalidJson("the body could not be read".to_owned()).to_response();
                edgefront_functions::cors::security_headers(resp.headers_mut());
                return resp.map(Full::new);
            }
        }
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let resp = app.handle(http::Request::from_parts(parts, body)).await;
    if let Some(InternalDetail(detail)) = resp.extensions().get::<InternalDetail>() {
        tracing::error!(%method, %path, status = resp.status().as_u16(), %detail, "request failed");
    }
    resp.map(Full::new)
}
