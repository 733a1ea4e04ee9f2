//! agentwire's dev gateway: API Gateway's WebSocket API, its `@connections`
//! management API and the SQS event source, emulated on one local port so
//! the real function handlers run in-process against a local AWS endpoint.
//!
//! - A WebSocket upgrade becomes a `$connect` event for the connect handler;
//!   a non-2xx answer refuses the upgrade with that status and body.
//! - Each text message is routed on `$request.body.action` (`hello`, `join`,
//!   `leave`, `ack`, else `$default`) to the session handler; its response body
//!   is sent back as a frame. `ping` is answered here, like the production
//!   MOCK integration.
//! - `POST|GET|DELETE /@connections/{id}` serve the dispatcher's SDK client,
//!   with 410 `GoneException` for unknown or closed connections.
//! - `POST /@dev/settings` (loopback only) changes the emulated
//!   `@connections` latency, the fan-out threshold and how many fan-out
//!   invocations run at once while it runs, for benchmarks:
//!   `{"connections_latency_ms": 20, "fanout_threshold": 1, "fanout_invocations": 8}`.
//! - `POST /v1/channels/{channel}/events` serves the HTTP API's publish
//!   route through the publish function.
//! - `GET /metrics`: every handler's metrics in Prometheus text format
//!   (`agentwire stats` reads it).
//! - `GET /console/`: the browser console (`clients/console/dist`).
//! - Pollers receive from the events queue, the fan-out queue and the
//!   webhook job queue, call the dispatcher, the fan-out function and the
//!   webhook function with real `SqsEvent` batches, and delete only what
//!   did not fail. The fan-out queue has several pollers, as Lambda runs
//!   several invocations of a function on a standard queue at once.
//! - API Gateway's limits (message size, idle timeout, connection duration)
//!   are enforced, each configurable so tests can shorten them.

mod console;
mod events;
pub mod faults;
mod http_api;
mod hub;
mod management;
pub mod metrics;
mod poller;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentwire_aws::deps::Deps;
use agentwire_core::config::{Config, ConfigError};
use agentwire_fn_connect::ConnectFunction;
use agentwire_fn_disconnect::DisconnectFunction;
use agentwire_fn_dispatcher::DispatcherFunction;
use agentwire_fn_fanout::FanoutFunction;
use agentwire_fn_publish::PublishFunction;
use agentwire_fn_session::SessionFunction;
use agentwire_fn_webhook::WebhookFunction;
use aws_config::SdkConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use console::default_dir as console_dir;
pub use hub::{Hub, PostStats};
pub mod function;

/// API Gateway's limits and the poller's settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where to listen; port 0 picks a free one.
    pub bind: SocketAddr,
    /// The stage name put in events.
    pub stage: String,
    /// Largest message in either direction (API Gateway: 128 KiB).
    pub max_message_bytes: usize,
    /// Close a connection with no message for this long (API Gateway: 10 min).
    pub idle_timeout: Duration,
    /// Close every connection after this long (API Gateway: 2 h).
    pub max_duration: Duration,
    /// SQS long-poll wait per receive.
    pub poll_wait: Duration,
    /// Bytes posted to a connection and not yet written to its socket, past
    /// which `@connections` answers 429 `LimitExceededException` (API
    /// Gateway bounds each connection's outbound buffer too).
    pub outbound_buffer_bytes: usize,
    /// Emulated round trip of every `@connections` call (API Gateway's
    /// Management API: about 20 to 50 ms from a Lambda), so benchmarks show
    /// what parallel posting buys; zero answers at once.
    pub connections_latency: Duration,
    /// Uniform random extra on top of `connections_latency`, 0 to this.
    pub connections_jitter: Duration,
    /// Fan-out invocations (one job each) run at once: the fan-out
    /// function's `MaximumConcurrency` in the template.
    pub fanout_pollers: usize,
    /// Webhook invocations (two jobs each) run at once: the webhook
    /// function's `MaximumConcurrency` in the template.
    pub webhook_pollers: usize,
    /// The faults injected into the functions' AWS calls and into
    /// `@connections` posts (none by default), changeable while running.
    /// [`Gateway::start`] wraps the SDK with them; a caller of
    /// [`Gateway::start_with_deps`] builds its `Deps` from
    /// [`Faults::sdk`](faults::Faults::sdk) for the AWS side.
    pub faults: Arc<faults::Faults>,
    /// The built browser console served at `/console/`
    /// (`clients/console/dist` of this tree by default).
    pub console_dir: std::path::PathBuf,
    /// Runs the canary (the deployed stack's scheduled probe, see
    /// `agentwire_fn_canary`) against this gateway's own URLs this often,
    /// as tenant `agentwire-canary`; `None` (the default): never.
    pub canary_interval: Option<Duration>,
}

/// Probes the gateway every `every` (the first probe at once) until it
/// stops, as the scheduled canary function does on AWS.
async fn run_canary(
    canary: agentwire_fn_canary::Canary,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        // The probe logs and counts its own outcome.
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = canary.probe() => {}
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            stage: "local".into(),
            max_message_bytes: agentwire_protocol::limits::MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_duration: Duration::from_secs(2 * 3600),
            poll_wait: Duration::from_secs(2),
            outbound_buffer_bytes: 1024 * 1024,
            connections_latency: Duration::ZERO,
            connections_jitter: Duration::ZERO,
            fanout_pollers: 4,
            webhook_pollers: 5,
            faults: Arc::default(),
            console_dir: console::default_dir(),
            canary_interval: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the events queue {url}: {reason}")]
    Queue { url: String, reason: String },
}

/// The function handlers, as API Gateway and Lambda would hold them.
pub(crate) struct Functions {
    /// Present when the deployment has a webhook queue.
    pub webhook: Option<WebhookFunction>,
    /// Present when the deployment has a fan-out queue.
    pub fanout: Option<FanoutFunction>,
    pub connect: ConnectFunction,
    pub session: SessionFunction,
    pub disconnect: DisconnectFunction,
    pub dispatcher: DispatcherFunction,
    pub publish: PublishFunction,
    pub admin: agentwire_fn_admin::AdminFunction,
}

/// Shared state of the HTTP side.
pub(crate) struct App {
    pub functions: Functions,
    pub hub: Arc<Hub>,
    /// The emulated `@connections` round trip, changeable while running.
    pub latency: management::Latency,
    /// Fan-out invocations run at once, changeable while running (starts
    /// at [`GatewayOptions::fanout_pollers`]).
    pub fanout_invocations: std::sync::atomic::AtomicUsize,
    pub options: GatewayOptions,
    pub domain: String,
}

/// A running dev gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    app: Arc<App>,
    addr: SocketAddr,
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    source_enabled: watch::Sender<bool>,
    /// `true` while the events queue's poller is disabled and idle.
    source_paused: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds, then serves WebSockets and `@connections` and polls the events
    /// queue until [`Gateway::shutdown`]. `config.connections_endpoint`, if
    /// unset, becomes this gateway's own address.
    pub async fn start(
        sdk: &SdkConfig,
        config: Config,
        options: GatewayOptions,
    ) -> Result<Self, GatewayError> {
        let sdk = options.faults.sdk(sdk);
        Self::start_with_deps(Deps::new(&sdk, config), options).await
    }

    /// Like [`Gateway::start`], with dependencies built by the caller.
    pub async fn start_with_deps(
        mut deps: Deps,
        options: GatewayOptions,
    ) -> Result<Self, GatewayError> {
        // Installed before any handler runs, so every count is seen.
        let _ = metrics::prometheus();
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: options.bind,
            source,
        })?;
        if deps.config.connections_endpoint.is_none() {
            deps.config.connections_endpoint = Some(format!("http://{addr}"));
        }
        let queue_url = deps.config.require_events_queue_url()?.to_owned();
        let functions = Functions {
            connect: ConnectFunction::new(&deps)?,
            session: SessionFunction::new(&deps)?,
            disconnect: DisconnectFunction::new(&deps),
            dispatcher: DispatcherFunction::new(&deps)?,
            publish: PublishFunction::new(&deps)?,
            admin: agentwire_fn_admin::AdminFunction::new(&deps)?,
            webhook: match deps.config.webhook_queue_url {
                Some(_) => Some(WebhookFunction::new(&deps)?),
                None => None,
            },
            fanout: match deps.config.fanout_queue_url {
                Some(_) => Some(FanoutFunction::new(&deps)?),
                None => None,
            },
        };
        let canary_key = match options.canary_interval {
            Some(_) => {
                let key = deps.config.keyring()?.signer().cloned();
                if key.is_none() {
                    tracing::warn!(
                        "no token key to sign the canary's tokens with; the canary does not run"
                    );
                }
                key
            }
            None => None,
        };
        let fanout_queue = deps.config.fanout_queue_url.clone();
        let webhook_queue = deps.config.webhook_queue_url.clone();
        let sqs = aws_sdk_sqs::Client::new(&deps.sdk);
        let source = poller::Source::resolve(&sqs, &queue_url).await?;
        let webhook_source = match &webhook_queue {
            Some(url) => Some(poller::Source::resolve(&sqs, url).await?),
            None => None,
        };
        let fanout_source = match &fanout_queue {
            Some(url) => Some(Arc::new(poller::Source::resolve(&sqs, url).await?)),
            None => None,
        };
        let hub = Arc::new(Hub::with_faults(options.faults.clone()));
        let app = Arc::new(App {
            functions,
            hub: hub.clone(),
            latency: management::Latency::new(
                options.connections_latency,
                options.connections_jitter,
            ),
            fanout_invocations: std::sync::atomic::AtomicUsize::new(options.fanout_pollers.max(1)),
            options: options.clone(),
            domain: addr.to_string(),
        });
        let (stop, stopped) = watch::channel(false);
        let router = socket::routes()
            .merge(management::routes(app.latency.clone()))
            .merge(management::dev_routes())
            .merge(http_api::routes())
            .merge(metrics::routes())
            .merge(console::routes())
            .with_state(app.clone());
        let mut server_stop = stopped.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "dev gateway server failed");
            }
        });
        let (source_enabled, enabled) = watch::channel(true);
        let (paused_tx, source_paused) = watch::channel(false);
        let handle = app.clone();
        let mut tasks = vec![server];
        if let Some(fs) = fanout_source {
            // Not paused with the events queue's source: jobs already
            // handed out are worked, as on Lambda.
            let (_on, always) = watch::channel(true);
            tasks.push(tokio::spawn(poller::run(
                sqs.clone(),
                fs,
                poller::Target::Fanout,
                app.clone(),
                stopped.clone(),
                always,
                None,
            )));
        }
        if let Some(ws) = webhook_source {
            tasks.push(tokio::spawn(poller::run(
                sqs.clone(),
                Arc::new(ws),
                poller::Target::Webhook,
                app.clone(),
                stopped.clone(),
                enabled.clone(),
                None,
            )));
        }
        if let (Some(every), Some(key)) = (options.canary_interval, canary_key) {
            let canary = agentwire_fn_canary::Canary::new(
                format!("ws://{addr}"),
                format!("http://{addr}"),
                key,
                "agentwire-canary",
            );
            tasks.push(tokio::spawn(run_canary(canary, every, stopped.clone())));
        }
        tasks.push(tokio::spawn(poller::run(
            sqs,
            Arc::new(source),
            poller::Target::Dispatcher,
            app,
            stopped,
            enabled,
            Some(paused_tx),
        )));
        tracing::info!(%addr, queue = %queue_url, "dev gateway started");
        Ok(Self {
            app: handle,
            addr,
            hub,
            stop,
            source_enabled,
            source_paused,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where clients connect: `ws://127.0.0.1:PORT`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The HTTP API's base URL (the publish route is under `/v1/`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `@connections` endpoint the dispatcher posts to.
    pub fn connections_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Enables or disables the events queue's event source, as
    /// `aws lambda update-event-source-mapping --[no-]enabled` does: while
    /// disabled, messages stay on the queue. A receive already under way
    /// finishes first.
    pub fn set_event_source_enabled(&self, enabled: bool) {
        let _ = self.source_enabled.send(enabled);
    }

    /// Disables the events queue's event source and waits until the receive
    /// under way (if any) has finished and been processed: from then on,
    /// what is published stays on the queue.
    pub async fn pause_event_source(&self) {
        self.set_event_source_enabled(false);
        let mut paused = self.source_paused.clone();
        let _ = paused.wait_for(|p| *p).await;
    }

    /// Changes the emulated `@connections` round trip while running (see
    /// [`GatewayOptions::connections_latency`]); also `POST /@dev/settings`.
    pub fn set_connections_latency(&self, fixed: Duration, jitter: Duration) {
        self.app.latency.set(fixed, jitter);
    }

    /// Changes from how many subscribers a channel's fan-out is sharded
    /// (`AGENTWIRE_FANOUT_THRESHOLD`) while running, so that a benchmark
    /// compares inline and sharded fan-out on one connected crowd; also
    /// `POST /@dev/settings`. No effect without a fan-out queue.
    pub fn set_fanout_threshold(&self, threshold: u64) {
        let f = &self.app.functions;
        f.dispatcher.dispatcher().set_fanout_threshold(threshold);
        f.publish.publisher().set_fanout_threshold(threshold);
    }

    /// HTTP publishes committed by the publish function (`true`, the
    /// default) or put on the events queue and answered 202, as before the
    /// direct path (`false`): the benchmarks compare both in one run.
    pub fn set_direct_publish(&self, on: bool) {
        self.app
            .functions
            .publish
            .publisher()
            .set_direct_enabled(on);
    }

    /// Stream and chunk texts stored gzip-compressed (`true`, the default)
    /// or as published (`false`, as before compression): the benchmarks
    /// compare both in one run.
    pub fn set_compression(&self, on: bool) {
        let f = &self.app.functions;
        f.dispatcher.dispatcher().set_compression(on);
        f.publish.publisher().set_compression(on);
    }

    /// How long the dispatcher and the publish function reuse a channel's
    /// state and webhook setting (zero: read for every commit, as before
    /// the cache).
    pub fn set_settings_ttl(&self, ttl: Duration) {
        let f = &self.app.functions;
        f.dispatcher.dispatcher().set_settings_ttl(ttl);
        f.publish.publisher().set_settings_ttl(ttl);
    }

    /// Changes how many fan-out invocations run at once (the template's
    /// `FanoutMaxConcurrency`, see [`GatewayOptions::fanout_pollers`])
    /// while running: what a deployment with a raised API Gateway quota
    /// would set; also `POST /@dev/settings`. At least 1.
    pub fn set_fanout_invocations(&self, n: usize) {
        self.app
            .fanout_invocations
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The live connections, for tests and fault injection.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The injected faults: their rates (change them with
    /// [`Faults::set`](faults::Faults::set)) and what was injected.
    pub fn faults(&self) -> &Arc<faults::Faults> {
        &self.app.options.faults
    }

    /// Closes every connection (running `$disconnect` for each), stops the
    /// poller and the listener, and waits for them. The port is free again
    /// afterwards, so a new gateway can take it (a restart).
    pub async fn shutdown(&mut self) {
        // Stop accepting (and polling) first, so no connection slips in
        // while the open ones are being closed.
        let _ = self.stop.send(true);
        // Give connection tasks a moment to run their $disconnect; close
        // again any connection an upgrade under way registered meanwhile.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            self.hub.close_all(1001, "Going away");
            if self.hub.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        // An upgrade that completed after the last look.
        self.hub.close_all(1001, "Going away");
    }
}
