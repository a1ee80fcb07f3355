//! Helpers for the tests that run the `edgefront` binary.

use std::process::Child;

/// A child process killed (and reaped) when the test ends, pass or fail.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
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
