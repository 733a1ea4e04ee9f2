//! The publish Lambda: the whole HTTP API, for agents and servers that
//! hold a token but no AWS credentials (described in `docs/openapi.yaml`).
//!
//! - `POST /v1/channels/{channel}/events`: one event, committed and
//!   delivered here: `201 {"id","seq","epoch"}` (`200` for an idempotency
//!   key already committed); `503` with `Retry-After` when the commit
//!   cannot be made now (`202 {"id","queued":true}` only from a publisher
//!   wired without the direct path);
//! - `POST /v1/channels/{channel}/events:batch`: up to 10, all or nothing,
//!   `201`/`200 {"ids","events":[{"id","seq","epoch"}]}` or
//!   `202 {"ids","queued":true}`;
//! - `GET /v1/channels/{channel}/events?after&limit`: a history page;
//! - `GET /v1/channels/{channel}/presence`: the count and principals;
//! - `GET /v1/channels/{channel}`: head, epoch, retention, webhook mode.
//!
//! Translates the HTTP event into the publish and read use cases, and
//! their results into JSON, or a JSON error body with a stable code
//! (400/401/403/413, 429 with `Retry-After` over a publish or read rate, 500/503
//! when the queue or a store fails, with no internal detail).

use agentwire_aws::deps::Deps;
use std::sync::Arc;

use agentwire_core::auth::{Verifier, token_from};
use agentwire_core::config::ConfigError;
use agentwire_core::ports::StoreError;
use agentwire_core::usecases::quotas::Limited;
use agentwire_core::usecases::{
    ChannelReads, HistoryQuery, Outcome, PublishError, Published, Publisher, ReadError,
};
use agentwire_protocol::ServerFrame;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use base64::Engine;

/// The handler, holding its use cases and key across invocations.
pub struct PublishFunction {
    publisher: Publisher,
    reads: Option<ChannelReads>,
    key: Arc<Verifier>,
}

/// The routes, as API Gateway names them in `routeKey`.
pub const ROUTE_PUBLISH: &str = "POST /v1/channels/{channel}/events";
pub const ROUTE_BATCH: &str = "POST /v1/channels/{channel}/events:batch";
pub const ROUTE_HISTORY: &str = "GET /v1/channels/{channel}/events";
pub const ROUTE_PRESENCE: &str = "GET /v1/channels/{channel}/presence";
pub const ROUTE_CHANNEL: &str = "GET /v1/channels/{channel}";

/// The HTTP status a read's refusal is answered with.
pub fn read_status(e: &ReadError) -> u16 {
    match e {
        ReadError::Unauthorized(_) => 401,
        ReadError::Forbidden(_) => 403,
        ReadError::Invalid(_) => 400,
        ReadError::Store(StoreError::Unavailable { .. }) => 503,
        ReadError::Store(_) => 500,
        ReadError::RateLimited(_) => 429,
    }
}

/// The HTTP status a refusal is answered with.
pub fn http_status(e: &PublishError) -> u16 {
    match e {
        PublishError::Unauthorized(_) => 401,
        PublishError::Forbidden(_) => 403,
        PublishError::Invalid(e) if e.code == agentwire_protocol::ErrorCode::MessageTooLarge => 413,
        PublishError::Invalid(_) => 400,
        PublishError::TooLarge { .. } => 413,
        PublishError::RateLimited(_) => 429,
        PublishError::Queue(StoreError::Unavailable { .. })
        | PublishError::Commit(StoreError::Unavailable { .. }) => 503,
        PublishError::Queue(_) | PublishError::Commit(_) => 500,
    }
}

impl PublishFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.direct_publisher()?, deps.verifier()?).with_reads(deps.reads()))
    }

    /// Around a use case and key built elsewhere (tests, the dev gateway);
    /// the read routes answer 404 until [`Self::with_reads`].
    pub fn with(publisher: Publisher, key: Arc<Verifier>) -> Self {
        Self {
            publisher,
            reads: None,
            key,
        }
    }

    /// The publish use case (the dev gateway changes its settings).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub fn with_reads(mut self, reads: ChannelReads) -> Self {
        self.reads = Some(reads);
        self
    }

    pub async fn handle(
        &self,
        req: ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
        let route = req.route_key.as_deref().unwrap_or(ROUTE_PUBLISH);
        Ok(match (route, &self.reads) {
            (ROUTE_PUBLISH, _) => self.publish(&req).await,
            (ROUTE_BATCH, _) => self.publish_batch(&req).await,
            (ROUTE_HISTORY | ROUTE_PRESENCE | ROUTE_CHANNEL, Some(reads)) => {
                self.read(reads, route, &req).await
            }
            _ => response(
                404,
                &ServerFrame::error(
                    agentwire_protocol::ErrorCode::InvalidRequest,
                    format!("no route {route}"),
                    None,
                )
                .to_json(),
            ),
        })
    }

    /// A read route: the use case's answer as JSON, or its refusal.
    async fn read(
        &self,
        reads: &ChannelReads,
        route: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse {
        let token = token_from(header(req, "authorization"), None);
        let channel = path_channel(req);
        let token = token.as_deref();
        let answer = match route {
            ROUTE_HISTORY => {
                let q = &req.query_string_parameters;
                match HistoryQuery::parse(q.first("after"), q.first("limit")) {
                    Ok(query) => reads
                        .history(&self.key, token, &channel, query)
                        .await
                        .map(|p| serde_json::to_string(&p)),
                    Err(e) => Err(e),
                }
            }
            ROUTE_PRESENCE => reads
                .presence(&self.key, token, &channel)
                .await
                .map(|p| serde_json::to_string(&p)),
            _ => reads
                .channel(&self.key, token, &channel)
                .await
                .map(|p| serde_json::to_string(&p)),
        };
        match answer {
            Ok(Ok(json)) => response(200, &json),
            Ok(Err(e)) => self.internal(req, &channel, 500, &e.to_string()),
            Err(e @ ReadError::Store(_)) => {
                self.internal(req, &channel, read_status(&e), &e.to_string())
            }
            Err(ReadError::RateLimited(l)) => limited(&l, "read"),
            Err(e) => {
                let status = read_status(&e);
                tracing::info!(%channel, status, error = %e, "read refused");
                let frame = match &e {
                    ReadError::Unauthorized(a) => ServerFrame::from(a.protocol_error()),
                    e => ServerFrame::error(e.code(), e.to_string(), None),
                };
                response(status, &frame.to_json())
            }
        }
    }

    /// A read's failure of ours (a store that failed, an answer that would
    /// not encode): logged with its detail, answered `internal` without it.
    fn internal(
        &self,
        req: &ApiGatewayV2httpRequest,
        channel: &str,
        status: u16,
        detail: &str,
    ) -> ApiGatewayV2httpResponse {
        let request_id = request_id(req);
        tracing::error!(%channel, %request_id, error = %detail, "read failed");
        response(
            status,
            &ServerFrame::error(
                agentwire_protocol::ErrorCode::Internal,
                read_internal_message(&request_id),
                None,
            )
            .to_json(),
        )
    }

    /// `POST …/events:batch`.
    async fn publish_batch(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let token = token_from(header(req, "authorization"), None);
        let channel = path_channel(req);
        let body = match body_bytes(req) {
            Ok(b) => b,
            Err(answer) => return *answer,
        };
        let result = self
            .publisher
            .publish_batch_http(&self.key, token.as_deref(), &channel, &body)
            .await;
        match result {
            Ok(p) => {
                tracing::info!(%channel, events = p.events.len(), outcome = ?p.outcome, "published a batch");
                let ids: Vec<&str> = p.events.iter().map(|e| e.id.as_str()).collect();
                let mut body = serde_json::json!({"channel": channel, "ids": ids});
                if p.outcome == Outcome::Queued {
                    body["queued"] = true.into();
                } else {
                    body["events"] = p
                        .events
                        .iter()
                        .map(|e| serde_json::json!({"id": e.id, "seq": e.seq, "epoch": e.epoch}))
                        .collect();
                }
                response(status(&p), &body.to_string())
            }
            Err(e) => self.refusal(req, &channel, e),
        }
    }

    /// `POST …/events`.
    async fn publish(&self, req: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let token = token_from(header(req, "authorization"), None);
        let channel = path_channel(req);
        let body = match body_bytes(req) {
            Ok(b) => b,
            Err(answer) => return *answer,
        };
        let result = self
            .publisher
            .publish_http(
                &self.key,
                token.as_deref(),
                &channel,
                &body,
                header(req, "idempotency-key"),
            )
            .await;
        match result {
            Ok(p) => match p.events.first() {
                Some(e) => {
                    tracing::info!(%channel, id = %e.id, seq = ?e.seq, outcome = ?p.outcome, "published");
                    let body = if p.outcome == Outcome::Queued {
                        serde_json::json!({"id": e.id, "channel": p.channel, "queued": true})
                    } else {
                        serde_json::json!({"id": e.id, "channel": p.channel, "seq": e.seq, "epoch": e.epoch})
                    };
                    response(status(&p), &body.to_string())
                }
                None => self.internal(req, &channel, 500, "a publish accepted no event"),
            },
            Err(e) => self.refusal(req, &channel, e),
        }
    }

    /// A publish's refusal: the queue's failure without its detail, a rate
    /// limit with `Retry-After`, the rest with their message.
    fn refusal(
        &self,
        req: &ApiGatewayV2httpRequest,
        channel: &str,
        e: PublishError,
    ) -> ApiGatewayV2httpResponse {
        match e {
            PublishError::Queue(_) | PublishError::Commit(_) => {
                // The details (queue URL, SDK text) go to the log only.
                let request_id = request_id(req);
                tracing::error!(%channel, %request_id, error = %e, "publish failed");
                let status = http_status(&e);
                let mut resp = response(
                    status,
                    &ServerFrame::error(e.code(), internal_message(&request_id), None).to_json(),
                );
                if status == 503 {
                    resp.headers.insert("retry-after", HeaderValue::from(1));
                }
                resp
            }
            PublishError::RateLimited(l) => limited(&l, "publish"),
            e => {
                let status = http_status(&e);
                tracing::info!(%channel, status, error = %e, "publish refused");
                let frame = match &e {
                    PublishError::Unauthorized(a) => ServerFrame::from(a.protocol_error()),
                    e => ServerFrame::error(e.code(), e.to_string(), None),
                };
                response(status, &frame.to_json())
            }
        }
    }
}

/// The status of an accepted publish: 201 committed, 200 a repeat of
/// committed keys, 202 queued.
pub fn status(p: &Published) -> u16 {
    match p.outcome {
        Outcome::Committed => 201,
        Outcome::Repeat => 200,
        Outcome::Queued => 202,
    }
}

/// 429 over a rate (`what`: publish or read), with `Retry-After`.
fn limited(l: &Limited, what: &str) -> ApiGatewayV2httpResponse {
    let frame = ServerFrame::rate_limited(
        l.scope.as_str(),
        l.retry_after_ms,
        format!(
            "over the {} {what} rate; retry after {} ms",
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

fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn path_channel(req: &ApiGatewayV2httpRequest) -> String {
    req.path_parameters
        .get("channel")
        .cloned()
        .unwrap_or_default()
}

fn request_id(req: &ApiGatewayV2httpRequest) -> String {
    req.request_context.request_id.clone().unwrap_or_default()
}

/// What a reader is told of a failure of ours.
pub fn read_internal_message(request_id: &str) -> String {
    format!("the gateway could not read the channel; retry it (request id {request_id})")
}

/// What a client is told of a failure of ours: no internal detail, the
/// request id to quote.
pub fn internal_message(request_id: &str) -> String {
    format!("the gateway could not take the event; retry it (request id {request_id})")
}

/// The request body, base64-decoded when API Gateway encoded it; a body
/// that does not decode is answered 400 `bad_json`.
fn body_bytes(req: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, Box<ApiGatewayV2httpResponse>> {
    let Some(body) = &req.body else {
        return Ok(Vec::new());
    };
    if !req.is_base64_encoded {
        return Ok(body.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| {
            Box::new(response(
                400,
                &ServerFrame::error(
                    agentwire_protocol::ErrorCode::BadJson,
                    format!("the body is not valid base64: {e}"),
                    None,
                )
                .to_json(),
            ))
        })
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
