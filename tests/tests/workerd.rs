//! The conformance suite against the Cloudflare build served by workerd (`wrangler dev
//! --local`), with a fresh state directory, KV seeded with the demo catalog and fresh keys.
//!
//! Needs the toolchain of `edge/cloudflare/tools.sh` and a built bundle: the test command does
//! both and exports `WRANGLER`. Without `WRANGLER` the test is skipped, unless
//! `EDGEFRONT_REQUIRE_WORKERD=1`, which turns the skip into a failure.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use edgefront_conformance::check_host;
use edgefront_shared::cart::demo_promotions;
use edgefront_shared::catalog::{PublishedCatalog, demo_catalog};
use edgefront_shared::tokens::{KeyFile, KeyFileEntry, Keyring};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `wrangler dev` and its workerd, stopped as a process group when dropped (killing wrangler
/// alone leaves workerd serving the port).
struct Wrangler(Child);

impl Drop for Wrangler {
    fn drop(&mut self) {
        // The child leads its own process group (see `process_group(0)`): signal the group.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--", &group])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

fn wrangler() -> Option<PathBuf> {
    match std::env::var_os("WRANGLER") {
        Some(w) => Some(PathBuf::from(w)),
        None if std::env::var("EDGEFRONT_REQUIRE_WORKERD").as_deref() == Ok("1") => {
            panic!(
                "EDGEFRONT_REQUIRE_WORKERD=1 but WRANGLER is not set (source edge/cloudflare/tools.sh)"
            )
        }
        None => None,
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `wrangler dev` on a free port with the demo catalog in KV and `keys`; returns it
/// and its base URL once it answers.
async fn start_workerd(
    wrangler: &Path,
    state: &Path,
    keys_json: &str,
    products: usize,
) -> (Wrangler, String) {
    let seed = state.join("kv-seed.json");
    let body = serde_json::to_string(&PublishedCatalog {
        version: 1,
        products: demo_catalog(products, 42),
        promotions: demo_promotions(),
    })
    .unwrap();
    std::fs::write(
        &seed,
        serde_json::to_vec(&serde_json::json!([{ "key": "catalog/snapshot", "value": body }]))
            .unwrap(),
    )
    .unwrap();
    let persist = state.join("wrangler-state");
    run(Command::new(wrangler)
        .current_dir(repo_root())
        .args(["kv", "bulk", "put", "--local", "--binding", "EDGEFRONT_KV"])
        .arg(&seed)
        .arg("--persist-to")
        .arg(&persist)
        .stdin(Stdio::null()));
    let port = free_port();
    let log = std::fs::File::create(state.join("wrangler.log")).unwrap();
    let child = {
        use std::os::unix::process::CommandExt as _;
        Command::new(wrangler)
            .current_dir(repo_root())
            .args([
                "dev",
                "--local",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .arg("--persist-to")
            .arg(&persist)
            .arg("--show-interactive-dev-session=false")
            .arg("--var")
            .arg(format!("EDGEFRONT_KEYS:{keys_json}"))
            // The test command built the bundle just before; don't let wrangler rebuild it.
            .env("EDGEFRONT_WORKER_PREBUILT", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let guard = Wrangler(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = client.get(format!("{base}/v1/health")).send().await
            && resp.status().is_success()
        {
            return (guard, base);
        }
        assert!(
            Instant::now() < deadline,
            "wrangler dev did not answer within 90 s:\n{}",
            std::fs::read_to_string(state.join("wrangler.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn fresh_keys() -> (String, Keyring) {
    let secret: [u8; 32] = rand::random();
    let file = KeyFile {
        keys: vec![KeyFileEntry {
            kid: "workerd-test".into(),
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
        }],
    };
    let json = serde_json::to_string(&file).unwrap();
    let ring = Keyring::from_key_file(json.as_bytes()).unwrap();
    (json, ring)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workerd_passes_the_conformance_suite() {
    let Some(wrangler) = wrangler() else {
        eprintln!("skipped: WRANGLER not set (see edge/cloudflare/tools.sh)");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let (keys_json, keyring) = fresh_keys();
    let (_workerd, base) = start_workerd(&wrangler, state.path(), &keys_json, 2_000).await;
    let report = check_host(base, &keyring).await.unwrap();
    assert!(
        report.is_empty(),
        "{} case(s) failed under workerd:\n{}\n--- wrangler log ---\n{}",
        report.len(),
        report.join("\n"),
        std::fs::read_to_string(state.path().join("wrangler.log")).unwrap_or_default()
    );
}
