//! Reads are bounded by bytes and never parse event data: a channel of
//! 1,000 events of 96 KiB of the costliest JSON there is (deep arrays,
//! small numbers, escapes) replays from seq 0 and reads its whole history
//! over HTTP, and the peak memory that adds to this process (the dev
//! gateway runs in it) stays under a bound. Measured with a counting
//! allocator, the only test of its binary so that nothing else allocates
//! meanwhile. `agentwire-bench-memory` compares it with parsing the data.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use agentwire_e2e::Stack;
use agentwire_e2e::hostile::{history_all, replay_all, seed};
use peak_alloc::PeakAlloc;

#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

/// Events on the channel, each about 96 KiB of JSON.
const EVENTS: u64 = 1000;

/// What a replay from seq 0, or a whole history walk, may add to the
/// process at its peak (measured: about 6 and 14 MiB). Parsing the data
/// of one replay page (250 events), as reads did before, takes hundreds
/// of MB (see docs/benchmarks.md).
const BOUND: usize = 32 << 20;

/// The peak since the last reset, above what was held at the reset.
fn added(base: usize) -> usize {
    PEAK.peak_usage().saturating_sub(base)
}

fn reset() -> usize {
    PEAK.reset_peak_usage();
    PEAK.current_usage()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worst_case_channel_replays_and_reads_its_history_in_bounded_memory() {
    let stack = Stack::start().await;
    let ch = "hostile";
    let state = seed(&stack, ch, EVENTS).await;
    assert_eq!(state.head, EVENTS);

    let base = reset();
    let joins = replay_all(&stack, ch, &state).await;
    let replay_peak = added(base);
    println!(
        "replay of {EVENTS} worst-case events from seq 0: {joins} joins, peak added {} KiB",
        replay_peak >> 10
    );

    let base = reset();
    let pages = history_all(&stack, ch, EVENTS).await;
    let history_peak = added(base);
    println!(
        "history of {EVENTS} worst-case events: {pages} pages, peak added {} KiB",
        history_peak >> 10
    );

    assert!(replay_peak < BOUND, "replay added {replay_peak} bytes");
    assert!(history_peak < BOUND, "history added {history_peak} bytes");
    stack.shutdown().await;
}
