//! The functions' ports on Cloudflare bindings. Errors from the runtime become
//! `PortError::Unavailable`; nothing here decides anything a host does not have to.

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use edgefront_functions::ports::{
    CatalogSource, Counters, Environment, KeyValue, Origin, PortError, Ports, catalog_answer,
    origin_answer, origin_paths,
};
use edgefront_functions::{App, Config, sync};
use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::sketch::{CounterSet, Trending};
use edgefront_shared::tokens::Keyring;
use worker::kv::KvStore;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, Stub};

/// KV key of the published catalog (the origin's snapshot body), written by
/// `edgefront kv-seed` and `wrangler kv bulk put`.
pub(crate) const CATALOG_KEY: &str = "catalog/snapshot";
/// KV key of a short tag that changes whenever [`CATALOG_KEY`] does: isolates poll it, and
/// read and parse the (multi-megabyte) catalog only when it changed.
pub(crate) const CATALOG_VERSION_KEY: &str = "catalog/version";
/// How long an isolate serves its copy of the catalog before reading KV again.
const CATALOG_TTL_MS: f64 = 5_000.0;
/// Least time between two deliveries to the origin started by one isolate.
const FLUSH_EVERY_MS: f64 = 2_000.0;

/// The ports of the Cloudflare host.
pub(crate) type WorkerPorts = Ports<KvCatalog, WorkerKv, DoCounters, FetchOrigin, WorkerEnv>;

thread_local! {
    // One isolate serves many requests on one thread: what is parsed once is kept here.
    static KEYS: RefCell<Option<Keyring>> = const { RefCell::new(None) };
    static CATALOG: RefCell<Option<CachedCatalog>> = const { RefCell::new(None) };
    static LAST_FLUSH: RefCell<f64> = const { RefCell::new(0.0) };
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

/// The app over this request's bindings.
pub(crate) async fn app(env: &Env) -> worker::Result<App<WorkerPorts>> {
    let keys = match KEYS.with(|k| k.borrow().clone()) {
        Some(keys) => keys,
        None => {
            let text = env.secret("EDGEFRONT_KEYS")?.to_string();
            let keys = Keyring::from_key_file(text.as_bytes())
                .map_err(|e| worker::Error::RustError(format!("EDGEFRONT_KEYS: {e}")))?;
            KEYS.with(|k| *k.borrow_mut() = Some(keys.clone()));
            keys
        }
    };
    let kv = env.kv("EDGEFRONT_KV")?;
    let origin = env
        .var("ORIGIN_URL")
        .ok()
        .map(|v| v.to_string().trim_end_matches('/').to_owned())
        .filter(|v| !v.is_empty());
    let node = env
        .var("EDGE_NODE")
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "cloudflare".to_owned());
    let counters = env
        .durable_object("COUNTERS")?
        .id_from_name("counters")?
        .get_stub()?;
    let ports = Ports {
        catalog: KvCatalog { kv: kv.clone() },
        kv: WorkerKv { kv },
        counters: DoCounters { stub: counters },
        origin: FetchOrigin { base: origin },
        env: WorkerEnv { node },
    };
    Ok(App::new(ports, keys, Config::default()))
}

/// Whether this isolate should start a delivery now (at most one every 2 s).
pub(crate) fn flush_due() -> bool {
    LAST_FLUSH.with(|last| {
        let now = now_ms();
        let mut last = last.borrow_mut();
        if now - *last >= FLUSH_EVERY_MS {
            *last = now;
            true
        } else {
            false
        }
    })
}

/// The catalog from KV, cached in the isolate for a few seconds.
pub(crate) struct KvCatalog {
    kv: KvStore,
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
        let version = self
            .kv
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
        let body = self
            .kv
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
}

/// Workers KV as the functions' key-value port (the event outbox).
pub(crate) struct WorkerKv {
    kv: KvStore,
}

#[async_trait(?Send)]
impl KeyValue for WorkerKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.kv.get(key).bytes().await.map_err(unavailable)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.kv
            .put_bytes(key, &value)
            .map_err(unavailable)?
            .execute()
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.kv.delete(key).await.map_err(unavailable)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        // KV lists keys in lexicographic order, which is the outbox's enqueue order.
        let page = self
            .kv
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
) -> Result<(u16, Vec<u8>), PortError> {
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
    Ok((status, bytes))
}

/// The sketch counters, owned by one Durable Object so every isolate counts into the same sets.
pub(crate) struct DoCounters {
    stub: Stub,
}

#[async_trait(?Send)]
impl Counters for DoCounters {
    async fn record(&self, minute: i64, delta: CounterSet) -> Result<(), PortError> {
        call(
            &self.stub,
            Method::Post,
            &format!("/record?minute={minute}"),
            Some(delta.encode()),
        )
        .await
        .map(drop)
    }

    async fn window(&self, from: i64, to: i64) -> Result<CounterSet, PortError> {
        let (_, body) = call(
            &self.stub,
            Method::Get,
            &format!("/window?from={from}&to={to}"),
            None,
        )
        .await?;
        CounterSet::decode(&body).map_err(|e| PortError::Corrupt(e.to_string()))
    }

    async fn trending(&self, now_minute: i64) -> Result<Trending, PortError> {
        let (_, body) = call(
            &self.stub,
            Method::Get,
            &format!("/trending?now={now_minute}"),
            None,
        )
        .await?;
        postcard::from_bytes(&body).map_err(|e| PortError::Corrupt(e.to_string()))
    }

    async fn take_pending(&self) -> Result<Option<Vec<u8>>, PortError> {
        let (status, body) = call(&self.stub, Method::Post, "/take-pending", None).await?;
        Ok((status != 204).then_some(body))
    }

    async fn restore_pending(&self, encoded: &[u8]) -> Result<(), PortError> {
        call(
            &self.stub,
            Method::Post,
            "/restore-pending",
            Some(encoded.to_vec()),
        )
        .await
        .map(drop)
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

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        node: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), PortError> {
        let headers = Headers::new();
        headers
            .set("content-type", content_type)
            .map_err(unavailable)?;
        if let Some(node) = node {
            headers.set("x-edge-node", node).map_err(unavailable)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        let req = Request::new_with_init(&self.url(path)?, &init).map_err(unavailable)?;
        let resp = Fetch::Request(req).send().await.map_err(unavailable)?;
        origin_answer(resp.status_code(), path)
    }
}

#[async_trait(?Send)]
impl Origin for FetchOrigin {
    fn configured(&self) -> bool {
        self.base.is_some()
    }

    async fn send_events(&self, batch_json: Vec<u8>) -> Result<(), PortError> {
        self.post(
            origin_paths::INGEST_EVENTS,
            "application/json",
            None,
            batch_json,
        )
        .await
    }

    async fn send_sketches(&self, edge_node: &str, encoded: Vec<u8>) -> Result<(), PortError> {
        self.post(
            origin_paths::INGEST_SKETCHES,
            "application/octet-stream",
            Some(edge_node),
            encoded,
        )
        .await
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
        let mut resp = Fetch::Request(req).send().await.map_err(unavailable)?;
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
