//! The webhook Lambda, on the webhook job queue: delivers each job (signed
//! POST, retry through the queue, dead letter, disable on 410) and reports
//! as `batchItemFailures` only the jobs it could neither finish, reschedule
//! nor dead-letter, so SQS gives them back.

use agentwire_aws::deps::Deps;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::delivery::webhook::{Deliverer, JobOutcome};
use std::time::Duration;

use agentwire_core::webhook::url_policy::DNS_TIMEOUT;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use tokio::time::Instant;

/// The handler, holding its use case (and clients) across invocations.
pub struct WebhookFunction {
    deliverer: Deliverer,
    /// The most one job can take: DNS, the POST's time-out, and the queue
    /// calls around it.
    job_budget: Duration,
}

/// The function's time-out in the template, for callers without a Lambda
/// deadline (the dev gateway).
pub const DEFAULT_INVOCATION_BUDGET: Duration = Duration::from_secs(55);

impl WebhookFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.deliverer()?, deps.config.webhook_timeout))
    }

    /// Around a use case built elsewhere (tests, the dev gateway), whose
    /// POSTs time out after `post_timeout`.
    pub fn with(deliverer: Deliverer, post_timeout: Duration) -> Self {
        Self {
            deliverer,
            job_budget: post_timeout + DNS_TIMEOUT + Duration::from_secs(5),
        }
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
            match self.deliverer.handle_message(&body).await {
                Ok(JobOutcome::Delivered { status }) => {
                    tracing::info!(message_id = %id, status, "webhook delivered")
                }
                Ok(other) => {
                    tracing::info!(message_id = %id, outcome = ?other, "webhook job handled")
                }
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
