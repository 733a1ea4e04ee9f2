use agentwire_fn_webhook::WebhookFunction;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_core::telemetry::init_json();
    let f = WebhookFunction::new(&agentwire_core::wiring::Deps::from_env().await?)?;
    lambda_runtime::run(service_fn(|e: LambdaEvent<SqsEvent>| f.handle(e.payload))).await
}
