//! Builds the origin: connect and migrate the store, seed or load the catalog, bind the
//! listener, start the background jobs. Tests build it on port 0 with a fresh database.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{PublishedCatalog, demo_catalog};
use edgefront_shared::tokens::Keyring;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;

use crate::clock::Clock;
use crate::config::Settings;
use crate::jobs;
use crate::payment::PaymentProvider;
use crate::routes;
use crate::state::{AppState, Published};
use crate::store::{Store, StoreError};

/// Why the origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The stored catalog does not load.
    #[error("stored catalog is invalid: {0}")]
    Catalog(String),
}

/// A built origin, not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects, migrates, loads (or seeds) the catalog and binds.
    pub async fn build(
        settings: Settings,
        keyring: Keyring,
        payments: Arc<dyn PaymentProvider>,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = Store::connect(&settings.database_url, settings.max_connections).await?;
        let now = clock.now_ms();
        if settings.seed_demo_products > 0 && store.product_bodies().await?.is_empty() {
            seed_demo(&store, settings.seed_demo_products, now).await?;
        }
        let catalog = load_catalog(&store).await?;
        let addr = settings.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let state = AppState::new(store, keyring, settings, payments, clock, catalog);
        if state.store.latest_snapshot().await?.is_none() {
            state.publish().await?;
        }
        Ok(Application { listener, state })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (tests reach the store and clock through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves requests and runs the background jobs until the returned task is aborted.
    pub fn spawn(self) -> RunningOrigin {
        let router = app(self.state.clone());
        let jobs = tokio::spawn(jobs::run_forever(self.state.clone()));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, router).await {
                tracing::error!(error = %e, "origin server stopped");
            }
        });
        RunningOrigin {
            server,
            jobs,
            state: self.state,
        }
    }
}

/// A serving origin; dropping it leaves the tasks running, [`RunningOrigin::shutdown`] stops
/// them.
#[derive(Debug)]
pub struct RunningOrigin {
    server: JoinHandle<()>,
    jobs: JoinHandle<()>,
    /// Shared state.
    pub state: AppState,
}

impl RunningOrigin {
    /// Stops serving and the jobs, and closes the database pool.
    pub async fn shutdown(self) {
        self.server.abort();
        self.jobs.abort();
        let _ = self.server.await;
        let _ = self.jobs.await;
        self.state.store.close().await;
    }
}

/// The router with its middleware.
pub fn app(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::observe,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(crate::error::ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        // Outermost, so panics, 404s and 405s carry them too.
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The security headers of every origin answer, the edge's set
/// ([`edgefront_shared::problem::SECURITY_HEADERS`]); the dashboard keeps the policy it sets for
/// its page, script and styles. Headers a handler set are kept.
async fn security_headers(mut resp: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderName, HeaderValue};
    let h = resp.headers_mut();
    for (name, value) in edgefront_shared::problem::SECURITY_HEADERS {
        h.entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    resp
}

async fn seed_demo(store: &Store, n: usize, now: i64) -> Result<(), StartupError> {
    // The same generator and seed as the local edge, so both serve one catalog.
    let products = demo_catalog(n, 42);
    let rows = products
        .iter()
        .map(|p| {
            serde_json::to_string(p)
                .map(|body| (p.id.clone(), p.sku.clone(), body))
                .map_err(|e| StartupError::Catalog(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stock: Vec<(String, u32)> = products.iter().map(|p| (p.sku.clone(), p.stock)).collect();
    store.upsert_products(&rows, &stock, now).await?;
    Ok(())
}

async fn load_catalog(store: &Store) -> Result<Published, StartupError> {
    let published = match store.latest_snapshot().await? {
        Some((_, body)) => serde_json::from_slice::<PublishedCatalog>(&body)
            .map_err(|e| StartupError::Catalog(e.to_string()))?,
        // Nothing published yet: version 0 with the stored products, replaced on first publish.
        None => {
            let bodies = store.product_bodies().await?;
            let available = store.availability().await?;
            crate::state::published_catalog(0, &bodies, &available, demo_promotions())?
        }
    };
    let body = serde_json::to_vec(&published).map_err(|e| StartupError::Catalog(e.to_string()))?;
    let snapshot = published
        .into_snapshot()
        .map_err(|e| StartupError::Catalog(e.to_string()))?;
    Ok(Published {
        snapshot: Arc::new(snapshot),
        body: body.into(),
    })
}
