use agentwire_fn_join::JoinFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_core::telemetry::init_json();
    let f = JoinFunction::new(&agentwire_core::wiring::Deps::from_env().await?)?;
    lambda_runtime::run(service_fn(
        |e: LambdaEvent<ApiGatewayWebsocketProxyRequest>| f.handle(e.payload),
    ))
    .await
}
