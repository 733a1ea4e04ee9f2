//! The JWKS fetcher on reqwest (rustls): the URL checked against the same
//! address policy as webhook URLs and connected to exactly the addresses
//! checked (no redirect, no proxy from the environment), a time-out, at
//! most [`MAX_JWKS_BYTES`] read, and `Cache-Control: max-age` returned for
//! the cache.

use std::time::Duration;

use async_trait::async_trait;

use agentwire_core::ports::{FetchedJwks, JwksError, JwksFetcher};
use agentwire_core::webhook::{UrlPolicy, UrlRefusal};

/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Fetches issuers' JWKS.
#[derive(Debug, Clone)]
pub struct ReqwestJwks {
    policy: UrlPolicy,
    timeout: Duration,
}

impl ReqwestJwks {
    pub fn new(policy: UrlPolicy, timeout: Duration) -> Self {
        Self { policy, timeout }
    }
}

/// `max-age` of a `Cache-Control` header (`no-store`/`no-cache`: 0).
pub fn max_age(header: &str) -> Option<Duration> {
    let mut age = None;
    for d in header.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            age = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

#[async_trait]
impl JwksFetcher for ReqwestJwks {
    async fn fetch(&self, raw: &str) -> Result<FetchedJwks, JwksError> {
        let (url, addrs) = self.policy.check(raw).await.map_err(|e| match e {
            UrlRefusal::Resolve { .. } => JwksError::Unavailable(e.to_string()),
            e => JwksError::Refused(e.to_string()),
        })?;
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(host) = url.host_str() {
            builder = builder.resolve_to_addrs(host, &addrs);
        }
        let client = builder
            .build()
            .map_err(|e| JwksError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        let mut resp = client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            return Err(JwksError::Unavailable(format!("HTTP {status}")));
        }
        if status != 200 {
            return Err(JwksError::Malformed(format!("HTTP {status}")));
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| JwksError::Unavailable(e.to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(JwksError::Malformed(format!(
                    "larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
        }
        let doc = serde_json::from_slice(&body)
            .map_err(|e| JwksError::Malformed(format!("not JSON: {e}")))?;
        Ok(FetchedJwks { doc, max_age })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
