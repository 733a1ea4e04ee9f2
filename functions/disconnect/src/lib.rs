//! The `$disconnect` Lambda: removes the connection and its subscriptions.
//! API Gateway ignores the answer; a store failure is returned as an error so
//! it is logged and counted, and the records' TTL cleans up after it.

use agentwire_aws::deps::Deps;
use agentwire_core::usecases::Disconnect;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};

/// The handler, holding its use case across invocations.
pub struct DisconnectFunction {
    disconnect: Disconnect,
}

impl DisconnectFunction {
    pub fn new(deps: &Deps) -> Self {
        Self::with(deps.disconnect())
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(disconnect: Disconnect) -> Self {
        Self { disconnect }
    }

    pub async fn handle(
        &self,
        req: ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, lambda_runtime::Error> {
        let connection_id = req
            .request_context
            .connection_id
            .as_deref()
            .ok_or("event has no connectionId")?;
        let known = self.disconnect.disconnect(connection_id).await?;
        tracing::info!(connection_id, known, "disconnected");
        let mut resp = ApiGatewayProxyResponse::default();
        resp.status_code = 200;
        Ok(resp)
    }
}
