//! Records every AWS call each function makes while the e2e suite runs, for
//! the IAM check (`infra/iam_check.py`): the local endpoint enforces no IAM,
//! so the suite proves instead that the template grants what the code uses.
//!
//! The SDK's HTTP client is wrapped; each request made while the dev gateway
//! runs a function's code ([`agentwire_local::function::current`]) becomes
//! one JSON line `{"function", "service", "action", "resource"}`, the
//! resource named by its role (`connections`, `events_queue`, ...). A
//! `TransactWriteItems` is recorded per item, as IAM authorises it. Lines go
//! to `$AGENTWIRE_IAM_RECORD` (default `target/iam-calls`), one file per
//! test process, each distinct call once.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use serde_json::Value;

/// Table names and queue URLs of every stack of this process → their role.
fn roles() -> &'static Mutex<HashMap<String, &'static str>> {
    static ROLES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    ROLES.get_or_init(Default::default)
}

/// Names a stack's table or queue by its role.
pub fn register(name: &str, role: &'static str) {
    if let Ok(mut r) = roles().lock() {
        r.insert(name.to_owned(), role);
    }
}

fn role_of(name: &str) -> String {
    roles()
        .lock()
        .ok()
        .and_then(|r| r.get(name).map(|s| (*s).to_owned()))
        .unwrap_or_else(|| format!("unknown:{name}"))
}

/// Where the recording goes.
pub fn record_dir() -> PathBuf {
    std::env::var_os("AGENTWIRE_IAM_RECORD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/iam-calls"))
}

fn write(function: &str, service: &str, action: &str, resource: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let line = serde_json::json!({
        "function": function, "service": service, "action": action, "resource": resource,
    })
    .to_string();
    let Ok(mut seen) = SEEN.get_or_init(Default::default).lock() else {
        return;
    };
    if !seen.insert(line.clone()) {
        return;
    }
    let dir = record_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("calls-{}.jsonl", std::process::id()));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// The calls one request makes, as (service, action, resource role).
fn calls(request: &HttpRequest) -> Vec<(&'static str, String, String)> {
    if request.uri().contains("/@connections/") {
        return vec![(
            "execute-api",
            "ManageConnections".into(),
            "connections_api".into(),
        )];
    }
    let Some(target) = request.headers().get("x-amz-target") else {
        return Vec::new();
    };
    let body: Value = request
        .body()
        .bytes()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let (prefix, op) = target.split_once('.').unwrap_or(("", target));
    if prefix.starts_with("AmazonSQS") {
        let queue = body["QueueUrl"].as_str().unwrap_or("");
        return vec![("sqs", op.to_owned(), role_of(queue))];
    }
    if !prefix.starts_with("DynamoDB") {
        return Vec::new();
    }
    let table = |v: &Value| role_of(v["TableName"].as_str().unwrap_or(""));
    match op {
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        let (kind, inner) = item.as_object()?.iter().next()?;
                        let action = match kind.as_str() {
                            "Put" => "PutItem",
                            "Update" => "UpdateItem",
                            "Delete" => "DeleteItem",
                            "ConditionCheck" => "ConditionCheckItem",
                            "Get" => "GetItem",
                            _ => return None,
                        };
                        Some(("dynamodb", action.to_owned(), table(inner)))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "BatchWriteItem" | "BatchGetItem" => body["RequestItems"]
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|t| ("dynamodb", op.to_owned(), role_of(t)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![("dynamodb", op.to_owned(), table(&body))],
    }
}

/// An HTTP client that records, then sends through the SDK's own.
#[derive(Debug, Clone)]
pub struct Recording {
    inner: SharedHttpClient,
}

impl Recording {
    /// Plain HTTP: the local endpoint and the dev gateway.
    pub fn client() -> SharedHttpClient {
        SharedHttpClient::new(Self {
            inner: aws_smithy_http_client::Builder::new().build_http(),
        })
    }
}

impl HttpClient for Recording {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if let Some(function) = agentwire_local::function::current() {
            for (service, action, resource) in calls(&request) {
                write(function, service, &action, &resource);
            }
        }
        self.inner.call(request)
    }
}
