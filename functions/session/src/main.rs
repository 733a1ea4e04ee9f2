use agentwire_fn_session::SessionFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let f = SessionFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    lambda_runtime::run(service_fn(
        |e: LambdaEvent<ApiGatewayWebsocketProxyRequest>| f.handle(e.payload),
    ))
    .await
}
