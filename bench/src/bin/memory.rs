//! `agentwire-bench-memory`: what reading a channel of hostile data costs
//! in memory, before and after reads stopped parsing event data. One
//! channel of 1,000 events of 96 KiB of the costliest JSON (deep arrays,
//! small numbers, escapes) on the local stack; each figure is the peak
//! this process adds (the dev gateway runs in it), from a counting
//! allocator. Prints a Markdown table for `docs/benchmarks.md`.
//!
//! Before: the events of one replay page (250) and of one history page
//! (1,000) held with their data parsed, as the log adapter returned them.
//! After: a whole replay from seq 0 and a whole history walk through the
//! gateway as it is.

// A benchmark that sees a lost or misordered event must stop loudly.
#![allow(clippy::panic)]

use std::process::ExitCode;

use agentwire_aws::DynamoLog;
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::{ChannelLog, ReadBudget};
use agentwire_e2e::Stack;
use agentwire_e2e::hostile::{history_all, replay_all, seed};
use peak_alloc::PeakAlloc;
use serde_json::Value;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

const EVENTS: u64 = 1000;

fn reset() -> usize {
    PEAK.reset_peak_usage();
    PEAK.current_usage()
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The peak added by holding `n` events from seq 1 with their data
/// parsed, as a read did before.
async fn parsed(log: &DynamoLog, key: &ChannelKey, n: usize) -> usize {
    let base = reset();
    let events = log
        .read_range(key, 1, EVENTS, ReadBudget::events(n))
        .await
        .unwrap_or_else(|e| panic!("read: {e}"));
    let trees: Vec<Value> = events.iter().map(|e| e.data.value()).collect();
    assert_eq!(trees.len(), n);
    let peak = PEAK.peak_usage().saturating_sub(base);
    drop((events, trees));
    peak
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    if let Err(msg) = agentwire_e2e::check_endpoint(&agentwire_e2e::endpoint()).await {
        eprintln!("agentwire-bench-memory: {msg}");
        return ExitCode::FAILURE;
    }
    let stack = Stack::start().await;
    let ch = "hostile";
    eprintln!("storing {EVENTS} events of 96 KiB…");
    let state = seed(&stack, ch, EVENTS).await;
    let log = DynamoLog::new(
        stack.ddb(),
        stack.config.tables.clone(),
        stack.clock.clone(),
    );
    let key = ChannelKey::new(&stack.tenant, ch);

    eprintln!("before: parsing a replay page and a history page…");
    let replay_before = parsed(&log, &key, 250).await;
    let history_before = parsed(&log, &key, 1000).await;

    eprintln!("after: a replay from seq 0 and a history walk…");
    let base = reset();
    let joins = replay_all(&stack, ch, &state).await;
    let replay_after = PEAK.peak_usage().saturating_sub(base);
    let base = reset();
    let pages = history_all(&stack, ch, EVENTS).await;
    let history_after = PEAK.peak_usage().saturating_sub(base);

    println!("Peak memory added, {EVENTS} events of 96 KiB worst-case JSON on one channel:");
    println!();
    println!(
        "| read | before: one page, data parsed | after: the whole read, data as text, byte-bounded |"
    );
    println!("|---|---:|---:|");
    println!(
        "| replay from seq 0 | {} (250 events) | {} ({joins} joins) |",
        mib(replay_before),
        mib(replay_after)
    );
    println!(
        "| history, every page | {} (1,000 events) | {} ({pages} pages) |",
        mib(history_before),
        mib(history_after)
    );
    stack.shutdown().await;
    ExitCode::SUCCESS
}
