//! The functions' ports on Cloudflare bindings. Errors from the runtime become
//! `PortError::Unavailable`; nothing here decides anything a host does not have to.

use std::cell::{OnceCell, RefCell};
use std::sync::Arc;

use async_trait::async_trait;
use edgefront_functions::memory::NoRateLimit;
use edgefront_functions::ports::{
    CatalogSource, Counters, Decision, Environment, KeyValue, OriginClient, PortError, Ports,
    RateKey, RateLimiter, RouteClass, Scope, catalog_answer, origin_answer, origin_paths,
};
use edgefront_functions::rate_limit::RateLimits;
use edgefront_functions::{App, Config, cors, sync};
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::catalog_parts::CatalogNeed;
use edgefront_shared::sketch::{CounterSet, Trending};
use edgefront_shared::tokens::Keyring;
use worker::kv::KvStore;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, Stub};

/// The KV namespace binding (catalog snapshot and event outbox).
const KV_BINDING: &str = "EDGEFRONT_KV";
/// The counters Durable Object binding, and the name of its one object.
const COUNTERS_BINDING: &str = "COUNTERS";
const COUNTERS_OBJECT: &str = "counters";
/// KV key of the published catalog (the origin's snapshot body), written by
/// `edgefront kv-seed` and `wrangler kv bulk put`.
pub(crate) const CATALOG_KEY: &str = "catalog/snapshot";
/// KV key of a short tag that changes whenever [`CATALOG_KEY`] does: isolates poll it, and
/// read and parse the (multi-megabyte) catalog only when it changed.
pub(crate) const CATALOG_VERSION_KEY: &str = "catalog/version";
/// How long an isolate serves its copy of the catalog before reading KV again.
const CATALOG_TTL_MS: f64 = 5_000.0;
/// How long a call to the origin may take before it is aborted (and, for a delivery, retried
/// on the next alarm). Workers offer no separate connect timeout.
const ORIGIN_TIMEOUT_MS: u32 = 10_000;

/// The ports of the Cloudflare host.
pub(crate) type WorkerPorts =
    Ports<KvCatalog, WorkerKv, DoCounters, FetchOrigin, WorkerEnv, BindingRateLimiter>;

thread_local! {
    // One isolate serves many requests on one thread: what is parsed once is kept here.
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
    static CATALOG: RefCell<Option<CachedCatalog>> = const { RefCell::new(None) };
}

/// An isolate's catalog: when it last checked KV, the version tag it holds, the snapshot.
struct CachedCatalog {
    checked_ms: f64,
    version: Option<String>,
    snapshot: Arc<CatalogSnapshot>,
}

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(e.to_string())
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// What an isolate reads once from its environment: the signing keys and the variables.
/// They only change with a new deployment, which starts new isolates.
#[derive(Clone)]
struct Settings {
    keys: Arc<Keyring>,
    origin: Option<String>,
    node: String,
    cors_origins: Vec<String>,
    rate_limits: RateLimits,
}

fn settings(env: &Env) -> worker::Result<Settings> {
    if let Some(settings) = SETTINGS.with(|s| s.borrow().clone()) {
        return Ok(settings);
    }
    let text = env.secret("EDGEFRONT_KEYS")?.to_string();
    let keys = Keyring::from_key_file(text.as_bytes())
        .map_err(|e| worker::Error::RustError(format!("EDGEFRONT_KEYS: {e}")))?;
    let settings = Settings {
        keys: Arc::new(keys),
        origin: origin_from_env(env).base,
        node: node_from_env(env),
        // `CORS_ORIGINS`: comma-separated; empty or unset, no CORS headers.
        cors_origins: env
            .var("CORS_ORIGINS")
            .map(|v| cors::parse_origins(&v.to_string()))
            .unwrap_or_default(),
        // `RATE_LIMITS = "off"` turns the quotas off (load tests from one address).
        rate_limits: match env.var("RATE_LIMITS").map(|v| v.to_string()).as_deref() {
            Ok("off") => RateLimits::OFF,
            _ => RateLimits::default(),
        },
    };
    SETTINGS.with(|s| *s.borrow_mut() = Some(settings.clone()));
    Ok(settings)
}

/// The origin named by `ORIGIN_URL` (none when it is unset or empty).
pub(crate) fn origin_from_env(env: &Env) -> FetchOrigin {
    FetchOrigin {
        base: env
            .var("ORIGIN_URL")
            .ok()
            .map(|v| v.to_string().trim_end_matches('/').to_owned())
            .filter(|v| !v.is_empty()),
    }
}

/// This node's name for the origin (`EDGE_NODE`, default `cloudflare`).
pub(crate) fn node_from_env(env: &Env) -> String {
    env.var("EDGE_NODE")
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "cloudflare".to_owned())
}

/// The app over this request's bindings. Bindings are looked up when a port first needs
/// them: a catalog read served from the isolate's copy touches neither KV nor the object.
pub(crate) fn app(env: &Env) -> worker::Result<App<WorkerPorts>> {
    let Settings {
        keys,
        origin,
        node,
        cors_origins,
        rate_limits,
    } = settings(env)?;
    let ports = Ports {
        catalog: KvCatalog { env: env.clone() },
        kv: WorkerKv { env: env.clone() },
        counters: DoCounters {
            env: env.clone(),
            stub: OnceCell::new(),
        },
        origin: FetchOrigin { base: origin },
        env: WorkerEnv { node },
        limiter: BindingRateLimiter { env: env.clone() },
    };
    let config = Config {
        cors_origins,
        rate_limits,
        ..Config::default()
    };
    Ok(App::new(ports, keys, config))
}

/// The ports the counters object flushes through: KV's event outbox, its own `counters`, the
/// origin. It serves no catalog and no request; `catalog` and `limiter` are there because the
/// flush takes a whole platform.
pub(crate) fn flush_ports(
    env: &Env,
    counters: crate::counters::Shared,
) -> worker::Result<
    Ports<KvCatalog, WorkerKv, crate::counters::Shared, FetchOrigin, WorkerEnv, NoRateLimit>,
> {
    Ok(Ports {
        catalog: KvCatalog { env: env.clone() },
        kv: WorkerKv { env: env.clone() },
        counters,
        origin: origin_from_env(env),
        env: WorkerEnv {
            node: node_from_env(env),
        },
        limiter: NoRateLimit,
    })
}

fn kv(env: &Env) -> Result<KvStore, PortError> {
    env.kv(KV_BINDING).map_err(unavailable)
}

/// Whether this isolate holds a catalog (it may be due for a version check).
pub(crate) fn catalog_loaded() -> bool {
    CATALOG.with(|c| c.borrow().is_some())
}

/// `f` of the version tag of the catalog this isolate holds.
pub(crate) fn with_catalog_version<T>(f: impl FnOnce(Option<&str>) -> T) -> T {
    CATALOG.with(|c| f(c.borrow().as_ref().and_then(|c| c.version.as_deref())))
}

/// The catalog from KV, cached in the isolate for a few seconds.
pub(crate) struct KvCatalog {
    env: Env,
}

#[async_trait(?Send)]
impl CatalogSource for KvCatalog {
    async fn snapshot(&self) -> Result<Arc<CatalogSnapshot>, PortError> {
        let now = now_ms();
        let fresh = CATALOG.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|c| now - c.checked_ms < CATALOG_TTL_MS)
                .map(|c| c.snapshot.clone())
        });
        if let Some(snapshot) = fresh {
            return Ok(snapshot);
        }
        let kv = kv(&self.env)?;
        let version = kv
            .get(CATALOG_VERSION_KEY)
            .text()
            .await
            .map_err(unavailable)?;
        let unchanged = CATALOG.with(|c| {
            let mut c = c.borrow_mut();
            match c.as_mut() {
                Some(held) if version.is_some() && held.version == version => {
                    held.checked_ms = now;
                    Some(held.snapshot.clone())
                }
                _ => None,
            }
        });
        if let Some(snapshot) = unchanged {
            return Ok(snapshot);
        }
        let body = kv
            .get(CATALOG_KEY)
            .bytes()
            .await
            .map_err(unavailable)?
            .ok_or(PortError::NoCatalog)?;
        let snapshot = Arc::new(sync::decode_published(&body)?);
        CATALOG.with(|c| {
            *c.borrow_mut() = Some(CachedCatalog {
                checked_ms: now,
                version,
                snapshot: snapshot.clone(),
            })
        });
        Ok(snapshot)
    }

    /// The whole snapshot: an isolate keeps it between requests.
    async fn snapshot_for(&self, _need: &CatalogNeed) -> Result<Arc<CatalogSnapshot>, PortError> {
        self.snapshot().await
    }
}

/// Workers KV as the functions' key-value port (the event outbox).
pub(crate) struct WorkerKv {
    env: Env,
}

#[async_trait(?Send)]
impl KeyValue for WorkerKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        kv(&self.env)?.get(key).bytes().await.map_err(unavailable)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        kv(&self.env)?
            .put_bytes(key, &value)
            .map_err(unavailable)?
            .execute()
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        kv(&self.env)?.delete(key).await.map_err(unavailable)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        // KV lists keys in lexicographic order, which is the outbox's enqueue order.
        let page = kv(&self.env)?
            .list()
            .prefix(prefix.to_owned())
            .limit(u64::try_from(limit.min(1000)).unwrap_or(1000))
            .execute()
            .await
            .map_err(unavailable)?;
        Ok(page.keys.into_iter().map(|k| k.name).collect())
    }
}

/// A request to the counters object: `path` with an optional body.
async fn call(
    stub: &Stub,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, PortError> {
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(body) = body {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let req =
        Request::new_with_init(&format!("https://counters{path}"), &init).map_err(unavailable)?;
    let mut resp = stub.fetch_with_request(req).await.map_err(unavailable)?;
    let status = resp.status_code();
    let bytes = resp.bytes().await.map_err(unavailable)?;
    if status >= 400 {
        return Err(PortError::Unavailable(format!(
            "counters object answered {status} on {path}"
        )));
    }
    Ok(bytes)
}

/// The sketch counters, owned by one Durable Object so every isolate counts into the same sets.
pub(crate) struct DoCounters {
    env: Env,
    stub: OnceCell<Stub>,
}

impl DoCounters {
    fn stub(&self) -> Result<&Stub, PortError> {
        if let Some(stub) = self.stub.get() {
            return Ok(stub);
        }
        let namespace = self
            .env
            .durable_object(COUNTERS_BINDING)
            .map_err(unavailable)?;
        let stub = namespace
            .id_from_name(COUNTERS_OBJECT)
            .and_then(|id| id.get_stub())
            .map_err(unavailable)?;
        Ok(self.stub.get_or_init(|| stub))
    }
}

#[async_trait(?Send)]
impl Counters for DoCounters {
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError> {
        call(
            self.stub()?,
            Method::Post,
            &format!("/record?minute={minute}"),
            Some(delta.encode()),
        )
        .await
        .map(drop)
    }

    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError> {
        let body = call(
            self.stub()?,
            Method::Get,
            &format!("/window?from={from}&to={to}"),
            None,
        )
        .await?;
        CounterSet::decode(&body).map_err(|e| PortError::Corrupt(e.to_string()))
    }

    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError> {
        let body = call(
            self.stub()?,
            Method::Get,
            &format!("/trending?now={now_minute}"),
            None,
        )
        .await?;
        postcard::from_bytes(&body).map_err(|e| PortError::Corrupt(e.to_string()))
    }

    /// Nothing to take: the object delivers its own delta on its alarm (counters.rs), so
    /// isolates only deliver event batches.
    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError> {
        Ok(None)
    }

    async fn ack_pending(&self) -> Result<(), PortError> {
        Ok(())
    }

    async fn restore_pending(&self, _encoded: &[u8]) -> Result<(), PortError> {
        Err(PortError::Unavailable(
            "the counters object delivers its own delta; there is nothing to restore".into(),
        ))
    }
}

/// The origin over outbound `fetch`.
pub(crate) struct FetchOrigin {
    base: Option<String>,
}

impl FetchOrigin {
    fn url(&self, path: &str) -> Result<String, PortError> {
        self.base
            .as_deref()
            .map(|b| format!("{b}{path}"))
            .ok_or_else(|| PortError::Unavailable("no origin configured".into()))
    }
}

#[async_trait(?Send)]
impl OriginClient for FetchOrigin {
    fn configured(&self) -> bool {
        self.base.is_some()
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), PortError> {
        let headers = Headers::new();
        headers
            .set("content-type", content_type)
            .map_err(unavailable)?;
        for (name, value) in extra {
            headers.set(name, value).map_err(unavailable)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        let req = Request::new_with_init(&self.url(path)?, &init).map_err(unavailable)?;
        let resp = Fetch::Request(req)
            .send_with_signal(&origin_deadline())
            .await
            .map_err(unavailable)?;
        origin_answer(resp.status_code(), path)
    }

    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        let headers = Headers::new();
        if let Some(tag) = etag {
            headers.set("if-none-match", tag).map_err(unavailable)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let req = Request::new_with_init(&self.url(origin_paths::CATALOG_SNAPSHOT)?, &init)
            .map_err(unavailable)?;
        // The deadline covers the body too: the signal aborts its stream.
        let mut resp = Fetch::Request(req)
            .send_with_signal(&origin_deadline())
            .await
            .map_err(unavailable)?;
        if !catalog_answer(resp.status_code())? {
            return Ok(None);
        }
        let tag = resp
            .headers()
            .get("etag")
            .ok()
            .flatten()
            .unwrap_or_default();
        Ok(Some((tag, resp.bytes().await.map_err(unavailable)?)))
    }
}

/// A signal that aborts a call to the origin after [`ORIGIN_TIMEOUT_MS`] (`AbortSignal.timeout`,
/// a runtime timer: `worker::Delay` cannot be raced on the fetch path, see `entry::fetch`).
fn origin_deadline() -> worker::AbortSignal {
    worker::AbortSignal::from(worker::worker_sys::web_sys::AbortSignal::timeout_with_u32(
        ORIGIN_TIMEOUT_MS,
    ))
}

/// Request quotas on Workers' Rate Limiting bindings (`[[ratelimits]]` in wrangler.toml), one
/// binding per scope and route class, because a binding fixes its limit and period: the
/// quotas are set there, to the numbers of `RateLimits::default()` (a test holds them equal).
/// The functions decide which keys a request counts against; the binding counts them per
/// Cloudflare location. A binding that is missing lets requests through (the port errs, and the
/// functions fail open).
pub(crate) struct BindingRateLimiter {
    env: Env,
}

/// The binding of a quota: `RATE_LIMIT_<SCOPE>_<CLASS>`.
fn rate_limit_binding(key: &RateKey<'_>) -> &'static str {
    match (key.scope, key.class) {
        (Scope::Ip, RouteClass::Read) => "RATE_LIMIT_IP_READS",
        (Scope::Ip, RouteClass::Write) => "RATE_LIMIT_IP_WRITES",
        (Scope::Ip, RouteClass::Events) => "RATE_LIMIT_IP_EVENTS",
        (Scope::Visitor, RouteClass::Read) => "RATE_LIMIT_VISITOR_READS",
        (Scope::Visitor, RouteClass::Write) => "RATE_LIMIT_VISITOR_WRITES",
        (Scope::Visitor, RouteClass::Events) => "RATE_LIMIT_VISITOR_EVENTS",
    }
}

/// The bindings' period (wrangler.toml): the binding reports no time left, so a refusal asks
/// for a whole period, the longest a client can have to wait.
const RATE_LIMIT_PERIOD_SECS: u64 = 60;

#[async_trait(?Send)]
impl RateLimiter for BindingRateLimiter {
    async fn check(&self, key: &RateKey<'_>, _now_ms: i64) -> Result<Decision, PortError> {
        let binding = self
            .env
            .rate_limiter(rate_limit_binding(key))
            .map_err(unavailable)?;
        let outcome = binding
            .limit(key.subject.to_owned())
            .await
            .map_err(unavailable)?;
        Ok(if outcome.success {
            Decision::ALLOWED
        } else {
            Decision::refused(RATE_LIMIT_PERIOD_SECS)
        })
    }
}

/// `Date.now`, `crypto.getRandomValues` and the node's name.
pub(crate) struct WorkerEnv {
    node: String,
}

impl Environment for WorkerEnv {
    fn now_ms(&self) -> i64 {
        now_ms() as i64
    }

    fn random_id(&self) -> String {
        use base64::Engine as _;
        let mut bytes = [0u8; 16];
        // getrandom's `js` backend is crypto.getRandomValues, always present in workerd.
        getrandom::getrandom(&mut bytes).expect("crypto.getRandomValues");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn edge_node(&self) -> &str {
        &self.node
    }
}
