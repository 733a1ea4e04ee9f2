//! The end-to-end harness: the local AWS endpoint from `localstack/up`,
//! fresh tables and queues per test (the definitions of
//! `localstack/resources.json`), the dev gateway in-process on a free port,
//! and real WebSocket clients.
//!
//! Nothing here is faked: the handlers, the SDK clients and the endpoint are
//! the real ones. A stack that cannot reach the endpoint fails loudly, naming
//! the command that starts it; it never skips.

// A test harness: failing loudly with a message is its job.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod followers;
pub mod hostile;
pub mod iam;
pub mod idp;
pub mod receiver;
pub mod soak;

use std::time::Duration;

use agentwire_core::auth::TokenKey;
use agentwire_core::clock::{Clock, SystemClock, rfc3339};
use agentwire_core::config::{Config, Tables};
use agentwire_core::usecases::Dispatcher;
use agentwire_local::{Gateway, GatewayOptions};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::config::Credentials;
use aws_sdk_sqs::types::QueueAttributeName;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The resource definitions `localstack/up` creates.
pub const RESOURCES: &str = include_str!("../../localstack/resources.json");

/// The command that starts the endpoint, named in every failure to reach it.
pub const START_COMMAND: &str = "localstack/up";

/// How long a test waits for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(15);

/// The endpoint tests use: `AGENTWIRE_TEST_ENDPOINT`, else `AWS_ENDPOINT_URL`,
/// else `http://127.0.0.1:4566`.
pub fn endpoint() -> String {
    std::env::var("AGENTWIRE_TEST_ENDPOINT")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// `Ok` when something listens at the endpoint; otherwise the message a
/// failing test shows.
pub async fn check_endpoint(url: &str) -> Result<(), String> {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&hostport)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the local AWS endpoint does not answer on {url} ({e}); start it with `{START_COMMAND}`"
        )),
        Err(_) => Err(format!(
            "the local AWS endpoint on {url} did not answer within 3 s; start it with `{START_COMMAND}`"
        )),
    }
}

/// Logs of the gateway and handlers, shown with the test output when
/// `RUST_LOG` is set (e.g. `RUST_LOG=info,aws=warn`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The stream events of `text` as a publisher's coalescer cuts a fast
/// stream (64 KiB of JSON text each, then the end marker).
pub fn stream_events(stream: &str, text: &str) -> Vec<Value> {
    use agentwire_core::stream::{Coalescer, DEFAULT_MAX_BYTES, DEFAULT_WINDOW};
    let mut c = Coalescer::new(stream, DEFAULT_WINDOW, DEFAULT_MAX_BYTES);
    let mut events = c.push(text, std::time::Instant::now());
    events.extend(c.finish());
    events
}

/// SDK settings for the local endpoint (dummy credentials, us-east-1).
pub async fn local_sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "agentwire-tests",
        ))
        .load()
        .await
}

fn resources() -> Value {
    serde_json::from_str(RESOURCES).expect("localstack/resources.json is valid JSON")
}

type Counts = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>;

/// Counts DynamoDB requests by operation name (an SDK interceptor; a retried
/// call counts once per attempt), and the items they read (a `Query`'s
/// `Count`, a `GetItem` that found one).
#[derive(Debug, Clone, Default)]
pub struct DynamoCalls {
    calls: Counts,
    items: Counts,
    /// Keyed `function:Operation` (the function whose code made the call,
    /// `test` outside the gateway's functions).
    calls_by_function: Counts,
    items_by_function: Counts,
    /// Keyed `function:Operation:table` (the table's name without this
    /// run's suffix; empty for multi-table calls).
    calls_by_table: Counts,
    /// Capacity units, keyed `function:write` and `function:read`, in
    /// thousandths ([`capacity_units`]).
    units_milli: Counts,
}

/// The capacity units DynamoDB bills a request, from its body: a write 1
/// unit per started KB of each item put (an update or delete 1 unit: the
/// items updated on these paths are under 1 KB), twice that in a
/// transaction; a read 1 unit when strongly consistent, 0.5 eventually
/// (the items read on these paths are under 4 KB; a `Query` counted as one
/// read of its first 4 KB). `(write, read)`.
pub fn capacity_units(op: &str, body: &Value) -> (f64, f64) {
    let kb = |item: &Value| (item_size(item) as f64 / 1024.0).ceil().max(1.0);
    let read = if body["ConsistentRead"].as_bool() == Some(true) {
        1.0
    } else {
        0.5
    };
    match op {
        "PutItem" => (kb(&body["Item"]), 0.0),
        "UpdateItem" | "DeleteItem" => (1.0, 0.0),
        "TransactWriteItems" => {
            let units = body["TransactItems"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| match i["Put"]["Item"].is_object() {
                            true => kb(&i["Put"]["Item"]),
                            false => 1.0,
                        })
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (2.0 * units, 0.0)
        }
        "BatchWriteItem" => {
            let units = body["RequestItems"]
                .as_object()
                .map(|tables| {
                    tables
                        .values()
                        .flat_map(|reqs| reqs.as_array().cloned().unwrap_or_default())
                        .map(|r| match r["PutRequest"]["Item"].is_object() {
                            true => kb(&r["PutRequest"]["Item"]),
                            false => 1.0,
                        })
                        .sum::<f64>()
                })
                .unwrap_or(0.0);
            (units, 0.0)
        }
        "GetItem" | "Query" => (0.0, read),
        "BatchGetItem" => {
            let keys = body["RequestItems"]
                .as_object()
                .map(|t| {
                    t.values()
                        .map(|k| k["Keys"].as_array().map_or(0, Vec::len))
                        .sum::<usize>()
                })
                .unwrap_or(0);
            (0.0, keys as f64)
        }
        _ => (0.0, 0.0),
    }
}

/// An item's size as DynamoDB counts it: each attribute's name and value
/// (strings and binaries by their bytes, numbers about one byte per two
/// digits, maps and lists 3 bytes plus their elements).
pub fn item_size(item: &Value) -> usize {
    fn value(v: &Value) -> usize {
        let Some((ty, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
            return 0;
        };
        match ty.as_str() {
            "S" => inner.as_str().map_or(0, str::len),
            "N" => inner.as_str().map_or(0, |n| n.len().div_ceil(2) + 1),
            "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
            "BOOL" | "NULL" => 1,
            "M" => {
                3 + inner
                    .as_object()
                    .map_or(0, |m| m.iter().map(|(k, v)| k.len() + value(v)).sum())
            }
            "L" => {
                3 + inner
                    .as_array()
                    .map_or(0, |l| l.iter().map(|v| 1 + value(v)).sum())
            }
            _ => inner.as_array().map_or(0, |l| {
                l.iter().map(|v| v.as_str().map_or(0, str::len)).sum()
            }),
        }
    }
    item.as_object()
        .map_or(0, |o| o.iter().map(|(k, v)| k.len() + value(v)).sum())
}

fn tally(counts: &Counts, key: String, n: u64) {
    if let Ok(mut m) = counts.lock() {
        *m.entry(key).or_default() += n;
    }
}

fn calling_function() -> &'static str {
    agentwire_local::function::current().unwrap_or("test")
}

impl DynamoCalls {
    /// Calls so far, by operation.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.calls.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Items read so far, by operation.
    pub fn items(&self) -> std::collections::BTreeMap<String, u64> {
        self.items.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Calls so far, by `function:Operation`.
    pub fn by_function(&self) -> std::collections::BTreeMap<String, u64> {
        self.calls_by_function
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Calls so far, by `function:Operation:table`.
    pub fn by_table(&self) -> std::collections::BTreeMap<String, u64> {
        self.calls_by_table
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Capacity units so far of `function` (`None`: every caller):
    /// `(write, read)` ([`capacity_units`]).
    pub fn units(&self, function: Option<&str>) -> (f64, f64) {
        let m = self
            .units_milli
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let sum = |kind: &str| {
            m.iter()
                .filter(|(k, _)| {
                    k.ends_with(kind) && function.is_none_or(|f| k.starts_with(&format!("{f}:")))
                })
                .map(|(_, v)| *v as f64 / 1000.0)
                .sum::<f64>()
        };
        (sum(":write"), sum(":read"))
    }

    /// Items read so far, by `function:Operation`.
    pub fn items_by_function(&self) -> std::collections::BTreeMap<String, u64> {
        self.items_by_function
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    pub fn reset(&self) {
        for counts in [
            &self.calls,
            &self.items,
            &self.calls_by_function,
            &self.items_by_function,
            &self.calls_by_table,
            &self.units_milli,
        ] {
            if let Ok(mut m) = counts.lock() {
                m.clear();
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

impl aws_sdk_dynamodb::config::Intercept for DynamoCalls {
    fn name(&self) -> &'static str {
        "agentwire-call-counter"
    }

    /// Once per attempt, from the request's `x-amz-target`
    /// (`DynamoDB_20120810.Query` → `Query`).
    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let op = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        let function = calling_function();
        tally(&self.calls_by_function, format!("{function}:{op}"), 1);
        let body: Value = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        // `agentwire-events-<run>` → `agentwire-events`.
        let table = body["TableName"]
            .as_str()
            .map(|t| t.rsplit_once('-').map_or(t, |(base, _)| base))
            .unwrap_or_default();
        tally(&self.calls_by_table, format!("{function}:{op}:{table}"), 1);
        let (write, read) = capacity_units(&op, &body);
        tally(
            &self.units_milli,
            format!("{function}:write"),
            (write * 1000.0) as u64,
        );
        tally(
            &self.units_milli,
            format!("{function}:read"),
            (read * 1000.0) as u64,
        );
        tally(&self.calls, op, 1);
        Ok(())
    }

    /// The items each read brought back.
    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let Ok(out) = context.output_or_error() else {
            return Ok(());
        };
        let read = if let Some(q) =
            out.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>()
        {
            Some(("Query", u64::try_from(q.count()).unwrap_or(0)))
        } else {
            out.downcast_ref::<aws_sdk_dynamodb::operation::get_item::GetItemOutput>()
                .map(|g| ("GetItem", u64::from(g.item().is_some())))
        };
        if let Some((op, n)) = read {
            tally(
                &self.items_by_function,
                format!("{}:{op}", calling_function()),
                n,
            );
            tally(&self.items, op.to_owned(), n);
        }
        Ok(())
    }
}

/// Creates this run's tables from the definitions in `resources.json`, each
/// name with a unique suffix. Each stack has its own tables so that tests
/// are isolated and measurements do not depend on what earlier runs stored
/// (moto copies every table a transaction touches).
async fn create_tables(sdk: &SdkConfig, run: &str) -> Tables {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let r = resources();
    let mut names = Vec::new();
    for t in r["tables"].as_array().expect("tables") {
        let base = t["name"].as_str().expect("table name");
        let name = format!("{base}-{run}");
        let mut req = ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for (key, ty, kind) in [
            ("hash_key", "hash_type", KeyType::Hash),
            ("range_key", "range_type", KeyType::Range),
        ] {
            let Some(attr) = t[key].as_str() else {
                continue;
            };
            let scalar = ScalarAttributeType::from(t[ty].as_str().expect("key type"));
            req = req
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(attr)
                        .key_type(kind)
                        .build()
                        .expect("key"),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(attr)
                        .attribute_type(scalar)
                        .build()
                        .expect("attribute"),
                );
        }
        if let Err(e) = req.send().await {
            panic!(
                "cannot create table {name} on {} ({}); is the endpoint from `{START_COMMAND}` running?",
                endpoint(),
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            );
        }
        if let Some(ttl) = t["ttl_attribute"].as_str() {
            ddb.update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(ttl)
                        .build()
                        .expect("ttl"),
                )
                .send()
                .await
                .expect("enable TTL");
        }
        names.push((base.to_owned(), name));
    }
    let name = |suffix: &str| {
        names
            .iter()
            .find(|(b, _)| b.ends_with(suffix))
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| panic!("resources.json has no *{suffix} table"))
    };
    Tables {
        connections: name("-connections"),
        subscriptions: name("-subscriptions"),
        channels: name("-channels"),
        events: name("-events"),
        cursors: name("-cursors"),
        limits: name("-limits"),
    }
}

/// Knobs a test may turn.
#[derive(Clone)]
pub struct StackOptions {
    pub gateway: GatewayOptions,
    /// Visibility timeout of this test's events queue (how soon a failed
    /// message is redelivered).
    pub visibility_timeout: Duration,
    /// The deployment's event retention, when a test shortens it.
    pub retention: Option<Duration>,
    /// Count the gateway's DynamoDB calls per operation ([`Stack::calls`]).
    pub count_dynamodb_calls: bool,
    /// The webhook retry schedule, when a test shortens it.
    pub webhook_schedule: Option<agentwire_core::webhook::RetrySchedule>,
    /// The webhook POST's time-out, when a test shortens it.
    pub webhook_timeout: Option<Duration>,
    /// Most events one join replays, when a test lowers it.
    pub replay_max_events: Option<usize>,
    /// The clock of the gateway's adapters and use cases: a test that needs
    /// time to pass (token expiry, retention) moves a
    /// [`ManualClock`](agentwire_core::clock::ManualClock) instead of waiting.
    pub clock: Option<std::sync::Arc<dyn agentwire_core::clock::Clock>>,
    /// When fan-out is sharded, when a test lowers the threshold.
    pub fanout: Option<agentwire_core::usecases::FanoutPolicy>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            gateway: GatewayOptions {
                bind: "127.0.0.1:0".parse().expect("loopback address"),
                poll_wait: Duration::from_secs(1),
                // Fewer long-polls on the shared endpoint per test stack.
                fanout_pollers: 2,
                ..GatewayOptions::default()
            },
            visibility_timeout: Duration::from_secs(5),
            retention: None,
            count_dynamodb_calls: false,
            webhook_schedule: None,
            webhook_timeout: None,
            replay_max_events: None,
            clock: None,
            fanout: None,
        }
    }
}

/// One test's stack: its own queues, its own tenant, a gateway on a free port.
/// A queue's messages by state ([`Stack::queue_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

pub struct Stack {
    pub gateway: Gateway,
    /// The gateway's DynamoDB calls, when counted.
    pub calls: DynamoCalls,
    pub sdk: SdkConfig,
    pub config: Config,
    pub tenant: String,
    pub key: TokenKey,
    pub queue_url: String,
    pub dlq_url: String,
    /// This stack's webhook job queue and its dead-letter queue.
    pub webhook_queue_url: String,
    pub webhook_dlq_url: String,
    /// This stack's fan-out queue and its dead-letter queue.
    pub fanout_queue_url: String,
    pub fanout_dlq_url: String,
    /// The clock the gateway reads.
    pub clock: std::sync::Arc<dyn agentwire_core::clock::Clock>,
    /// What a restarted gateway is built from.
    gateway_options: GatewayOptions,
    ddb_client: aws_sdk_dynamodb::Client,
    /// Set once [`Stack::shutdown`] has deleted the resources; otherwise
    /// dropping the stack (a failed test) deletes them.
    cleaned: bool,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        init_logs();
        let endpoint = endpoint();
        if let Err(msg) = check_endpoint(&endpoint).await {
            panic!("{msg}");
        }
        // Every AWS call the gateway's functions make is recorded for the
        // IAM check (see `iam`).
        let sdk = local_sdk(&endpoint)
            .await
            .into_builder()
            .http_client(iam::Recording::client())
            .build();
        // Faults are injected into the functions' calls only (set them with
        // `stack.gateway.faults()`); the test's own calls never fail.
        let sdk = options.gateway.faults.sdk(&sdk);
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let tables = create_tables(&sdk, &run).await;
        let queues = create_queues(&sdk, &run, options.visibility_timeout).await;
        for (name, role) in [
            (&tables.connections, "connections"),
            (&tables.subscriptions, "subscriptions"),
            (&tables.channels, "channels"),
            (&tables.events, "events"),
            (&tables.cursors, "cursors"),
            (&tables.limits, "limits"),
            (&queues.events, "events_queue"),
            (&queues.events_dlq, "events_dlq"),
            (&queues.webhooks, "webhook_queue"),
            (&queues.webhooks_dlq, "webhook_dlq"),
            (&queues.fanout, "fanout_queue"),
            (&queues.fanout_dlq, "fanout_dlq"),
        ] {
            iam::register(name, role);
        }
        let (queue_url, dlq_url) = (queues.events.clone(), queues.events_dlq.clone());
        let secret = format!("test-secret-{run}-0123456789abcdef0123");
        let mut config = Config {
            tables,
            events_queue_url: Some(queue_url.clone()),
            events_dlq_url: Some(dlq_url.clone()),
            jwt_secret: Some(secret.clone().into_bytes()),
            ..Config::default()
        };
        config.connections_endpoint = None;
        if let Some(r) = options.retention {
            config.retention = r;
        }
        if let Some(n) = options.replay_max_events {
            config.replay_max_events = n;
        }
        config.webhook_queue_url = Some(queues.webhooks.clone());
        config.webhook_dlq_url = Some(queues.webhooks_dlq.clone());
        config.fanout_queue_url = Some(queues.fanout.clone());
        if let Some(p) = options.fanout {
            config.fanout = p;
        }
        // The test's receivers listen on loopback.
        config.webhook_urls.allow_insecure_loopback = true;
        if let Some(s) = options.webhook_schedule.clone() {
            config.webhook_schedule = s;
        }
        if let Some(t) = options.webhook_timeout {
            config.webhook_timeout = t;
        }
        let calls = DynamoCalls::default();
        let ddb_client = if options.count_dynamodb_calls {
            let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(calls.clone())
                .build();
            aws_sdk_dynamodb::Client::from_conf(conf)
        } else {
            aws_sdk_dynamodb::Client::new(&sdk)
        };
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(|| std::sync::Arc::new(SystemClock));
        let gateway = start_gateway(
            &sdk,
            &ddb_client,
            &config,
            clock.clone(),
            options.gateway.clone(),
        )
        .await;
        config.connections_endpoint = Some(gateway.connections_endpoint());
        Self {
            gateway,
            calls,
            sdk,
            config,
            tenant: format!("t{run}"),
            key: TokenKey::hs256(secret.as_bytes()),
            queue_url,
            dlq_url,
            webhook_queue_url: queues.webhooks,
            webhook_dlq_url: queues.webhooks_dlq,
            fanout_queue_url: queues.fanout,
            fanout_dlq_url: queues.fanout_dlq,
            clock,
            gateway_options: options.gateway,
            ddb_client,
            cleaned: false,
        }
    }

    /// Stops the dev gateway as an outage would: every connection closed,
    /// the port refusing connections, the queue no longer polled (events
    /// published meanwhile wait on the queue). [`Stack::gateway_up`] brings
    /// it back on the same port.
    pub async fn gateway_down(&mut self) {
        self.gateway.shutdown().await;
    }

    /// Starts a new gateway on the port the stopped one had.
    pub async fn gateway_up(&mut self) {
        let mut options = self.gateway_options.clone();
        options.bind = self.gateway.addr();
        self.gateway = start_gateway(
            &self.sdk,
            &self.ddb_client,
            &self.config,
            self.clock.clone(),
            options,
        )
        .await;
    }

    /// A token of this stack's tenant for `sub`, granting `channels`.
    pub fn token(&self, sub: &str, channels: &[&str]) -> String {
        self.token_with(
            sub,
            channels,
            SystemClock.epoch_s(),
            Duration::from_secs(3600),
        )
    }

    /// A token of this stack's tenant that may publish to `publish` (and
    /// join nothing).
    pub fn publisher_token(&self, sub: &str, publish: &[&str]) -> String {
        self.sign(
            sub,
            &[],
            publish,
            SystemClock.epoch_s(),
            Duration::from_secs(3600),
        )
    }

    /// A token issued at `iat` for `ttl` (an expired one is in the past).
    pub fn token_with(&self, sub: &str, channels: &[&str], iat: u64, ttl: Duration) -> String {
        self.sign(sub, channels, &[], iat, ttl)
    }

    /// A token of this stack's tenant with these join and publish grants.
    fn sign(&self, sub: &str, join: &[&str], publish: &[&str], iat: u64, ttl: Duration) -> String {
        self.token_of(&self.tenant.clone(), sub, join, publish, iat, ttl)
    }

    /// A token of any tenant (a second tenant beside this stack's), with
    /// these join and publish grants.
    pub fn token_of(
        &self,
        tenant: &str,
        sub: &str,
        join: &[&str],
        publish: &[&str],
        iat: u64,
        ttl: Duration,
    ) -> String {
        let list = |v: &[&str]| v.iter().map(|c| c.to_string()).collect();
        let claims = TokenKey::claims(tenant, sub, list(join), list(publish), iat, ttl);
        self.key.sign(&claims).expect("token signs")
    }

    /// A token of `tenant` with the `admin` grant (the management API).
    pub fn admin_token_of(&self, tenant: &str, sub: &str) -> String {
        let now = self.clock.epoch_s();
        let mut claims =
            TokenKey::claims(tenant, sub, vec![], vec![], now, Duration::from_secs(600));
        claims.admin = true;
        self.key.sign(&claims).expect("token signs")
    }

    /// Publishes over the HTTP route with `token`: the status, the
    /// `Retry-After` header and the JSON body.
    pub async fn post_event(
        &self,
        token: &str,
        channel: &str,
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        self.http(
            reqwest::Method::POST,
            &format!("/v1/channels/{channel}/events"),
            Some(token),
            Some(body),
        )
        .await
    }

    /// `GET` on the HTTP API (`path` with its query string): the status
    /// and the JSON body.
    pub async fn http_get(&self, token: &str, path: &str) -> (u16, Value) {
        let (status, _, body) = self
            .http(reqwest::Method::GET, path, Some(token), None)
            .await;
        (status, body)
    }

    /// One request to the HTTP API: the status, `Retry-After` and the JSON
    /// body (which every answer has).
    pub async fn http(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Option<String>, Value) {
        self.http_with(method, path, token, body, &[]).await
    }

    /// [`Self::http`] with more request headers (an `Idempotency-Key`).
    pub async fn http_with(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Option<String>, Value) {
        let mut req =
            reqwest::Client::new().request(method, format!("{}{path}", self.gateway.http_url()));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("the gateway answers");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.expect("a body");
        // A 204 has no body: null.
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, retry_after, v)
    }

    /// Sets this stack's tenant's own limits.
    pub async fn set_limits(&self, limits: agentwire_core::limits::TenantLimits) {
        use agentwire_core::ports::LimitSettings;
        self.limits()
            .put(&self.tenant, &limits)
            .await
            .expect("limits set");
    }

    /// The tenants' limits and buckets of this stack's limits table.
    pub fn limits(&self) -> agentwire_aws::DynamoLimits {
        agentwire_aws::DynamoLimits::new(self.ddb(), self.config.tables.limits.clone())
    }

    /// A client with a bearer token, offering `agentwire.v1`.
    pub async fn client(&self, token: &str) -> WsClient {
        self.connect(
            Some(token),
            &[("sec-websocket-protocol", "agentwire.v1")],
            "",
        )
        .await
        .unwrap_or_else(|(status, body)| panic!("connect refused: {status} {body}"))
    }

    /// Connects with these extra headers and query string; the refusal's
    /// HTTP status and body on failure.
    pub async fn connect(
        &self,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
    ) -> Result<WsClient, (u16, String)> {
        let url = format!("{}/{query}", self.gateway.ws_url());
        let mut req = url.into_client_request().expect("valid url");
        if let Some(t) = bearer {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
            );
        }
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("header name"),
                HeaderValue::from_str(v).expect("header"),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, resp)) => Ok(WsClient {
                ws,
                subprotocol: resp
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                connection_id: None,
            }),
            Err(WsError::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((resp.status().as_u16(), body))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// What a queue holds, as its attributes say: messages visible, in
    /// flight and delayed.
    pub async fn queue_counts(&self, url: &str) -> Result<QueueCounts, String> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| format!("attributes of {url} unreadable: {e}"))?;
        let a = out.attributes.unwrap_or_default();
        let n = |k: A| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(QueueCounts {
            visible: n(A::ApproximateNumberOfMessages),
            in_flight: n(A::ApproximateNumberOfMessagesNotVisible),
            delayed: n(A::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Publishes an event of this tenant through the real SQS publisher.
    pub async fn publish(&self, channel: &str, kind: &str, data: Value) -> String {
        self.publish_as(&self.tenant, channel, kind, data).await
    }

    /// Publishes an event of `tenant` through the real SQS publisher.
    pub async fn publish_as(&self, tenant: &str, channel: &str, kind: &str, data: Value) -> String {
        use agentwire_core::ports::EventQueue;
        let env = agentwire_core::model::Envelope {
            tenant: tenant.to_owned(),
            channel: channel.into(),
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            data: data.into(),
            ts: rfc3339(std::time::SystemTime::now()),
        };
        agentwire_aws::SqsEventQueue::new(self.sqs(), &self.queue_url)
            .send(&env)
            .await
            .expect("publish");
        env.id
    }

    /// Sends a raw message body to the events queue (for redelivery and
    /// bad-envelope scenarios).
    pub async fn send_raw(&self, body: &str, group: &str, dedup: &str) {
        self.sqs()
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(dedup)
            .send()
            .await
            .expect("send raw");
    }

    /// Every message of the events DLQ as `(body, reason)`, each deleted
    /// once read (a FIFO queue hands out no more of a group while some of
    /// it is in flight); returns when a receive finds none.
    pub async fn drain_dead_letters(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs()
                .receive_message()
                .queue_url(&self.dlq_url)
                .message_attribute_names("All")
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive from the events DLQ");
            if got.messages().is_empty() {
                return out;
            }
            for m in got.messages() {
                let reason = m
                    .message_attributes()
                    .and_then(|a| a.get("reason"))
                    .and_then(|r| r.string_value())
                    .unwrap_or("no reason");
                out.push((m.body().unwrap_or_default().to_owned(), reason.to_owned()));
                if let Some(handle) = m.receipt_handle() {
                    self.sqs()
                        .delete_message()
                        .queue_url(&self.dlq_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete from the events DLQ");
                }
            }
        }
    }

    /// An envelope body of this tenant.
    pub fn envelope(&self, channel: &str, id: &str, kind: &str, data: Value) -> String {
        json!({"tenant": self.tenant, "channel": channel, "id": id, "kind": kind, "data": data, "ts": rfc3339(std::time::SystemTime::now())}).to_string()
    }

    /// A dispatcher on this stack's real tables and dead-letter queue, posting
    /// through `pusher` (a test's fault injection).
    pub fn dispatcher(
        &self,
        pusher: std::sync::Arc<dyn agentwire_core::ports::Pusher>,
    ) -> Dispatcher {
        use agentwire_aws::{DynamoLog, DynamoRegistry, SqsDeadLetters};
        use std::sync::Arc;
        let t = self.config.tables.clone();
        Dispatcher::new(
            Arc::new(DynamoLog::new(self.ddb(), t.clone(), self.clock.clone())),
            Arc::new(DynamoRegistry::new(self.ddb(), t, self.clock.clone())),
            pusher,
            Arc::new(SqsDeadLetters::new(self.sqs(), &self.dlq_url)),
            self.clock.clone(),
            self.config.retention,
            8,
        )
    }

    /// The items of `table` in this tenant's `channel` partition.
    async fn channel_items(
        &self,
        table: &str,
        channel: &str,
    ) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        self.tenant_channel_items(table, &self.tenant, channel)
            .await
    }

    /// The items of `table` in `tenant`'s `channel` partition.
    async fn tenant_channel_items(
        &self,
        table: &str,
        tenant: &str,
        channel: &str,
    ) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        let out = self
            .ddb()
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(agentwire_aws::dynamo::item::channel_pk(
                    &agentwire_core::model::ChannelKey::new(tenant, channel),
                )),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("query {table}: {e}"));
        out.items().to_vec()
    }

    /// The canary probing this stack's gateway, as this stack's tenant.
    pub fn canary(&self) -> agentwire_fn_canary::Canary {
        agentwire_fn_canary::Canary::new(
            self.gateway.ws_url(),
            self.gateway.http_url(),
            self.key.clone(),
            self.tenant.clone(),
        )
    }

    /// How many events another tenant's channel holds (the canary's).
    pub async fn stored_count_of(&self, tenant: &str, channel: &str) -> usize {
        self.tenant_channel_items(&self.config.tables.events, tenant, channel)
            .await
            .iter()
            .filter(|i| i.get("sk").is_some_and(|s| s.as_n().is_ok()))
            .count()
    }

    /// The channel's committed events as `(seq, id)`, read from the events table.
    pub async fn stored_events(&self, channel: &str) -> Vec<(u64, String)> {
        self.channel_items(&self.config.tables.events, channel)
            .await
            .iter()
            .filter_map(|i| {
                let seq = i.get("sk")?.as_n().ok()?.parse().ok()?;
                Some((seq, i.get("id")?.as_s().ok()?.clone()))
            })
            .collect()
    }

    /// The channel's committed events as `(seq, data)`, the data's JSON
    /// text as the events table holds it.
    pub async fn stored_data(&self, channel: &str) -> Vec<(u64, String)> {
        let mut out: Vec<(u64, String)> = self
            .channel_items(&self.config.tables.events, channel)
            .await
            .iter()
            .filter_map(|i| {
                let seq = i.get("sk")?.as_n().ok()?.parse().ok()?;
                Some((seq, i.get("data")?.as_s().ok()?.clone()))
            })
            .collect();
        out.sort();
        out
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn ddb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// The adapters and use cases of this stack's tables and queues, as the
    /// gateway's functions build them (for a test that works beside them:
    /// the identity admin, the keyring).
    pub fn deps(&self) -> agentwire_aws::Deps {
        agentwire_aws::Deps::with_clock(
            &self.sdk,
            self.ddb(),
            self.config.clone(),
            self.clock.clone(),
        )
    }

    /// Whether the connections table has an item for this id.
    pub async fn connection_recorded(&self, id: &str) -> bool {
        self.ddb()
            .get_item()
            .table_name(&self.config.tables.connections)
            .key("pk", AttributeValue::S(id.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get connection")
            .item()
            .is_some()
    }

    /// Connection items of this tenant whose principal is `sub`.
    pub async fn connections_of(&self, sub: &str) -> usize {
        let items: Vec<_> = self
            .ddb()
            .scan()
            .table_name(&self.config.tables.connections)
            .filter_expression("tenant = :t AND principal = :p")
            .expression_attribute_values(":t", AttributeValue::S(self.tenant.clone()))
            .expression_attribute_values(":p", AttributeValue::S(sub.into()))
            .into_paginator()
            .items()
            .send()
            .collect()
            .await;
        items.into_iter().filter(Result::is_ok).count()
    }

    /// Subscription items of one channel.
    pub async fn subscription_ids(&self, channel: &str) -> Vec<String> {
        self.channel_items(&self.config.tables.subscriptions, channel)
            .await
            .iter()
            .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
            .filter(|sk| sk != agentwire_aws::dynamo::PRESENCE_SK)
            .map(|sk| agentwire_aws::dynamo::item::subscription_connection(&sk).to_owned())
            .collect()
    }

    /// Waits until `check` holds, up to `limit`.
    pub async fn eventually<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if check().await {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the gateway and deletes this test's queues and tables.
    pub async fn shutdown(mut self) {
        self.gateway.shutdown().await;
        delete_resources(&self.sdk, &self.resources()).await;
        self.cleaned = true;
    }

    /// This stack's queue URLs and table names.
    fn resources(&self) -> (Vec<String>, Vec<String>) {
        let t = &self.config.tables;
        (
            vec![
                self.queue_url.clone(),
                self.dlq_url.clone(),
                self.webhook_queue_url.clone(),
                self.webhook_dlq_url.clone(),
                self.fanout_queue_url.clone(),
                self.fanout_dlq_url.clone(),
            ],
            vec![
                t.connections.clone(),
                t.subscriptions.clone(),
                t.channels.clone(),
                t.events.clone(),
                t.cursors.clone(),
                t.limits.clone(),
            ],
        )
    }
}

/// A stack dropped without [`Stack::shutdown`] (its test failed or
/// returned early) still deletes its queues and tables: on a thread of its
/// own, with a runtime and SDK clients of its own (the test's runtime is
/// the one being dropped from).
impl Drop for Stack {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let resources = self.resources();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let sdk = local_sdk(&endpoint()).await;
                delete_resources(&sdk, &resources).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Deletes queues and tables, ignoring those already gone.
async fn delete_resources(sdk: &SdkConfig, (queues, tables): &(Vec<String>, Vec<String>)) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    for url in queues {
        let _ = sqs.delete_queue().queue_url(url).send().await;
    }
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    for name in tables {
        let _ = ddb.delete_table().table_name(name).send().await;
    }
}

/// A dev gateway on this stack's resources, with the given DynamoDB client.
async fn start_gateway(
    sdk: &SdkConfig,
    ddb: &aws_sdk_dynamodb::Client,
    config: &Config,
    clock: std::sync::Arc<dyn agentwire_core::clock::Clock>,
    options: GatewayOptions,
) -> Gateway {
    let deps = agentwire_aws::deps::Deps::with_clock(sdk, ddb.clone(), config.clone(), clock);
    Gateway::start_with_deps(deps, options)
        .await
        .unwrap_or_else(|e| panic!("the dev gateway did not start: {e}"))
}

/// This run's queues, from the definitions in `resources.json`, each name
/// with a unique suffix.
pub struct Queues {
    pub events: String,
    pub events_dlq: String,
    pub webhooks: String,
    pub webhooks_dlq: String,
    pub fanout: String,
    pub fanout_dlq: String,
}

async fn create_queues(sdk: &SdkConfig, run: &str, visibility: Duration) -> Queues {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let r = resources();
    let mut urls: Vec<(String, String)> = Vec::new();
    for q in r["queues"].as_array().expect("queues") {
        let base = q["name"].as_str().expect("queue name");
        let fifo = q["fifo"].as_bool() == Some(true);
        let name = if fifo {
            format!("{}-{run}.fifo", base.trim_end_matches(".fifo"))
        } else {
            format!("{base}-{run}")
        };
        let is_dlq = base.contains("dlq");
        let vis = if is_dlq {
            q["visibility_timeout_s"].as_u64().unwrap_or(30)
        } else {
            visibility.as_secs()
        };
        let mut req = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, vis.to_string())
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                q["retention_s"].as_u64().unwrap_or(345_600).to_string(),
            );
        if fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
            if let Some(scope) = q["deduplication_scope"].as_str() {
                req = req.attributes(QueueAttributeName::DeduplicationScope, scope);
            }
            if let Some(limit) = q["fifo_throughput_limit"].as_str() {
                req = req.attributes(QueueAttributeName::FifoThroughputLimit, limit);
            }
        }
        if let Some(dl) = q.get("dead_letter") {
            let target = dl["queue"].as_str().expect("dead-letter queue");
            let (_, target_url) = urls
                .iter()
                .find(|(b, _)| b == target)
                .expect("dead-letter queue defined first");
            let arn = sqs
                .get_queue_attributes()
                .queue_url(target_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .expect("queue arn")
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .expect("queue arn");
            let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": dl["max_receive_count"].as_u64().unwrap_or(5).to_string()});
            req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let url = req
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .expect("queue url")
            .to_owned();
        urls.push((base.to_owned(), url));
    }
    let find = |base: &str| {
        urls.iter()
            .find(|(b, _)| b == base)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("resources.json has no queue {base}"))
    };
    Queues {
        events: find("agentwire-events.fifo"),
        events_dlq: find("agentwire-events-dlq.fifo"),
        webhooks: find("agentwire-webhooks"),
        webhooks_dlq: find("agentwire-webhooks-dlq"),
        fanout: find("agentwire-fanout"),
        fanout_dlq: find("agentwire-fanout-dlq"),
    }
}

/// A real WebSocket client with helpers for reading typed frames.
pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the gateway chose.
    pub subprotocol: Option<String>,
    /// Learned from `welcome`.
    pub connection_id: Option<String>,
}

impl WsClient {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// The next message: a text frame as JSON, or `{"_close": code, "reason": …}`.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no frame within {FRAME_TIMEOUT:?}"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {t}"));
                }
                Some(Ok(Message::Close(c))) => {
                    let (code, reason) = c
                        .map(|c| (u16::from(c.code), c.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return json!({"_close": code, "reason": reason});
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return json!({"_close": 1006, "reason": e.to_string()}),
                None => return json!({"_close": 1006, "reason": "stream ended"}),
            }
        }
    }

    /// The next frame, which must be of this type.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], ty, "expected a {ty} frame, got {v}");
        v
    }

    /// `hello` → `welcome`; remembers the connection id.
    pub async fn hello(&mut self) -> Value {
        self.send_json(
            json!({"action":"hello","protocol":{"min":1,"max":1},"client":"agentwire-e2e"}),
        )
        .await;
        let w = self.expect("welcome").await;
        self.connection_id = w["connection_id"].as_str().map(str::to_owned);
        w
    }

    /// `join` → the answer frame (`joined` or `error`).
    pub async fn join(&mut self, channels: Value) -> Value {
        self.send_json(json!({"action":"join","id":"j","channels":channels}))
            .await;
        self.recv().await
    }

    /// Reads until `n` events arrived; a `batch` counts for its events, each
    /// tagged `"type":"event"`.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.recv().await;
            match v["type"].as_str() {
                Some("event") => out.push(v),
                Some("batch") => {
                    for mut e in v["events"].as_array().cloned().unwrap_or_default() {
                        e["type"] = "event".into();
                        out.push(e);
                    }
                }
                _ => panic!("expected events, got {v}"),
            }
        }
        out
    }

    /// `ack` of a seq (no answer on success).
    pub async fn ack(&mut self, channel: &str, seq: u64) {
        self.send_json(json!({"action":"ack","channel":channel,"seq":seq}))
            .await;
    }

    /// Reads frames until `done` holds for what arrived so far; `batch`
    /// frames are flattened into `event` frames, everything else kept as is.
    pub async fn frames_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        while !done(&out) {
            let v = self.recv().await;
            if v["type"] == "batch" {
                for mut e in v["events"].as_array().cloned().unwrap_or_default() {
                    e["type"] = "event".into();
                    out.push(e);
                }
            } else if v.get("_close").is_some() {
                panic!("connection closed while waiting: {v}; got so far: {out:?}");
            } else {
                out.push(v);
            }
        }
        out
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_abruptly(self) {
        drop(self.ws);
    }
}
