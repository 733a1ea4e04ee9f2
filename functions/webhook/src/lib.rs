//! The webhook Lambda, on the webhook job queue: delivers each job (signed
//! POST, retry through the queue, dead letter, disable on 410) and reports
//! as `batchItemFailures` only the jobs it could neither finish, reschedule
//! nor dead-letter, so SQS gives them back.

use agentwire_core::adapters::SqsWebhookJobs;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::deliver::{Deliverer, Delivery, WebhookJob};
use agentwire_core::wiring::Deps;
use std::time::Duration;

use agentwire_core::webhook::url_policy::DNS_TIMEOUT;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use tokio::time::Instant;

/// The handler, holding its use case (and clients) across invocations.
pub struct WebhookFunction {
    deliverer: Deliverer,
    jobs: SqsWebhookJobs,
    /// The most one job can take: DNS, the POST's time-out, and the queue
    /// calls around it.
    job_budget: Duration,
}

/// The function's time-out in the template, for callers without a Lambda
/// deadline (the dev gateway).
pub const DEFAULT_INVOCATION_BUDGET: Duration = Duration::from_secs(55);

impl WebhookFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self {
            deliverer: deps.deliverer()?,
            jobs: deps.webhook_jobs()?,
            job_budget: deps.config.webhook_timeout + DNS_TIMEOUT + Duration::from_secs(5),
        })
    }

    /// [`WebhookFunction::handle_until`] with the template's time-out.
    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        self.handle_until(event, Instant::now() + DEFAULT_INVOCATION_BUDGET)
            .await
    }

    /// Jobs are worked one after the other, in the order received. A job is
    /// started only if it can finish before `deadline` (the invocation's);
    /// the others are reported as failures, untouched, and come back from
    /// the queue.
    pub async fn handle_until(
        &self,
        event: SqsEvent,
        deadline: Instant,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let mut resp = SqsBatchResponse::default();
        for m in event.records {
            let id = m.message_id.ok_or("SQS record has no messageId")?;
            if Instant::now() + self.job_budget > deadline {
                tracing::warn!(message_id = %id, "not enough time left in this invocation; the job comes back from the queue");
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                resp.batch_item_failures.push(f);
                continue;
            }
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
