//! The `$connect` Lambda: translates API Gateway's connect event into the
//! connect use case and its result into the upgrade answer (200 with the
//! chosen `Sec-WebSocket-Protocol`, or 401/400/429/500 with a typed error body).

use agentwire_aws::deps::Deps;
use agentwire_core::config::ConfigError;
use agentwire_core::usecases::{Connect, ConnectError, ConnectRequest};
use agentwire_protocol::{ErrorCode, ServerFrame};
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::HeaderValue;

/// The handler, holding its use case across invocations.
pub struct ConnectFunction {
    connect: Connect,
}

/// The HTTP status the upgrade is refused with.
pub fn http_status(e: &ConnectError) -> u16 {
    match e {
        // The issuer's keys or the store unavailable: retry.
        ConnectError::Auth(a) if a.is_retryable() => 503,
        ConnectError::Auth(a) if a.code() == ErrorCode::Internal => 500,
        ConnectError::Auth(_) => 401,
        ConnectError::VersionUnsupported { .. } => 400,
        ConnectError::TooManyConnections { .. } => 429,
        ConnectError::Store(_) => 500,
    }
}

impl ConnectFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.connect()?))
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(connect: Connect) -> Self {
        Self { connect }
    }

    pub async fn handle(
        &self,
        req: ApiGatewayWebsocketProxyRequest,
    ) -> Result<ApiGatewayProxyResponse, lambda_runtime::Error> {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request = ConnectRequest {
            connection_id: req
                .request_context
                .connection_id
                .clone()
                .ok_or("event has no connectionId")?,
            authorization: header("authorization"),
            query_token: req
                .query_string_parameters
                .first("token")
                .map(str::to_owned),
            subprotocols: header("sec-websocket-protocol"),
        };
        let mut resp = ApiGatewayProxyResponse::default();
        match self.connect.connect(&request).await {
            Ok(accepted) => {
                resp.status_code = 200;
                if let Some(p) = accepted.subprotocol {
                    resp.headers
                        .insert("sec-websocket-protocol", HeaderValue::from_str(&p)?);
                }
                tracing::info!(
                    connection_id = %request.connection_id,
                    tenant = %accepted.connection.tenant,
                    principal = %accepted.connection.principal,
                    "connected"
                );
            }
            Err(e) => {
                let status = http_status(&e);
                resp.status_code = i64::from(status);
                let frame = match e {
                    // The details (table names, SDK text) go to the log only.
                    ConnectError::Store(_) => ServerFrame::error(
                        ErrorCode::Internal,
                        format!(
                            "the gateway could not record the connection; retry (request id {})",
                            req.request_context.request_id.as_deref().unwrap_or("")
                        ),
                        None,
                    ),
                    _ => e.frame(),
                };
                resp.body = Some(Body::Text(frame.to_json()));
                resp.headers
                    .insert("content-type", HeaderValue::from_static("application/json"));
                tracing::warn!(connection_id = %request.connection_id, request_id = ?req.request_context.request_id, status, error = %e, "connect refused");
            }
        }
        Ok(resp)
    }
}
