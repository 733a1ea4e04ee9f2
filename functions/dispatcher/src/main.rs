use agentwire_fn_dispatcher::DispatcherFunction;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("dispatcher")?;
    let f = DispatcherFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    agentwire_aws::telemetry::run_with_metrics(metrics, |e: LambdaEvent<SqsEvent>| {
        f.handle(e.payload)
    })
    .await
}
