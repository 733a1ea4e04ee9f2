//! The publish Lambda behind the HTTP API route
//! `POST /v1/channels/{channel}/events`: for agents that hold a token but no
//! AWS credentials. Translates the HTTP event into the publish use case and
//! its result into `202 {"id"}` or a JSON error body with a stable code
//! (400/401/403/413, 429 with `Retry-After` over a rate limit, 500/503
//! when the queue fails).

use agentwire_aws::deps::Deps;
use agentwire_core::auth::{TokenKey, token_from};
use agentwire_core::config::ConfigError;
use agentwire_core::ports::StoreError;
use agentwire_core::usecases::{PublishError, Publisher};
use agentwire_protocol::ServerFrame;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;

/// The handler, holding its use case and key across invocations.
pub struct PublishFunction {
    publisher: Publisher,
    key: TokenKey,
}

/// The HTTP status a refusal is answered with.
pub fn http_status(e: &PublishError) -> u16 {
    match e {
        PublishError::Unauthorized(_) => 401,
        PublishError::Forbidden(_) => 403,
        PublishError::Invalid(_) => 400,
        PublishError::TooLarge { .. } => 413,
        PublishError::RateLimited(_) => 429,
        PublishError::Queue(StoreError::Unavailable { .. }) => 503,
        PublishError::Queue(_) => 500,
    }
}

impl PublishFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.publisher()?, deps.token_key()?))
    }

    /// Around a use case and key built elsewhere (tests, the dev gateway).
    pub fn with(publisher: Publisher, key: TokenKey) -> Self {
        Self { publisher, key }
    }

    pub async fn handle(
        &self,
        req: ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let token = token_from(header("authorization"), None);
        let channel = req
            .path_parameters
            .get("channel")
            .cloned()
            .unwrap_or_default();
        let body = match body_bytes(&req) {
            Ok(b) => b,
            Err(e) => {
                return Ok(response(
                    400,
                    &ServerFrame::error(agentwire_protocol::ErrorCode::BadJson, e, None).to_json(),
                ));
            }
        };
        let result = self
            .publisher
            .publish_http(
                &self.key,
                token.as_deref(),
                &channel,
                &body,
                header("idempotency-key"),
            )
            .await;
        Ok(match result {
            Ok(env) => {
                tracing::info!(channel = %env.channel, id = %env.id, "published");
                response(
                    202,
                    &serde_json::json!({"id": env.id, "channel": env.channel}).to_string(),
                )
            }
            Err(e) if matches!(e, PublishError::Queue(_)) => {
                // The details (queue URL, SDK text) go to the log only.
                let request_id = req.request_context.request_id.clone().unwrap_or_default();
                tracing::error!(%channel, %request_id, error = %e, "publish failed");
                response(
                    http_status(&e),
                    &ServerFrame::error(e.code(), internal_message(&request_id), None).to_json(),
                )
            }
            Err(PublishError::RateLimited(l)) => {
                let frame = ServerFrame::rate_limited(
                    l.scope.as_str(),
                    l.retry_after_ms,
                    format!(
                        "over the {} publish rate; retry after {} ms",
                        l.scope.as_str(),
                        l.retry_after_ms
                    ),
                    None,
                );
                let mut resp = response(429, &frame.to_json());
                // Whole seconds, rounded up: never earlier than the bucket allows.
                let secs = l.retry_after_ms.div_ceil(1000).max(1);
                resp.headers.insert("retry-after", HeaderValue::from(secs));
                resp
            }
            Err(e) => {
                let status = http_status(&e);
                tracing::info!(%channel, status, error = %e, "publish refused");
                response(
                    status,
                    &ServerFrame::error(e.code(), e.to_string(), None).to_json(),
                )
            }
        })
    }
}

/// What a client is told of a failure of ours: no internal detail, the
/// request id to quote.
pub fn internal_message(request_id: &str) -> String {
    format!("the gateway could not take the event; retry it (request id {request_id})")
}

/// The request body, base64-decoded when API Gateway encoded it.
fn body_bytes(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, String> {
    let Some(body) = &req.body else {
        return Ok(Vec::new());
    };
    if req.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("the body is not valid base64: {e}"))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

fn response(status: u16, json: &str) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = i64::from(status);
    resp.headers = headers;
    resp.body = Some(Body::Text(json.to_owned()));
    resp
}
