//! `--only quotas`: what the quotas cost the HTTP publish path, side by
//! side in one run: POST → 202 latency and DynamoDB calls per publish for
//! a tenant with no limits, with a tenant publish rate (one bucket), and
//! with a tenant and a channel rate (two buckets, taken concurrently).
//! The rates (1000/s) are above what the bench sends, so nothing is
//! refused: this is the cost of checking, not of refusing. Each instance
//! leases 50 tokens a write at that rate, and a lease lives a second, so
//! the calls per publish depend on how fast one tenant publishes.

use std::time::Duration;

use agentwire_core::clock::{Clock, SystemClock};
use agentwire_core::limits::TenantLimits;
use agentwire_core::ports::LimitSettings;
use agentwire_e2e::Stack;
use serde_json::json;
use tokio::time::Instant;

use crate::{counted, ms, pct};

struct Setting {
    name: &'static str,
    tenant: String,
    token: String,
    limits: Option<TenantLimits>,
}

pub async fn quotas(n: usize) {
    eprintln!("quotas: {n} HTTP publishes per setting, interleaved");
    let stack = Stack::start_with(counted()).await;
    let setting = |name: &'static str, suffix: &str, limits: Option<TenantLimits>| {
        let tenant = format!("{}-{suffix}", stack.tenant);
        let token = stack.token_of(
            &tenant,
            "bench",
            &[],
            &["*"],
            SystemClock.epoch_s(),
            Duration::from_secs(3600),
        );
        Setting {
            name,
            tenant,
            token,
            limits,
        }
    };
    let settings = [
        setting("no limits", "none", None),
        setting(
            "tenant rate (1 bucket)",
            "tenant",
            Some(TenantLimits {
                publish_rate: Some(1000),
                ..Default::default()
            }),
        ),
        setting(
            "tenant + channel rate (2 buckets)",
            "both",
            Some(TenantLimits {
                publish_rate: Some(1000),
                channel_publish_rate: Some(1000),
                ..Default::default()
            }),
        ),
    ];
    let limits = stack.limits();
    for s in &settings {
        if let Some(l) = &s.limits
            && let Err(e) = limits.put(&s.tenant, l).await
        {
            eprintln!("quotas: cannot set the limits of {}: {e}", s.tenant);
            return;
        }
    }
    let body = json!({"kind": "status", "data": {"bench": true}});
    // Warm each tenant (its limits read and cached, its bucket created).
    for s in &settings {
        assert_eq!(stack.post_event(&s.token, "q", &body).await.0, 201);
    }
    let mut took: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); settings.len()];
    for _ in 0..n {
        for (i, s) in settings.iter().enumerate() {
            let t0 = Instant::now();
            let (status, _, answer) = stack.post_event(&s.token, "q", &body).await;
            assert_eq!(status, 202, "{answer}");
            took[i].push(t0.elapsed());
        }
    }
    // Calls, one setting at a time (the publish function's own).
    let mut calls = Vec::with_capacity(settings.len());
    let per_setting = n.min(100);
    for s in &settings {
        stack.calls.reset();
        for _ in 0..per_setting {
            assert_eq!(stack.post_event(&s.token, "q", &body).await.0, 201);
        }
        let by_op: Vec<String> = stack
            .calls
            .by_function()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("publish:").map(|op| format!("{op} {v}")))
            .collect();
        let total: u64 = stack
            .calls
            .by_function()
            .iter()
            .filter(|(k, _)| k.starts_with("publish:"))
            .map(|(_, v)| v)
            .sum();
        calls.push((by_op.join(", "), total as f64 / per_setting as f64));
    }
    println!(
        "The HTTP publish path with quotas ({n} publishes per setting, interleaved; POST → 202):"
    );
    println!();
    println!(
        "| setting | p50 | p95 | vs no limits (p50) | DynamoDB calls per publish | calls by operation ({per_setting} publishes) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let base = {
        let mut t = took[0].clone();
        t.sort();
        pct(&t, 0.5)
    };
    for ((s, t), (ops, per)) in settings.iter().zip(took.iter_mut()).zip(&calls) {
        t.sort();
        let p50 = pct(t, 0.5);
        println!(
            "| {} | {} | {} | {:+.1}% | {per:.2} | {} |",
            s.name,
            ms(p50),
            ms(pct(t, 0.95)),
            (p50.as_secs_f64() / base.as_secs_f64().max(1e-9) - 1.0) * 100.0,
            if ops.is_empty() { "none" } else { ops },
        );
    }
    stack.shutdown().await;
}
