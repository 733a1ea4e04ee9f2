use agentwire_fn_webhook::WebhookFunction;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("webhook")?;
    let f = WebhookFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    agentwire_aws::telemetry::run_with_metrics(metrics, |e: LambdaEvent<SqsEvent>| {
        // The invocation's deadline (Unix ms) as an instant.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = std::time::Duration::from_millis(e.context.deadline.saturating_sub(now_ms));
        f.handle_until(e.payload, tokio::time::Instant::now() + left)
    })
    .await
}
