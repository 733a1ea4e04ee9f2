//! `agentwire stats --stack` against CloudWatch on the local endpoint: the
//! real binary lists and reads a stack's namespace and prints the same
//! table as for the dev gateway. The metrics are put with `PutMetricData`
//! as CloudWatch would hold them after reading the functions' EMF lines
//! (moto does not turn log lines into metrics, and computes no
//! percentiles: the p50/p95/p99 queries are exercised on AWS and by the
//! conversion's unit test).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

async fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(&agentwire_e2e::local_sdk(&endpoint()).await)
}

fn datum(name: &str, dims: &[(&str, &str)], value: f64, unit: StandardUnit) -> MetricDatum {
    let mut d = MetricDatum::builder()
        .metric_name(name)
        .value(value)
        .unit(unit)
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
            std::time::SystemTime::now(),
        ));
    for (k, v) in dims {
        d = d.dimensions(Dimension::builder().name(*k).value(*v).build());
    }
    d.build()
}

fn agentwire(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("agentwire runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reads_a_deployed_stacks_metrics_from_cloudwatch() {
    let stack = format!("stats-{}", uuid::Uuid::new_v4().simple());
    let namespace = format!("agentwire/{stack}");
    let count = StandardUnit::Count;
    // moto's GetMetricData matches a query with dimensions across every
    // namespace: function names of this run's own keep earlier runs out.
    let f = |name: &str| format!("{name}-{stack}");
    let (connect, disconnect, dispatcher, session, publish, canary) = (
        f("connect"),
        f("disconnect"),
        f("dispatcher"),
        f("session"),
        f("publish"),
        f("canary"),
    );
    let data = vec![
        datum(
            "connections_opened",
            &[("function", &connect)],
            4.0,
            count.clone(),
        ),
        datum(
            "connections_closed",
            &[("function", &disconnect)],
            1.0,
            count.clone(),
        ),
        datum(
            "connections_closed",
            &[("function", &dispatcher)],
            1.0,
            count.clone(),
        ),
        datum(
            "connections_open",
            &[("function", &connect)],
            3.0,
            count.clone(),
        ),
        datum(
            "connections_open",
            &[("function", &disconnect)],
            2.0,
            count.clone(),
        ),
        datum(
            "resumes",
            &[("function", &session), ("recovered", "true")],
            9.0,
            count.clone(),
        ),
        datum(
            "resumes",
            &[("function", &session), ("recovered", "false")],
            1.0,
            count.clone(),
        ),
        datum(
            "events_published",
            &[("function", &publish), ("path", "http")],
            600.0,
            count.clone(),
        ),
        datum(
            "canary_runs",
            &[("function", &canary), ("outcome", "ok")],
            14.0,
            count.clone(),
        ),
        datum(
            "canary_runs",
            &[("function", &canary), ("outcome", "publish")],
            1.0,
            count.clone(),
        ),
        // Not agentwire's: left out.
        datum("something_else", &[("function", &connect)], 5.0, count),
    ];
    cloudwatch()
        .await
        .put_metric_data()
        .namespace(&namespace)
        .set_metric_data(Some(data))
        .send()
        .await
        .expect("metrics put");

    let (ok, out, err) = agentwire(&["stats", "--stack", &stack, "--since", "15m"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("{namespace}, the last 15m (CloudWatch):")),
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} row in\n{out}"))
            .trim_start_matches(name)
            .trim()
            .to_owned()
    };
    assert_eq!(row("connections open "), "3", "the largest level");
    assert_eq!(
        row("connections opened / closed"),
        "4 / 2",
        "closed summed over functions"
    );
    assert_eq!(row("resumes (recovered)"), "10 (90.0%)");
    assert_eq!(
        row("events published"),
        "600 (0.7/s)",
        "600 over 15 minutes"
    );
    assert_eq!(row("canary probes passed"), "14 of 15 (93.3%)");
    assert!(!out.contains("something"), "{out}");

    // A stack without metrics: a clear error, not an empty table.
    let (ok, _, err) = agentwire(&["stats", "--stack", "no-such-stack-here"]);
    assert!(!ok);
    assert!(
        err.contains(
            "no agentwire metrics in CloudWatch namespace \"agentwire/no-such-stack-here\""
        ),
        "{err}"
    );
}
