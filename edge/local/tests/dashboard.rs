//! The marketers' dashboard in a real browser: `edgefront dev` runs the stack, and
//! `tests/browser/dashboard.mjs` drives headless Chromium (playwright-core) through it — signed
//! out it shows nothing, a wrong token is refused, a marketer's token shows the counters, and
//! events sent through the edge move them on the open page. Needs what
//! `tests/browser/ensure.sh` installs (`EDGEFRONT_BROWSER_DIR`, which the test command sets).
//! The page's screenshot lands in `artifacts/dashboard.png`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::KillOnDrop;

/// The whole browser run; the script's own watchdog (150 s) should fire first.
const NODE_WITHIN: Duration = Duration::from_secs(240);

#[test]
fn the_dashboard_signs_in_and_shows_counters_move_in_a_real_browser() {
    let Some(browser_dir) = std::env::var_os("EDGEFRONT_BROWSER_DIR") else {
        assert_ne!(
            std::env::var("EDGEFRONT_REQUIRE_BROWSER").as_deref(),
            Ok("1"),
            "EDGEFRONT_REQUIRE_BROWSER=1 but EDGEFRONT_BROWSER_DIR is not set (tests/browser/ensure.sh prints it)"
        );
        eprintln!("skipped: EDGEFRONT_BROWSER_DIR not set (see tests/browser/ensure.sh)");
        return;
    };
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let script = repo.join("tests/browser/dashboard.mjs");
    let screenshot = repo.join("artifacts/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut cmd = common::small_dev(data);
    cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
    let (_dev, edge, origin) = common::spawn_dev(cmd);
    let token = common::staff_token("marketer", data);

    // Its output goes straight through, so the run shows what the browser saw as it happens.
    let started = Instant::now();
    let mut node = KillOnDrop(
        Command::new("node")
            .arg(&script)
            .current_dir(&repo)
            .env("EDGEFRONT_BROWSER_DIR", &browser_dir)
            .env("ORIGIN_URL", &origin)
            .env("EDGE_URL", &edge)
            .env("MARKETER_TOKEN", &token)
            .env("SCREENSHOT", &screenshot)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}")),
    );
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < NODE_WITHIN,
            "{} did not finish within {NODE_WITHIN:?}",
            script.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{} failed ({status}); its output is above, the page as it was in {}",
        script.display(),
        screenshot.display()
    );
}
