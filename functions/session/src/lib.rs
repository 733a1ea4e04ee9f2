//! The message-route Lambda (`hello`, `join`, `leave`, `ack`, `$default`):
//! hands the frame to the session use case and returns its answer as the
//! route response body, which API Gateway sends back to the client. A join
//! that replays posts its answer, gaps and events through `@connections`
//! (so they arrive in order) and returns an empty body.

use agentwire_aws::deps::Deps;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::Session;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;

/// The handler, holding its use case across invocations.
pub struct SessionFunction {
    session: Session,
}

impl SessionFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.session()?))
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(session: Session) -> Self {
        Self { session }
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
        let answer = if req.is_base64_encoded {
            Some(Session::binary_refused())
        } else {
            self.session
                .handle(connection_id, req.body.as_deref().unwrap_or(""))
                .await
        };
        let mut resp = ApiGatewayProxyResponse::default();
        resp.status_code = 200;
        resp.body = answer.map(|f| Body::Text(f.to_json()));
        Ok(resp)
    }
}
