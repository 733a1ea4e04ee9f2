//! The webhook sender on reqwest (rustls): connects only to the addresses the
//! URL policy checked, follows no redirect (a redirect could lead past the
//! policy), ignores proxy environment variables, times out per request,
//! and reads at most a bounded part of the answer.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;

use agentwire_core::ports::{SendOutcome, WebhookSender};

/// Sends webhook requests.
#[derive(Debug, Clone)]
pub struct ReqwestSender {
    timeout: Duration,
    max_body: usize,
}

impl Default for ReqwestSender {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_body: 64 * 1024,
        }
    }
}

impl ReqwestSender {
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        Self { timeout, max_body }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[async_trait]
impl WebhookSender for ReqwestSender {
    async fn send(
        &self,
        url: &url::Url,
        addrs: &[SocketAddr],
        headers: &[(&str, String)],
        body: &str,
    ) -> SendOutcome {
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Never through a proxy from the environment (HTTPS_PROXY, ...):
            // the connection must go to exactly the checked addresses.
            .no_proxy();
        if let Some(host) = url.host_str() {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                return SendOutcome::ConnectFailed(format!("cannot build the HTTP client: {e}"));
            }
        };
        let mut req = client.post(url.clone()).body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = retry_after(&resp);
                // Read (and drop) at most max_body bytes of the answer.
                let mut read = 0;
                while read < self.max_body {
                    match resp.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        _ => break,
                    }
                }
                SendOutcome::Answered {
                    status,
                    retry_after,
                }
            }
            Err(e) if e.is_timeout() => SendOutcome::TimedOut,
            Err(e) => SendOutcome::ConnectFailed(e.to_string()),
        }
    }
}
