use agentwire_fn_disconnect::DisconnectFunction;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use lambda_runtime::{Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("disconnect")?;
    let f = DisconnectFunction::new(&agentwire_aws::deps::Deps::from_env().await?);
    agentwire_aws::telemetry::run_with_metrics(
        metrics,
        |e: LambdaEvent<ApiGatewayWebsocketProxyRequest>| f.handle(e.payload),
    )
    .await
}
