//! SQS adapters: the events queue (publishing) and the dead-letter sink.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;

use super::dynamo::store_error;
use crate::model::Envelope;
use crate::ports::{DeadLetters, EventQueue, StoreError};

/// Publishes envelopes to the FIFO events queue: group = tenant#channel
/// (order per channel), deduplication id = event id.
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
            .message_deduplication_id(&envelope.id)
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
        // SQS attribute values are limited; the reason is a short sentence.
        let reason: String = reason.chars().take(1024).collect();
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(if body.is_empty() { "(empty)" } else { body })
            .message_group_id("agentwire-dead-letters")
            .message_deduplication_id(message_id)
            .message_attributes("reason", text_attr(&reason)?)
            .message_attributes("source_message_id", text_attr(message_id)?)
            .send()
            .await
            .map_err(|e| store_error("send to dead-letter queue", e))?;
        Ok(())
    }
}
