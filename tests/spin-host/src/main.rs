//! A test harness, not a product runtime: serves a Spin HTTP component (WASIp3,
//! `wasi:http/handler@0.3.0`) on 127.0.0.1 with the wasmtime library, because no Spin CLI can
//! be installed where edgefront's tests run.
//!
//! Key design choice: it behaves as Spin does where the storefront can tell — one fresh
//! instance per request; `spin:key-value` (and `wasi:keyvalue` store/atomics over the same
//! stores) only for the stores the component's manifest entry lists, anything else
//! `access-denied`; `spin:variables` from the manifest's variables, set through
//! `SPIN_VARIABLE_<NAME>`; outbound HTTP only to `allowed_outbound_hosts`. Stores live in one
//! SQLite file (`<state-dir>/sqlite_key_value.db`), so `kv-put` loads them from outside.

mod kv;
mod manifest;
mod serve;
mod spin_apis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Test harness: a Spin HTTP component served by wasmtime (not a product runtime)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the manifest's HTTP component.
    Serve {
        /// The Spin manifest.
        #[arg(long, default_value = "spin.toml")]
        manifest: PathBuf,
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Where the key-value stores live.
        #[arg(long, default_value = ".spin")]
        state_dir: PathBuf,
        /// Serve this .wasm instead of the manifest's `source`.
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// Writes entries into a store: a JSON array of `{"key", "value"}` (text), in order
    /// (wrangler's bulk format).
    KvPut {
        #[arg(long, default_value = ".spin")]
        state_dir: PathBuf,
        #[arg(long)]
        store: String,
        file: PathBuf,
        /// Keys under this prefix are versioned (`<prefix><n>/…`): after writing, only the
        /// newest `--keep-versions` versions stay (a catalog publish drops old parts, keeping
        /// the previous version for requests still reading it).
        #[arg(long, requires = "keep_versions")]
        versioned_prefix: Option<String>,
        #[arg(long)]
        keep_versions: Option<usize>,
    },
    /// Prints the component's imports, one per line, sorted.
    Imports { component: PathBuf },
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    value: String,
}

fn open_kv(state_dir: &std::path::Path) -> anyhow::Result<kv::Kv> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    kv::Kv::open(&state_dir.join("sqlite_key_value.db"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve {
            manifest,
            listen,
            state_dir,
            component,
        } => {
            let mut route = manifest::load(&manifest, |name| std::env::var(name).ok())?;
            if let Some(path) = component {
                route.source = path;
            }
            let kv = Arc::new(open_kv(&state_dir)?);
            let host = Arc::new(serve::Host::new(route, kv).map_err(|e| anyhow::anyhow!("{e:?}"))?);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("listening on http://{}", listener.local_addr()?);
            loop {
                let (stream, peer) = listener.accept().await?;
                let host = Arc::clone(&host);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let host = Arc::clone(&host);
                        async move { Ok::<_, std::convert::Infallible>(answer(&host, peer, req).await) }
                    });
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
        }
        Command::KvPut {
            state_dir,
            store,
            file,
            versioned_prefix,
            keep_versions,
        } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let entries: Vec<Entry> = serde_json::from_slice(&text)?;
            let entries: Vec<(String, Vec<u8>)> = entries
                .into_iter()
                .map(|e| (e.key, e.value.into_bytes()))
                .collect();
            let kv = open_kv(&state_dir)?;
            kv.put_all(&store, &entries).map_err(anyhow::Error::msg)?;
            println!("{} entries written to store {store}", entries.len());
            if let (Some(prefix), Some(keep)) = (versioned_prefix, keep_versions) {
                let dropped = kv
                    .drop_old_versions(&store, &prefix, keep)
                    .map_err(anyhow::Error::msg)?;
                println!("{dropped} entries of older versions dropped");
            }
            Ok(())
        }
        Command::Imports { component } => {
            let mut config = wasmtime::Config::new();
            config.wasm_component_model_async(true);
            let wasm = |e: wasmtime::Error| anyhow::anyhow!("{e:?}");
            let engine = wasmtime::Engine::new(&config).map_err(wasm)?;
            let component =
                wasmtime::component::Component::from_file(&engine, &component).map_err(wasm)?;
            let mut names: Vec<String> = component
                .component_type()
                .imports(&engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            names.sort();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
    }
}

async fn answer(
    host: &serve::Host,
    peer: std::net::SocketAddr,
    mut req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    // As Spin's HTTP trigger does: the client's socket address, replacing any copy it sent.
    if let Ok(addr) = http::HeaderValue::from_str(&peer.to_string()) {
        req.headers_mut().insert("spin-client-addr", addr);
    }
    let plain = |status: u16, text: &'static str| {
        let mut resp = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        resp
    };
    if !host.routes(req.uri().path()) {
        return plain(404, "no route\n");
    }
    match host.handle(req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!("component failed: {e:#}");
            plain(500, "component failed\n")
        }
    }
}
