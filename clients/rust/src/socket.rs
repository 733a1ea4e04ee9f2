//! Opening one WebSocket: the request (token, offered subprotocols), TLS,
//! and the classification of a refusal into retry / renew the token / stop.

use std::sync::Arc;
use std::time::Duration;

use agentwire_protocol::{ErrorCode, ProtocolRange, ServerFrame, subprotocol_name};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::ClientError;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Worth another attempt after a delay (network, 5xx, 429, time-out).
    Retry(String),
    /// The token was refused; a fresh one may help.
    Token(ClientError),
    /// No retry can help.
    Fatal(ClientError),
}

/// The request for `url`: a bearer token and every `agentwire.vN` of the
/// range, newest first.
pub(crate) fn request(
    url: &str,
    token: &str,
    range: ProtocolRange,
) -> Result<Request<()>, ClientError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| ClientError::Config(format!("bad url {url:?}: {e}")))?;
    let offered: Vec<String> = (range.min..=range.max)
        .rev()
        .map(subprotocol_name)
        .collect();
    let headers = req.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Config("the token has characters a header cannot carry".into())
        })?,
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&offered.join(", "))
            .map_err(|e| ClientError::Config(format!("bad protocol range: {e}")))?,
    );
    Ok(req)
}

/// TLS for `wss://`: webpki roots, the aws-lc-rs provider chosen
/// explicitly so the client works whatever else the application links.
pub(crate) fn tls_connector() -> Result<Connector, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// Opens the WebSocket, within `timeout`.
pub(crate) async fn open(
    req: Request<()>,
    tls: Option<Connector>,
    range: ProtocolRange,
    timeout: Duration,
) -> Result<Ws, OpenError> {
    let attempt = tokio_tungstenite::connect_async_tls_with_config(req, None, false, tls);
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(OpenError::Retry(format!(
            "the WebSocket handshake took longer than {timeout:?}"
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(classify_refusal(status, &body, range))
        }
        Ok(Err(e)) => Err(OpenError::Retry(e.to_string())),
    }
}

/// What a non-101 answer to the upgrade means.
pub(crate) fn classify_refusal(status: u16, body: &str, range: ProtocolRange) -> OpenError {
    let frame = serde_json::from_str::<ServerFrame>(body).ok();
    let (code, message, supported) = match frame {
        Some(ServerFrame::Error(e)) => (Some(e.code), e.message, e.supported),
        _ => (None, body.trim().chars().take(300).collect(), None),
    };
    match (status, code) {
        (_, Some(ErrorCode::VersionUnsupported)) => {
            OpenError::Fatal(ClientError::VersionUnsupported {
                offered_min: range.min,
                offered_max: range.max,
                supported,
                message,
            })
        }
        (401, code) => OpenError::Token(ClientError::Unauthorized {
            code: code.unwrap_or(ErrorCode::Unauthorized),
            message,
        }),
        (408 | 429, _) | (500..=599, _) => {
            OpenError::Retry(format!("the gateway answered HTTP {status}: {message}"))
        }
        _ => OpenError::Fatal(ClientError::Refused { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: ProtocolRange = ProtocolRange { min: 1, max: 1 };

    #[test]
    fn every_version_of_the_range_is_offered_newest_first() {
        let req = request("ws://127.0.0.1:1", "t", ProtocolRange { min: 1, max: 3 }).unwrap();
        assert_eq!(
            req.headers()["sec-websocket-protocol"],
            "agentwire.v3, agentwire.v2, agentwire.v1"
        );
        assert_eq!(req.headers()["authorization"], "Bearer t");
    }

    #[test]
    fn a_bad_url_is_a_config_error() {
        assert!(matches!(
            request("http//nope", "t", V1),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn refusals_are_classified() {
        let body = |code: &str| format!(r#"{{"type":"error","code":"{code}","message":"m"}}"#);
        assert!(matches!(
            classify_refusal(400, &body("version_unsupported"), V1),
            OpenError::Fatal(ClientError::VersionUnsupported { .. })
        ));
        assert!(matches!(
            classify_refusal(401, &body("token_expired"), V1),
            OpenError::Token(ClientError::Unauthorized {
                code: ErrorCode::TokenExpired,
                ..
            })
        ));
        assert!(matches!(
            classify_refusal(503, "busy", V1),
            OpenError::Retry(_)
        ));
        assert!(matches!(classify_refusal(429, "", V1), OpenError::Retry(_)));
        assert!(matches!(
            classify_refusal(403, "no", V1),
            OpenError::Fatal(ClientError::Refused { status: 403, .. })
        ));
    }
}
