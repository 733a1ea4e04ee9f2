//! `--only canary`: the canary's probe (connect, HTTP publish, receive,
//! reconnect and resume; `agentwire_fn_canary`) against the dev gateway,
//! `--canary-probes` times in a row: how long a client's round trip and
//! resume take on the local stack, as the deployed canary measures them
//! every minute.

use std::time::{Duration, Instant};

use agentwire_e2e::Stack;

use crate::{ms, pct};

pub async fn canary(probes: usize) -> Result<(), String> {
    let stack = Stack::start().await;
    let canary = stack.canary();
    let (mut round, mut resume, mut whole) = (vec![], vec![], vec![]);
    let mut failed = 0;
    for _ in 0..probes {
        let started = Instant::now();
        match canary.probe().await {
            Ok(p) => {
                round.push(p.latency);
                resume.push(p.resume);
                whole.push(started.elapsed());
            }
            Err(e) => {
                eprintln!("agentwire-bench: canary: {e}");
                failed += 1;
            }
        }
    }
    stack.shutdown().await;
    if round.is_empty() {
        return Err(format!("all {probes} probes failed"));
    }
    for v in [&mut round, &mut resume, &mut whole] {
        v.sort();
    }
    println!("The canary's probe on the dev gateway, {probes} in a row ({failed} failed):");
    println!();
    println!("| measure | p50 | p95 | p99 |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, v: &[Duration]| {
        println!(
            "| {name} | {} | {} | {} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.95)),
            ms(pct(v, 0.99))
        );
    };
    row(
        "HTTP publish to the live client receiving it (`canary_latency_ms`)",
        &round,
    );
    row(
        "reconnect to the replayed event (`canary_resume_ms`)",
        &resume,
    );
    row("the whole probe (two connections, two publishes)", &whole);
    println!();
    Ok(())
}
