//! The EMF output of one dispatcher invocation (the recorded batch on
//! in-memory ports), parsed and checked against the CloudWatch Embedded
//! Metric Format specification: the `_aws` block (an integer `Timestamp`,
//! `CloudWatchMetrics` with a `Namespace`, `Dimensions` as arrays of at
//! most 30 names, at most 100 `Metrics` each with a `Name` and a valid
//! `Unit`), every dimension and metric present at the root with a value of
//! the right type (a number, or an array of at most 100 numbers), and every
//! metric one the code declares. A test binary of its own: it installs the
//! process's global recorder.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentwire_core::clock::SystemClock;
use agentwire_core::memory::{
    MemoryDeadLetters, MemoryLog, MemoryPusher, MemoryRegistry, connection,
};
use agentwire_core::model::ChannelKey;
use agentwire_core::ports::ConnectionRegistry;
use agentwire_core::usecases::Dispatcher;
use agentwire_fn_dispatcher::DispatcherFunction;
use aws_lambda_events::sqs::SqsEvent;
use serde_json::Value;

const EVENT: &[u8] = include_bytes!("fixtures/sqs-events.json");

/// CloudWatch's metric units.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one EMF document; returns the metric names it carries.
fn validate(doc: &Value) -> Vec<String> {
    let aws = doc["_aws"].as_object().expect("an _aws object");
    assert!(aws["Timestamp"].is_u64(), "Timestamp in ms: {doc}");
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics");
    assert!(!directives.is_empty());
    let mut names = vec![];
    for d in directives {
        let ns = d["Namespace"].as_str().expect("Namespace");
        assert!(!ns.is_empty() && ns.len() <= 255, "{ns}");
        for set in d["Dimensions"].as_array().expect("Dimensions") {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30, "at most 30 dimensions: {set:?}");
            for dim in set {
                let dim = dim.as_str().expect("dimension name");
                assert!(
                    doc[dim].is_string(),
                    "dimension {dim} has a string value at the root: {doc}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().expect("Metrics");
        assert!(
            !metrics.is_empty() && metrics.len() <= 100,
            "1 to 100 metrics"
        );
        for m in metrics {
            let name = m["Name"].as_str().expect("Name");
            if let Some(unit) = m.get("Unit") {
                assert!(
                    UNITS.contains(&unit.as_str().unwrap()),
                    "{name}: unit {unit}"
                );
            }
            match &doc[name] {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(
                        !values.is_empty() && values.len() <= 100,
                        "{name}: {values:?}"
                    );
                    assert!(values.iter().all(Value::is_number), "{name}: {values:?}");
                }
                other => panic!("{name}: value {other} is neither a number nor an array"),
            }
            assert!(
                agentwire_core::metrics::find(name).is_some(),
                "{name} is not a declared metric"
            );
            names.push(name.to_owned());
        }
    }
    names
}

#[tokio::test]
async fn one_invocation_emits_valid_emf() {
    let collector = agentwire_aws::telemetry::emf_builder("agentwire/test", "dispatcher")
        .init()
        .unwrap();
    agentwire_core::metrics::describe();
    let registry = Arc::new(MemoryRegistry::default());
    let conn = connection("c1", "acme", "ana", &["agent-*"]);
    registry.put_connection(&conn).await.unwrap();
    let key = ChannelKey::new("acme", "agent-7");
    assert!(registry.subscribe(&conn, &key, u64::MAX).await.unwrap());
    let f = DispatcherFunction::with(Dispatcher::new(
        Arc::new(MemoryLog::default()),
        registry,
        Arc::new(MemoryPusher::default()),
        Arc::new(MemoryDeadLetters::default()),
        Arc::new(SystemClock),
        Duration::from_secs(3600),
        8,
    ));
    let event: SqsEvent = serde_json::from_slice(EVENT).unwrap();
    f.handle(event).await.unwrap();

    let mut out = Vec::new();
    collector.flush(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!docs.is_empty(), "one invocation emits EMF");
    let mut names = vec![];
    for doc in &docs {
        assert_eq!(doc["function"], "dispatcher", "{doc}");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "agentwire/test"
        );
        names.extend(validate(doc));
    }
    names.sort();
    // The batch: one event committed and posted, one envelope dead-lettered.
    for want in [
        "events_committed",
        "frames_posted",
        "delivery_latency_ms",
        "fanout_duration_ms",
        "dead_lettered",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let committed = docs
        .iter()
        .find_map(|d| d["events_committed"].as_u64())
        .unwrap();
    assert_eq!(committed, 1);
    let dead = docs
        .iter()
        .find(|d| d.get("dead_lettered").is_some())
        .unwrap();
    assert_eq!(dead["reason"], "invalid_event", "{dead}");
    assert_eq!(dead["dead_lettered"], 1);
    // Units as declared.
    let latency = docs
        .iter()
        .flat_map(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
        })
        .find(|m| m["Name"] == "delivery_latency_ms")
        .unwrap();
    assert_eq!(latency["Unit"], "Milliseconds");
}
