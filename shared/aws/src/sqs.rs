//! SQS adapters: the events queue (publishing), its dead-letter sink, the
//! fan-out queue, and the webhook job queue with its dead-letter queue.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use futures::{StreamExt, TryStreamExt};

use agentwire_core::model::{DeadWebhookJob, Envelope, FanoutJob, WebhookJob};
use agentwire_core::ports::{
    DeadLetters, EventQueue, FanoutQueue, StoreError, WebhookDeadLetterQueue, WebhookJobs,
};
use agentwire_core::webhook::schedule::hop;

use crate::error::store_error;

/// A queue given as a URL is used as is; a name is looked up (`GetQueueUrl`).
pub async fn resolve_queue_url(client: &Client, name_or_url: &str) -> Result<String, StoreError> {
    if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
        return Ok(name_or_url.to_owned());
    }
    let out = client
        .get_queue_url()
        .queue_name(name_or_url)
        .send()
        .await
        .map_err(|e| store_error("find queue", e))?;
    out.queue_url().map(str::to_owned).ok_or_else(|| {
        StoreError::failed("find queue", format!("no URL for queue {name_or_url:?}"))
    })
}

/// Publishes envelopes to the FIFO events queue: group = tenant#channel
/// (order per channel; its digest when over SQS's 128 characters,
/// [`ChannelKey::group_id`](agentwire_core::model::ChannelKey::group_id)), deduplication id = the event id scoped to its
/// tenant and channel ([`ChannelKey::scoped_id`](agentwire_core::model::ChannelKey::scoped_id)):
/// the same idempotency key in another channel or tenant is another event.
/// (The template also sets `DeduplicationScope: messageGroup`.)
#[derive(Clone)]
pub struct SqsEventQueue {
    client: Client,
    queue_url: String,
}

impl SqsEventQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    async fn send(&self, envelope: &Envelope) -> Result<(), StoreError> {
        let body = serde_json::to_string(envelope)
            .map_err(|e| StoreError::failed("encode envelope", e))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(envelope.key().group_id())
            .message_deduplication_id(envelope.key().scoped_id(&envelope.id))
            .send()
            .await
            .map_err(|e| store_error("send to events queue", e))?;
        Ok(())
    }

    /// `SendMessageBatch`es in order, within SQS's limits; one refused
    /// entry fails the whole call (the caller sends the batch again with
    /// the same ids: SQS and the log drop the ones already taken).
    async fn send_batch(&self, envelopes: &[Envelope]) -> Result<(), StoreError> {
        let entries = envelopes
            .iter()
            .enumerate()
            .map(|(i, envelope)| {
                let body = serde_json::to_string(envelope)
                    .map_err(|e| StoreError::failed("encode envelope", e))?;
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_group_id(envelope.key().group_id())
                    .message_deduplication_id(envelope.key().scoped_id(&envelope.id))
                    .message_body(body)
                    .build()
                    .map_err(|e| StoreError::failed("build events batch", e))?;
                Ok(entry)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for batch in batches(entries, |e| e.message_body().len()) {
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|e| store_error("send to events queue", e))?;
            if let Some(f) = out.failed().first() {
                return Err(StoreError::Unavailable {
                    op: "send to events queue",
                    reason: format!(
                        "{} of the batch refused, first: {} {}",
                        out.failed().len(),
                        f.code(),
                        f.message().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Keeps undeliverable messages in a FIFO dead-letter queue, with the reason
/// and the original message id as message attributes.
#[derive(Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

/// The `reason` attribute: SQS attribute values are bounded, and a reason is
/// a sentence, so it is cut at 1024 characters.
fn reason_attr(reason: &str) -> Result<MessageAttributeValue, StoreError> {
    text_attr(&reason.chars().take(1024).collect::<String>())
}

fn text_attr(v: &str) -> Result<MessageAttributeValue, StoreError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(|e| StoreError::failed("build message attribute", e))
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn record(&self, message_id: &str, body: &str, reason: &str) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(if body.is_empty() { "(empty)" } else { body })
            .message_group_id("agentwire-dead-letters")
            .message_deduplication_id(message_id)
            .message_attributes("reason", reason_attr(reason)?)
            .message_attributes("source_message_id", text_attr(message_id)?)
            .send()
            .await
            .map_err(|e| store_error("send to dead-letter queue", e))?;
        Ok(())
    }
}

/// The webhook job queue (a standard queue, so a retry can carry its own
/// delay) and its dead-letter queue, whose records carry `reason`,
/// `attempts`, `last_status` and `event_id` attributes.
#[derive(Clone)]
pub struct SqsWebhookJobs {
    client: Client,
    queue_url: String,
    dlq_url: String,
}

impl SqsWebhookJobs {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }
}

#[async_trait]
impl WebhookDeadLetterQueue for SqsWebhookJobs {
    /// Received with a visibility timeout of `hold`: they reappear
    /// afterwards unless deleted. Each message is listed once, even when a
    /// short `hold` lets the queue hand it out again during the listing.
    async fn list(&self, max: usize, hold: Duration) -> Result<Vec<DeadWebhookJob>, StoreError> {
        let mut out: Vec<DeadWebhookJob> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while out.len() < max {
            let batch = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(i32::try_from((max - out.len()).min(10)).unwrap_or(10))
                .visibility_timeout(i32::try_from(hold.as_secs()).unwrap_or(30))
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| store_error("read webhook dead-letter queue", e))?;
            let fresh: Vec<_> = batch
                .messages()
                .iter()
                .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_owned()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for m in fresh {
                let reason = m
                    .message_attributes()
                    .and_then(|a| a.get("reason"))
                    .and_then(|v| v.string_value())
                    .unwrap_or_default();
                out.push(DeadWebhookJob::new(
                    m.body().unwrap_or_default(),
                    reason,
                    m.receipt_handle().unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    }

    async fn delete(&self, dead: &DeadWebhookJob) -> Result<(), StoreError> {
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(&dead.handle)
            .send()
            .await
            .map_err(|e| store_error("delete dead-lettered job", e))?;
        Ok(())
    }
}

#[async_trait]
impl WebhookJobs for SqsWebhookJobs {
    async fn schedule(&self, job: &WebhookJob, delay: Duration) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(job).map_err(|e| StoreError::failed("encode webhook job", e))?;
        let delay = i32::try_from(hop(delay).as_secs()).unwrap_or(900);
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|e| store_error("send to webhook queue", e))?;
        Ok(())
    }

    async fn dead_letter(&self, job: &WebhookJob, reason: &str) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(job).map_err(|e| StoreError::failed("encode webhook job", e))?;
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(body)
            .message_attributes("reason", reason_attr(reason)?)
            .message_attributes("attempts", text_attr(&job.attempts.to_string())?)
            .message_attributes("event_id", text_attr(&job.event.id)?);
        if let Some(s) = job.last_status {
            req = req.message_attributes("last_status", text_attr(&s.to_string())?);
        }
        req.send()
            .await
            .map_err(|e| store_error("send to webhook dead-letter queue", e))?;
        Ok(())
    }

    async fn dead_letter_raw(&self, body: &str, reason: &str) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(if body.is_empty() { "(empty)" } else { body })
            .message_attributes("reason", reason_attr(reason)?)
            .send()
            .await
            .map_err(|e| store_error("send to webhook dead-letter queue", e))?;
        Ok(())
    }
}

/// The fan-out queue (a standard queue): jobs go in `SendMessageBatch`
/// calls of at most 10 messages and 256 KiB, sent concurrently.
#[derive(Clone)]
pub struct SqsFanoutQueue {
    client: Client,
    queue_url: String,
}

/// SQS's limits on one `SendMessageBatch`.
const BATCH_MESSAGES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

impl SqsFanoutQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<(), StoreError> {
        let entries = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|e| StoreError::failed("build fan-out batch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| store_error("send to fan-out queue", e))?;
        match out.failed().first() {
            None => Ok(()),
            Some(f) => Err(StoreError::Unavailable {
                op: "send to fan-out queue",
                reason: format!(
                    "{} of the batch refused, first: {} {}",
                    out.failed().len(),
                    f.code(),
                    f.message().unwrap_or_default()
                ),
            }),
        }
    }
}

/// Messages grouped, in order, into batches within SQS's count and size
/// limits (`len`: a message's body size).
fn batches<T>(items: Vec<T>, len: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = vec![];
    let mut size = 0;
    for b in items {
        let n = len(&b);
        let full = out
            .last()
            .is_none_or(|l| l.len() == BATCH_MESSAGES || size + n > BATCH_BYTES);
        if full {
            out.push(vec![]);
            size = 0;
        }
        size += n;
        if let Some(l) = out.last_mut() {
            l.push(b);
        }
    }
    out
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        let bodies = jobs
            .iter()
            .map(|j| {
                serde_json::to_string(j).map_err(|e| StoreError::failed("encode fan-out job", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        futures::stream::iter(batches(bodies, String::len))
            .map(|b| self.send_batch(b))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod fanout_tests {
    use super::*;

    #[test]
    fn batches_keep_to_ten_messages_and_256_kib() {
        let small: Vec<String> = (0..23).map(|i| format!("job{i}")).collect();
        let b = batches(small.clone(), String::len);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        assert_eq!(b.concat(), small);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        let b = batches(big, String::len);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(batches(Vec::<String>::new(), String::len).is_empty());
    }
}
