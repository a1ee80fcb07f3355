//! `edgefront`: run the whole storefront locally (`dev`), the origin or an edge alone (`origin`,
//! `edge`, as in production), mint a staff token (`token`), or check the origin's books
//! (`check`).

// The request path allocates per field (parsed events, JSON bodies); mimalloc roughly halves
// that cost against glibc's allocator (BENCHMARKS.md). Native host only: wasm targets keep theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod external;

use edgefront_local::{EdgeOptions, keys};
use edgefront_shared::tokens::Role;
use external::Runtime;

#[derive(Parser)]
#[command(
    name = "edgefront",
    version,
    about = "Edge-deployed storefront: local development host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the origin keeps its data.
#[derive(clap::Args, Clone)]
struct OriginArgs {
    /// Database: `sqlite:PATH` or `postgres://…` [default: sqlite:<data-dir>/origin.db].
    #[arg(long, env = "EDGEFRONT_DATABASE_URL")]
    database_url: Option<String>,
    /// Tax rates by shipping country, e.g. `DE=19,FR=20,*=0` [default: EU standard rates].
    #[arg(long, env = "EDGEFRONT_TAX_RATES")]
    tax_rates: Option<String>,
    /// Minutes a checkout holds stock.
    #[arg(long, default_value_t = 15, env = "EDGEFRONT_RESERVATION_MINUTES")]
    reservation_minutes: u64,
    /// Seconds a checkout holds stock, instead of --reservation-minutes (tests, demos).
    #[arg(long, env = "EDGEFRONT_RESERVATION_SECONDS")]
    reservation_seconds: Option<u64>,
    /// Alerts fire beyond this many robust spreads from their baseline (lower: more alerts).
    #[arg(long, default_value_t = 4.0, env = "EDGEFRONT_ALERT_THRESHOLD")]
    alert_threshold: f64,
    /// Minutes an alert judges (ending a minute ago), against the same minutes of earlier weeks.
    #[arg(long, default_value_t = 60, env = "EDGEFRONT_ALERT_WINDOW_MINUTES")]
    alert_window_minutes: u64,
    /// Experiments: the control conversion rate the sample size is planned for.
    #[arg(
        long,
        default_value_t = 0.05,
        env = "EDGEFRONT_EXPERIMENT_BASELINE_RATE"
    )]
    experiment_baseline_rate: f64,
    /// Experiments: the smallest relative lift worth detecting (0.2 = +20%).
    #[arg(long, default_value_t = 0.2, env = "EDGEFRONT_EXPERIMENT_MIN_LIFT")]
    experiment_min_lift: f64,
}

/// The edge's abuse limits and origin timeouts (`dev` with the native edge, and `edge`).
#[derive(clap::Args, Clone)]
struct AbuseArgs {
    /// An origin allowed cross-origin (CORS) access, e.g. `https://shop.example`; repeat it, or
    /// separate origins with commas. None (the default): no CORS headers at all.
    #[arg(
        long = "cors-origin",
        env = "EDGEFRONT_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Reads (GET, HEAD, OPTIONS) per client IP and minute; 0: no limit [default: 1200].
    #[arg(long)]
    rate_limit_ip_reads: Option<u32>,
    /// Cart and session writes per client IP and minute; 0: no limit [default: 300].
    #[arg(long)]
    rate_limit_ip_writes: Option<u32>,
    /// Event posts per client IP and minute; 0: no limit [default: 600].
    #[arg(long)]
    rate_limit_ip_events: Option<u32>,
    /// Reads per visitor (session or cart) and minute; 0: no limit [default: 600].
    #[arg(long)]
    rate_limit_visitor_reads: Option<u32>,
    /// Writes per visitor and minute; 0: no limit [default: 60].
    #[arg(long)]
    rate_limit_visitor_writes: Option<u32>,
    /// Event posts per visitor and minute; 0: no limit [default: 120].
    #[arg(long)]
    rate_limit_visitor_events: Option<u32>,
    /// No request quotas at all (load tests from one address); the flags above then apply on
    /// top of none.
    #[arg(long, env = "EDGEFRONT_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// Milliseconds to connect to the origin before a delivery or catalog poll gives up.
    #[arg(long, default_value_t = 2_000)]
    origin_connect_timeout_ms: u64,
    /// Milliseconds a whole call to the origin may take (a delivery that runs out is retried).
    #[arg(long, default_value_t = 10_000)]
    origin_timeout_ms: u64,
}

impl AbuseArgs {
    /// These settings on top of `opts`.
    fn apply(&self, opts: &mut EdgeOptions) -> anyhow::Result<()> {
        use edgefront_functions::rate_limit::RateLimits;
        anyhow::ensure!(
            self.origin_connect_timeout_ms >= 1 && self.origin_timeout_ms >= 1,
            "--origin-connect-timeout-ms and --origin-timeout-ms must be at least 1"
        );
        let mut limits = if self.no_rate_limits {
            RateLimits::OFF
        } else {
            RateLimits::default()
        };
        for (flag, quota) in [
            (self.rate_limit_ip_reads, &mut limits.per_ip.reads),
            (self.rate_limit_ip_writes, &mut limits.per_ip.writes),
            (self.rate_limit_ip_events, &mut limits.per_ip.events),
            (self.rate_limit_visitor_reads, &mut limits.per_visitor.reads),
            (
                self.rate_limit_visitor_writes,
                &mut limits.per_visitor.writes,
            ),
            (
                self.rate_limit_visitor_events,
                &mut limits.per_visitor.events,
            ),
        ] {
            if let Some(n) = flag {
                *quota = n;
            }
        }
        opts.config.rate_limits = limits;
        opts.config.cors_origins = self
            .cors_origins
            .iter()
            .filter_map(|o| edgefront_functions::cors::normalize(o))
            .collect();
        opts.origin_timeouts = edgefront_local::OriginTimeouts {
            connect: Duration::from_millis(self.origin_connect_timeout_ms),
            total: Duration::from_millis(self.origin_timeout_ms),
        };
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole storefront on this machine: the origin (SQLite under --data-dir, seeded
    /// with the demo catalog) and the edge host forwarding to it.
    Dev {
        /// Address of the edge host.
        #[arg(long, default_value = "127.0.0.1:8787", env = "EDGEFRONT_EDGE_ADDR")]
        edge_addr: SocketAddr,
        /// Address of the origin service.
        #[arg(long, default_value = "127.0.0.1:8788", env = "EDGEFRONT_ORIGIN_ADDR")]
        origin_addr: SocketAddr,
        /// Directory for dev keys and local state.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Number of demo products (seeded into an empty origin).
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// Forward to this origin instead of starting one.
        #[arg(long, env = "EDGEFRONT_ORIGIN_URL")]
        origin_url: Option<String>,
        /// Name of this edge node in events and counters.
        #[arg(long, default_value = "local", env = "EDGEFRONT_EDGE_NODE")]
        edge_node: String,
        /// Which host serves the edge: this binary, workerd under `wrangler dev` (the
        /// Cloudflare build; installs its toolchain on first use), or the Spin component in
        /// the wasmtime test host (builds it on first use).
        #[arg(long, value_enum, default_value_t = EdgeHost::Native)]
        edge: EdgeHost,
        #[command(flatten)]
        origin: OriginArgs,
        #[command(flatten)]
        abuse: AbuseArgs,
    },
    /// Run the origin service alone.
    Origin {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8788", env = "EDGEFRONT_ORIGIN_ADDR")]
        addr: SocketAddr,
        /// Directory for dev keys and the default SQLite database.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Demo products to seed an empty catalog with (0: none).
        #[arg(long, default_value_t = 0)]
        seed_demo_products: usize,
        #[command(flatten)]
        origin: OriginArgs,
    },
    /// Run one edge host alone, forwarding to an origin.
    Edge {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8787", env = "EDGEFRONT_EDGE_ADDR")]
        addr: SocketAddr,
        /// The origin's base URL.
        #[arg(long, env = "EDGEFRONT_ORIGIN_URL")]
        origin_url: Option<String>,
        /// Directory holding the dev keys (shared with the origin).
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Demo products served until the origin's catalog arrives.
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// Name of this edge node.
        #[arg(long, default_value = "local", env = "EDGEFRONT_EDGE_NODE")]
        edge_node: String,
        /// Milliseconds between deliveries of queued events and sketches to the origin (and
        /// catalog polls).
        #[arg(long, default_value_t = 2000, env = "EDGEFRONT_FLUSH_INTERVAL_MS")]
        flush_interval_ms: u64,
        #[command(flatten)]
        abuse: AbuseArgs,
    },
    /// Check the origin's books: stock levels against their movements and the orders holding
    /// them, every order against its reservation, no unpaid order left past its reservation.
    /// Prints each problem and exits 1 when there is any.
    Check {
        /// Directory holding the default SQLite database.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Database: `sqlite:PATH` or `postgres://…` [default: sqlite:<data-dir>/origin.db].
        #[arg(long, env = "EDGEFRONT_DATABASE_URL")]
        database_url: Option<String>,
        /// Seconds an unpaid order may stay past its reservation's expiry before it counts as
        /// missed by the expiry sweep.
        #[arg(long, default_value_t = 60)]
        expiry_grace_seconds: u64,
    },
    /// Import a catalog into the origin's database: a Shopify product CSV export or a JSON
    /// product list. A running origin publishes it to the edges within seconds.
    Import {
        /// The file (`.csv` for Shopify, anything else is read as JSON).
        file: PathBuf,
        /// Currency of the CSV's prices (Shopify exports name none).
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Directory holding the default SQLite database.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Database: `sqlite:PATH` or `postgres://…` [default: sqlite:<data-dir>/origin.db].
        #[arg(long, env = "EDGEFRONT_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Write the catalog as a `wrangler kv bulk put` file for the Cloudflare edge's KV: the
    /// origin's published snapshot with --origin-url, else the demo catalog.
    KvSeed {
        /// Number of demo products (without --origin-url).
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// Take the published snapshot of this origin instead.
        #[arg(long)]
        origin_url: Option<String>,
        /// Output file.
        #[arg(long, default_value = "kv-seed.json")]
        out: PathBuf,
        /// Write the catalog in parts, for the Spin edge's `catalog` store
        /// (`edgefront_functions::parts`), instead of one snapshot for Workers KV.
        #[arg(long)]
        parts: bool,
    },
    /// Print cart tokens signed with the dev keys, one per line, each a new cart: for load
    /// tests of checkout (a cart token is spent by its checkout, so a load needs many).
    CartTokens {
        /// How many carts.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// A line: `SKU` or `SKU:QUANTITY` (repeatable; at least one).
        #[arg(long = "line", required = true)]
        lines: Vec<String>,
        /// The carts' currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Directory holding the dev keys.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print a staff token signed with the dev keys.
    Token {
        /// Role claim.
        #[arg(long, value_enum, default_value_t = RoleArg::Marketer)]
        role: RoleArg,
        /// Subject (who the token is for).
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        /// Directory holding the dev keys.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EdgeHost {
    /// The native host (edge/local).
    Native,
    /// The Cloudflare worker under `wrangler dev` (edge/cloudflare).
    Cloudflare,
    /// The Spin component in the wasmtime test host (edge/spin, tests/spin-host).
    Spin,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Marketer,
    Admin,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev {
            edge_addr,
            origin_addr,
            data_dir,
            products,
            origin_url,
            edge_node,
            edge,
            origin,
            abuse,
        } => {
            init_tracing();
            let started = match origin_url {
                Some(_) => None,
                None => Some(start_origin(origin_addr, &data_dir, products, &origin).await?),
            };
            // The bound address, so `--origin-addr 127.0.0.1:0` works too.
            let origin_url = match &started {
                Some((_, bound)) => format!("http://{bound}"),
                None => origin_url.unwrap_or_default(),
            };
            let edge = match edge {
                EdgeHost::Native => Edge::Native(
                    start_edge(
                        edge_addr,
                        &data_dir,
                        products,
                        &origin_url,
                        edge_node,
                        Duration::from_secs(2),
                        &abuse,
                    )
                    .await?,
                ),
                EdgeHost::Cloudflare | EdgeHost::Spin => {
                    let runtime = if edge == EdgeHost::Spin {
                        println!(
                            "starting the Spin edge in the wasmtime test host (the first run builds it; log: {})",
                            Runtime::Spin.log_path(&data_dir).display()
                        );
                        Runtime::Spin
                    } else {
                        println!(
                            "starting the Cloudflare edge under wrangler dev (the first run installs its toolchain; log: {})",
                            Runtime::Workerd.log_path(&data_dir).display()
                        );
                        Runtime::Workerd
                    };
                    Edge::External(
                        runtime,
                        external::start(runtime, edge_addr, &data_dir, &origin_url, &edge_node)
                            .await?,
                    )
                }
            };
            let base = edge.base_url();
            println!("edgefront is running");
            match &edge {
                Edge::Native(_) => println!(
                    "  edge     {base}/v1/products?limit=24   (native host; {products} demo products)"
                ),
                Edge::External(Runtime::Workerd, w) => println!(
                    "  edge     {base}/v1/products?limit=24   (Cloudflare worker under wrangler dev; log: {})",
                    w.log_path().display()
                ),
                Edge::External(Runtime::Spin, w) => println!(
                    "  edge     {base}/v1/products?limit=24   (Spin component in the wasmtime test host; log: {})",
                    w.log_path().display()
                ),
            }
            println!("  health   {base}/v1/health");
            match &started {
                Some(_) => println!(
                    "  origin   {origin_url}/v1/health   (checkout, inventory, analytics; events and sketches flow here)"
                ),
                None => println!("  origin   forwarding to {origin_url}"),
            }
            println!("  dashboard {origin_url}/dashboard   (sign in with a marketer token)");
            println!("  keys     {}", keys::key_path(&data_dir).display());
            println!("  token    cargo run --release -- token --role marketer");
            println!("Press Ctrl-C to stop.");
            stop_requested().await?;
            match edge {
                Edge::Native(edge) => edge.shutdown().await,
                Edge::External(_, edge) => edge.shutdown().await,
            }
            if let Some((o, _)) = started {
                o.shutdown().await;
            }
        }
        Command::Origin {
            addr,
            data_dir,
            seed_demo_products,
            origin,
        } => {
            init_tracing();
            let (o, bound) = start_origin(addr, &data_dir, seed_demo_products, &origin).await?;
            println!(
                "edgefront origin on http://{bound} (database: {:?})",
                o.state.store.backend()
            );
            stop_requested().await?;
            o.shutdown().await;
        }
        Command::Edge {
            addr,
            origin_url,
            data_dir,
            products,
            edge_node,
            flush_interval_ms,
            abuse,
        } => {
            init_tracing();
            anyhow::ensure!(
                flush_interval_ms >= 1,
                "--flush-interval-ms must be at least 1"
            );
            let url = origin_url.unwrap_or_else(|| "http://127.0.0.1:8788".into());
            let edge = start_edge(
                addr,
                &data_dir,
                products,
                &url,
                edge_node,
                Duration::from_millis(flush_interval_ms),
                &abuse,
            )
            .await?;
            println!("edgefront edge on {} forwarding to {url}", edge.base_url());
            stop_requested().await?;
            edge.shutdown().await;
        }
        Command::Check {
            data_dir,
            database_url,
            expiry_grace_seconds,
        } => {
            if !check(&data_dir, database_url, expiry_grace_seconds).await? {
                std::process::exit(1);
            }
        }
        Command::Import {
            file,
            currency,
            data_dir,
            database_url,
        } => import(&file, &currency, &data_dir, database_url).await?,
        Command::KvSeed {
            products,
            origin_url,
            out,
            parts,
        } => kv_seed(products, origin_url.as_deref(), &out, parts).await?,
        Command::CartTokens {
            count,
            lines,
            currency,
            hours,
            data_dir,
        } => {
            use std::io::Write as _;
            let keyring = keys::load_or_create(&data_dir)?;
            let currency = edgefront_shared::money::Currency::parse(&currency)
                .map_err(|e| anyhow::anyhow!("--currency: {e}"))?;
            let lines = lines
                .iter()
                .map(|l| {
                    let (sku, quantity) = l.split_once(':').unwrap_or((l, "1"));
                    let quantity: u32 = quantity
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--line {l}: quantity is not a number"))?;
                    Ok((sku.to_owned(), quantity))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..count {
                let claims = edgefront_shared::tokens::CartClaims {
                    id: format!("load-{:032x}", rand::random::<u128>()),
                    lines: lines.clone(),
                    code: None,
                    currency,
                    catalog_version: 1,
                };
                let token = keyring.sign_cart(&claims, now, hours.saturating_mul(3600))?;
                writeln!(out, "{token}")?;
            }
            out.flush()?;
        }
        Command::Token {
            role,
            subject,
            hours,
            data_dir,
        } => {
            let keyring = keys::load_or_create(&data_dir)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let role = match role {
                RoleArg::Marketer => Role::Marketer,
                RoleArg::Admin => Role::Admin,
            };
            let token = keyring.sign_staff(&subject, role, now, hours.saturating_mul(3600))?;
            println!("{token}");
        }
    }
    Ok(())
}

/// The edge `dev` started.
enum Edge {
    Native(edgefront_local::RunningEdge),
    External(Runtime, external::ExternalEdge),
}

impl Edge {
    fn base_url(&self) -> String {
        match self {
            Edge::Native(edge) => edge.base_url(),
            Edge::External(_, edge) => edge.base_url().to_owned(),
        }
    }
}

/// KV key the Cloudflare edge reads its catalog from (edge/cloudflare/src/ports.rs).
const KV_CATALOG_KEY: &str = "catalog/snapshot";
/// KV key of the catalog's version tag, which edge isolates poll.
const KV_CATALOG_VERSION_KEY: &str = "catalog/version";

async fn kv_seed(
    products: usize,
    origin_url: Option<&str>,
    out: &std::path::Path,
    parts: bool,
) -> anyhow::Result<()> {
    match origin_url {
        Some(url) => {
            publish_seed(url, None, out, parts).await?;
        }
        None => write_seed(
            &serde_json::to_string(&edgefront_shared::catalog::PublishedCatalog {
                version: 1,
                products: edgefront_shared::catalog::demo_catalog(products, 42),
                promotions: edgefront_shared::cart::demo_promotions(),
            })?,
            out,
            parts,
        )?,
    }
    println!("{}", out.display());
    Ok(())
}

/// Writes the origin's published catalog to `out` as a KV seed, unless it still has `etag`.
/// Returns the new ETag, or `None` when the catalog is unchanged.
async fn publish_seed(
    origin_url: &str,
    etag: Option<&str>,
    out: &std::path::Path,
    parts: bool,
) -> anyhow::Result<Option<String>> {
    let url = format!("{}/v1/catalog/snapshot", origin_url.trim_end_matches('/'));
    let mut req = reqwest::Client::new().get(&url);
    if let Some(tag) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let resp = req.send().await?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let resp = resp.error_for_status()?;
    let tag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    write_seed(&resp.text().await?, out, parts)?;
    Ok(Some(tag))
}

/// A published catalog body as a `wrangler kv bulk put` file: the snapshot and its version
/// tag, or (`parts`) every part of it and then its version key.
fn write_seed(body: &str, out: &std::path::Path, parts: bool) -> anyhow::Result<()> {
    if parts {
        let published: edgefront_shared::catalog::PublishedCatalog = serde_json::from_str(body)?;
        let entries = edgefront_functions::parts::entries(&published)?
            .into_iter()
            .map(|(key, value)| {
                Ok(serde_json::json!({ "key": key, "value": String::from_utf8(value)? }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        std::fs::write(out, serde_json::to_vec(&entries)?)?;
        return Ok(());
    }
    // Refuse to write a catalog the edge would refuse to serve.
    let snapshot = edgefront_functions::sync::decode_published(body.as_bytes())?;
    // The version tag isolates poll; the body's length and a hash of it tell two
    // publishes of one version number apart.
    let tag = format!(
        "v{}-{}-{:016x}",
        snapshot.version(),
        body.len(),
        edgefront_shared::catalog::stable_hash(body.as_bytes())
    );
    let file = serde_json::json!([
        { "key": KV_CATALOG_KEY, "value": body },
        { "key": KV_CATALOG_VERSION_KEY, "value": tag },
    ]);
    std::fs::write(out, serde_json::to_vec(&file)?)?;
    Ok(())
}

/// `edgefront check`: prints the problems [`Store::check_invariants_at`] finds, or one line
/// saying the books are consistent. `Ok(false)` when there are problems.
///
/// [`Store::check_invariants_at`]: edgefront_origin::store::Store::check_invariants_at
async fn check(
    data_dir: &std::path::Path,
    database_url: Option<String>,
    expiry_grace_seconds: u64,
) -> anyhow::Result<bool> {
    let url =
        database_url.unwrap_or_else(|| format!("sqlite:{}", data_dir.join("origin.db").display()));
    if let Some(path) = url.strip_prefix("sqlite:") {
        // Checking must not create an empty database where none was.
        let path = path.split('?').next().unwrap_or(path);
        anyhow::ensure!(
            std::path::Path::new(path).exists(),
            "no database at {path} (--data-dir or --database-url)"
        );
    }
    let store = edgefront_origin::store::Store::connect(&url, 2).await?;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let grace_ms = i64::try_from(expiry_grace_seconds.saturating_mul(1000))?;
    let report = store.check_invariants_at(now_ms, grace_ms).await;
    store.close().await;
    let report = report?;
    if report.problems.is_empty() {
        println!("consistent: {} skus, {} orders", report.skus, report.orders);
        return Ok(true);
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{} problem(s) in {} skus, {} orders",
        report.problems.len(),
        report.skus,
        report.orders
    );
    Ok(false)
}

async fn import(
    file: &std::path::Path,
    currency: &str,
    data_dir: &std::path::Path,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    use edgefront_shared::import::{self, ImportOptions};
    let bytes = std::fs::read(file)?;
    let currency = edgefront_shared::money::Currency::parse(currency)?;
    let url =
        database_url.unwrap_or_else(|| format!("sqlite:{}", data_dir.join("origin.db").display()));
    let store = edgefront_origin::store::Store::connect(&url, 2).await?;
    // Rows are known only as they are read; the line count is a close upper bound.
    let lines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    let bar = indicatif::ProgressBar::new(lines.max(1)).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows {elapsed}")?,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let now_ms = i64::try_from(now)?;
    let opts = ImportOptions {
        created_at: now_ms / 1000,
        ..ImportOptions::default()
    };
    let mut progress = |rows: usize| bar.set_position(rows as u64);
    let parsed = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        import::shopify_csv(&bytes, currency, &opts, &mut progress)
    } else {
        import::json(&bytes, &opts, &mut progress)
    };
    bar.finish_and_clear();
    let report = edgefront_origin::importer::apply(&store, parsed, now_ms).await?;
    store.close().await;
    println!(
        "imported {} products ({} SKUs, stock set for {}); {} rows refused",
        report.products,
        report.skus,
        report.stock_set,
        report.errors.len()
    );
    for e in &report.errors {
        println!("  row {}: {}", e.row, e.error);
    }
    Ok(())
}

async fn start_origin(
    addr: SocketAddr,
    data_dir: &std::path::Path,
    seed_demo_products: usize,
    args: &OriginArgs,
) -> anyhow::Result<(edgefront_origin::RunningOrigin, SocketAddr)> {
    let keyring = keys::load_or_create(data_dir)?;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => format!("sqlite:{}", data_dir.join("origin.db").display()),
    };
    anyhow::ensure!(
        args.reservation_seconds != Some(0),
        "--reservation-seconds must be at least 1"
    );
    let mut settings = edgefront_origin::Settings {
        addr,
        database_url,
        seed_demo_products,
        reservation_ttl: match args.reservation_seconds {
            Some(seconds) => Duration::from_secs(seconds),
            None => Duration::from_secs(args.reservation_minutes.saturating_mul(60)),
        },
        ..edgefront_origin::Settings::default()
    };
    if let Some(spec) = &args.tax_rates {
        settings.tax_rates = edgefront_shared::tax::TaxRates::parse(spec)?;
    }
    anyhow::ensure!(
        args.alert_threshold.is_finite() && args.alert_threshold > 0.0,
        "--alert-threshold must be a positive number"
    );
    anyhow::ensure!(
        args.alert_window_minutes >= 1,
        "--alert-window-minutes must be at least 1"
    );
    settings.alert_sensitivity.threshold = args.alert_threshold;
    settings.alert_window = Duration::from_secs(args.alert_window_minutes.saturating_mul(60));
    settings.experiment_plan.baseline_rate = args.experiment_baseline_rate;
    settings.experiment_plan.min_detectable_lift = args.experiment_min_lift;
    settings.experiment_plan.validate()?;
    let app = edgefront_origin::Application::build(
        settings,
        keyring,
        Arc::new(edgefront_origin::payment::TestProvider),
        Arc::new(edgefront_origin::clock::SystemClock),
    )
    .await?;
    let bound = app.local_addr()?;
    Ok((app.spawn(), bound))
}

async fn start_edge(
    addr: SocketAddr,
    data_dir: &std::path::Path,
    products: usize,
    origin_url: &str,
    edge_node: String,
    flush_interval: Duration,
    abuse: &AbuseArgs,
) -> anyhow::Result<edgefront_local::RunningEdge> {
    let mut opts = EdgeOptions {
        addr,
        data_dir: data_dir.to_path_buf(),
        products,
        origin_url: Some(origin_url.to_owned()),
        edge_node,
        flush_interval,
        ..EdgeOptions::default()
    };
    abuse.apply(&mut opts)?;
    edgefront_local::spawn(opts).await
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, so a service manager's stop shuts down as cleanly as a
/// developer's Ctrl-C (the workerd edge's process group included).
async fn stop_requested() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Logs go to stderr (stdout carries the commands' own output: URLs, tokens): readable on a
/// terminal, one JSON object per line otherwise, for log shippers. `RUST_LOG` filters; the
/// per-request access lines (with their trace ids) are at debug.
fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        // The current span's fields (the origin's `trace_id`, route) go on every line.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    }
}
