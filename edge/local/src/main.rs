//! `edgefront`: run the storefront locally (`dev`) or mint a staff token (`token`).

// The request path allocates per field (parsed events, JSON bodies); mimalloc roughly halves
// that cost against glibc's allocator (BENCHMARKS.md). Native host only: wasm targets keep theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use edgefront_local::{EdgeOptions, keys};
use edgefront_shared::tokens::Role;

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

#[derive(Subcommand)]
enum Command {
    /// Run the whole storefront on this machine: the edge host with a demo catalog.
    Dev {
        /// Address of the edge host.
        #[arg(long, default_value = "127.0.0.1:8787", env = "EDGEFRONT_EDGE_ADDR")]
        edge_addr: SocketAddr,
        /// Address the origin service will listen on (the origin lands with its own issue).
        #[arg(long, default_value = "127.0.0.1:8788", env = "EDGEFRONT_ORIGIN_ADDR")]
        origin_addr: SocketAddr,
        /// Directory for dev keys and local state.
        #[arg(long, default_value = "./data", env = "EDGEFRONT_DATA_DIR")]
        data_dir: PathBuf,
        /// Number of demo products.
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// Forward events and sketches to this origin URL.
        #[arg(long, env = "EDGEFRONT_ORIGIN_URL")]
        origin_url: Option<String>,
        /// Name of this edge node in events and counters.
        #[arg(long, default_value = "local", env = "EDGEFRONT_EDGE_NODE")]
        edge_node: String,
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
        } => {
            init_tracing();
            let edge = edgefront_local::spawn(EdgeOptions {
                addr: edge_addr,
                data_dir: data_dir.clone(),
                products,
                origin_url: origin_url.clone(),
                edge_node,
                flush_interval: Duration::from_secs(2),
                ..EdgeOptions::default()
            })
            .await?;
            let base = edge.base_url();
            println!("edgefront is running");
            println!("  edge     {base}/v1/products?limit=24   ({products} demo products)");
            println!("  health   {base}/v1/health");
            match &origin_url {
                Some(url) => println!("  origin   forwarding events and sketches to {url}"),
                None => println!(
                    "  origin   not started: the origin service is not part of this build yet \
                     (reserved address {origin_addr}); events queue at the edge"
                ),
            }
            println!("  keys     {}", keys::key_path(&data_dir).display());
            println!("  token    cargo run --release -- token --role marketer");
            println!("Press Ctrl-C to stop.");
            tokio::signal::ctrl_c().await?;
            edge.shutdown().await;
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

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}
