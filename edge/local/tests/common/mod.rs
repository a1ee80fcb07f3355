//! Helpers for the tests that run the `edgefront` binary.

use std::process::Child;

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
