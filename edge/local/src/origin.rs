//! The origin port over HTTP (reqwest), with timeouts so a slow origin never stalls the edge.

use std::time::Duration;

use async_trait::async_trait;
use edgefront_functions::ports::{
    OriginClient, PortError, catalog_answer, origin_answer, origin_paths,
};

/// How long a call to the origin may take. A call that runs out is an error like any other
/// (`PortError::Unavailable`): the outbox keeps the batch and the next flush sends it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginTimeouts {
    /// To establish the connection. Default 2 s.
    pub connect: Duration,
    /// For the whole call, connection to the last byte of the answer. Default 10 s.
    pub total: Duration,
}

impl Default for OriginTimeouts {
    fn default() -> Self {
        OriginTimeouts {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(10),
        }
    }
}

/// Posts to the origin's ingest endpoints; unconfigured when no URL is given.
#[derive(Debug, Clone)]
pub struct HttpOrigin {
    base: Option<String>,
    client: reqwest::Client,
}

impl HttpOrigin {
    /// A client for `base` (e.g. `http://127.0.0.1:8788`), or an unconfigured one, with the
    /// default timeouts.
    pub fn new(base: Option<String>) -> anyhow::Result<Self> {
        Self::with_timeouts(base, OriginTimeouts::default())
    }

    /// A client for `base` whose calls give up after `timeouts`.
    pub fn with_timeouts(base: Option<String>, timeouts: OriginTimeouts) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .build()?;
        Ok(HttpOrigin {
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            client,
        })
    }
}

#[async_trait]
impl OriginClient for HttpOrigin {
    fn configured(&self) -> bool {
        self.base.is_some()
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(), PortError> {
        let base = self
            .base
            .as_deref()
            .ok_or_else(|| PortError::Unavailable("no origin configured".into()))?;
        let mut req = self
            .client
            .post(format!("{base}{path}"))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req
            .send()
            .await
            // Without the URL: it may carry credentials, and this text is logged.
            .map_err(|e| PortError::Unavailable(e.without_url().to_string()))?;
        origin_answer(resp.status().as_u16(), path)
    }

    async fn fetch_catalog(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, PortError> {
        let base = self
            .base
            .as_deref()
            .ok_or_else(|| PortError::Unavailable("no origin configured".into()))?;
        let mut req = self
            .client
            .get(format!("{base}{}", origin_paths::CATALOG_SNAPSHOT));
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PortError::Unavailable(e.without_url().to_string()))?;
        if !catalog_answer(resp.status().as_u16())? {
            return Ok(None);
        }
        let tag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .bytes()
            .await
            .map_err(|e| PortError::Unavailable(e.without_url().to_string()))?;
        Ok(Some((tag, body.to_vec())))
    }
}
