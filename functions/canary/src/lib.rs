//! The canary: one probe of a deployed gateway as a client sees it,
//! through its public URLs only. Every minute on AWS (a scheduled Lambda
//! function, `CanaryEnabled` in the template) and on a timer in the dev
//! gateway (`--canary-interval`):
//!
//! 1. **connect**: the Rust client connects to the WebSocket URL with a
//!    token the canary signs with the deployment's key (tenant
//!    `AGENTWIRE_CANARY_TENANT`, principal `agentwire-canary`, one channel,
//!    five minutes) and joins its channel from the head;
//! 2. **publish**: one event over the HTTP API;
//! 3. **receive**: the client gets it live (`canary_latency_ms`, from the
//!    POST to the event);
//! 4. **resume**: the client closes, a second event is published, and a new
//!    client joins from the first event's position: it must get the second
//!    one by replay, with `recovered` (`canary_resume_ms`, from the
//!    reconnect to the event).
//!
//! Each probe counts `canary_runs` by outcome: `ok`, or the step that
//! failed. The uptime the PRD asks for is the share `ok`; reconnection
//! success is the share that passed the resume step.

use std::time::{Duration, Instant};

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_core::auth::TokenKey;
use agentwire_core::metrics as m;
use agentwire_protocol::Since;
use serde_json::json;

/// The principal the canary's tokens name.
pub const PRINCIPAL: &str = "agentwire-canary";

/// The step a probe failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Publish,
    Receive,
    Resume,
}

impl Stage {
    /// Its `outcome` label on `canary_runs`.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Publish => "publish",
            Stage::Receive => "receive",
            Stage::Resume => "resume",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A probe that failed: where, and why (never a token).
#[derive(Debug, thiserror::Error)]
#[error("the canary failed to {stage}: {reason}")]
pub struct CanaryError {
    pub stage: Stage,
    pub reason: String,
}

fn fail(stage: Stage, reason: impl std::fmt::Display) -> CanaryError {
    CanaryError {
        stage,
        reason: reason.to_string(),
    }
}

/// What a probe that passed measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// From the HTTP publish to the live client receiving the event.
    pub latency: Duration,
    /// From the reconnect to the new client receiving, by replay, the
    /// event published while it was away.
    pub resume: Duration,
}

/// The canary's configuration.
#[derive(Clone)]
pub struct Canary {
    ws_url: String,
    http_url: String,
    key: TokenKey,
    tenant: String,
    channel: String,
    /// The longest each step may take.
    step_timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for Canary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Canary")
            .field("ws_url", &self.ws_url)
            .field("http_url", &self.http_url)
            .field("tenant", &self.tenant)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Canary {
    /// Probes the gateway at `ws_url` (WebSocket) and `http_url` (HTTP
    /// API) as `tenant`, on channel `agentwire-canary`, each step within
    /// 10 s.
    pub fn new(
        ws_url: impl Into<String>,
        http_url: impl Into<String>,
        key: TokenKey,
        tenant: impl Into<String>,
    ) -> Self {
        Self {
            ws_url: ws_url.into(),
            http_url: http_url.into().trim_end_matches('/').to_owned(),
            key,
            tenant: tenant.into(),
            channel: PRINCIPAL.to_owned(),
            step_timeout: Duration::from_secs(10),
            http: reqwest::Client::new(),
        }
    }

    /// The channel it publishes to and follows.
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// The longest each step may take.
    pub fn with_step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = timeout;
        self
    }

    /// One probe, recorded in the metrics (`canary_runs` by outcome, and
    /// the two latencies when it passed) and the log (never a token).
    pub async fn probe(&self) -> Result<Probe, CanaryError> {
        let result = self.run().await;
        match &result {
            Ok(p) => {
                tracing::info!(
                    latency_ms = p.latency.as_millis() as u64,
                    resume_ms = p.resume.as_millis() as u64,
                    "canary passed"
                );
                ::metrics::counter!(m::CANARY_RUNS, "outcome" => "ok").increment(1);
                ::metrics::histogram!(m::CANARY_LATENCY).record(p.latency.as_secs_f64() * 1000.0);
                ::metrics::histogram!(m::CANARY_RESUME).record(p.resume.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                tracing::error!(stage = %e.stage, error = %e, "canary failed");
                ::metrics::counter!(m::CANARY_RUNS, "outcome" => e.stage.label()).increment(1);
            }
        }
        result
    }

    async fn run(&self) -> Result<Probe, CanaryError> {
        let token = self.token().map_err(|e| fail(Stage::Connect, e))?;
        let mut live = self
            .client(&token, Since::Head)
            .map_err(|e| fail(Stage::Connect, e))?;
        let joined = self.joined(&mut live).await;
        let first = match joined {
            Ok(_) => {
                let nonce = uuid::Uuid::new_v4().to_string();
                let sent = Instant::now();
                self.publish(&token, &nonce).await?;
                let (epoch, seq) = self
                    .receive(&mut live, &nonce)
                    .await
                    .map_err(|e| fail(Stage::Receive, e))?;
                Ok((sent.elapsed(), epoch, seq))
            }
            Err(e) => Err(fail(Stage::Connect, e)),
        };
        live.close().await;
        let (latency, epoch, seq) = first?;

        // Away: an event is published while no client of the canary is
        // connected; the next one resumes from the last it had.
        let nonce = uuid::Uuid::new_v4().to_string();
        self.publish(&token, &nonce).await?;
        let reconnect = Instant::now();
        let mut back = self
            .client(&token, Since::Position { epoch, seq })
            .map_err(|e| fail(Stage::Resume, e))?;
        let resumed = async {
            let recovered = self.joined(&mut back).await?;
            if !recovered {
                return Err(
                    "the gateway could not resume from the last event (recovered: false)"
                        .to_owned(),
                );
            }
            self.receive(&mut back, &nonce).await.map(|_| ())
        }
        .await;
        back.close().await;
        resumed.map_err(|e| fail(Stage::Resume, e))?;
        Ok(Probe {
            latency,
            resume: reconnect.elapsed(),
        })
    }

    fn token(&self) -> Result<String, agentwire_core::auth::AuthError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.key.sign(&TokenKey::claims(
            &self.tenant,
            PRINCIPAL,
            vec![self.channel.clone()],
            vec![self.channel.clone()],
            now,
            Duration::from_secs(300),
        ))
    }

    fn client(&self, token: &str, since: Since) -> Result<Client, agentwire_client::ClientError> {
        Client::builder()
            .url(self.ws_url.clone())
            .token(token.to_owned())
            .channel_since(self.channel.clone(), since)
            .options(Options {
                // A probe reports a failure rather than retrying for long.
                backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(1))
                    .with_max_attempts(3),
                ack_debounce: None,
                client_name: "agentwire-canary".into(),
                ..Options::default()
            })
            .connect()
    }

    /// Waits for the channel's `joined`: whether its position was
    /// recovered.
    async fn joined(&self, client: &mut Client) -> Result<bool, String> {
        let wait = async {
            loop {
                match client.next().await {
                    Some(ClientEvent::Joined { channels }) => {
                        if let Some(c) = channels.iter().find(|c| c.name == self.channel) {
                            return Ok(c.recovered);
                        }
                    }
                    Some(ClientEvent::Error(e)) if e.is_fatal() => return Err(e.to_string()),
                    Some(_) => {}
                    None => return Err("the client stopped before joining".to_owned()),
                }
            }
        };
        tokio::time::timeout(self.step_timeout, wait)
            .await
            .unwrap_or_else(|_| Err(format!("no joined within {:?}", self.step_timeout)))
    }

    /// Waits for the event carrying `nonce`: its epoch and seq.
    async fn receive(&self, client: &mut Client, nonce: &str) -> Result<(String, u64), String> {
        let wait = async {
            loop {
                match client.next().await {
                    Some(ClientEvent::Event(e)) if e.data["nonce"] == nonce => {
                        return Ok((e.epoch, e.seq));
                    }
                    Some(ClientEvent::Gap { from, to, .. }) => {
                        return Err(format!("a gap {from}..={to} instead of the event"));
                    }
                    Some(ClientEvent::Error(e)) if e.is_fatal() => return Err(e.to_string()),
                    Some(_) => {}
                    None => return Err("the client stopped before the event".to_owned()),
                }
            }
        };
        tokio::time::timeout(self.step_timeout, wait)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the event did not arrive within {:?}",
                    self.step_timeout
                ))
            })
    }

    async fn publish(&self, token: &str, nonce: &str) -> Result<(), CanaryError> {
        let url = format!("{}/v1/channels/{}/events", self.http_url, self.channel);
        let body = json!({"kind": "canary", "data": {"nonce": nonce}}).to_string();
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", nonce)
            .body(body)
            .timeout(self.step_timeout)
            .send()
            .await
            .map_err(|e| fail(Stage::Publish, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(fail(
            Stage::Publish,
            format!(
                "{url} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        ))
    }
}
