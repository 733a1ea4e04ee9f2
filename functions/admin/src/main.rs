use agentwire_fn_admin::AdminFunction;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    agentwire_aws::telemetry::init_json();
    let metrics = agentwire_aws::telemetry::emf("admin")?;
    let f = AdminFunction::new(&agentwire_aws::deps::Deps::from_env().await?)?;
    agentwire_aws::telemetry::run_with_metrics(
        metrics,
        |e: LambdaEvent<ApiGatewayV2httpRequest>| f.handle(e.payload),
    )
    .await
}
