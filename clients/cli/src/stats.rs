//! `agentwire stats`: the dev gateway's `GET /metrics`, or a deployed
//! stack's CloudWatch metrics (`--stack`), as a table:
//! connections (open, their duration), joins and resumes (the share that
//! recovered everything), gaps sent, events in and out (totals and per
//! second over the sample interval), delivery latency p50/p95/p99 per path,
//! the canary's probes when it runs, and every kind of error.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dev gateway's HTTP address.
    #[arg(
        long,
        env = "AGENTWIRE_HTTP_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Time between the two samples the rates are computed from.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// A deployed stack: read its metrics from CloudWatch (namespace
    /// `agentwire/<STACK>`) instead of a dev gateway.
    #[arg(long, env = "AGENTWIRE_STACK")]
    stack: Option<String>,
    /// The CloudWatch namespace, when not `agentwire/<STACK>`.
    #[arg(long, requires = "stack")]
    namespace: Option<String>,
    /// With `--stack`: the window read, ending now (totals over it, rates
    /// per second of it, percentiles of it; the open connections' latest
    /// minute).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    since: Duration,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

/// One scrape: each sample by name, with its labels rendered as text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrape {
    samples: BTreeMap<String, Vec<(String, f64)>>,
}

impl Scrape {
    /// Parses Prometheus text format (comments and malformed lines skipped).
    pub fn parse(text: &str) -> Self {
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let name = name.strip_suffix("_total").unwrap_or(name);
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels.to_owned(), value));
        }
        Scrape { samples }
    }

    /// CloudWatch's values as one scrape: a counter's sums added over the
    /// functions that emit it, a level's and a distribution's percentiles
    /// the largest of theirs (`p95` as `quantile="0.95"`), the labels
    /// rendered as Prometheus renders them (without `function`).
    pub fn from_cloudwatch(values: &[agentwire_aws::cloudwatch::MetricValue]) -> Self {
        let mut merged: BTreeMap<(String, String), f64> = BTreeMap::new();
        for v in values {
            let mut labels: Vec<String> = v
                .dimensions
                .iter()
                .filter(|(k, _)| k != "function")
                .map(|(k, val)| format!("{k}=\"{val}\""))
                .collect();
            labels.sort();
            if let Some(p) = v.stat.strip_prefix('p') {
                let q = p.parse::<f64>().map(|p| p / 100.0).unwrap_or(0.0);
                labels.push(format!("quantile=\"{q}\""));
            }
            let key = (v.name.clone(), labels.join(","));
            let slot = merged.entry(key).or_insert(0.0);
            if v.stat == "Sum" {
                *slot += v.value;
            } else {
                *slot = slot.max(v.value);
            }
        }
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for ((name, labels), value) in merged {
            samples.entry(name).or_default().push((labels, value));
        }
        Scrape { samples }
    }

    /// The sum of a counter over its labels (0 when absent).
    pub fn total(&self, name: &str) -> f64 {
        self.samples
            .get(name)
            .map_or(0.0, |v| v.iter().map(|(_, x)| x).sum())
    }

    /// A summary's quantile (`q` as rendered, like "0.5").
    pub fn quantile(&self, name: &str, q: &str) -> Option<f64> {
        self.quantile_of(name, q, None)
    }

    /// A summary's quantile for the series that also has `label` (like
    /// `path="direct"`), or any series when `None`.
    pub fn quantile_of(&self, name: &str, q: &str, label: Option<&str>) -> Option<f64> {
        let want = format!("quantile=\"{q}\"");
        self.samples
            .get(name)?
            .iter()
            .find(|(l, _)| {
                l.split(',').any(|p| p == want)
                    && label.is_none_or(|want| l.split(',').any(|p| p == want))
            })
            .map(|(_, v)| *v)
    }

    /// A level's value: its series without labels (CloudWatch's latest
    /// maximum), if present. The dev gateway renders a level as a summary
    /// (quantiles only): `None`.
    pub fn level(&self, name: &str) -> Option<f64> {
        self.samples
            .get(name)?
            .iter()
            .find(|(l, _)| l.is_empty())
            .map(|(_, v)| *v)
    }

    /// A counter's value for the series that has `label`.
    pub fn total_of(&self, name: &str, label: &str) -> f64 {
        self.samples.get(name).map_or(0.0, |v| {
            v.iter()
                .filter(|(l, _)| l.split(',').any(|p| p == label))
                .map(|(_, x)| x)
                .sum()
        })
    }

    /// A counter's values by label set.
    pub fn by_label(&self, name: &str) -> Vec<(String, f64)> {
        self.samples.get(name).cloned().unwrap_or_default()
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    if let Some(stack) = &args.stack {
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| format!("agentwire/{stack}"));
        let sdk = crate::publish::sdk_config(args.endpoint.as_deref()).await;
        let reader = agentwire_aws::cloudwatch::CloudWatchMetrics::new(
            aws_sdk_cloudwatch::Client::new(&sdk),
        );
        let values = reader
            .read(&namespace, args.since, std::time::SystemTime::now())
            .await?;
        if values.is_empty() {
            return Err(CliError::Usage(format!(
                "no agentwire metrics in CloudWatch namespace {namespace:?} over the last {}: is the stack named {stack:?} deployed and used?",
                humantime::format_duration(args.since)
            )));
        }
        println!(
            "{namespace}, the last {} (CloudWatch):",
            humantime::format_duration(args.since)
        );
        print!(
            "{}",
            table(
                &Scrape::default(),
                &Scrape::from_cloudwatch(&values),
                args.since
            )
        );
        return Ok(());
    }
    let endpoint = format!("{}/metrics", args.url.trim_end_matches('/'));
    let first = scrape(&endpoint).await?;
    tokio::time::sleep(args.interval).await;
    let second = scrape(&endpoint).await?;
    print!("{}", table(&first, &second, args.interval));
    Ok(())
}

async fn scrape(endpoint: &str) -> Result<Scrape, CliError> {
    let http = |source| CliError::Http {
        endpoint: endpoint.to_owned(),
        source,
    };
    let resp = reqwest::get(endpoint).await.map_err(http)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(http)?;
    if status != 200 {
        return Err(CliError::Refused {
            status,
            message: text,
        });
    }
    Ok(Scrape::parse(&text))
}

/// The table: totals from the second scrape, rates from the difference.
pub fn table(first: &Scrape, second: &Scrape, interval: Duration) -> String {
    use agentwire_core::metrics as m;
    let secs = interval.as_secs_f64().max(0.001);
    let rate = |name: &str| (second.total(name) - first.total(name)).max(0.0) / secs;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
    let secs_of = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} s"));
    let open = second.level(m::CONNECTIONS_OPEN).unwrap_or_else(|| {
        second.total(m::CONNECTIONS_OPENED) - second.total(m::CONNECTIONS_CLOSED)
    });
    let resumes = second.total(m::RESUMES);
    let recovered = second.total_of(m::RESUMES, "recovered=\"true\"");
    let mut rows: Vec<(String, String)> = vec![
        ("connections open".into(), format!("{open}")),
        (
            "connections opened / closed".into(),
            format!(
                "{} / {}",
                second.total(m::CONNECTIONS_OPENED),
                second.total(m::CONNECTIONS_CLOSED)
            ),
        ),
        (
            "connection duration p50 / p99".into(),
            format!(
                "{} / {}",
                secs_of(second.quantile(m::CONNECTION_DURATION, "0.5")),
                secs_of(second.quantile(m::CONNECTION_DURATION, "0.99"))
            ),
        ),
        ("joins".into(), format!("{}", second.total(m::JOINS))),
        (
            "resumes (recovered)".into(),
            if resumes > 0.0 {
                format!("{resumes} ({:.1}%)", 100.0 * recovered / resumes)
            } else {
                "0".into()
            },
        ),
        (
            "gaps sent".into(),
            format!("{}", second.total(m::GAPS_SENT)),
        ),
        (
            "events published".into(),
            format!(
                "{} ({:.1}/s)",
                second.total(m::EVENTS_PUBLISHED),
                rate(m::EVENTS_PUBLISHED)
            ),
        ),
        (
            "events committed".into(),
            format!(
                "{} ({:.1}/s)",
                second.total(m::EVENTS_COMMITTED),
                rate(m::EVENTS_COMMITTED)
            ),
        ),
        (
            "frames posted".into(),
            format!(
                "{} ({:.1}/s)",
                second.total(m::FRAMES_POSTED),
                rate(m::FRAMES_POSTED)
            ),
        ),
    ];
    for path in ["direct", "queue"] {
        let label = format!("path=\"{path}\"");
        let q = |q: &str| ms(second.quantile_of(m::DELIVERY_LATENCY, q, Some(&label)));
        rows.push((
            format!("delivery latency p50 / p95 / p99, {path}"),
            format!("{} / {} / {}", q("0.5"), q("0.95"), q("0.99")),
        ));
    }
    rows.push((
        "fan-out duration p99".into(),
        ms(second.quantile(m::FANOUT_DURATION, "0.99")),
    ));
    let runs = second.total(m::CANARY_RUNS);
    if runs > 0.0 {
        let ok = second.total_of(m::CANARY_RUNS, "outcome=\"ok\"");
        rows.push((
            "canary probes passed".into(),
            format!("{ok} of {runs} ({:.1}%)", 100.0 * ok / runs),
        ));
        rows.push((
            "canary round trip p50 / p95, resume p50".into(),
            format!(
                "{} / {}, {}",
                ms(second.quantile(m::CANARY_LATENCY, "0.5")),
                ms(second.quantile(m::CANARY_LATENCY, "0.95")),
                ms(second.quantile(m::CANARY_RESUME, "0.5"))
            ),
        ));
    }
    for name in [m::POSTS_GONE, m::POSTS_THROTTLED, m::POSTS_FAILED] {
        rows.push((name.replace('_', " "), format!("{}", second.total(name))));
    }
    for name in [
        m::WEBHOOK_ATTEMPTS,
        m::DEAD_LETTERED,
        m::RATE_LIMITED,
        m::RATE_LIMITED_DRY_RUN,
    ] {
        let parts = second.by_label(name);
        let text = if parts.is_empty() {
            "0".to_owned()
        } else {
            parts
                .iter()
                .map(|(l, v)| format!("{v} {}", l.replace('"', "")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.push((name.replace('_', " "), text));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE events_committed counter
events_committed 10
events_published{path="http"} 7
events_published{path="library"} 5
connections_opened 4
connections_closed 1
resumes{recovered="true"} 9
resumes{recovered="false"} 1
rate_limited{scope="tenant"} 3
delivery_latency_ms{path="direct",quantile="0.5"} 12.5
delivery_latency_ms{path="direct",quantile="0.95"} 30
delivery_latency_ms{path="direct",quantile="0.99"} 40
delivery_latency_ms_sum 100
delivery_latency_ms_count 8
canary_runs{outcome="ok"} 3
canary_runs{outcome="publish"} 1
canary_latency_ms{quantile="0.5"} 21
"#;

    #[test]
    fn a_scrape_is_read_and_tabled() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.total("events_published"), 12.0);
        assert_eq!(s.quantile("delivery_latency_ms", "0.99"), Some(40.0));
        assert_eq!(
            s.quantile_of("delivery_latency_ms", "0.95", Some("path=\"direct\"")),
            Some(30.0)
        );
        assert_eq!(s.level("connections_open"), None, "a summary here");
        let before = Scrape::parse("events_committed 4\n");
        let t = table(&before, &s, Duration::from_secs(2));
        assert!(t.contains("events committed"), "{t}");
        assert!(t.contains("10 (3.0/s)"), "{t}");
        assert!(
            t.contains("connections open  ") || t.contains("connections open "),
            "{t}"
        );
        assert!(t.contains("12.5 ms / 30.0 ms / 40.0 ms"), "{t}");
        assert!(t.contains("10 (90.0%)"), "{t}");
        assert!(t.contains("3 of 4 (75.0%)"), "{t}");
        assert!(t.contains("21.0 ms / -, -"), "{t}");
        assert!(t.contains("3 scope=tenant"), "{t}");
    }

    #[test]
    fn cloudwatch_values_become_one_scrape() {
        use agentwire_aws::cloudwatch::MetricValue;
        let v = |name: &str, dims: &[(&str, &str)], stat: &str, value: f64| MetricValue {
            name: name.into(),
            dimensions: dims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            stat: stat.into(),
            value,
        };
        let s = Scrape::from_cloudwatch(&[
            v(
                "connections_closed",
                &[("function", "disconnect")],
                "Sum",
                3.0,
            ),
            v("connections_closed", &[("function", "fanout")], "Sum", 2.0),
            v(
                "connections_open",
                &[("function", "connect")],
                "Maximum",
                7.0,
            ),
            v(
                "connections_open",
                &[("function", "disconnect")],
                "Maximum",
                6.0,
            ),
            v(
                "delivery_latency_ms",
                &[("function", "publish"), ("path", "direct")],
                "p95",
                31.0,
            ),
            v(
                "delivery_latency_ms",
                &[("function", "fanout"), ("path", "direct")],
                "p95",
                44.0,
            ),
            v(
                "delivery_latency_ms",
                &[("function", "dispatcher"), ("path", "queue")],
                "p50",
                20.0,
            ),
        ]);
        assert_eq!(s.total("connections_closed"), 5.0, "summed over functions");
        assert_eq!(s.level("connections_open"), Some(7.0), "the largest level");
        assert_eq!(
            s.quantile_of("delivery_latency_ms", "0.95", Some("path=\"direct\"")),
            Some(44.0),
            "the worst function's percentile"
        );
        assert_eq!(
            s.quantile_of("delivery_latency_ms", "0.5", Some("path=\"queue\"")),
            Some(20.0)
        );
        let t = table(&Scrape::default(), &s, Duration::from_secs(900));
        let direct = t
            .lines()
            .find(|l| l.starts_with("delivery latency p50 / p95 / p99, direct"))
            .unwrap();
        assert!(direct.ends_with("  - / 44.0 ms / -"), "{t}");
    }
}
