use agentwire_fn_publish::PublishFunction;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let f = PublishFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    lambda_runtime::run(service_fn(|e: LambdaEvent<ApiGatewayV2httpRequest>| {
        f.handle(e.payload)
    }))
    .await
}
