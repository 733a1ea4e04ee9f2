//! The metrics every function emits, by name, through the `metrics` facade.
//! The recorder is the entry point's choice: CloudWatch Embedded Metric
//! Format in the Lambda functions (flushed per invocation), Prometheus text
//! on the dev gateway's `GET /metrics`. The dashboard and alarms in
//! `infra/template.yaml` name only metrics listed in [`ALL`] (the drift
//! test, `infra/test_metrics_drift.py`, checks it).
//!
//! Labels are few on purpose (each is a CloudWatch dimension): `path` on
//! [`EVENTS_PUBLISHED`] and [`DELIVERY_LATENCY`], `recovered` on
//! [`RESUMES`], `outcome` on [`WEBHOOK_ATTEMPTS`], `reason` on
//! [`DEAD_LETTERED`] and [`TOKENS_REFUSED`], `outcome` on [`CANARY_RUNS`], `scope` on [`RATE_LIMITED`]
//! and [`RATE_LIMITED_DRY_RUN`], `outcome` on [`JWKS_FETCHES`]. No metric is labelled by tenant, channel or
//! connection.

/// A unit of a metric, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

/// How a metric aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Summed over a period.
    Counter,
    /// A level, sampled at each change: recorded as a distribution, so a
    /// function's flush carries only the samples it took (a gauge would
    /// be sent again, stale, with every later flush); read as the latest
    /// minute's maximum.
    Level,
    /// A distribution of values (percentiles).
    Histogram,
}

/// One metric: its name, what it counts and its unit.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub help: &'static str,
    pub kind: Kind,
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
        help,
        kind: Kind::Counter,
    }
}

const fn level(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
        help,
        kind: Kind::Level,
    }
}

const fn histogram(name: &'static str, unit: Unit, help: &'static str) -> Metric {
    Metric {
        name,
        unit,
        help,
        kind: Kind::Histogram,
    }
}

pub const CONNECTIONS_OPENED: &str = "connections_opened";
pub const CONNECTIONS_CLOSED: &str = "connections_closed";
pub const CONNECTIONS_OPEN: &str = "connections_open";
pub const CONNECTION_DURATION: &str = "connection_duration_s";
pub const RESUMES: &str = "resumes";
pub const GAPS_SENT: &str = "gaps_sent";
pub const JOINS: &str = "joins";
pub const REPLAYED_EVENTS: &str = "replayed_events";
pub const EVENTS_PUBLISHED: &str = "events_published";
pub const EVENTS_COMMITTED: &str = "events_committed";
pub const COMMITS_UNAVAILABLE: &str = "commits_unavailable";
pub const FRAMES_POSTED: &str = "frames_posted";
pub const POSTS_GONE: &str = "posts_gone";
pub const POSTS_THROTTLED: &str = "posts_throttled";
pub const POSTS_FAILED: &str = "posts_failed";
pub const FANOUT_DURATION: &str = "fanout_duration_ms";
pub const DELIVERY_LATENCY: &str = "delivery_latency_ms";
pub const WEBHOOK_ATTEMPTS: &str = "webhook_attempts";
pub const DEAD_LETTERED: &str = "dead_lettered";
pub const RATE_LIMITED: &str = "rate_limited";
pub const RATE_LIMITED_DRY_RUN: &str = "rate_limited_dry_run";
pub const TOKENS_REFUSED: &str = "tokens_refused";
pub const JWKS_FETCHES: &str = "jwks_fetches";
pub const TOKENS_REFRESHED: &str = "tokens_refreshed";
pub const CONNECTIONS_REVOKED: &str = "connections_revoked";
pub const CANARY_RUNS: &str = "canary_runs";
pub const CANARY_LATENCY: &str = "canary_latency_ms";
pub const CANARY_RESUME: &str = "canary_resume_ms";

/// Every metric the code emits.
pub const ALL: &[Metric] = &[
    counter(
        CONNECTIONS_OPENED,
        "WebSocket connections accepted by $connect",
    ),
    counter(
        CONNECTIONS_CLOSED,
        "connections removed ($disconnect, a post answered Gone, a revocation)",
    ),
    level(
        CONNECTIONS_OPEN,
        "open connections of the deployment, sampled after each connect and removal (use the maximum)",
    ),
    histogram(
        CONNECTION_DURATION,
        Unit::Seconds,
        "how long a connection was open, at its removal",
    ),
    counter(
        RESUMES,
        "channels joined from a position (given or the durable cursor), by recovered (true: everything missed was replayed; false: a gap or a reset)",
    ),
    counter(
        GAPS_SENT,
        "gap frames the gateway sent (ranges a replay could not bring)",
    ),
    counter(JOINS, "channels joined (one per channel of a join)"),
    histogram(
        REPLAYED_EVENTS,
        Unit::Count,
        "events replayed by one join request",
    ),
    counter(
        EVENTS_PUBLISHED,
        "events accepted, by path (http: committed by the publish function; library: onto the events queue)",
    ),
    counter(EVENTS_COMMITTED, "events given a seq and stored in the log"),
    counter(
        COMMITS_UNAVAILABLE,
        "HTTP publishes refused with a retryable 503: the commit could not be made now",
    ),
    counter(FRAMES_POSTED, "frames posted to live connections"),
    counter(POSTS_GONE, "posts answered 410 Gone (connection closed)"),
    counter(POSTS_THROTTLED, "posts throttled by API Gateway (retried)"),
    counter(POSTS_FAILED, "posts that failed after their retries"),
    histogram(
        FANOUT_DURATION,
        Unit::Milliseconds,
        "time to post one batch's frames to every live subscriber",
    ),
    histogram(
        DELIVERY_LATENCY,
        Unit::Milliseconds,
        "from the event's ts (publish accepted) to its post to a subscriber, by path (direct: committed by the publish function; queue: by the dispatcher)",
    ),
    counter(
        WEBHOOK_ATTEMPTS,
        "webhook POSTs, by outcome (delivered, retry, failed)",
    ),
    counter(
        DEAD_LETTERED,
        "messages dead-lettered, by reason (invalid_event, commit_failed, duplicate_unresolved, webhook)",
    ),
    counter(
        RATE_LIMITED,
        "requests refused by a quota, by scope (tenant, channel, connection, connections, channels)",
    ),
    counter(
        RATE_LIMITED_DRY_RUN,
        "requests a dry-run tenant would have had refused, by scope",
    ),
    counter(
        TOKENS_REFUSED,
        "tokens refused at connect, refresh or the HTTP API, by reason (unknown_issuer, unknown_kid, wrong_algorithm, bad_signature, expired, revoked, ...)",
    ),
    counter(
        JWKS_FETCHES,
        "issuer key sets fetched, by outcome (ok, failed)",
    ),
    counter(
        TOKENS_REFRESHED,
        "connections whose token was refreshed in band",
    ),
    counter(
        CONNECTIONS_REVOKED,
        "live connections closed because their principal was revoked",
    ),
    counter(
        CANARY_RUNS,
        "canary probes, by outcome (ok, or the step that failed: connect, publish, receive, resume)",
    ),
    histogram(
        CANARY_LATENCY,
        Unit::Milliseconds,
        "the canary's HTTP publish to its client receiving the event",
    ),
    histogram(
        CANARY_RESUME,
        Unit::Milliseconds,
        "the canary's reconnect to its client receiving, by replay, the event published while it was away",
    ),
];

/// The metric named `name`, if the code emits it.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

/// Describes every metric to the installed recorder (units and help text).
pub fn describe() {
    for m in ALL {
        let unit = match m.unit {
            Unit::Count => metrics::Unit::Count,
            Unit::Milliseconds => metrics::Unit::Milliseconds,
            Unit::Seconds => metrics::Unit::Seconds,
        };
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, unit, m.help),
            Kind::Level | Kind::Histogram => metrics::describe_histogram!(m.name, unit, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cloudwatch_safe() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
        }
        assert!(
            ALL.len() <= 100,
            "an EMF document holds at most 100 metrics"
        );
        assert_eq!(find(JOINS).map(|m| m.name), Some(JOINS));
        assert!(find("nope").is_none());
    }
}
