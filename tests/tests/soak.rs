//! The chaos soak, short: three channels, followers in Rust, TypeScript,
//! Python and Go, 40 events a channel over HTTP and the queue, every
//! connection dropped once, the gateway restarted once, poison messages,
//! and faults on every AWS call path of the functions and on
//! `@connections` while publishing. Nothing lost, nothing twice, in order;
//! the DLQ holds the poison only.
//!
//! It needs the clients' toolchains (node with `npm ci` done in
//! clients/ts, the Python venv, Go), so `scripts/test` runs it after
//! installing them: `cargo test -p agentwire-e2e --test soak -- --ignored`.
//! `agentwire-bench --only soak` is the long version.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use agentwire_e2e::soak::{SoakOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the client toolchains; scripts/test runs it after installing them"]
async fn a_short_chaos_soak_loses_nothing() {
    let report = run(&SoakOptions::short())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.table());
    let problems = report.problems();
    assert!(problems.is_empty(), "{problems:#?}\n{}", report.table());
    assert!(
        report.faults.values().sum::<u64>() > 0,
        "faults were injected: {:?}",
        report.faults
    );
    assert!(report.poison > 0 && report.followers.len() >= 6);
}
