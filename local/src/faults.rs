//! Injected faults: the dev gateway's functions meet AWS as it is on a bad
//! day. Each AWS operation (DynamoDB, SQS, Secrets Manager: whatever the
//! functions call) can answer a throttling error, a 5xx or a time-out at a
//! set rate, and `@connections` can answer 429, 500 or 410. The rates are
//! set at start (`--faults`, `AGENTWIRE_LOCAL_FAULTS`) and changed while
//! running (`POST /@dev/settings` with `faults`); `GET /@dev/faults` counts
//! what was injected, by operation and kind.
//!
//! AWS faults are injected under the SDK, at its HTTP client: the SDK
//! parses the answer as it would AWS's, retries it by its own rules, and
//! the adapters classify what is left, exactly as in a deployment. The
//! event source pollers (AWS's side of Lambda) are left alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use serde::{Deserialize, Serialize};

/// The rates (0 to 1) at which one AWS operation fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsRates {
    /// `ThrottlingException` (HTTP 400).
    #[serde(default)]
    pub throttle: f64,
    /// `InternalServerError` (HTTP 500).
    #[serde(default, rename = "5xx")]
    pub server: f64,
    /// No answer: the SDK's time-out error.
    #[serde(default)]
    pub timeout: f64,
}

/// The rates (0 to 1) at which a `@connections` post fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostRates {
    /// 429 `LimitExceededException`.
    #[serde(default, rename = "429")]
    pub throttled: f64,
    /// 500.
    #[serde(default, rename = "500")]
    pub server: f64,
    /// 410 `GoneException` (the connection is then closed, as it would be).
    #[serde(default, rename = "410")]
    pub gone: f64,
}

/// Every rate: `aws` keyed `service:Operation` (`dynamodb:TransactWriteItems`),
/// `service:*` or `*` (the most specific applies), and `connections`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    #[serde(default)]
    pub aws: BTreeMap<String, AwsRates>,
    #[serde(default)]
    pub connections: PostRates,
}

/// Why fault settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("faults: {0}")]
    Json(#[from] serde_json::Error),
    #[error("faults: {what} is {rate}; a rate is from 0 to 1")]
    Rate { what: String, rate: f64 },
    #[error("faults: the rates of {0} add up to more than 1")]
    Sum(String),
}

impl FaultSettings {
    /// Parses and checks settings from JSON, such as
    /// `{"aws": {"dynamodb:*": {"throttle": 0.2}}, "connections": {"429": 0.1}}`.
    pub fn parse(text: &str) -> Result<Self, FaultError> {
        let s: FaultSettings = serde_json::from_str(text)?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), FaultError> {
        let mut all: Vec<(String, [f64; 3])> = self
            .aws
            .iter()
            .map(|(k, r)| (k.clone(), [r.throttle, r.server, r.timeout]))
            .collect();
        let c = self.connections;
        all.push(("connections".into(), [c.throttled, c.server, c.gone]));
        for (what, rates) in all {
            for rate in rates {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(FaultError::Rate { what, rate });
                }
            }
            if rates.iter().sum::<f64>() > 1.0 + f64::EPSILON {
                return Err(FaultError::Sum(what));
            }
        }
        Ok(())
    }

    /// The rates for `service:op`: its own, its service's, or everyone's.
    fn rates(&self, service: &str, op: &str) -> AwsRates {
        self.aws
            .get(&format!("{service}:{op}"))
            .or_else(|| self.aws.get(&format!("{service}:*")))
            .or_else(|| self.aws.get("*"))
            .copied()
            .unwrap_or_default()
    }
}

/// One injected fault's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFault {
    Throttle,
    Server,
    Timeout,
}

/// One injected `@connections` failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostFault {
    Throttled,
    Server,
    Gone,
}

/// The live settings and the counts of what was injected; shared by the
/// SDK client wrapper, the hub and the settings route.
#[derive(Debug, Default)]
pub struct Faults {
    settings: RwLock<FaultSettings>,
    /// `service:Operation kind` (or `connections kind`) → count.
    injected: Mutex<BTreeMap<String, u64>>,
}

impl Faults {
    pub fn new(settings: FaultSettings) -> Self {
        Self {
            settings: RwLock::new(settings),
            injected: Mutex::default(),
        }
    }

    pub fn settings(&self) -> FaultSettings {
        self.with_settings(FaultSettings::clone)
    }

    /// Replaces every rate (the counts go on).
    pub fn set(&self, settings: FaultSettings) -> Result<(), FaultError> {
        settings.check()?;
        match self.settings.write() {
            Ok(mut s) => *s = settings,
            Err(p) => *p.into_inner() = settings,
        }
        Ok(())
    }

    /// What was injected so far, `service:Operation kind` → count.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.injected
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn count(&self, key: String) {
        let mut m = self.injected.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(key).or_default() += 1;
    }

    /// Reads the rates under the lock (no copy: this is on every call).
    fn with_settings<R>(&self, f: impl FnOnce(&FaultSettings) -> R) -> R {
        match self.settings.read() {
            Ok(s) => f(&s),
            Err(p) => f(&p.into_inner()),
        }
    }

    /// Draws one of `choices` (rate, fault, label) or none, and counts the
    /// one drawn as `scope label`.
    fn pick<T: Copy>(&self, scope: &str, choices: [(f64, T, &str); 3]) -> Option<T> {
        let unit = agentwire_core::clock::random_unit();
        let mut edge = 0.0;
        let (_, fault, label) = choices.into_iter().find(|(rate, _, _)| {
            edge += rate;
            unit < edge
        })?;
        self.count(format!("{scope} {label}"));
        Some(fault)
    }

    /// Whether this call of `service:op` fails, and how.
    pub fn aws_fault(&self, service: &str, op: &str) -> Option<AwsFault> {
        let r = self.with_settings(|s| s.rates(service, op));
        self.pick(
            &format!("{service}:{op}"),
            [
                (r.throttle, AwsFault::Throttle, "throttle"),
                (r.server, AwsFault::Server, "5xx"),
                (r.timeout, AwsFault::Timeout, "timeout"),
            ],
        )
    }

    /// Whether this `@connections` post fails, and how.
    pub fn post_fault(&self) -> Option<PostFault> {
        let r = self.with_settings(|s| s.connections);
        self.pick(
            "connections",
            [
                (r.throttled, PostFault::Throttled, "429"),
                (r.server, PostFault::Server, "500"),
                (r.gone, PostFault::Gone, "410"),
            ],
        )
    }

    /// `inner`, failing calls as these settings say.
    pub fn wrap(self: &Arc<Self>, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(FaultyClient {
            inner,
            faults: self.clone(),
        })
    }

    /// `sdk` with its HTTP client (or the default one) wrapped: the clients
    /// built from it fail the functions' calls as these settings say.
    pub fn sdk(self: &Arc<Self>, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        let inner = sdk.http_client().unwrap_or_else(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https()
        });
        sdk.to_builder().http_client(self.wrap(inner)).build()
    }
}

/// The service and operation of an AWS JSON-protocol request, from its
/// `x-amz-target` (`DynamoDB_20120810.Query`, `AmazonSQS.SendMessage`,
/// `secretsmanager.GetSecretValue`).
fn operation(request: &HttpRequest) -> Option<(String, String)> {
    let target = request.headers().get("x-amz-target")?;
    let (prefix, op) = target.rsplit_once('.')?;
    let service = match prefix {
        p if p.starts_with("DynamoDB") => "dynamodb",
        "AmazonSQS" => "sqs",
        other => other,
    };
    Some((service.to_ascii_lowercase(), op.to_owned()))
}

fn answer(status: u16, code: &str) -> HttpResponse {
    let body = format!(r#"{{"__type":"{code}","message":"injected by the dev gateway"}}"#);
    let mut resp = HttpResponse::new(
        StatusCode::from(
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        ),
        SdkBody::from(body),
    );
    resp.headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    resp.headers_mut()
        .insert("x-amzn-errortype", code.to_owned());
    resp
}

#[derive(Debug)]
struct FaultyClient {
    inner: SharedHttpClient,
    faults: Arc<Faults>,
}

impl HttpClient for FaultyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            faults: self.faults.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    faults: Arc<Faults>,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // Only the functions' own calls: not the event sources' receives
        // and deletes, nor the gateway's set-up.
        let fault = operation(&request)
            .filter(|_| crate::function::in_function_code())
            .and_then(|(service, op)| self.faults.aws_fault(&service, &op));
        match fault {
            None => self.inner.call(request),
            Some(AwsFault::Throttle) => {
                HttpConnectorFuture::ready(Ok(answer(400, "ThrottlingException")))
            }
            Some(AwsFault::Server) => {
                HttpConnectorFuture::ready(Ok(answer(500, "InternalServerError")))
            }
            Some(AwsFault::Timeout) => HttpConnectorFuture::ready(Err(ConnectorError::timeout(
                "injected by the dev gateway: no answer".into(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_bad_rates() {
        let s = FaultSettings::parse(
            r#"{"aws": {"dynamodb:*": {"throttle": 0.2, "5xx": 0.1}, "*": {"timeout": 0.01}},
                "connections": {"429": 0.1, "410": 0.01}}"#,
        )
        .unwrap();
        assert_eq!(s.rates("dynamodb", "Query").throttle, 0.2);
        assert_eq!(s.rates("sqs", "SendMessage").timeout, 0.01);
        assert_eq!(s.connections.gone, 0.01);
        assert!(FaultSettings::parse(r#"{"aws": {"*": {"throttle": 2}}}"#).is_err());
        assert!(FaultSettings::parse(r#"{"aws": {"*": {"throttle": 0.6, "5xx": 0.6}}}"#).is_err());
        assert!(FaultSettings::parse(r#"{"aws": {"*": {"slow": 0.1}}}"#).is_err());
    }

    #[test]
    fn the_most_specific_rates_apply() {
        let s = FaultSettings::parse(
            r#"{"aws": {"dynamodb:Query": {"5xx": 1}, "dynamodb:*": {"throttle": 1}}}"#,
        )
        .unwrap();
        assert_eq!(s.rates("dynamodb", "Query").server, 1.0);
        assert_eq!(s.rates("dynamodb", "GetItem").throttle, 1.0);
        assert_eq!(s.rates("sqs", "SendMessage"), AwsRates::default());
    }

    #[test]
    fn a_rate_of_one_always_fails_and_zero_never_and_both_are_counted() {
        let f = Faults::new(
            FaultSettings::parse(r#"{"aws": {"sqs:SendMessage": {"throttle": 1}}}"#).unwrap(),
        );
        for _ in 0..100 {
            assert_eq!(f.aws_fault("sqs", "SendMessage"), Some(AwsFault::Throttle));
            assert_eq!(f.aws_fault("sqs", "DeleteMessage"), None);
        }
        assert_eq!(f.injected()["sqs:SendMessage throttle"], 100);
        f.set(FaultSettings::default()).unwrap();
        assert_eq!(f.aws_fault("sqs", "SendMessage"), None);
    }
}
