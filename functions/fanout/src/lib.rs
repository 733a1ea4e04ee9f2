//! The fan-out Lambda, on the fan-out queue: each message is one shard
//! range of a big channel's subscribers and the frames to post to them
//! (see `agentwire_core::usecases::delivery::fanout`). The jobs of a batch are worked
//! at once. A job whose subscribers could not be listed is reported as a
//! `batchItemFailure` and comes back from the queue; one that is not a job
//! at all is reported too, with its reason in the log, and the queue's
//! redrive policy moves it to the fan-out dead-letter queue.

use agentwire_aws::deps::Deps;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::{FanoutOutcome, FanoutWorker};
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;

/// The handler, holding its use case (and SDK clients) across invocations.
pub struct FanoutFunction {
    worker: FanoutWorker,
}

impl FanoutFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.fanout_worker()?))
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(worker: FanoutWorker) -> Self {
        Self { worker }
    }

    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let mut jobs = Vec::with_capacity(event.records.len());
        for m in event.records {
            let id = m.message_id.ok_or("SQS record has no messageId")?;
            jobs.push((id, m.body.unwrap_or_default()));
        }
        let n = jobs.len().max(1);
        let outcomes: Vec<(String, FanoutOutcome)> = futures::stream::iter(jobs)
            .map(|(id, body)| async move {
                let outcome = self.worker.handle_message(&body).await;
                (id, outcome)
            })
            .buffer_unordered(n)
            .collect()
            .await;
        let mut resp = SqsBatchResponse::default();
        let (mut posted, mut gone, mut failures) = (0, 0, 0);
        for (id, outcome) in outcomes {
            match outcome {
                FanoutOutcome::Done(c) => {
                    posted += c.posted;
                    gone += c.gone;
                    failures += c.post_failures;
                }
                FanoutOutcome::Retry(e) => {
                    tracing::error!(message_id = %id, error = %e, "could not list the shard's subscribers; the job will be redelivered");
                    resp.batch_item_failures.push(failure(id));
                }
                FanoutOutcome::Invalid(reason) => {
                    tracing::error!(message_id = %id, reason, "not a fan-out job; left to the queue's redrive (fan-out dead-letter queue)");
                    resp.batch_item_failures.push(failure(id));
                }
            }
        }
        tracing::info!(
            posted,
            gone,
            post_failures = failures,
            failed = resp.batch_item_failures.len(),
            "fan-out batch"
        );
        Ok(resp)
    }
}

/// A message to leave on the queue.
fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}
