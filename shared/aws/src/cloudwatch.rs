//! A deployed stack's metrics read back from CloudWatch (`agentwire stats
//! --stack`): every metric of the stack's namespace listed
//! (`ListMetrics`), then each read over a window (`GetMetricData`, up to
//! 500 queries a call) with the statistic its kind asks for: counters
//! summed, a level's latest minute's maximum, distributions' p50, p95 and
//! p99.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use agentwire_core::metrics::{self as m, Kind};
use agentwire_core::ports::StoreError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat, ScanBy};

use crate::error::store_error;

/// Queries one `GetMetricData` call takes at most.
const QUERIES_PER_CALL: usize = 500;

/// One value read: the metric, its dimensions (`function` and any label),
/// the statistic (`Sum`, `Maximum`, `p95`, ...) and its value over the
/// window (the latest period's, for a level).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    pub name: String,
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
    pub value: f64,
}

/// Reads a namespace's metrics.
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchMetrics {
    pub fn new(client: aws_sdk_cloudwatch::Client) -> Self {
        Self { client }
    }

    /// Every metric of `namespace` that agentwire emits, read over the
    /// `window` that ends at `end`. Metrics without data in the window are
    /// left out.
    pub async fn read(
        &self,
        namespace: &str,
        window: Duration,
        end: SystemTime,
    ) -> Result<Vec<MetricValue>, StoreError> {
        let mut listed: Vec<Metric> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_metrics()
                .namespace(namespace)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| store_error("list metrics", e))?;
            listed.extend(out.metrics().iter().cloned());
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        let window_s = i32::try_from(window.as_secs().max(60)).unwrap_or(i32::MAX) / 60 * 60;
        let mut queries: Vec<(MetricDataQuery, MetricValue)> = Vec::new();
        for metric in listed {
            let Some(known) = metric.metric_name().and_then(m::find) else {
                continue;
            };
            let (stats, period): (&[&str], i32) = match known.kind {
                Kind::Counter => (&["Sum"], window_s),
                // The level: the latest minute's maximum.
                Kind::Level => (&["Maximum"], 60),
                Kind::Histogram => (&["p50", "p95", "p99"], window_s),
            };
            let dimensions: Vec<(String, String)> = metric
                .dimensions()
                .iter()
                .map(|d| {
                    (
                        d.name().unwrap_or_default().to_owned(),
                        d.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            for stat in stats {
                let id = format!("q{}", queries.len());
                let query = MetricDataQuery::builder()
                    .id(id)
                    .metric_stat(
                        MetricStat::builder()
                            .metric(metric.clone())
                            .period(period)
                            .stat(*stat)
                            .build(),
                    )
                    .return_data(true)
                    .build();
                queries.push((
                    query,
                    MetricValue {
                        name: known.name.to_owned(),
                        dimensions: dimensions.clone(),
                        stat: (*stat).to_owned(),
                        value: 0.0,
                    },
                ));
            }
        }
        // CloudWatch rounds the start down to the minute, so the window
        // may come back as a full period and a short one up to `end`:
        // every period returned is taken (summed, or the largest), never
        // just the newest.
        let start = end
            .checked_sub(Duration::from_secs(u64::try_from(window_s).unwrap_or(60)))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        // The request's times go in whole seconds: a value stamped in the
        // current second (or by a clock a little ahead) is kept in.
        let end = end + Duration::from_secs(60);
        let mut out = Vec::new();
        for chunk in queries.chunks(QUERIES_PER_CALL) {
            let mut by_id: HashMap<String, &MetricValue> = HashMap::new();
            let mut req = self
                .client
                .get_metric_data()
                .start_time(DateTime::from(start))
                .end_time(DateTime::from(end))
                .scan_by(ScanBy::TimestampDescending);
            for (q, v) in chunk {
                by_id.insert(q.id().unwrap_or_default().to_owned(), v);
                req = req.metric_data_queries(q.clone());
            }
            let mut pages = req.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| store_error("get metric data", e))?;
                for r in page.metric_data_results() {
                    let Some(template) = r.id().and_then(|id| by_id.get(id)) else {
                        continue;
                    };
                    let values = r.values();
                    let value = match template.stat.as_str() {
                        // Newest first: a level's latest minute.
                        "Maximum" => values.first().copied(),
                        "Sum" => (!values.is_empty()).then(|| values.iter().sum()),
                        _ => values.iter().copied().reduce(f64::max),
                    };
                    if let Some(value) = value {
                        out.push(MetricValue {
                            value,
                            ..(*template).clone()
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
