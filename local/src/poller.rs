//! The SQS event source: long-polls the events queue, invokes the dispatcher
//! with real `SqsEvent` batches, deletes what succeeded and leaves the
//! reported failures for redelivery after the visibility timeout, as Lambda's
//! event source mapping with `ReportBatchItemFailures` does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use futures::StreamExt;
use tokio::sync::watch;

use crate::function;
use crate::{App, GatewayError, events};

/// The queue as the event source mapping knows it.
pub(crate) struct Source {
    url: String,
    arn: String,
    region: String,
}

impl Source {
    pub(crate) async fn resolve(sqs: &Client, url: &str) -> Result<Self, GatewayError> {
        let out = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| GatewayError::Queue {
                url: url.to_owned(),
                reason: DisplayErrorContext(&e).to_string(),
            })?;
        let arn = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_owned();
        Ok(Self {
            url: url.to_owned(),
            arn,
            region,
        })
    }
}

/// Which function a queue drives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Dispatcher,
    Webhook,
    Fanout,
}

impl Target {
    /// The function whose role Lambda's event source polls with.
    fn function(self) -> &'static str {
        match self {
            Target::Dispatcher => "dispatcher",
            Target::Webhook => "webhook",
            Target::Fanout => "fanout",
        }
    }

    /// Messages per invocation: the template's `BatchSize` for the fan-out
    /// function (one job each, so jobs spread over invocations), else all
    /// of a receive.
    fn batch_size(self) -> usize {
        match self {
            Target::Fanout => 1,
            Target::Dispatcher | Target::Webhook => 10,
        }
    }
}

/// One invocation: the message ids to leave on the queue (all of them when
/// the invocation itself failed, as Lambda returns the whole batch).
async fn invoke(app: Arc<App>, target: Target, event: SqsEvent) -> HashSet<String> {
    let ids: HashSet<String> = event
        .records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    let f = &app.functions;
    let result = match (target, &f.webhook, &f.fanout) {
        (Target::Dispatcher, _, _) => {
            function::scope("dispatcher", f.dispatcher.handle(event)).await
        }
        (Target::Webhook, Some(w), _) => function::scope("webhook", w.handle(event)).await,
        (Target::Fanout, _, Some(fan)) => function::scope("fanout", fan.handle(event)).await,
        (Target::Webhook, None, _) | (Target::Fanout, _, None) => return ids,
    };
    match result {
        Ok(resp) => resp
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        Err(e) => {
            tracing::error!(?target, error = %e, "invocation failed; the batch will be redelivered");
            ids
        }
    }
}

pub(crate) async fn run(
    sqs: Client,
    source: Arc<Source>,
    target: Target,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    mut enabled: watch::Receiver<bool>,
    paused: Option<watch::Sender<bool>>,
) {
    let wait = i32::try_from(app.options.poll_wait.as_secs())
        .unwrap_or(20)
        .clamp(0, 20);
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            break;
        }
        if !*enabled.borrow() {
            // Nothing is under way any more: say so to whoever disabled it.
            if let Some(p) = &paused {
                let _ = p.send(true);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = enabled.wait_for(|e| *e) => {
                    if let Some(p) = &paused {
                        let _ = p.send(false);
                    }
                    continue;
                }
            }
        }
        let receive = sqs
            .receive_message()
            .queue_url(&source.url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        // A receive under way is never abandoned: the endpoint would still
        // hand it messages, which would then stay invisible for the queue's
        // visibility timeout (and hold up their FIFO group). It ends within
        // `poll_wait`; what it brings is processed like any batch, and the
        // stop is honoured at the top of the next round, as a Lambda event
        // source finishes the invocation it started.
        let out = function::scope(target.function(), receive).await;
        let messages = match out {
            Ok(o) => {
                backoff = Duration::from_millis(200);
                o.messages.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(queue = %source.url, error = %DisplayErrorContext(&e), "receive failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        if matches!(
            (target, &app.functions.webhook, &app.functions.fanout),
            (Target::Webhook, None, _) | (Target::Fanout, _, None)
        ) {
            break;
        }
        // One receive, split into invocations of `batch_size` messages, up
        // to `fanout_pollers` of them at once (the function's
        // concurrency). The next receive waits for them: a long poll
        // beside messages in flight makes moto spin.
        let concurrency = match target {
            Target::Fanout => app.options.fanout_pollers.max(1),
            Target::Dispatcher | Target::Webhook => 1,
        };
        let mut batches = messages
            .chunks(target.batch_size())
            .map(|batch| events::sqs_batch(batch, &source.arn, &source.region))
            .collect::<Vec<SqsEvent>>()
            .into_iter();
        let mut failed: HashSet<String> = HashSet::new();
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < concurrency {
                let Some(event) = batches.next() else { break };
                running.push(invoke(app.clone(), target, event));
            }
            match running.next().await {
                Some(f) => failed.extend(f),
                None => break,
            }
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.message_id().is_some_and(|id| !failed.contains(id)))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !failed.is_empty() {
            tracing::warn!(
                count = failed.len(),
                "messages reported as failed stay on the queue for redelivery"
            );
        }
        if entries.is_empty() {
            continue;
        }
        let delete = sqs
            .delete_message_batch()
            .queue_url(&source.url)
            .set_entries(Some(entries))
            .send();
        match function::scope(target.function(), delete).await {
            Ok(o) if !o.failed().is_empty() => {
                tracing::warn!(
                    failed = o.failed().len(),
                    "some processed messages could not be deleted; they will be redelivered and deduplicated"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "delete failed; processed messages will be redelivered and deduplicated")
            }
        }
    }
}
