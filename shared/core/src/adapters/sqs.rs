//! SQS adapters: the events queue (publishing) and the dead-letter sink.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::store_error;
use crate::model::Envelope;
use crate::ports::{DeadLetters, EventQueue, StoreError};

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
/// (order per channel), deduplication id = the event id scoped to its
/// tenant and channel ([`ChannelKey::scoped_id`](crate::model::ChannelKey::scoped_id)):
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
            .message_group_id(envelope.key().pk())
            .message_deduplication_id(envelope.key().scoped_id(&envelope.id))
            .send()
            .await
            .map_err(|e| store_error("send to events queue", e))?;
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

/// One dead-lettered webhook job, as `webhooks dlq list` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadWebhookJob {
    pub event_id: String,
    pub channel: String,
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    #[serde(skip)]
    pub body: String,
    #[serde(skip)]
    pub receipt_handle: String,
}

impl SqsWebhookJobs {
    pub fn new(client: Client, queue_url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dlq_url: dlq_url.into(),
        }
    }

    /// Keeps a message that is not even a job, with the reason.
    pub async fn dead_letter_raw(&self, body: &str, reason: &str) -> Result<(), StoreError> {
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

    /// Up to `max` dead-lettered jobs, hidden for `hold` while the caller
    /// looks at them (they reappear afterwards unless deleted).
    pub async fn list_dead(
        &self,
        max: usize,
        hold: std::time::Duration,
    ) -> Result<Vec<DeadWebhookJob>, StoreError> {
        let mut out: Vec<DeadWebhookJob> = Vec::new();
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
            let msgs = batch.messages();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                let attr = |k: &str| {
                    m.message_attributes()
                        .and_then(|a| a.get(k))
                        .and_then(|v| v.string_value())
                        .map(str::to_owned)
                };
                let body = m.body().unwrap_or_default().to_owned();
                let job: Option<crate::usecases::deliver::WebhookJob> =
                    serde_json::from_str(&body).ok();
                out.push(DeadWebhookJob {
                    event_id: job.as_ref().map(|j| j.event.id.clone()).unwrap_or_default(),
                    channel: job
                        .as_ref()
                        .map(|j| j.key().to_string())
                        .unwrap_or_default(),
                    reason: attr("reason").unwrap_or_default(),
                    attempts: job.as_ref().map(|j| j.attempts).unwrap_or(0),
                    last_status: job.as_ref().and_then(|j| j.last_status),
                    body,
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(out)
    }

    /// Sends a dead-lettered job back for delivery with a fresh schedule and
    /// removes it from the dead-letter queue.
    pub async fn redrive(&self, dead: &DeadWebhookJob) -> Result<(), StoreError> {
        let mut job: crate::usecases::deliver::WebhookJob = serde_json::from_str(&dead.body)
            .map_err(|e| StoreError::failed("redrive", format!("not a webhook job: {e}")))?;
        job.attempts = 0;
        job.due_at = 0;
        job.last_status = None;
        job.last_error = None;
        crate::ports::WebhookJobs::schedule(self, &job, std::time::Duration::ZERO).await?;
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(&dead.receipt_handle)
            .send()
            .await
            .map_err(|e| store_error("delete redriven job", e))?;
        Ok(())
    }
}

#[async_trait]
impl crate::ports::WebhookJobs for SqsWebhookJobs {
    async fn schedule(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(job).map_err(|e| StoreError::failed("encode webhook job", e))?;
        let delay = i32::try_from(crate::webhook::schedule::hop(delay).as_secs()).unwrap_or(900);
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

    async fn dead_letter(
        &self,
        job: &crate::usecases::deliver::WebhookJob,
        reason: &str,
    ) -> Result<(), StoreError> {
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
}
