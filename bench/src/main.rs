//! `agentwire-bench`: publish-to-receive latency and fan-out rate on the
//! local stack (the endpoint from `localstack/up`, the dev gateway
//! in-process, real WebSocket clients). Prints Markdown tables for
//! `docs/benchmarks.md`.

// A benchmark that sees a lost or misordered event must stop loudly.
#![allow(clippy::panic)]

mod canary;
mod chatsample;
mod crowd;
mod direct;
mod gzip;
mod identity;
mod quotas;
mod run;
mod streams;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agentwire_client::{Backoff, Client, ClientEvent, Options};
use agentwire_e2e::followers::{Follower, bench_script, client_until};
use agentwire_e2e::{Stack, StackOptions, WsClient};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::mpsc;

/// Counts allocations, for the client's memory per channel.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
#[command(name = "agentwire-bench")]
struct Args {
    /// Events for the latency run (one subscriber, one event in flight at a time).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Subscriber counts for the fan-out runs.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    fanout: Vec<usize>,
    /// Events per fan-out run.
    #[arg(long, default_value_t = 20)]
    fanout_events: usize,
    /// Retained events replayed to a reconnecting client.
    #[arg(long, default_value_t = 10_000)]
    replay: u64,
    /// Events published for the DynamoDB calls-per-event count.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Dropped connections for the resume timing (per backoff setting).
    #[arg(long, default_value_t = 20)]
    drops: usize,
    /// Channels one client joins for the memory-per-channel figure.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Where the host builds of the function binaries are, for `coldstart`
    /// (`cargo build --release -p agentwire-fn-connect ...`).
    #[arg(long, default_value = "target/release")]
    bin_dir: std::path::PathBuf,
    /// Where the arm64 Lambda bootstraps are (`scripts/build-lambdas`).
    #[arg(long, default_value = "target/lambda")]
    lambda_dir: std::path::PathBuf,
    /// Process starts per function for `coldstart`.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Crowd sizes for `crowd` (clients on one channel); up to 1,000 the
    /// gateway runs in-process, above in its own process.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    crowd: Vec<usize>,
    /// Events per setting in `crowd`.
    #[arg(long, default_value_t = 5)]
    crowd_events: usize,
    /// A checkout of aws-samples/simple-websockets-chat-app: `crowd` then
    /// compares publish-to-all with its `sendmessage` handler (needs
    /// `npm ci` in bench/chat-sample).
    #[arg(long)]
    chat_sample: Option<std::path::PathBuf>,
    /// HTTP publishes per setting for `quotas`.
    #[arg(long, default_value_t = 300)]
    quota_publishes: usize,
    /// The rate of terminal output for `streams`, bytes a second.
    #[arg(long, default_value_t = 1_000_000)]
    stream_rate: usize,
    /// Token verifications per kind in `identity`.
    #[arg(long, default_value_t = 2000)]
    verifications: usize,
    /// Events per channel for `soak`.
    #[arg(long, default_value_t = 300)]
    soak_events: u64,
    /// How long `streams` writes terminal output.
    #[arg(long, default_value_t = 10)]
    stream_seconds: u64,
    /// Events per path for the latency of `direct`.
    #[arg(long, default_value_t = 100)]
    direct_events: usize,
    /// Subscribers of the hot channel's second row in `direct`.
    #[arg(long, default_value_t = 1000)]
    direct_crowd: usize,
    /// Probes `canary` runs in a row.
    #[arg(long, default_value_t = 200)]
    canary_probes: usize,
    /// Megabytes the command of `run` writes.
    #[arg(long, default_value_t = 10)]
    run_megabytes: u64,
    /// Sections to run (`crowd`, `clients`, `quotas`, `streams`,
    /// `identity`, `direct`, `gzip`, `canary`, `run` (needs target/release/agentwire)
    /// and `soak` only when named).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,fanout,replay,calls,resume,memory,coldstart"
    )]
    only: Vec<String>,
    /// Clients compared by `clients` (rust, ts, python, go; ts needs
    /// `npm ci` in clients/ts, python the venv of clients/python, go the Go
    /// toolchain, which builds clients/go/bench into target/go-bench).
    #[arg(long, value_delimiter = ',', default_value = "rust,ts,python,go")]
    clients: Vec<String>,
    /// Connections (clients with no channel) held for the memory per
    /// connection in `clients`.
    #[arg(long, default_value_t = 100)]
    connections: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = agentwire_e2e::check_endpoint(&agentwire_e2e::endpoint()).await {
        eprintln!("agentwire-bench: {msg}");
        return ExitCode::FAILURE;
    }
    let run = |name: &str| args.only.iter().any(|o| o == name);
    if run("latency") {
        latency(args.events).await;
        println!();
    }
    if run("fanout") {
        println!(
            "| subscribers | events | deliveries | elapsed | deliveries/s | publish→all received p50 | p95 |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for n in &args.fanout {
            fanout(*n, args.fanout_events).await;
        }
        println!();
    }
    if run("replay") {
        replay(args.replay).await;
        println!();
    }
    if run("calls") {
        calls(args.calls).await;
        println!();
    }
    if run("streams") {
        streams::streams(args.stream_rate, args.stream_seconds).await;
        println!();
    }
    if run("soak") {
        let options = agentwire_e2e::soak::SoakOptions {
            channels: 4,
            events: args.soak_events,
            poison_every: 25,
            ..agentwire_e2e::soak::SoakOptions::short()
        };
        match agentwire_e2e::soak::run(&options).await {
            Ok(report) => {
                println!(
                    "Chaos soak: {} channels, {} events each over HTTP and the queue, faults {}:",
                    options.channels,
                    options.events,
                    options.faults.split_whitespace().collect::<String>()
                );
                println!();
                println!("{}", report.table());
                let problems = report.problems();
                if !problems.is_empty() {
                    eprintln!("agentwire-bench: the soak lost or repeated events: {problems:#?}");
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("agentwire-bench: soak: {e}");
                return ExitCode::FAILURE;
            }
        }
        println!();
    }
    if run("gzip") {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        if let Err(e) = gzip::gzip(&data).await {
            eprintln!("agentwire-bench: gzip: {e}");
            return ExitCode::FAILURE;
        }
    }
    if run("canary")
        && let Err(e) = canary::canary(args.canary_probes).await
    {
        eprintln!("agentwire-bench: canary: {e}");
        return ExitCode::FAILURE;
    }
    if run("direct") {
        direct::direct(args.direct_events, args.direct_crowd).await;
    }
    if run("run") {
        if let Err(e) = run::run(&args.bin_dir, args.run_megabytes).await {
            eprintln!("agentwire-bench: run: {e}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    if run("quotas") {
        quotas::quotas(args.quota_publishes).await;
        println!();
    }
    if run("identity") {
        identity::identity(args.verifications).await;
        println!();
    }
    if run("resume") {
        resume(args.drops).await;
        println!();
    }
    if run("clients") {
        if let Err(e) = clients(&args).await {
            eprintln!("agentwire-bench: clients: {e}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    if run("memory") {
        if let Err(e) = memory(&args).await {
            eprintln!("agentwire-bench: memory: {e}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    if run("crowd") {
        if let Err(e) = crowd::crowd(
            &args.crowd,
            args.crowd_events,
            &args.bin_dir,
            args.chat_sample.as_deref(),
        )
        .await
        {
            eprintln!("agentwire-bench: crowd: {e}");
            return ExitCode::FAILURE;
        }
        println!();
    }
    if run("coldstart")
        && let Err(e) = coldstart(&args).await
    {
        eprintln!("agentwire-bench: coldstart: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn subscriber(stack: &Stack, channel: &str) -> WsClient {
    let mut c = stack.client(&stack.token("bench", &["*"])).await;
    c.hello().await;
    let j = c.join(json!([channel])).await;
    assert_eq!(j["type"], "joined", "{j}");
    c
}

async fn latency(n: usize) {
    eprintln!("latency: {n} events, one at a time, one subscriber");
    let stack = Stack::start().await;
    let mut c = subscriber(&stack, "lat").await;
    let mut total = Vec::with_capacity(n);
    let mut send = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        stack.publish("lat", "status", json!({ "i": i })).await;
        send.push(t0.elapsed());
        let got = c.events(1).await;
        total.push(t0.elapsed());
        assert_eq!(got[0]["seq"], i as u64 + 1);
        if (i + 1) % 200 == 0 {
            eprintln!("  {}/{n}", i + 1);
        }
    }
    let rest: Vec<Duration> = total
        .iter()
        .zip(&send)
        .map(|(t, s)| t.saturating_sub(*s))
        .collect();
    let mut rows = [
        ("publish → receive (total)", total),
        ("SQS SendMessage (endpoint)", send),
        ("queue → dispatcher → client", rest),
    ];
    println!("Publish-to-receive latency, {n} events, 1 subscriber, one event in flight:");
    println!();
    println!("| span | p50 | p95 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in rows.iter_mut() {
        v.sort();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.95)),
            ms(pct(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    stack.shutdown().await;
}

async fn fanout(n: usize, events: usize) {
    eprintln!("fan-out: {n} subscribers, {events} events");
    let stack = Stack::start().await;
    let t = Instant::now();
    let clients: Vec<WsClient> = futures::stream::iter(0..n)
        .map(|_| subscriber(&stack, "fan"))
        .buffer_unordered(16)
        .collect()
        .await;
    eprintln!(
        "  {n} subscribers connected and joined in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = 0;
                while got < events {
                    for e in c.events(1).await {
                        got += 1;
                        let _ = tx.send(e["seq"].as_u64().unwrap_or(0));
                    }
                }
                c
            })
        })
        .collect();
    drop(tx);
    let start = Instant::now();
    let mut to_all = Vec::with_capacity(events);
    for i in 0..events {
        let t0 = Instant::now();
        stack.publish("fan", "status", json!({ "i": i })).await;
        let mut seen = 0;
        while seen < n {
            match rx.recv().await {
                Some(seq) if seq == i as u64 + 1 => seen += 1,
                Some(seq) => panic!("event {seq} arrived while waiting for {}", i + 1),
                None => panic!("readers ended early"),
            }
        }
        to_all.push(t0.elapsed());
    }
    let elapsed = start.elapsed();
    let mut open = Vec::new();
    for r in readers {
        if let Ok(c) = r.await {
            open.push(c);
        }
    }
    drop(open);
    to_all.sort();
    let deliveries = n * events;
    println!(
        "| {n} | {events} | {deliveries} | {:.2} s | {:.0} | {} | {} |",
        elapsed.as_secs_f64(),
        deliveries as f64 / elapsed.as_secs_f64(),
        ms(pct(&to_all, 0.5)),
        ms(pct(&to_all, 0.95))
    );
    stack.shutdown().await;
}

fn counted() -> StackOptions {
    StackOptions {
        count_dynamodb_calls: true,
        ..StackOptions::default()
    }
}

/// A client that was away while `n` events were committed joins from seq 0.
async fn replay(n: u64) {
    use agentwire_aws::DynamoLog;
    use agentwire_core::model::ChannelKey;
    eprintln!("replay: seeding {n} events");
    let stack = Stack::start_with(counted()).await;
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, "history");
    let data =
        json!({"text": "a status line of an agent run, about eighty bytes long ............"});
    let t = Instant::now();
    let epoch = seed(&log, &key, n, &data).await;
    eprintln!("  seeded in {:.1} s", t.elapsed().as_secs_f64());
    let mut c = stack.client(&stack.token("bench", &["*"])).await;
    c.hello().await;
    stack.calls.reset();
    let t0 = Instant::now();
    c.send_json(
        json!({"action":"join","channels":[{"name":"history","since":{"epoch":epoch,"seq":0}}]}),
    )
    .await;
    let mut frames = 0usize;
    let mut got = 0u64;
    let mut first = None;
    let mut joins = 1usize;
    // Where the current page ends, when the join budget cut the replay short.
    let mut until: Option<u64> = None;
    while got < n {
        let v = c.recv().await;
        frames += 1;
        match v["type"].as_str() {
            Some("event") => got += 1,
            Some("batch") => got += v["events"].as_array().map(|a| a.len() as u64).unwrap_or(0),
            Some("joined") => {
                first.get_or_insert(t0.elapsed());
                until = v["channels"][0]["until"].as_u64();
            }
            _ => panic!("unexpected frame during replay: {v}"),
        }
        if let Some(u) = until.filter(|u| got >= *u) {
            // The next page, as the client library does.
            until = None;
            joins += 1;
            c.send_json(
                json!({"action":"join","channels":[{"name":"history","since":{"epoch":epoch,"seq":u}}]}),
            )
            .await;
        }
    }
    let elapsed = t0.elapsed();
    let queries = stack.calls.snapshot().get("Query").copied().unwrap_or(0);
    println!("Replay of {n} retained events to a reconnecting client (join since seq 0):");
    println!();
    println!(
        "| events | joins (pages) | joined after | last event after | events/s | frames | DynamoDB calls (Query) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {joins} | {} | {} | {:.0} | {frames} | {} ({queries}) |",
        ms(first.unwrap_or_default()),
        ms(elapsed),
        n as f64 / elapsed.as_secs_f64(),
        stack.calls.total()
    );
    stack.shutdown().await;
}

/// DynamoDB calls per published event in the steady state: a channel with
/// one live subscriber, events one at a time, then a burst.
async fn calls(n: usize) {
    eprintln!("calls: {n} events one at a time, then {n} in a burst");
    let stack = Stack::start_with(counted()).await;
    let mut c = subscriber(&stack, "steady").await;
    // Warm: the channel exists and the subscriber is in place.
    stack.publish("steady", "status", json!({})).await;
    c.events(1).await;
    println!("DynamoDB calls per published event (one live subscriber):");
    println!();
    println!("| publishing | events | calls by operation | calls per event |");
    println!("|---|---:|---|---:|");
    for burst in [false, true] {
        stack.calls.reset();
        if burst {
            for i in 0..n {
                stack.publish("steady", "status", json!({ "i": i })).await;
            }
            let mut got = 0;
            while got < n {
                got += c.events(1).await.len();
            }
        } else {
            for i in 0..n {
                stack.publish("steady", "status", json!({ "i": i })).await;
                c.events(1).await;
            }
        }
        let snap = stack.calls.snapshot();
        let by_op: Vec<String> = snap.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "| {} | {n} | {} | {:.2} |",
            if burst {
                "burst (batched by SQS)"
            } else {
                "one at a time"
            },
            by_op.join(", "),
            stack.calls.total() as f64 / n as f64
        );
    }
    stack.shutdown().await;
}

/// Loads `n` events with `DynamoLog::import` (`BatchWriteItem`) and sets
/// the head. Bench set-up only: committing them one transaction at a time
/// would measure moto (which copies the table per transaction item), not
/// the replay.
async fn seed(
    log: &agentwire_aws::DynamoLog,
    key: &agentwire_core::model::ChannelKey,
    n: u64,
    data: &serde_json::Value,
) -> String {
    use agentwire_core::ports::ChannelLog;
    let state = log
        .ensure_channel(key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<agentwire_core::model::Envelope> = (1..=n)
        .map(|i| agentwire_core::model::Envelope {
            tenant: key.tenant.clone(),
            channel: key.channel.clone(),
            id: format!("h{i}"),
            kind: "status".into(),
            data: agentwire_protocol::RawData::from_value(data),
            ts: "2026-11-23T00:00:00.000Z".into(),
        })
        .collect();
    log.import(key, &state, &events, 4_000_000_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    state.epoch
}

/// Waits until `want` channels are confirmed joined.
async fn wait_joined(c: &mut Client, want: usize) {
    let mut seen = 0usize;
    while seen < want {
        if let ClientEvent::Joined { channels } =
            client_until(c, |e| matches!(e, ClientEvent::Joined { .. })).await
        {
            seen += channels.len();
        }
    }
}

/// Time from a dropped connection to the first event delivered on the new
/// one: the gateway drops every connection, an event is published at once,
/// and the clock stops when the reconnected client delivers it.
async fn resume(drops: usize) {
    eprintln!("resume: {drops} dropped connections per backoff setting");
    println!(
        "Dropped connection → first resumed event, {drops} drops, `agentwire-client` on the dev gateway:"
    );
    println!();
    println!("| backoff | p50 | p95 | max | of which reconnect delay (mean) |");
    println!("|---|---:|---:|---:|---:|");
    for (label, initial) in [
        ("default (first delay 0..0.5 s)", Duration::from_millis(500)),
        ("none (delay 0)", Duration::ZERO),
    ] {
        let stack = Stack::start().await;
        // Every drop is measured as a first drop: the schedule restarts
        // after each connection (by default only after 60 s up, so drops
        // in quick succession back off further).
        let options = Options {
            backoff: Backoff::new(initial, Duration::from_secs(30))
                .with_stable_after(Duration::ZERO),
            ..Options::default()
        };
        let mut c = Client::builder()
            .url(stack.gateway.ws_url())
            .token(stack.token("bench", &["*"]))
            .channel("resume")
            .options(options)
            .connect()
            .unwrap_or_else(|e| panic!("client: {e}"));
        client_until(&mut c, |e| matches!(e, ClientEvent::Joined { .. })).await;
        let mut took = Vec::with_capacity(drops);
        let mut delays = Duration::ZERO;
        for i in 0..drops {
            let t0 = Instant::now();
            stack.gateway.hub().close_all(1006, "bench drop");
            stack.publish("resume", "status", json!({ "i": i })).await;
            loop {
                match client_until(&mut c, |e| {
                    matches!(e, ClientEvent::Event(_) | ClientEvent::Reconnecting { .. })
                })
                .await
                {
                    ClientEvent::Reconnecting { delay, .. } => delays += delay,
                    ClientEvent::Event(e) => {
                        assert_eq!(e.seq, i as u64 + 1, "resumed in order");
                        break;
                    }
                    _ => {}
                }
            }
            took.push(t0.elapsed());
        }
        took.sort();
        println!(
            "| {label} | {} | {} | {} | {} |",
            ms(pct(&took, 0.5)),
            ms(pct(&took, 0.95)),
            ms(*took.last().unwrap_or(&Duration::ZERO)),
            ms(delays / drops.max(1) as u32)
        );
        c.close().await;
        stack.shutdown().await;
    }
}

/// Dropped connection → re-joined, for the Rust, TypeScript and Python
/// clients side by side, each reconnecting without a delay: the resume
/// itself (notice the drop, new WebSocket, `hello`, `join` from the last
/// seq, `joined`). After each, an event published then checks that the
/// client goes on in order (not timed).
async fn clients(args: &Args) -> Result<(), String> {
    let drops = args.drops;
    println!(
        "Dropped connection → re-joined (`joined` answered), {drops} drops per client, reconnect delay 0, dev gateway:"
    );
    println!();
    println!("| client | p50 | p95 | max |");
    println!("|---|---:|---:|---:|");
    for kind in &args.clients {
        eprintln!("clients: {kind}");
        let stack = Stack::start().await;
        let channel = format!("resume-{kind}");
        let mut f = Follower::start(
            kind,
            &stack.gateway.ws_url(),
            &stack.token("bench", &["*"]),
            &channel,
        )
        .await?;
        let mut took = Vec::with_capacity(drops);
        for i in 0..drops {
            let t0 = Instant::now();
            stack.gateway.hub().close_all(1006, "bench drop");
            if let Some(seq) = f.next().await? {
                return Err(format!("{kind}: event {seq} before the re-join"));
            }
            took.push(t0.elapsed());
            stack.publish(&channel, "status", json!({ "i": i })).await;
            match f.next().await? {
                Some(seq) if seq == i as u64 + 1 => {}
                other => {
                    return Err(format!(
                        "{kind}: after re-join {other:?}, expected seq {}",
                        i + 1
                    ));
                }
            }
        }
        took.sort();
        println!(
            "| {kind} | {} | {} | {} |",
            ms(pct(&took, 0.5)),
            ms(pct(&took, 0.95)),
            ms(*took.last().unwrap_or(&Duration::ZERO))
        );
        f.stop().await;
        stack.shutdown().await;
    }
    client_replays(args).await?;
    client_memory(args).await?;
    Ok(())
}

/// A replay of `--replay` retained events to each client joining from
/// `{epoch, 0}`: the TypeScript and Python clients as child processes
/// (`bench/replay.ts`, `bench/replay.py`) printing their own timings.
async fn client_replays(args: &Args) -> Result<(), String> {
    use agentwire_aws::DynamoLog;
    use agentwire_core::model::ChannelKey;
    let n = args.replay;
    println!();
    println!("Replay of {n} retained events to each client (join since seq 0, dev gateway):");
    println!();
    println!("| client | first event after | last event after | events/s |");
    println!("|---|---:|---:|---:|");
    let data =
        json!({"text": "a status line of an agent run, about eighty bytes long ............"});
    for kind in &args.clients {
        eprintln!("clients: {kind} replay, seeding {n} events");
        let stack = Stack::start().await;
        let log = DynamoLog::new(
            stack.ddb(),
            stack.config.tables.clone(),
            stack.clock.clone(),
        );
        let key = ChannelKey::new(&stack.tenant, "history");
        let epoch = seed(&log, &key, n, &data).await;
        let (url, token) = (stack.gateway.ws_url(), stack.token("bench", &["*"]));
        let (first, last) = match kind.as_str() {
            "rust" => {
                let t0 = Instant::now();
                let mut c = Client::builder()
                    .url(&url)
                    .token(&token)
                    .channel_since(
                        "history",
                        agentwire_client::Since::Position {
                            epoch: epoch.clone(),
                            seq: 0,
                        },
                    )
                    .options(Options {
                        ack_debounce: None,
                        ..Options::default()
                    })
                    .connect()
                    .map_err(|e| e.to_string())?;
                let mut first = None;
                let mut got = 0u64;
                while got < n {
                    if let ClientEvent::Event(e) =
                        client_until(&mut c, |e| matches!(e, ClientEvent::Event(_))).await
                    {
                        got += 1;
                        first.get_or_insert(t0.elapsed());
                        if e.seq != got {
                            return Err(format!("rust: seq {} at position {got}", e.seq));
                        }
                    }
                }
                let last = t0.elapsed();
                c.close().await;
                (first.unwrap_or_default(), last)
            }
            other => {
                let out = bench_script(other, "replay")?
                    .args([&url, &token, "history", &epoch, &n.to_string()])
                    .output()
                    .await
                    .map_err(|e| format!("cannot run the {kind} replay: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{kind} replay failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .map_err(|e| format!("{kind} replay output: {e}"))?;
                let d = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0) / 1000.0);
                (d("first_ms"), d("elapsed_ms"))
            }
        };
        println!(
            "| {kind} | {} | {} | {:.0} |",
            ms(first),
            ms(last),
            n as f64 / last.as_secs_f64()
        );
        stack.shutdown().await;
    }
    Ok(())
}

/// What one client keeps per channel held and per connection, for each
/// client in `--clients`, against the dev gateway in its own process
/// (`agentwire-local` from `--bin-dir`), a tenant of its own per client so
/// that every channel is new. Each measures with its runtime's own count,
/// after a warm-up client took the one-off costs: Rust the net bytes
/// allocated and kept in this process (`stats_alloc`); TypeScript V8's
/// `heapUsed` after a full GC (`clients/ts/bench/memory.ts`,
/// `bench/clients/connections.mts`); Python the bytes `tracemalloc` traces
/// after `gc.collect()` (`bench/clients/memory.py`); Go the live heap and
/// goroutine stacks after two GCs (`clients/go/bench`). Channels are joined on the warm-up client's
/// connection; connections are clients with no channel, counted once the
/// gateway welcomed them.
async fn client_memory(args: &Args) -> Result<(), String> {
    let (n, m) = (args.channels, args.connections);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut gateway, port) = start_local(&args.bin_dir, &[], &[]).await?;
    let url = format!("ws://127.0.0.1:{port}");
    println!();
    println!(
        "Memory kept per channel held ({n} channels joined on one connection) and per connection ({m} clients with no channel), dev gateway in its own process:"
    );
    println!();
    println!(
        "| client | counted as | channels joined in | bytes per channel | connections up in | bytes per connection |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let row = |kind: &str, how: &str, ch: Option<(f64, f64)>, conn: Option<(f64, f64)>| {
        let cell = |v: Option<(f64, f64)>, per: usize| match v {
            Some((t, bytes)) => (format!("{t:.1} ms"), format!("{:.0}", bytes / per as f64)),
            None => ("—".to_owned(), "not measured".to_owned()),
        };
        let (ct, cb) = cell(ch, n);
        let (kt, kb) = cell(conn, m);
        println!("| {kind} | {how} | {ct} | {cb} | {kt} | {kb} |");
    };
    for kind in &args.clients {
        eprintln!("clients: {kind} memory, {n} channels, {m} connections");
        let tenant = format!("mem{}{kind}", std::process::id());
        let token = dev_token(&tenant, "bench", &["*"], Duration::from_secs(3600))?;
        match kind.as_str() {
            "rust" => {
                let ch = rust_memory_channels(&url, &token, n).await?;
                let conn = rust_memory_connections(&url, &token, m).await?;
                row(
                    kind,
                    "net bytes allocated and kept (`stats_alloc`)",
                    Some(ch),
                    Some(conn),
                );
            }
            "ts" => {
                let ts = root.join("clients/ts");
                let ch = child_memory(
                    tokio::process::Command::new("node")
                        .current_dir(&ts)
                        .args(["--expose-gc", "--import", "tsx", "bench/memory.ts"])
                        .args([&url, &token, &n.to_string()]),
                )
                .await?;
                let conn = child_memory(
                    tokio::process::Command::new("node")
                        .current_dir(&ts)
                        .args(["--expose-gc", "--import", "tsx"])
                        .arg(root.join("bench/clients/connections.mts"))
                        .args([&url, &token, &m.to_string()]),
                )
                .await?;
                row(
                    kind,
                    &format!(
                        "V8 `heapUsed` after a full GC (Node {})",
                        node_version().await
                    ),
                    Some(ch),
                    Some(conn),
                );
            }
            "python" => {
                let mut each = Vec::new();
                for (what, count) in [("channels", n), ("connections", m)] {
                    let v = child_memory(
                        tokio::process::Command::new(root.join("clients/python/.venv/bin/python"))
                            .current_dir(root.join("clients/python"))
                            .arg(root.join("bench/clients/memory.py"))
                            .args([url.as_str(), token.as_str(), &count.to_string(), what]),
                    )
                    .await?;
                    each.push(v);
                }
                row(
                    kind,
                    "`tracemalloc` traced bytes after `gc.collect()`",
                    each.first().copied(),
                    each.get(1).copied(),
                );
            }
            "go" => {
                let mut each = Vec::new();
                for (what, count) in [("channels", n), ("connections", m)] {
                    let v = child_memory(bench_script("go", "memory")?.args([
                        url.as_str(),
                        token.as_str(),
                        &count.to_string(),
                        what,
                    ]))
                    .await?;
                    each.push(v);
                }
                row(
                    kind,
                    &format!(
                        "`runtime.ReadMemStats` HeapAlloc + StackInuse after 2 GCs ({})",
                        go_version().await
                    ),
                    each.first().copied(),
                    each.get(1).copied(),
                );
            }
            _ => row(kind, "—", None, None),
        }
    }
    let _ = gateway.kill().await;
    Ok(())
}

/// A child's memory line: (`joined_ms`, `bytes`).
async fn child_memory(cmd: &mut tokio::process::Command) -> Result<(f64, f64), String> {
    // Named by its program and first argument (not the token).
    let what = {
        let std = cmd.as_std();
        let args: Vec<_> = std.get_args().map(|a| a.to_string_lossy()).collect();
        format!(
            "{} {}",
            std.get_program().to_string_lossy(),
            args.iter()
                .find(|a| a.contains("bench/") || *a == "memory")
                .map_or("", |a| a.as_ref())
        )
    };
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{what} output: {e}"))?;
    Ok((
        v["joined_ms"].as_f64().unwrap_or(0.0),
        v["bytes"].as_f64().unwrap_or(0.0),
    ))
}

/// The net bytes allocated and kept over a `Region`: allocated minus
/// freed, plus the growth of reallocations.
fn net_bytes(change: stats_alloc::Stats) -> f64 {
    (change.bytes_allocated as i64 - change.bytes_deallocated as i64
        + change.bytes_reallocated as i64) as f64
}

/// The Rust client's bytes per channel, measured as the children measure
/// theirs: a client joined to one channel, then `n` more joined on its
/// connection.
async fn rust_memory_channels(url: &str, token: &str, n: usize) -> Result<(f64, f64), String> {
    let mut c = Client::builder()
        .url(url)
        .token(token)
        .channel_since("mem-warm", agentwire_client::Since::Head)
        .options(Options {
            ack_debounce: None,
            ..Options::default()
        })
        .connect()
        .map_err(|e| e.to_string())?;
    wait_joined(&mut c, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let handle = c.handle();
    for i in 0..n {
        handle
            .join_since(format!("mem-{i}"), agentwire_client::Since::Head)
            .map_err(|e| e.to_string())?;
    }
    wait_joined(&mut c, n).await;
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes = net_bytes(region.change());
    c.close().await;
    Ok((took.as_secs_f64() * 1000.0, bytes))
}

/// The Rust client's bytes per connection: `m` clients with no channel,
/// after a first one.
async fn rust_memory_connections(url: &str, token: &str, m: usize) -> Result<(f64, f64), String> {
    let connect = || {
        Client::builder()
            .url(url)
            .token(token)
            .options(Options {
                ack_debounce: None,
                ..Options::default()
            })
            .connect()
            .map_err(|e| e.to_string())
    };
    let mut warm = connect()?;
    client_until(&mut warm, |e| matches!(e, ClientEvent::Connected { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let mut all = Vec::with_capacity(m);
    for _ in 0..m {
        all.push(connect()?);
    }
    for c in &mut all {
        client_until(c, |e| matches!(e, ClientEvent::Connected { .. })).await;
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes = net_bytes(region.change());
    for c in all {
        c.close().await;
    }
    warm.close().await;
    Ok((took.as_secs_f64() * 1000.0, bytes))
}

async fn go_version() -> String {
    match tokio::process::Command::new("go")
        .arg("version")
        .output()
        .await
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or("?")
            .to_owned(),
        Err(_) => "?".into(),
    }
}

async fn node_version() -> String {
    match tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(_) => "?".into(),
    }
}

/// Bytes one client keeps per subscribed channel: the net allocation growth
/// of this process while a client joins `n` channels, divided by `n`. The
/// dev gateway runs as its own process (`agentwire-local` from `--bin-dir`,
/// on the tables and queues of `localstack/up`), so what grows here is the
/// client alone.
async fn memory(args: &Args) -> Result<(), String> {
    let n = args.channels;
    eprintln!("memory: one client joining {n} channels");
    let (mut gateway, port) = start_local(&args.bin_dir, &[], &[]).await?;
    let url = format!("ws://127.0.0.1:{port}");
    // A tenant of its own, so every channel is new.
    let tenant = format!("mem{}", std::process::id());
    let token = dev_token(&tenant, "bench", &["mem-*"], Duration::from_secs(3600))?;
    let names: Vec<String> = (0..n).map(|i| format!("mem-{i:05}")).collect();
    // A one-channel client first, so one-off costs (the WebSocket stack,
    // the runtime's buffers) are not counted per channel.
    let mut one = Client::builder()
        .url(&url)
        .token(token.clone())
        .channel(names[0].clone())
        .connect()
        .map_err(|e| e.to_string())?;
    wait_joined(&mut one, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let mut builder = Client::builder().url(&url).token(token).options(Options {
        ack_debounce: None,
        ..Options::default()
    });
    for name in &names {
        builder = builder.channel(name.clone());
    }
    let mut many = builder.connect().map_err(|e| e.to_string())?;
    wait_joined(&mut many, n).await;
    let join_time = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let change = region.change();
    let net = change.bytes_allocated as i64 - change.bytes_deallocated as i64
        + change.bytes_reallocated as i64;
    println!("Client memory per subscribed channel, one client joining {n} channels:");
    println!();
    println!("| channels | joined in | net bytes kept | bytes per channel |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {n} | {} | {net} | {:.0} |",
        ms(join_time),
        net as f64 / n.max(1) as f64
    );
    many.close().await;
    one.close().await;
    let _ = gateway.kill().await;
    Ok(())
}

/// The dev gateway's release binary started as its own process on a free
/// port, with the endpoint of `localstack/up`, `args` and `envs` added;
/// returned once it listens.
pub async fn start_local(
    bin_dir: &std::path::Path,
    args: &[&str],
    envs: &[(&str, String)],
) -> Result<(tokio::process::Child, u16), String> {
    let bin = release_bin(bin_dir, "agentwire-local", "agentwire-local")?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let child = tokio::process::Command::new(&bin)
        .args([
            "--port",
            &port.to_string(),
            "--endpoint",
            &agentwire_e2e::endpoint(),
        ])
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("agentwire-local did not listen within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((child, port))
}

/// A token signed with the key `agentwire-local` uses by default.
pub fn dev_token(
    tenant: &str,
    sub: &str,
    channels: &[&str],
    ttl: Duration,
) -> Result<String, String> {
    let key = agentwire_core::auth::TokenKey::hs256(b"agentwire-local-dev-secret-never-deploy-it");
    let claims = agentwire_core::auth::TokenKey::claims(
        tenant,
        sub,
        channels.iter().map(|c| (*c).to_owned()).collect(),
        vec![],
        agentwire_core::clock::epoch_s(std::time::SystemTime::now()),
        ttl,
    );
    key.sign(&claims).map_err(|e| e.to_string())
}

/// `dir/name`, or how to build it.
fn release_bin(
    dir: &std::path::Path,
    name: &str,
    package: &str,
) -> Result<std::path::PathBuf, String> {
    let bin = dir.join(name);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p {package}",
            bin.display()
        ))
    }
}

const FUNCTIONS: [&str; 6] = [
    "connect",
    "session",
    "disconnect",
    "dispatcher",
    "webhook",
    "publish",
];

/// Process start to ready: each function binary is started as Lambda would
/// (`AWS_LAMBDA_RUNTIME_API` pointing at a local stand-in of the Runtime
/// API) and timed until its first `GET /runtime/invocation/next`, i.e.
/// after its configuration, SDK clients and use cases are built.
async fn coldstart(args: &Args) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    eprintln!(
        "coldstart: {} starts per function from {}",
        args.starts,
        args.bin_dir.display()
    );
    println!(
        "Function binaries and cold initialisation (process start → first Runtime API poll, {} starts each):",
        args.starts
    );
    println!();
    println!("| function | arm64 bootstrap | host binary | init p50 | init max |");
    println!("|---|---:|---:|---:|---:|");
    let endpoint = agentwire_e2e::endpoint();
    for f in FUNCTIONS {
        let bin = release_bin(&args.bin_dir, f, &format!("agentwire-fn-{f}"))?;
        let size = |p: &std::path::Path| {
            std::fs::metadata(p)
                .map(|m| format!("{:.1} MiB", m.len() as f64 / 1048576.0))
                .unwrap_or_else(|_| "not built".into())
        };
        let arm = size(&args.lambda_dir.join(f).join("bootstrap"));
        let mut took = Vec::with_capacity(args.starts);
        for _ in 0..args.starts {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let api = listener.local_addr().map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let mut child = tokio::process::Command::new(&bin)
                .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
                .env("AWS_LAMBDA_FUNCTION_NAME", f)
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("AGENTWIRE_JWT_SECRET", "bench-secret-of-at-least-32-bytes!")
                .env(
                    "AGENTWIRE_EVENTS_QUEUE_URL",
                    format!("{endpoint}/000000000000/agentwire-events.fifo"),
                )
                .env(
                    "AGENTWIRE_EVENTS_DLQ_URL",
                    format!("{endpoint}/000000000000/agentwire-events-dlq.fifo"),
                )
                .env(
                    "AGENTWIRE_WEBHOOK_QUEUE_URL",
                    format!("{endpoint}/000000000000/agentwire-webhooks"),
                )
                .env(
                    "AGENTWIRE_WEBHOOK_DLQ_URL",
                    format!("{endpoint}/000000000000/agentwire-webhooks-dlq"),
                )
                .env("AGENTWIRE_CONNECTIONS_ENDPOINT", "http://127.0.0.1:9")
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let polled = tokio::time::timeout(Duration::from_secs(10), async {
                let (mut sock, _) = listener.accept().await.map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 2048];
                let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                if head.contains("/runtime/invocation/next") {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected first request: {}",
                        head.lines().next().unwrap_or("")
                    ))
                }
            })
            .await;
            let elapsed = t0.elapsed();
            let _ = child.kill().await;
            match polled {
                Ok(Ok(())) => took.push(elapsed),
                Ok(Err(e)) => return Err(format!("{f}: {e}")),
                Err(_) => {
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err).await;
                    }
                    return Err(format!("{f} did not poll within 10 s: {}", err.trim()));
                }
            }
        }
        took.sort();
        println!(
            "| {f} | {arm} | {} | {} | {} |",
            size(&bin),
            ms(pct(&took, 0.5)),
            ms(*took.last().unwrap_or(&Duration::ZERO))
        );
    }
    Ok(())
}
