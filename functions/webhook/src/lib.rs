//! The webhook Lambda, on the webhook job queue: delivers each job (signed
//! POST, retry through the queue, dead letter, disable on 410) and reports
//! as `batchItemFailures` only the jobs it could neither finish, reschedule
//! nor dead-letter, so SQS gives them back.

use agentwire_core::adapters::SqsWebhookJobs;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::deliver::{Deliverer, Delivery, WebhookJob};
use agentwire_core::wiring::Deps;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

/// The handler, holding its use case (and clients) across invocations.
pub struct WebhookFunction {
    deliverer: Deliverer,
    jobs: SqsWebhookJobs,
}

impl WebhookFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self {
            deliverer: deps.deliverer()?,
            jobs: deps.webhook_jobs()?,
        })
    }

    /// Jobs are worked one after the other, in the order received.
    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let mut resp = SqsBatchResponse::default();
        for m in event.records {
            let id = m.message_id.ok_or("SQS record has no messageId")?;
            let body = m.body.unwrap_or_default();
            let outcome = match serde_json::from_str::<WebhookJob>(&body) {
                Ok(job) => self.deliverer.deliver(job).await.map(Some),
                Err(e) => self
                    .jobs
                    .dead_letter_raw(&body, &format!("not a webhook job: {e}"))
                    .await
                    .map(|()| None),
            };
            match outcome {
                Ok(Some(Delivery::Delivered { status })) => {
                    tracing::info!(message_id = %id, status, "webhook delivered")
                }
                Ok(Some(other)) => {
                    tracing::info!(message_id = %id, outcome = ?other, "webhook job handled")
                }
                Ok(None) => tracing::warn!(message_id = %id, "malformed webhook job dead-lettered"),
                Err(e) => {
                    tracing::error!(message_id = %id, error = %e, "webhook job will be redelivered");
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = id;
                    resp.batch_item_failures.push(f);
                }
            }
        }
        Ok(resp)
    }
}
