//! The chaos soak: publishers over HTTP and the queue on several channels,
//! followers in every client language, random connection drops, a gateway
//! restart, poison messages, and faults injected on every AWS call path of
//! the functions and on `@connections` for a bounded time. At the end every
//! follower must have every committed seq of its channel exactly once, in
//! order; every published event must be committed; the events DLQ must hold
//! the poison messages only, each with its permanent reason. Shared by the
//! short test (`tests/tests/soak.rs`) and `agentwire-bench --only soak`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_aws::DynamoLog;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::{ChannelLog, ReadBudget};
use agentwire_local::faults::FaultSettings;
use serde_json::json;

use crate::Stack;
use crate::followers::Follower;

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub channels: usize,
    /// Events published per channel (half over HTTP, half on the queue).
    pub events: u64,
    /// Client kinds (`rust`, `ts`, `python`, `go`): `rust` follows every
    /// channel, each other kind one channel in turn.
    pub clients: Vec<String>,
    /// A poison message every this many events of a channel.
    pub poison_every: u64,
    /// The faults, on while events are published.
    pub faults: String,
}

impl SoakOptions {
    /// The short version the test suite runs (well under 3 minutes).
    pub fn short() -> Self {
        Self {
            channels: 3,
            events: 40,
            clients: ["rust", "ts", "python", "go"].map(str::to_owned).to_vec(),
            poison_every: 15,
            faults: DEFAULT_FAULTS.to_owned(),
        }
    }
}

/// Faults on every AWS call path of the functions and on `@connections`.
pub const DEFAULT_FAULTS: &str = r#"{
    "aws": {"dynamodb:*": {"throttle": 0.05, "5xx": 0.02, "timeout": 0.01},
            "sqs:*": {"throttle": 0.05, "5xx": 0.02, "timeout": 0.01}},
    "connections": {"429": 0.05, "500": 0.03, "410": 0.005}}"#;

/// One follower's result.
#[derive(Debug, Clone)]
pub struct FollowerReport {
    pub client: String,
    pub channel: String,
    pub deliveries: usize,
    pub duplicates: usize,
    pub lost: u64,
    pub out_of_order: usize,
    pub joins: usize,
}

/// What a soak came to.
#[derive(Debug, Clone)]
pub struct SoakReport {
    pub published: u64,
    pub committed: u64,
    pub poison: u64,
    pub dead_lettered: Vec<String>,
    pub http_retries: u64,
    pub faults: BTreeMap<String, u64>,
    pub followers: Vec<FollowerReport>,
    pub elapsed: Duration,
}

impl SoakReport {
    /// Everything held: nothing lost, nothing twice, in order, the DLQ
    /// holds exactly the poison messages, each for a permanent reason.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.committed != self.published {
            out.push(format!(
                "{} published, {} committed",
                self.published, self.committed
            ));
        }
        if self.dead_lettered.len() as u64 != self.poison {
            out.push(format!(
                "{} poison messages, DLQ holds {:?}",
                self.poison, self.dead_lettered
            ));
        }
        for r in &self.dead_lettered {
            if !r.starts_with("invalid_event") {
                out.push(format!(
                    "dead-lettered for a reason that is not permanent: {r}"
                ));
            }
        }
        for f in &self.followers {
            if f.duplicates + f.out_of_order > 0 || f.lost > 0 {
                out.push(format!("{f:?}"));
            }
        }
        out
    }

    /// The Markdown tables.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| faults injected | count |\n|---|---:|\n");
        for (k, v) in &self.faults {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s.push_str(&format!(
            "\n| published | committed | poison → DLQ | HTTP publishes retried (503) | elapsed |\n|---:|---:|---:|---:|---:|\n| {} | {} | {} → {} | {} | {:.1} s |\n",
            self.published,
            self.committed,
            self.poison,
            self.dead_lettered.len(),
            self.http_retries,
            self.elapsed.as_secs_f64()
        ));
        s.push_str("\n| client | channel | deliveries | duplicates | lost | out of order | joins (first + re-joins) |\n|---|---|---:|---:|---:|---:|---:|\n");
        for f in &self.followers {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                f.client, f.channel, f.deliveries, f.duplicates, f.lost, f.out_of_order, f.joins
            ));
        }
        s
    }
}

/// Seqs delivered and joins answered, as a follower's reader task saw them.
#[derive(Debug, Default)]
struct Seen {
    seqs: Vec<u64>,
    joins: usize,
    error: Option<String>,
}

/// Runs the soak on a fresh stack.
pub async fn run(options: &SoakOptions) -> Result<SoakReport, String> {
    let t0 = Instant::now();
    let mut stack = Stack::start().await;
    let channels: Vec<String> = (1..=options.channels)
        .map(|i| format!("soak-{i}"))
        .collect();
    let url = stack.gateway.ws_url();
    let token = stack.token("follower", &["soak-*"]);

    // Followers, each read by a task of its own until it has the target.
    let target: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut readers = Vec::new();
    let mut assignments: Vec<(String, String)> = Vec::new();
    for (i, kind) in options.clients.iter().enumerate() {
        if kind == "rust" {
            for ch in &channels {
                assignments.push((kind.clone(), ch.clone()));
            }
        } else {
            assignments.push((kind.clone(), channels[i % channels.len()].clone()));
        }
    }
    for (kind, ch) in &assignments {
        let mut f = Follower::start(kind, &url, &token, ch).await?;
        let seen: Arc<Mutex<Seen>> = Arc::new(Mutex::new(Seen {
            joins: 1,
            ..Seen::default()
        }));
        let (seen2, target2, ch2) = (seen.clone(), target.clone(), ch.clone());
        readers.push((
            kind.clone(),
            ch.clone(),
            seen,
            tokio::spawn(async move {
                loop {
                    let done = {
                        let want = target2.lock().map(|t| t.get(&ch2).copied()).ok().flatten();
                        let last = seen2.lock().map(|s| s.seqs.last().copied()).ok().flatten();
                        matches!((want, last), (Some(w), Some(l)) if l >= w)
                    };
                    if done {
                        break;
                    }
                    match f.poll(Duration::from_secs(1)).await {
                        // Nothing for a second: check whether it is done.
                        Ok(None) => {}
                        Ok(Some(Some(seq))) => {
                            if let Ok(mut s) = seen2.lock() {
                                s.seqs.push(seq);
                            }
                        }
                        Ok(Some(None)) => {
                            if let Ok(mut s) = seen2.lock() {
                                s.joins += 1;
                            }
                        }
                        Err(e) => {
                            if let Ok(mut s) = seen2.lock() {
                                s.error = Some(e);
                            }
                            break;
                        }
                    }
                }
                f.stop().await;
            }),
        ));
    }

    // Publishing under faults, with drops, a restart and poison messages.
    let faults = FaultSettings::parse(&options.faults).map_err(|e| e.to_string())?;
    stack
        .gateway
        .faults()
        .set(faults)
        .map_err(|e| e.to_string())?;
    let publisher = stack.publisher_token("agent", &["soak-*"]);
    let http = reqwest::Client::new();
    let mut published = 0u64;
    let mut poison = 0u64;
    let mut http_retries = 0u64;
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 1..=options.events {
        if i == options.events / 3 {
            // Every connection dropped at once, as a network blip would.
            stack
                .gateway
                .hub()
                .close_all(1006, "soak: connections dropped");
        }
        if i == 2 * options.events / 3 {
            stack.gateway_down().await;
            stack.gateway_up().await;
        }
        for ch in &channels {
            let mut id = format!("{ch}-e{i}");
            if i % 2 == 0 {
                let (retries, committed_as) =
                    publish_http(&stack, &http, &publisher, ch, &id, i).await?;
                http_retries += retries;
                // The publisher's key behind its tag.
                id = committed_as;
            } else {
                let group = format!("{}#{ch}", stack.tenant);
                stack
                    .send_raw(
                        &stack.envelope(ch, &id, "tick", json!({ "i": i })),
                        &group,
                        &id,
                    )
                    .await;
            }
            published += 1;
            ids.entry(ch.clone()).or_default().insert(id);
            // Never last in its group: the events after it show it was
            // passed over.
            if i % options.poison_every == 0 && i < options.events {
                let group = format!("{}#{ch}", stack.tenant);
                stack
                    .send_raw(r#"{"tenant": 7}"#, &group, &format!("poison-{ch}-{i}"))
                    .await;
                poison += 1;
            }
        }
    }
    let faults = stack.gateway.faults().injected();
    stack
        .gateway
        .faults()
        .set(FaultSettings::default())
        .map_err(|e| e.to_string())?;

    // Every published id committed: wait for the log to hold them all.
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut heads = BTreeMap::new();
    for ch in &channels {
        let key = ChannelKey::new(&stack.tenant, ch);
        loop {
            let head = log
                .channel(&key)
                .await
                .map_err(|e| e.to_string())?
                .map_or(0, |s| s.head);
            let stored: BTreeSet<String> = log
                .read_range(&key, 1, head, ReadBudget::events(usize::MAX))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|e| e.id)
                .collect();
            if ids.get(ch).is_some_and(|want| want.is_subset(&stored)) {
                heads.insert(ch.clone(), head);
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<&String> = ids
                    .get(ch)
                    .map(|want| want.difference(&stored).collect())
                    .unwrap_or_default();
                let dlq = stack
                    .drain_dead_letters()
                    .await
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect::<Vec<_>>();
                let queue = stack.queue_counts(&stack.queue_url).await;
                return Err(format!(
                    "{ch}: {} of {} published events committed within 120 s (head {head}); missing {missing:?}; the events queue holds {queue:?}; the DLQ holds {dlq:?}",
                    stored.len(),
                    ids.get(ch).map_or(0, BTreeSet::len)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let committed = heads.values().sum();
    if let Ok(mut t) = target.lock() {
        *t = heads.clone();
    }
    let mut followers = Vec::new();
    for (kind, ch, seen, task) in readers {
        if tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .is_err()
        {
            return Err(format!(
                "{kind} on {ch}: not caught up within 120 s: {seen:?}"
            ));
        }
        let s = seen.lock().map_err(|e| e.to_string())?;
        if let Some(e) = &s.error {
            return Err(format!("{kind} on {ch}: {e}"));
        }
        let head = heads.get(&ch).copied().unwrap_or(0);
        let unique: BTreeSet<u64> = s.seqs.iter().copied().collect();
        followers.push(FollowerReport {
            client: kind,
            channel: ch,
            deliveries: s.seqs.len(),
            duplicates: s.seqs.len() - unique.len(),
            lost: head.saturating_sub(unique.range(1..=head).count() as u64),
            out_of_order: s.seqs.windows(2).filter(|w| w[1] <= w[0]).count(),
            joins: s.joins,
        });
    }

    let dead_lettered: Vec<String> = stack
        .drain_dead_letters()
        .await
        .into_iter()
        .map(|(_, reason)| reason)
        .collect();
    stack.shutdown().await;
    Ok(SoakReport {
        published,
        committed,
        poison,
        dead_lettered,
        http_retries,
        faults,
        followers,
        elapsed: t0.elapsed(),
    })
}

/// Publishes one event over HTTP with its Idempotency-Key, sending it again
/// on a 5xx (a fault of the queue behind it) as a publisher should: the key
/// makes it one event. Returns the retries it took and the event's id.
async fn publish_http(
    stack: &Stack,
    http: &reqwest::Client,
    token: &str,
    channel: &str,
    id: &str,
    i: u64,
) -> Result<(u64, String), String> {
    let url = format!("{}/v1/channels/{channel}/events", stack.gateway.http_url());
    for attempt in 0..20u64 {
        let resp = http
            .post(&url)
            .bearer_auth(token)
            .header("idempotency-key", id)
            .header("content-type", "application/json")
            .body(json!({"kind": "tick", "data": {"i": i}}).to_string())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await.map_err(|e| e.to_string())?;
                let body: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                let id = body["id"]
                    .as_str()
                    .ok_or(format!("publish {id}: no id in {body}"))?;
                return Ok((attempt, id.to_owned()));
            }
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return Err(format!("publish {id}: {status} {body}"));
            }
            // The gateway restarting.
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(format!("publish {id}: still failing after 20 attempts"))
}
