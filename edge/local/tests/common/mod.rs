//! Helpers for the tests that run the `edgefront` binary.
// Each test binary includes this module and uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the test ends, pass or fail.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    /// Ctrl-C first, so `edgefront dev` can stop what it started (workerd runs in its own
    /// process group); SIGKILL if it has not exited within 10 s.
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return; // exited and reaped already: its pid may belong to another process now
        }
        let _ = std::process::Command::new("kill")
            .args(["-s", "INT", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `url` as JSON, with a bearer token when given.
pub(crate) async fn get_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: Option<&str>,
) -> serde_json::Value {
    let mut req = client.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// `edgefront dev` on free ports with a small catalog in `data`: the stack the dashboard and
/// observability tests run (the caller adds its environment and stderr).
pub(crate) fn small_dev(data: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefront"));
    cmd.args([
        "dev",
        "--edge-addr",
        "127.0.0.1:0",
        "--origin-addr",
        "127.0.0.1:0",
    ])
    .args(["--products", "200", "--data-dir", data]);
    cmd
}

/// Spawns `edgefront dev …` (`cmd`, flags set by the caller) with its stdout piped, and returns
/// it with the edge's and the origin's base URLs once it has printed them (within 180 s).
/// With `--edge-addr`/`--origin-addr 127.0.0.1:0` the printed URLs are the real ports.
pub(crate) fn spawn_dev(mut cmd: Command) -> (KillOnDrop, String, String) {
    let mut child = KillOnDrop(cmd.stdout(Stdio::piped()).spawn().unwrap());
    // The edge's URL first, then the origin's, then "Press Ctrl-C".
    let stdout = child.0.stdout.take().unwrap();
    let (mut edge, mut origin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(180);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(|u| u.split("/v1/").next().unwrap().to_owned());
        match line.split_whitespace().next() {
            Some("edge") => edge = url,
            Some("origin") => origin = url,
            _ => {}
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        assert!(Instant::now() < deadline, "dev did not finish starting");
    }
    let origin = origin.expect("dev printed an origin URL");
    let edge = edge.expect("dev printed an edge URL");
    (child, edge, origin)
}

/// `edgefront token --role <role>`, as the README shows it.
pub(crate) fn staff_token(role: &str, data_dir: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_edgefront"))
        .args(["token", "--role", role, "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A session token from the edge at `edge` for a shopper who consented to analytics (their
/// events are stored, under a pseudonym).
pub(crate) async fn consented_session(client: &reqwest::Client, edge: &str) -> String {
    let session: serde_json::Value = client
        .post(format!("{edge}/v1/session"))
        .json(&serde_json::json!({"consent": {"analytics": true, "personalization": false}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    session["session_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no session token: {session}"))
        .to_owned()
}
