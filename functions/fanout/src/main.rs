use agentwire_fn_fanout::FanoutFunction;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let f = FanoutFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    lambda_runtime::run(service_fn(|e: LambdaEvent<SqsEvent>| f.handle(e.payload))).await
}
