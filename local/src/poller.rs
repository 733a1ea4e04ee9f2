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
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
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
    /// A FIFO queue, whose failed messages come back in their group's order.
    fifo: bool,
    visibility: Duration,
}

impl Source {
    pub(crate) async fn resolve(sqs: &Client, url: &str) -> Result<Self, GatewayError> {
        let out = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::FifoQueue)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
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
        let attribute = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .cloned()
                .unwrap_or_default()
        };
        Ok(Self {
            url: url.to_owned(),
            arn,
            region,
            fifo: attribute(QueueAttributeName::FifoQueue) == "true",
            visibility: Duration::from_secs(
                attribute(QueueAttributeName::VisibilityTimeout)
                    .parse()
                    .unwrap_or(30),
            ),
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

    /// The function's `Timeout` in the template.
    fn timeout(self) -> Duration {
        match self {
            Target::Dispatcher => Duration::from_secs(10),
            Target::Fanout => Duration::from_secs(30),
            Target::Webhook => agentwire_fn_webhook::DEFAULT_INVOCATION_BUDGET,
        }
    }

    /// Messages per invocation: the template's `BatchSize` for the fan-out
    /// function (one job each, so jobs spread over invocations) and the
    /// webhook function (2: the jobs one invocation's time-out fits), else
    /// all of a receive.
    fn batch_size(self) -> usize {
        match self {
            Target::Fanout => 1,
            Target::Webhook => 2,
            Target::Dispatcher => 10,
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
    let handled = async {
        match (target, &f.webhook, &f.fanout) {
            (Target::Dispatcher, _, _) => {
                Some(function::scope("dispatcher", f.dispatcher.handle(event)).await)
            }
            (Target::Webhook, Some(w), _) => {
                Some(function::scope("webhook", w.handle(event)).await)
            }
            (Target::Fanout, _, Some(fan)) => {
                Some(function::scope("fanout", fan.handle(event)).await)
            }
            (Target::Webhook, None, _) | (Target::Fanout, _, None) => None,
        }
    };
    tokio::pin!(handled);
    // Lambda would end an invocation past its Timeout; the emulation lets it
    // run on, and says so (once), so that a hang is seen.
    let result = match tokio::time::timeout(target.timeout(), &mut handled).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(?target, timeout = ?target.timeout(), message_ids = ?ids, "invocation still running past the function's Timeout");
            handled.await
        }
    };
    let Some(result) = result else {
        return ids;
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

/// What one invocation was given: its messages' ids and receipt handles.
type Receipts = Vec<(String, String)>;

/// Runs one invocation; hands back the receipts of the messages it
/// processed (not those it reported as failed, which stay on the queue for
/// redelivery after the visibility timeout).
async fn invoke_batch(
    app: Arc<App>,
    target: Target,
    event: SqsEvent,
    receipts: Receipts,
    sqs: Client,
    source: Arc<Source>,
) -> Receipts {
    let failed = invoke(app, target, event).await;
    if !failed.is_empty() {
        tracing::warn!(
            count = failed.len(),
            "messages reported as failed stay on the queue for redelivery"
        );
    }
    let (failed, processed): (Receipts, Receipts) = receipts
        .into_iter()
        .partition(|(id, _)| failed.contains(id));
    if source.fifo && !failed.is_empty() {
        tokio::spawn(redeliver_in_order(sqs, source, failed));
    }
    processed
}

/// Makes failed FIFO messages visible again after the visibility timeout,
/// all at once, as SQS does. The endpoint (moto) left to itself hands back
/// the last of several expired messages of a group first, breaking the
/// group's order (docs/benchmarks.md, "What moto changes"); a visibility
/// set by the consumer is kept in order. First the messages are held well
/// past the timeout, so the endpoint's own expiry cannot come first. These
/// calls are the emulation's, not the function's (no IAM is recorded).
async fn redeliver_in_order(sqs: Client, source: Arc<Source>, failed: Receipts) {
    let set = |seconds: u64| {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = failed
            .iter()
            .enumerate()
            .filter_map(|(i, (_, handle))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(i32::try_from(seconds).unwrap_or(i32::MAX))
                    .build()
                    .ok()
            })
            .collect();
        let (sqs, url) = (sqs.clone(), source.url.clone());
        async move {
            for chunk in entries.chunks(10) {
                if let Err(e) = sqs
                    .change_message_visibility_batch()
                    .queue_url(&url)
                    .set_entries(Some(chunk.to_vec()))
                    .send()
                    .await
                {
                    tracing::warn!(error = %DisplayErrorContext(&e), "could not change the visibility of failed messages; the endpoint's own timeout applies");
                }
            }
        }
    };
    set(source.visibility.as_secs() + 60).await;
    tokio::time::sleep(source.visibility).await;
    set(0).await;
}

/// Polls `source` and invokes `target` as Lambda's event source mapping
/// does: up to `fanout_pollers` invocations at once for the fan-out
/// function (its `MaximumConcurrency`; `/@dev/settings` may change it while
/// running), up to `webhook_pollers` for the webhook function (its
/// `MaximumConcurrency`), one at a time for the dispatcher (one FIFO
/// group's order is one invocation's). A
/// free slot is filled at once from what the last receive brought (an
/// invocation never waits for the others of its receive) or by a new
/// receive; processed messages are deleted ten at a time, and all of them
/// before the poller waits on an empty queue. Only a receive with nothing
/// under way long-polls: moto's long poll spins while messages of its
/// queue are in flight, so the others return at once.
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
    let concurrency = || match target {
        Target::Fanout => app
            .fanout_invocations
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1),
        Target::Webhook => app.options.webhook_pollers.max(1),
        Target::Dispatcher => 1,
    };
    let mut backoff = Duration::from_millis(200);
    let mut running = futures::stream::FuturesUnordered::new();
    // Received, not yet invoked.
    let mut waiting: std::collections::VecDeque<(SqsEvent, Receipts)> = Default::default();
    // Processed, not yet deleted.
    let mut done: Receipts = Vec::new();
    // When the oldest of `done` finished: none waits longer than
    // `DELETE_WITHIN` (its visibility timeout keeps running).
    let mut done_since: Option<tokio::time::Instant> = None;
    loop {
        while running.len() < concurrency() {
            let Some((event, receipts)) = waiting.pop_front() else {
                break;
            };
            // A task of its own, as each invocation is its own Lambda
            // instance: concurrent invocations use every core.
            let invocation = tokio::spawn(invoke_batch(
                app.clone(),
                target,
                event,
                receipts,
                sqs.clone(),
                source.clone(),
            ));
            running.push(async move {
                invocation.await.unwrap_or_else(|e| {
                    tracing::error!(?target, error = %e, "invocation failed; its messages will be redelivered");
                    Vec::new()
                })
            });
        }
        let idle = running.is_empty() && waiting.is_empty();
        let due = done_since.is_some_and(|t| t.elapsed() >= DELETE_WITHIN);
        if idle || done.len() >= 10 || due {
            delete(&sqs, &source, target, std::mem::take(&mut done)).await;
            done_since = None;
        }
        if idle && *stop.borrow() {
            break;
        }
        if idle && !*enabled.borrow() {
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
        if running.len() >= concurrency()
            || !waiting.is_empty()
            || *stop.borrow()
            || !*enabled.borrow()
        {
            next_finished(&mut running, &mut done, &mut done_since).await;
            continue;
        }
        let receive = sqs
            .receive_message()
            .queue_url(&source.url)
            .max_number_of_messages(10)
            .wait_time_seconds(if idle { wait } else { 0 })
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        // A receive under way is never abandoned: the endpoint would still
        // hand it messages, which would then stay invisible for the queue's
        // visibility timeout (and hold up their FIFO group). It ends within
        // `poll_wait`; what it brings is processed like any batch, and the
        // stop is honoured once nothing is under way, as a Lambda event
        // source finishes the invocations it started.
        let out = function::event_source(target.function(), receive).await;
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
            // Nothing to start now: wait for one under way to end, or look
            // again shortly, as Lambda's pollers go on polling while
            // invocations run (one that hangs must not stop the others).
            tokio::select! {
                () = next_finished(&mut running, &mut done, &mut done_since) => {}
                () = tokio::time::sleep(EMPTY_RECEIVE_AGAIN) => {}
            }
            continue;
        }
        if matches!(
            (target, &app.functions.webhook, &app.functions.fanout),
            (Target::Webhook, None, _) | (Target::Fanout, _, None)
        ) {
            break;
        }
        for batch in messages.chunks(target.batch_size()) {
            let receipts: Receipts = batch
                .iter()
                .filter_map(|m| Some((m.message_id()?.to_owned(), m.receipt_handle()?.to_owned())))
                .collect();
            waiting.push_back((
                events::sqs_batch(batch, &source.arn, &source.region),
                receipts,
            ));
        }
    }
}

/// How soon a receive that came back empty is made again while
/// invocations are under way.
const EMPTY_RECEIVE_AGAIN: Duration = Duration::from_millis(250);

/// How long a processed message may wait for the next batched delete.
const DELETE_WITHIN: Duration = Duration::from_secs(1);

/// Waits for the next invocation to end and adds what it processed to
/// `done`; gives up after what is left of `DELETE_WITHIN` when `done`
/// already holds messages, so that they are deleted in time.
async fn next_finished<F: std::future::Future<Output = Receipts>>(
    running: &mut futures::stream::FuturesUnordered<F>,
    done: &mut Receipts,
    done_since: &mut Option<tokio::time::Instant>,
) {
    let limit = done_since
        .map(|t| (t + DELETE_WITHIN).saturating_duration_since(tokio::time::Instant::now()));
    let finished = match limit {
        Some(left) => tokio::time::timeout(left, running.next())
            .await
            .ok()
            .flatten(),
        None => running.next().await,
    };
    if let Some(processed) = finished {
        if done_since.is_none() {
            *done_since = Some(tokio::time::Instant::now());
        }
        done.extend(processed);
    }
}

/// Deletes processed messages (ten at most per `DeleteMessageBatch`).
async fn delete(sqs: &Client, source: &Source, target: Target, processed: Receipts) {
    for chunk in processed.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, (_, handle))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        let delete = sqs
            .delete_message_batch()
            .queue_url(&source.url)
            .set_entries(Some(entries))
            .send();
        match function::event_source(target.function(), delete).await {
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
