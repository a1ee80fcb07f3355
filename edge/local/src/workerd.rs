//! `edgefront dev --edge cloudflare`: the edge served by `wrangler dev` (workerd) instead of the
//! native host, on the same address, wired to the local origin and the dev keys.
//!
//! The work is in the repository's scripts (`edge/cloudflare/dev.sh` installs the toolchain on
//! first use, builds the worker and starts wrangler; `kv-put.sh` loads a catalog into local KV);
//! this module writes the catalog seed, runs them, republishes the catalog to KV whenever the
//! origin publishes a new one (as the native edge picks it up by polling), and stops workerd
//! with the dev command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// Longest wait for the edge to answer, toolchain install included.
const STARTUP_LIMIT: Duration = Duration::from_secs(30 * 60);
/// How often the origin's published catalog is checked for a new version.
const PUBLISH_EVERY: Duration = Duration::from_secs(3);

/// The repository holding `edge/cloudflare` (the scripts and `wrangler.toml`): the working
/// directory when run from a checkout, else the checkout this binary was built from.
fn repository() -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [std::env::current_dir()?, built_from]
        .into_iter()
        .find(|dir| dir.join("edge/cloudflare/dev.sh").is_file())
        .context("edge/cloudflare/dev.sh not found: run `edgefront dev --edge cloudflare` from the repository")
}

/// `wrangler dev` and its workerd, one process group.
#[derive(Debug)]
pub(crate) struct WorkerdEdge {
    child: Child,
    publisher: tokio::task::JoinHandle<()>,
    base: String,
    log: PathBuf,
}

impl WorkerdEdge {
    /// The edge's base URL.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// Where wrangler's and the worker's output goes.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops publishing, then wrangler and workerd (the whole process group).
    pub(crate) async fn shutdown(mut self) {
        self.publisher.abort();
        if let Some(pid) = self.child.id() {
            for signal in ["TERM", "KILL"] {
                let _ = Command::new("kill")
                    .args(["-s", signal, "--", &format!("-{pid}")])
                    .status()
                    .await;
                if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        }
    }
}

impl Drop for WorkerdEdge {
    /// On any other way out (an error, a panic), workerd must not outlive dev holding the
    /// port: the group is killed outright. After `shutdown` the group is gone already.
    fn drop(&mut self) {
        self.publisher.abort();
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// Starts the Cloudflare edge on `addr` for the origin at `origin_url`, with the dev keys in
/// `data_dir` and local KV / Durable Object state under `data_dir/cloudflare`. Returns once it
/// answers `/v1/health`; the first run installs the toolchain and can take many minutes
/// (its progress is in `data_dir/cloudflare/wrangler.log`).
pub(crate) async fn start(
    addr: SocketAddr,
    data_dir: &Path,
    origin_url: &str,
    edge_node: &str,
) -> anyhow::Result<WorkerdEdge> {
    anyhow::ensure!(
        addr.port() != 0,
        "--edge-addr needs a port under --edge cloudflare (wrangler dev picks none by itself)"
    );
    let repo = repository()?;
    let state = std::path::absolute(data_dir.join("cloudflare"))?;
    std::fs::create_dir_all(&state)?;
    let seed = state.join("kv-seed.json");
    let mut etag = crate::publish_seed(origin_url, None, &seed)
        .await?
        .context("the origin has no published catalog")?;
    let keys = std::path::absolute(edgefront_local::keys::key_path(data_dir))?;
    // wrangler's request log and the worker's console go to a file, not over dev's output.
    let log_path = state.join("wrangler.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(repo.join("edge/cloudflare/dev.sh"))
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(origin_url)
        .arg(&keys)
        .arg(&state)
        .arg(&seed)
        .arg(edge_node)
        .current_dir(&repo)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting edge/cloudflare/dev.sh")?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    // A cold machine installs the toolchain first (about 12 minutes here).
    let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
    loop {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the workerd edge did not answer within {} minutes; see {}",
                STARTUP_LIMIT.as_secs() / 60,
                log_path.display()
            );
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "edge/cloudflare/dev.sh exited ({status}) before the edge answered; see {}",
                log_path.display()
            );
        }
        if let Ok(resp) = client.get(format!("{base}/v1/health")).send().await
            && resp.status().is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let origin_url = origin_url.to_owned();
    let publisher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(PUBLISH_EVERY).await;
            match crate::publish_seed(&origin_url, Some(&etag), &seed).await {
                Ok(None) => {}
                Ok(Some(tag)) => match kv_put(&repo, &state, &seed).await {
                    Ok(()) => {
                        tracing::info!("published the origin's catalog to the workerd edge's KV");
                        etag = tag;
                    }
                    Err(e) => tracing::warn!("loading the catalog into KV failed: {e:#}"),
                },
                Err(e) => tracing::warn!("reading the origin's catalog failed: {e:#}"),
            }
        }
    });
    Ok(WorkerdEdge {
        child,
        publisher,
        base,
        log: log_path,
    })
}

async fn kv_put(repo: &Path, state: &Path, seed: &Path) -> anyhow::Result<()> {
    let out = Command::new(repo.join("edge/cloudflare/kv-put.sh"))
        .arg(state)
        .arg(seed)
        .current_dir(repo)
        .stdin(Stdio::null())
        // Stopped with the publisher task when dev stops mid-publish.
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "kv-put.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
