//! The functions' ports on Spin: key-value stores, variables, outbound HTTP, WASI clock and
//! randomness.

use std::cell::OnceCell;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use edgefront_functions::kv_counters::KvCounters;
use edgefront_functions::parts::PartsCatalog;
use edgefront_functions::ports::{
    AtomicKeyValue, Environment, KeyValue, OriginClient, PortError, Ports, UpdateFn,
    catalog_answer, origin_answer, origin_paths,
};
use edgefront_functions::rate_limit::{KvRateLimiter, RateLimits};
use edgefront_functions::{App, Config, cors};
use edgefront_shared::tokens::Keyring;
use http_body_util::BodyExt;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wasi_store};
use spin_sdk::key_value::Store;

/// Store labels, as declared in spin.toml's `key_value_stores`.
const CATALOG_STORE: &str = "catalog";
const DEFAULT_STORE: &str = "default";
/// Compare-and-swap attempts before an update gives up (each lost attempt means another
/// instance wrote the same key in between).
const MAX_ATTEMPTS: usize = 64;
/// How long a call to the origin may take before it is dropped (a delivery is then retried by
/// a later request's flush).
const ORIGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(e.to_string())
}

/// Everything a request reads from its environment.
pub(crate) struct Setup {
    keys: Arc<Keyring>,
    origin: Option<String>,
    node: String,
    flush_interval_ms: i64,
    now_ms: i64,
    store: Arc<SpinKv>,
    cors_origins: Vec<String>,
    rate_limits: RateLimits,
}

pub(crate) type SpinPorts = Ports<
    PartsCatalog<SpinKv>,
    Arc<SpinKv>,
    KvCounters<Arc<SpinKv>>,
    SpinOrigin,
    SpinEnv,
    KvRateLimiter<Arc<SpinKv>>,
>;

async fn variable(name: &str) -> anyhow::Result<Option<String>> {
    match spin_sdk::variables::get(name).await {
        Ok(value) => Ok(Some(value.trim().to_owned()).filter(|v| !v.is_empty())),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("variable {name}: {e}")),
    }
}

impl Setup {
    pub(crate) async fn load() -> anyhow::Result<Setup> {
        let keys = variable("edgefront_keys")
            .await?
            .context("the variable edgefront_keys is empty")?;
        let keys = Keyring::from_key_file(keys.as_bytes()).context("edgefront_keys")?;
        let flush_interval_ms = match variable("flush_interval_ms").await? {
            Some(v) => v.parse().context("flush_interval_ms")?,
            None => 5_000,
        };
        Ok(Setup {
            keys: Arc::new(keys),
            origin: variable("origin_url")
                .await?
                .map(|v| v.trim_end_matches('/').to_owned()),
            node: variable("edge_node")
                .await?
                .unwrap_or_else(|| "spin".to_owned()),
            flush_interval_ms,
            now_ms: now_ms(),
            store: shared(SpinKv::new(DEFAULT_STORE)),
            cors_origins: variable("cors_origins")
                .await?
                .map(|v| cors::parse_origins(&v))
                .unwrap_or_default(),
            // `rate_limits = "off"` turns the quotas off (load tests from one address).
            rate_limits: match variable("rate_limits").await?.as_deref() {
                Some("off") => RateLimits::OFF,
                None | Some("on") => RateLimits::default(),
                Some(other) => anyhow::bail!("rate_limits must be on or off, not {other:?}"),
            },
        })
    }

    pub(crate) fn app(&self) -> App<SpinPorts> {
        let config = Config {
            cors_origins: self.cors_origins.clone(),
            rate_limits: self.rate_limits,
            ..Config::default()
        };
        let counters = KvCounters::new(
            Arc::clone(&self.store),
            self.now_ms,
            config.counter_retention_minutes,
            self.delivers(),
        );
        let ports = Ports {
            catalog: PartsCatalog::new(SpinKv::new(CATALOG_STORE)),
            kv: Arc::clone(&self.store),
            counters,
            origin: SpinOrigin {
                base: self.origin.clone(),
            },
            env: SpinEnv {
                node: self.node.clone(),
            },
            limiter: self.limiter(),
        };
        App::new(ports, Arc::clone(&self.keys), config)
    }

    pub(crate) fn delivers(&self) -> bool {
        self.origin.is_some()
    }

    /// The request quotas, counted in the `default` store.
    pub(crate) fn limiter(&self) -> KvRateLimiter<Arc<SpinKv>> {
        KvRateLimiter::new(Arc::clone(&self.store))
    }

    /// Whether any quota is on (then their past windows need pruning).
    pub(crate) fn limits_requests(&self) -> bool {
        self.rate_limits != RateLimits::OFF
    }

    pub(crate) fn store(&self) -> Arc<SpinKv> {
        Arc::clone(&self.store)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub(crate) fn flush_interval_ms(&self) -> i64 {
        self.flush_interval_ms
    }
}

/// The functions share stores as `Arc`s (their native hosts are multi-threaded); a component
/// instance has one thread, so the store handle needs not be `Send`.
#[allow(clippy::arc_with_non_send_sync)]
fn shared(kv: SpinKv) -> Arc<SpinKv> {
    Arc::new(kv)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One Spin key-value store, opened on first use: through `spin:key-value` for plain reads and
/// writes, through `wasi:keyvalue` for compare-and-swap (the same store behind both).
pub(crate) struct SpinKv {
    label: &'static str,
    store: OnceCell<Store>,
    bucket: OnceCell<wasi_store::Bucket>,
}

impl SpinKv {
    fn new(label: &'static str) -> Self {
        SpinKv {
            label,
            store: OnceCell::new(),
            bucket: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&Store, PortError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = Store::open(self.label)
            .await
            .map_err(|e| unavailable(format!("key-value store {}: {e:?}", self.label)))?;
        Ok(self.store.get_or_init(|| store))
    }

    fn bucket(&self) -> Result<&wasi_store::Bucket, PortError> {
        if let Some(bucket) = self.bucket.get() {
            return Ok(bucket);
        }
        let bucket = wasi_store::open(self.label)
            .map_err(|e| unavailable(format!("key-value store {}: {e:?}", self.label)))?;
        Ok(self.bucket.get_or_init(|| bucket))
    }
}

#[async_trait(?Send)]
impl KeyValue for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.store().await?.get(key).await.map_err(unavailable)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), PortError> {
        self.store()
            .await?
            .set(key, value)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.store().await?.delete(key).await.map_err(unavailable)
    }

    /// `spin:key-value` lists the whole store, so the prefix is applied here; the catalog
    /// parts live in their own store to keep this list short.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<String>, PortError> {
        let keys = self.store().await?.get_keys().await;
        let mut keys: Vec<String> = keys
            .collect()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys)
    }
}

#[async_trait(?Send)]
impl AtomicKeyValue for SpinKv {
    async fn update(&self, key: &str, next: &mut UpdateFn<'_>) -> Result<Vec<u8>, PortError> {
        let bucket = self.bucket()?;
        for _ in 0..MAX_ATTEMPTS {
            let cas = atomics::Cas::new(bucket, key).map_err(|e| unavailable(format!("{e:?}")))?;
            let current = cas.current().map_err(|e| unavailable(format!("{e:?}")))?;
            let value = next(current.as_deref())?;
            match atomics::swap(cas, &value) {
                Ok(()) => return Ok(value),
                Err(atomics::CasError::CasFailed(_)) => continue,
                Err(atomics::CasError::StoreError(e)) => return Err(unavailable(format!("{e:?}"))),
            }
        }
        Err(PortError::Unavailable(format!(
            "{key}: still contended after {MAX_ATTEMPTS} attempts"
        )))
    }
}

/// The origin over Spin's outbound HTTP (allowed by `allowed_outbound_hosts`).
pub(crate) struct SpinOrigin {
    base: Option<String>,
}

impl SpinOrigin {
    fn url(&self, path: &str) -> Result<String, PortError> {
        self.base
            .as_deref()
            .map(|b| format!("{b}{path}"))
            .ok_or_else(|| PortError::Unavailable("no origin configured".into()))
    }
}

#[async_trait(?Send)]
impl OriginClient for SpinOrigin {
    fn configured(&self) -> bool {
        self.base.is_some()
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), PortError> {
        let mut req = http::Request::post(self.url(path)?).header("content-type", content_type);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(http_body_util::Full::new(Bytes::from(body)))
            .map_err(unavailable)?;
        let resp = within_timeout(spin_sdk::http::send(req))
            .await?
            .map_err(|e| unavailable(format!("{path}: {e:?}")))?;
        origin_answer(resp.status().as_u16(), path)
    }

    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        let mut req = http::Request::get(self.url(origin_paths::CATALOG_SNAPSHOT)?);
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        let req = req
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(unavailable)?;
        let resp = within_timeout(spin_sdk::http::send(req))
            .await?
            .map_err(|e| unavailable(format!("catalog: {e:?}")))?;
        if !catalog_answer(resp.status().as_u16())? {
            return Ok(None);
        }
        let tag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = within_timeout(resp.into_body().collect())
            .await?
            .map_err(|e| unavailable(format!("catalog body: {e:?}")))?;
        Ok(Some((tag, body.to_bytes().to_vec())))
    }
}

/// `call`, unless [`ORIGIN_TIMEOUT`] passes first (a WASIp3 timer, `spin_sdk::time::sleep`):
/// then the call is dropped, which cancels it, and the port reports the origin unavailable.
async fn within_timeout<T>(call: impl std::future::Future<Output = T>) -> Result<T, PortError> {
    use std::task::Poll;
    let mut call = std::pin::pin!(call);
    let mut timer = std::pin::pin!(spin_sdk::time::sleep(ORIGIN_TIMEOUT));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = call.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(PortError::Unavailable(format!(
                "the origin did not answer within {} s",
                ORIGIN_TIMEOUT.as_secs()
            )))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// The WASI clock and randomness, and the node's name.
pub(crate) struct SpinEnv {
    node: String,
}

impl Environment for SpinEnv {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn random_id(&self) -> String {
        use base64::Engine as _;
        let mut bytes = [0u8; 16];
        // wasi:random/random is always there in Spin.
        getrandom::fill(&mut bytes).expect("wasi:random");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn edge_node(&self) -> &str {
        &self.node
    }
}
