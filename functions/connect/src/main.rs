use agentwire_fn_connect::ConnectFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("connect")?;
    let f = ConnectFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    agentwire_aws::telemetry::run_with_metrics(
        metrics,
        |e: LambdaEvent<ApiGatewayWebsocketProxyRequest>| f.handle(e.payload),
    )
    .await
}
