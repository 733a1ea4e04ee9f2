//! The exact Lambda events API Gateway and the SQS event source send.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use aws_lambda_events::http::HeaderMap;
use aws_lambda_events::query_map::QueryMap;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};

/// Milliseconds since the Unix epoch (API Gateway's `connectedAt` and `requestTimeEpoch`).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where an event comes from: the connection and the API it is on.
pub(crate) struct Origin<'a> {
    pub connection_id: &'a str,
    pub connected_at_ms: i64,
    pub domain: &'a str,
    pub stage: &'a str,
    pub source_ip: String,
}

fn context(
    origin: &Origin<'_>,
    route_key: &str,
    event_type: &str,
) -> ApiGatewayWebsocketProxyRequestContext {
    let mut ctx = ApiGatewayWebsocketProxyRequestContext::default();
    ctx.route_key = Some(route_key.to_owned());
    ctx.event_type = Some(event_type.to_owned());
    ctx.connection_id = Some(origin.connection_id.to_owned());
    ctx.connected_at = origin.connected_at_ms;
    ctx.domain_name = Some(origin.domain.to_owned());
    ctx.stage = Some(origin.stage.to_owned());
    ctx.apiid = Some("local".to_owned());
    ctx.message_direction = Some("IN".to_owned());
    ctx.request_id = Some(uuid::Uuid::new_v4().to_string());
    ctx.extended_request_id = ctx.request_id.clone();
    ctx.request_time_epoch = now_ms();
    ctx.identity.source_ip = Some(origin.source_ip.clone());
    ctx
}

/// `$connect`, with the upgrade request's headers and query string.
pub(crate) fn connect(
    origin: &Origin<'_>,
    headers: HeaderMap,
    query: HashMap<String, Vec<String>>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut req = ApiGatewayWebsocketProxyRequest::default();
    req.request_context = context(origin, "$connect", "CONNECT");
    req.multi_value_headers = headers.clone();
    req.headers = headers;
    req.multi_value_query_string_parameters = QueryMap::from(query.clone());
    req.query_string_parameters = QueryMap::from(query);
    req
}

/// A message routed to `route_key`. Binary messages arrive base64-encoded.
pub(crate) fn message(
    origin: &Origin<'_>,
    route_key: &str,
    body: String,
    base64: bool,
) -> ApiGatewayWebsocketProxyRequest {
    let mut req = ApiGatewayWebsocketProxyRequest::default();
    let mut ctx = context(origin, route_key, "MESSAGE");
    ctx.message_id = Some(uuid::Uuid::new_v4().simple().to_string());
    req.request_context = ctx;
    req.body = Some(body);
    req.is_base64_encoded = base64;
    req
}

/// `$disconnect`, with API Gateway's status code and reason.
pub(crate) fn disconnect(
    origin: &Origin<'_>,
    code: u16,
    reason: &str,
) -> ApiGatewayWebsocketProxyRequest {
    let mut req = ApiGatewayWebsocketProxyRequest::default();
    let mut ctx = context(origin, "$disconnect", "DISCONNECT");
    ctx.disconnect_status_code = Some(i64::from(code));
    ctx.disconnect_reason = Some(reason.to_owned());
    req.request_context = ctx;
    req
}

/// An SQS batch as the Lambda event source delivers it.
pub(crate) fn sqs_batch(
    messages: &[aws_sdk_sqs::types::Message],
    queue_arn: &str,
    region: &str,
) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id().map(str::to_owned);
            r.receipt_handle = m.receipt_handle().map(str::to_owned);
            r.body = m.body().map(str::to_owned);
            r.md5_of_body = m.md5_of_body().map(str::to_owned);
            r.attributes = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            r.event_source = Some("aws:sqs".to_owned());
            r.event_source_arn = Some(queue_arn.to_owned());
            r.aws_region = Some(region.to_owned());
            r
        })
        .collect();
    event
}

/// The query string of an upgrade request, every value of every key.
pub(crate) fn parse_query(raw: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        out.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    out
}
