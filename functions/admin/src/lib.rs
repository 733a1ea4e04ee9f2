//! The admin Lambda: the management API a tenant runs itself with a token
//! that has the `admin` grant (described in `docs/openapi.yaml`):
//!
//! - `GET /v1/admin/limits`: its limits, what applies, its connections;
//! - `GET|PUT|DELETE /v1/admin/webhook` and `POST /v1/admin/webhook:rotate`:
//!   its default webhook; the same under `/v1/admin/channels/{channel}/`
//!   for one channel's (the signing secret is generated here and shown
//!   only in the answer that generated it);
//! - `GET|PUT /v1/admin/issuers`, `DELETE /v1/admin/issuers?iss=`: the
//!   identity providers it trusts;
//! - `GET|POST /v1/admin/revocations`: revoke a principal (its live
//!   connections closed).
//!
//! It is the only internet-facing function that reads webhook secrets;
//! translates HTTP to the [`Management`] use case and its results to JSON
//! or a typed error body (401/403/400/404/409, 500/503 without detail).

use std::time::Duration;

use agentwire_aws::deps::Deps;
use agentwire_core::auth::token_from;
use agentwire_core::auth::trust::{
    KeySource, Preset, TrustEntry, TrustError, TrustOwner, encode_secret,
};
use agentwire_core::config::ConfigError;
use agentwire_core::ports::StoreError;
use agentwire_core::usecases::{
    DEFAULT_ROTATION_OVERLAP, IdentityError, ManageError, Management, WebhookAdminError,
    WebhookView,
};
use agentwire_core::webhook::{WebhookConfig, WebhookMode};
use agentwire_protocol::{ErrorCode, ServerFrame};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

pub const ROUTE_LIMITS: &str = "GET /v1/admin/limits";
pub const ROUTE_WEBHOOK_GET: &str = "GET /v1/admin/webhook";
pub const ROUTE_WEBHOOK_PUT: &str = "PUT /v1/admin/webhook";
pub const ROUTE_WEBHOOK_DELETE: &str = "DELETE /v1/admin/webhook";
pub const ROUTE_WEBHOOK_ROTATE: &str = "POST /v1/admin/webhook:rotate";
pub const ROUTE_CHANNEL_WEBHOOK_GET: &str = "GET /v1/admin/channels/{channel}/webhook";
pub const ROUTE_CHANNEL_WEBHOOK_PUT: &str = "PUT /v1/admin/channels/{channel}/webhook";
pub const ROUTE_CHANNEL_WEBHOOK_DELETE: &str = "DELETE /v1/admin/channels/{channel}/webhook";
pub const ROUTE_CHANNEL_WEBHOOK_ROTATE: &str = "POST /v1/admin/channels/{channel}/webhook:rotate";
pub const ROUTE_ISSUERS_GET: &str = "GET /v1/admin/issuers";
pub const ROUTE_ISSUERS_PUT: &str = "PUT /v1/admin/issuers";
pub const ROUTE_ISSUERS_DELETE: &str = "DELETE /v1/admin/issuers";
pub const ROUTE_REVOCATIONS_GET: &str = "GET /v1/admin/revocations";
pub const ROUTE_REVOCATIONS_POST: &str = "POST /v1/admin/revocations";

/// Every route, for the dev gateway and the template's check.
pub const ROUTES: [&str; 14] = [
    ROUTE_LIMITS,
    ROUTE_WEBHOOK_GET,
    ROUTE_WEBHOOK_PUT,
    ROUTE_WEBHOOK_DELETE,
    ROUTE_WEBHOOK_ROTATE,
    ROUTE_CHANNEL_WEBHOOK_GET,
    ROUTE_CHANNEL_WEBHOOK_PUT,
    ROUTE_CHANNEL_WEBHOOK_DELETE,
    ROUTE_CHANNEL_WEBHOOK_ROTATE,
    ROUTE_ISSUERS_GET,
    ROUTE_ISSUERS_PUT,
    ROUTE_ISSUERS_DELETE,
    ROUTE_REVOCATIONS_GET,
    ROUTE_REVOCATIONS_POST,
];

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// The handler, holding its use case across invocations.
pub struct AdminFunction {
    manage: Management,
}

/// `PUT …/webhook`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    #[serde(default)]
    mode: Option<WebhookMode>,
    /// Lapses after this many seconds.
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// `POST …/webhook:rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the previous secret keeps signing (default a day).
    #[serde(default)]
    overlap_s: Option<u64>,
}

/// `PUT /v1/admin/issuers`: a trust entry of the token's tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerBody {
    issuer: String,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks: Option<Value>,
    /// An HS256 secret (base64) only this tenant's tokens are signed with.
    #[serde(default)]
    hs256_secret: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    principal_claim: Option<String>,
    #[serde(default)]
    grants_claim: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    max_lifetime_s: Option<u64>,
    #[serde(default)]
    preset: Option<Preset>,
}

/// `POST /v1/admin/revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    sub: String,
}

/// A request the routes answer 400 to.
fn invalid(message: impl Into<String>) -> ApiGatewayV2httpResponse {
    error(400, ErrorCode::InvalidRequest, &message.into(), None)
}

impl AdminFunction {
    pub fn new(deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::with(deps.management()?))
    }

    /// Around a use case built elsewhere (tests, the dev gateway).
    pub fn with(manage: Management) -> Self {
        Self { manage }
    }

    pub async fn handle(
        &self,
        req: ApiGatewayV2httpRequest,
    ) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
        let route = req.route_key.clone().unwrap_or_default();
        if !ROUTES.contains(&route.as_str()) {
            return Ok(error(
                404,
                ErrorCode::InvalidRequest,
                &format!("no route {route}"),
                None,
            ));
        }
        let token = token_from(header(&req, "authorization"), None);
        let tenant = match self.manage.authorize(token.as_deref()).await {
            Ok(t) => t,
            Err(e) => return Ok(self.refusal(&req, e)),
        };
        let channel = req.path_parameters.get("channel").cloned();
        let channel = channel.as_deref();
        let answer = match route.as_str() {
            ROUTE_LIMITS => self.manage.limits(&tenant).await.map(|v| {
                ok(
                    200,
                    json!({"tenant": tenant, "own": v.own, "effective": v.effective,
                               "usage": {"connections": v.connections}}),
                )
            }),
            ROUTE_WEBHOOK_GET | ROUTE_CHANNEL_WEBHOOK_GET => self
                .manage
                .webhook(&tenant, channel)
                .await
                .map(|c| ok(200, webhook_json(&c, channel, None))),
            ROUTE_WEBHOOK_PUT | ROUTE_CHANNEL_WEBHOOK_PUT => {
                let body: WebhookBody = match parse(&req) {
                    Ok(b) => b,
                    Err(r) => return Ok(*r),
                };
                let ttl = body.ttl_s.map(Duration::from_secs);
                let mode = body.mode.unwrap_or(WebhookMode::Fallback);
                self.manage
                    .set_webhook(&tenant, channel, &body.url, mode, ttl)
                    .await
                    .map(|v| webhook_view(&v, channel))
            }
            ROUTE_WEBHOOK_DELETE | ROUTE_CHANNEL_WEBHOOK_DELETE => self
                .manage
                .clear_webhook(&tenant, channel)
                .await
                .map(|()| no_content()),
            ROUTE_WEBHOOK_ROTATE | ROUTE_CHANNEL_WEBHOOK_ROTATE => {
                let body: RotateBody = if req.body.as_deref().is_none_or(|b| b.trim().is_empty()) {
                    RotateBody::default()
                } else {
                    match parse(&req) {
                        Ok(b) => b,
                        Err(r) => return Ok(*r),
                    }
                };
                let overlap = body
                    .overlap_s
                    .map_or(DEFAULT_ROTATION_OVERLAP, Duration::from_secs);
                self.manage
                    .rotate_webhook(&tenant, channel, overlap)
                    .await
                    .map(|v| webhook_view(&v, channel))
            }
            ROUTE_ISSUERS_GET => self
                .manage
                .issuers(&tenant)
                .await
                .map(|list| ok(200, json!({ "issuers": list }))),
            ROUTE_ISSUERS_PUT => {
                let body: IssuerBody = match parse(&req) {
                    Ok(b) => b,
                    Err(r) => return Ok(*r),
                };
                let entry = match trust_entry(body, &tenant) {
                    Ok(e) => e,
                    Err(r) => return Ok(*r),
                };
                self.manage
                    .trust(&tenant, entry)
                    .await
                    .map(|e| ok(200, json!(e)))
            }
            ROUTE_ISSUERS_DELETE => {
                let Some(iss) = req.query_string_parameters.first("iss").map(str::to_owned) else {
                    return Ok(invalid("give the issuer to remove as ?iss="));
                };
                match self.manage.untrust(&tenant, &iss).await {
                    Ok(true) => Ok(no_content()),
                    Ok(false) => Ok(error(
                        404,
                        ErrorCode::InvalidRequest,
                        &format!("the tenant does not trust {iss:?}"),
                        None,
                    )),
                    Err(e) => Err(e),
                }
            }
            ROUTE_REVOCATIONS_GET => self.manage.revocations(&tenant).await.map(|list| {
                let list: Vec<Value> = list
                    .into_iter()
                    .map(|r| json!({"sub": r.sub, "at_ms": r.at_ms}))
                    .collect();
                ok(200, json!({ "revocations": list }))
            }),
            _ => {
                let body: RevokeBody = match parse(&req) {
                    Ok(b) => b,
                    Err(r) => return Ok(*r),
                };
                self.manage.revoke(&tenant, &body.sub).await.map(|r| {
                    ok(200, json!({"sub": body.sub, "at_ms": r.at_ms, "closed": r.closed, "failed": r.failed}))
                })
            }
        };
        Ok(answer.unwrap_or_else(|e| self.refusal(&req, e)))
    }

    /// A refusal: the client's with its message, ours without detail.
    fn refusal(&self, req: &ApiGatewayV2httpRequest, e: ManageError) -> ApiGatewayV2httpResponse {
        let (status, code) = match &e {
            ManageError::Unauthorized(a) => {
                return response(401, &ServerFrame::from(a.protocol_error()).to_json());
            }
            ManageError::NotAdmin => (403, ErrorCode::Forbidden),
            ManageError::Invalid(p) => (400, p.code),
            ManageError::Webhook(WebhookAdminError::Url(_)) => (400, ErrorCode::InvalidRequest),
            ManageError::Webhook(WebhookAdminError::NotFound(_)) => {
                (404, ErrorCode::InvalidRequest)
            }
            ManageError::Identity(IdentityError::Trust(TrustError::IssuerTaken { .. })) => {
                (409, ErrorCode::InvalidRequest)
            }
            ManageError::Identity(IdentityError::Trust(_)) => (400, ErrorCode::InvalidRequest),
            ManageError::Store(StoreError::Unavailable { .. })
            | ManageError::Identity(IdentityError::Store(StoreError::Unavailable { .. }))
            | ManageError::Webhook(WebhookAdminError::Store(StoreError::Unavailable { .. })) => {
                return self.internal(req, 503, &e);
            }
            _ => return self.internal(req, 500, &e),
        };
        tracing::info!(status, error = %e, "admin request refused");
        error(status, code, &e.to_string(), None)
    }

    fn internal(
        &self,
        req: &ApiGatewayV2httpRequest,
        status: u16,
        e: &ManageError,
    ) -> ApiGatewayV2httpResponse {
        let request_id = req.request_context.request_id.clone().unwrap_or_default();
        tracing::error!(%request_id, error = %e, "admin request failed");
        error(
            status,
            ErrorCode::Internal,
            &format!(
                "the gateway could not complete the request; retry it (request id {request_id})"
            ),
            None,
        )
    }
}

fn trust_entry(b: IssuerBody, tenant: &str) -> Result<TrustEntry, Box<ApiGatewayV2httpResponse>> {
    let keys = match (b.jwks_url, b.jwks, b.hs256_secret) {
        (Some(url), None, None) => KeySource::Jwks { url },
        (None, Some(jwks), None) => KeySource::Inline { jwks },
        (None, None, Some(secret)) => {
            let bytes = agentwire_core::auth::trust::decode_secret(&secret)
                .map_err(|_| Box::new(invalid("hs256_secret must be base64")))?;
            KeySource::Hs256 {
                kid: b.kid,
                secret_b64: encode_secret(&bytes),
            }
        }
        _ => {
            return Err(Box::new(invalid(
                "give exactly one of jwks_url, jwks and hs256_secret",
            )));
        }
    };
    Ok(TrustEntry {
        issuer: b.issuer,
        owner: TrustOwner::Tenant(tenant.to_owned()),
        keys,
        audiences: b.audiences,
        principal_claim: b.principal_claim,
        grants_claim: b.grants_claim,
        channels: b.channels,
        publish: b.publish,
        max_lifetime_s: b.max_lifetime_s,
        preset: b.preset,
    })
}

/// A webhook without its secrets.
fn webhook_json(c: &WebhookConfig, channel: Option<&str>, secret: Option<&str>) -> Value {
    let mut v = json!({
        "scope": if channel.is_some() { "channel" } else { "tenant" },
        "url": c.url,
        "mode": c.mode,
        "updated_at": c.updated_at,
    });
    let fields = [
        ("channel", channel.map(Value::from)),
        ("expires_at", c.expires_at.map(Value::from)),
        ("disabled", c.disabled.clone().map(Value::from)),
        ("previous_until", c.previous_until.map(Value::from)),
        ("secret", secret.map(Value::from)),
    ];
    for (k, val) in fields {
        if let Some(val) = val {
            v[k] = val;
        }
    }
    v
}

fn webhook_view(v: &WebhookView, channel: Option<&str>) -> ApiGatewayV2httpResponse {
    ok(
        200,
        webhook_json(&v.config, channel, v.new_secret.as_deref()),
    )
}

fn parse<T: serde::de::DeserializeOwned>(
    req: &ApiGatewayV2httpRequest,
) -> Result<T, Box<ApiGatewayV2httpResponse>> {
    let body = req.body.as_deref().unwrap_or_default();
    if body.len() > MAX_BODY {
        return Err(Box::new(error(
            413,
            ErrorCode::MessageTooLarge,
            &format!(
                "the body is {} bytes; at most {MAX_BODY} are accepted",
                body.len()
            ),
            None,
        )));
    }
    serde_json::from_str(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::BadJson
        } else {
            ErrorCode::InvalidRequest
        };
        Box::new(error(
            400,
            code,
            &format!("the body does not fit this route: {e}"),
            None,
        ))
    })
}

fn header<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn ok(status: u16, v: Value) -> ApiGatewayV2httpResponse {
    response(status, &v.to_string())
}

fn no_content() -> ApiGatewayV2httpResponse {
    let mut resp = ApiGatewayV2httpResponse::default();
    resp.status_code = 204;
    resp
}

fn error(
    status: u16,
    code: ErrorCode,
    message: &str,
    id: Option<String>,
) -> ApiGatewayV2httpResponse {
    response(status, &ServerFrame::error(code, message, id).to_json())
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
