//! Publish-to-all beside the AWS sample chat app's `sendmessage` handler
//! (aws-samples/simple-websockets-chat-app), run in Node by
//! `bench/chat-sample/run.mjs` from a checkout given with `--chat-sample`
//! (its code stays outside the project). Both post through the same dev
//! gateway to the same clients, in one run, alternating event by event:
//! agentwire from the events queue through the dispatcher (sequenced and
//! persisted), the sample from a `Scan` of its connections table.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::crowd::{Receipts, Target, receipt_key, to_all};
use crate::{ms, pct};

/// One harness process: the sample's handler on one connections table.
struct Sample {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Sample {
    async fn start(sample: &std::path::Path, table: &str, domain: &str) -> Result<Self, String> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chat-sample/run.mjs");
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .args(["--sample", &sample.display().to_string()])
            .args(["--table", table, "--domain", domain, "--stage", "local"])
            .env("AWS_ENDPOINT_URL", agentwire_e2e::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("node {}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let mut s = Self {
            child,
            stdin,
            stdout,
        };
        let ready = s.line().await?;
        if ready.get("ready").is_none() {
            return Err(format!("harness did not start: {ready}"));
        }
        Ok(s)
    }

    async fn line(&mut self) -> Result<serde_json::Value, String> {
        let l = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .map_err(|_| "harness silent for 120 s".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("harness ended")?;
        serde_json::from_str(&l).map_err(|e| format!("{e}: {l}"))
    }

    /// Sends one message through the handler; the handler's own time.
    async fn send(&mut self, data: &str) -> Result<f64, String> {
        let line = serde_json::json!({ "data": data }).to_string() + "\n";
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let out = self.line().await?;
        if out["status"] != 200 {
            return Err(format!("the sample answered {out}"));
        }
        Ok(out["ms"].as_f64().unwrap_or(0.0))
    }
}

async fn connections_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
    ids: &[String],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{name}: {e}");
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("connectionId")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| err(&e))?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("connectionId")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| err(&e))?,
        )
        .send()
        .await
        .map_err(|e| err(&aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    for id in ids {
        ddb.put_item()
            .table_name(name)
            .item("connectionId", AttributeValue::S(id.clone()))
            .send()
            .await
            .map_err(|e| err(&aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// Rows for the report: agentwire and the sample at 100 and 1,000
/// subscribers, `ROUNDS` events each, alternating.
pub async fn compare(
    target: &Target,
    sample: &std::path::Path,
    ids: &[String],
    receipts: &mut Receipts,
    crowd_seq: &mut u64,
) -> Result<Vec<String>, String> {
    const ROUNDS: usize = 20;
    let stack = target
        .stack()
        .ok_or("the chat sample runs beside the in-process gateway")?;
    target
        .settings(
            0,
            agentwire_core::usecases::FanoutPolicy::default().threshold,
        )
        .await;
    let ddb = stack.ddb();
    let run = std::process::id();
    let domain = stack.gateway.addr().to_string();
    let mut rows = vec![];
    let mut c100_seq = 0;
    let mut sample_seq = 0;
    for (n, channel) in [(100usize, "c100"), (ids.len(), "crowd")] {
        let table = format!("chat-sample-{run}-{n}");
        connections_table(&ddb, &table, &ids[..n]).await?;
        let mut s = Sample::start(sample, &table, &domain).await?;
        let (mut ours, mut theirs, mut handler) = (vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            let seq = if channel == "c100" {
                &mut c100_seq
            } else {
                &mut *crowd_seq
            };
            let (p50, _) = to_all(target, receipts, channel, seq, n, 1).await;
            ours.push(p50);
            sample_seq += 1;
            let frame =
                serde_json::json!({"type": "event", "channel": "sample", "seq": sample_seq})
                    .to_string();
            let t0 = Instant::now();
            handler.push(s.send(&frame).await?);
            let key = receipt_key("sample", sample_seq);
            receipts.wait(key..=key, n).await;
            theirs.push(t0.elapsed());
        }
        let _ = s.child.kill().await;
        let _ = ddb.delete_table().table_name(&table).send().await;
        ours.sort();
        theirs.sort();
        handler.sort_by(f64::total_cmp);
        rows.push(format!(
            "Publish → all received, {n} subscribers, {ROUNDS} events each, alternating: agentwire p50 {} (p95 {}), AWS sample chat app sendmessage p50 {} (p95 {}; its handler alone p50 {:.1} ms)",
            ms(pct(&ours, 0.5)),
            ms(pct(&ours, 0.95)),
            ms(pct(&theirs, 0.5)),
            ms(pct(&theirs, 0.95)),
            handler[handler.len() / 2]
        ));
    }
    Ok(rows)
}
