//! `edgefront dev --edge cloudflare|spin`: the edge served by `wrangler dev` (workerd) or by
//! the Spin component in the wasmtime test host, instead of the native host, on the same
//! address, wired to the local origin and the dev keys.
//!
//! The work is in the repository's scripts (`edge/<runtime>/dev.sh` builds the edge, installs
//! any toolchain on first use and starts the runtime; `kv-put.sh` loads a catalog into its
//! local store); this module writes the catalog seed (one snapshot for Workers KV, parts for
//! Spin), runs them, republishes the catalog whenever the origin publishes a new one (as the
//! native edge picks it up by polling), and stops the runtime with the dev command.

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

/// Which runtime serves the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// The Cloudflare worker under `wrangler dev` (edge/cloudflare).
    Workerd,
    /// The Spin component in the wasmtime test host (edge/spin, tests/spin-host).
    Spin,
}

impl Runtime {
    /// Its directory in the repository (holding `dev.sh` and `kv-put.sh`).
    fn dir(self) -> &'static str {
        match self {
            Runtime::Workerd => "edge/cloudflare",
            Runtime::Spin => "edge/spin",
        }
    }

    /// Its state directory under the data directory.
    fn state(self) -> &'static str {
        match self {
            Runtime::Workerd => "cloudflare",
            Runtime::Spin => "spin",
        }
    }

    /// Its log file in the state directory.
    pub(crate) fn log_name(self) -> &'static str {
        match self {
            Runtime::Workerd => "wrangler.log",
            Runtime::Spin => "host.log",
        }
    }

    /// The log's path for `data_dir`.
    pub(crate) fn log_path(self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.state()).join(self.log_name())
    }

    /// Spin instances read the catalog in parts; Workers isolates hold the whole snapshot.
    fn parts(self) -> bool {
        self == Runtime::Spin
    }
}

/// The repository holding `edge/<runtime>` (the scripts and manifests): the working directory
/// when run from a checkout, else the checkout this binary was built from.
fn repository(runtime: Runtime) -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = format!("{}/dev.sh", runtime.dir());
    [std::env::current_dir()?, built_from]
        .into_iter()
        .find(|dir| dir.join(&script).is_file())
        .with_context(|| format!("{script} not found: run `edgefront dev` from the repository"))
}

/// The runtime's process group (`wrangler dev` and its workerd; the Spin host).
#[derive(Debug)]
pub(crate) struct ExternalEdge {
    child: Child,
    publisher: tokio::task::JoinHandle<()>,
    base: String,
    log: PathBuf,
}

impl ExternalEdge {
    /// The edge's base URL.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// Where the runtime's and the edge's output goes.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops publishing, then the runtime (the whole process group).
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

impl Drop for ExternalEdge {
    /// On any other way out (an error, a panic), the runtime must not outlive dev holding the
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

/// Starts the edge on `runtime` at `addr` for the origin at `origin_url`, with the dev keys in
/// `data_dir` and its local state under `data_dir/<cloudflare|spin>`. Returns once it answers
/// `/v1/health`; the first run installs the toolchain or builds the host and can take many
/// minutes (its progress is in the runtime's log there).
pub(crate) async fn start(
    runtime: Runtime,
    addr: SocketAddr,
    data_dir: &Path,
    origin_url: &str,
    edge_node: &str,
) -> anyhow::Result<ExternalEdge> {
    anyhow::ensure!(
        addr.port() != 0,
        "--edge-addr needs a port outside the native edge (the runtime is told one address)"
    );
    let repo = repository(runtime)?;
    let state = std::path::absolute(data_dir.join(runtime.state()))?;
    std::fs::create_dir_all(&state)?;
    let seed = state.join("kv-seed.json");
    let parts = runtime.parts();
    let mut etag = crate::publish_seed(origin_url, None, &seed, parts)
        .await?
        .context("the origin has no published catalog")?;
    let keys = std::path::absolute(edgefront_local::keys::key_path(data_dir))?;
    // The runtime's request log and the edge's console go to a file, not over dev's output.
    let log_path = state.join(runtime.log_name());
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(repo.join(runtime.dir()).join("dev.sh"))
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
        .with_context(|| format!("starting {}/dev.sh", runtime.dir()))?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    // A cold machine installs the toolchain or builds the host first (about 12 minutes here).
    let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
    loop {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the {runtime:?} edge did not answer within {} minutes; see {}",
                STARTUP_LIMIT.as_secs() / 60,
                log_path.display()
            );
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{}/dev.sh exited ({status}) before the edge answered; see {}",
                runtime.dir(),
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
            match crate::publish_seed(&origin_url, Some(&etag), &seed, parts).await {
                Ok(None) => {}
                Ok(Some(tag)) => match kv_put(runtime, &repo, &state, &seed).await {
                    Ok(()) => {
                        tracing::info!(
                            "published the origin's catalog to the {runtime:?} edge's store"
                        );
                        etag = tag;
                    }
                    Err(e) => tracing::warn!("loading the catalog into KV failed: {e:#}"),
                },
                Err(e) => tracing::warn!("reading the origin's catalog failed: {e:#}"),
            }
        }
    });
    Ok(ExternalEdge {
        child,
        publisher,
        base,
        log: log_path,
    })
}

async fn kv_put(runtime: Runtime, repo: &Path, state: &Path, seed: &Path) -> anyhow::Result<()> {
    let out = Command::new(repo.join(runtime.dir()).join("kv-put.sh"))
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
