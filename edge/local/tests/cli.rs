//! The README's run command, for real: `edgefront dev` starts and prints its URL, and
//! `edgefront token --role marketer` mints a token that the running host accepts.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_its_url_and_accepts_a_token_minted_by_the_token_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_edgefront"))
            .args(["dev", "--edge-addr", "127.0.0.1:0", "--products", "500"])
            .args(["--data-dir", data])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The first URL printed is the edge's; port 0 means the printed one is the real one.
    let stdout = child.0.stdout.take().unwrap();
    let mut base = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            base = Some(url.split("/v1/").next().unwrap().to_owned());
            break;
        }
        assert!(Instant::now() < deadline, "no URL printed");
    }
    let base = base.expect("dev printed an edge URL");

    let client = reqwest::Client::new();
    let health: serde_json::Value = client
        .get(format!("{base}/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["products"], 500);

    // Keys were generated in the data dir on first run; `token` signs with the same ones.
    let out = Command::new(env!("CARGO_BIN_EXE_edgefront"))
        .args(["token", "--role", "marketer", "--data-dir", data])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let counters = client
        .get(format!("{base}/v1/counters?window=15m"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(counters.status(), 200);
    let refused = client
        .get(format!("{base}/v1/counters"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
