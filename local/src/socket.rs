//! The WebSocket side: upgrade through `$connect`, route messages, enforce
//! API Gateway's limits, run `$disconnect` when the socket ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use agentwire_protocol::{ErrorCode, ServerFrame};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use crate::App;
use crate::events::{self, Origin};
use crate::function;
use crate::hub::{Live, Outbound};

pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/", any(upgrade))
}

/// How one connection is identified to the handlers.
struct Conn {
    id: String,
    connected_at_ms: i64,
    peer: SocketAddr,
}

impl Conn {
    fn origin<'a>(&'a self, app: &'a App) -> Origin<'a> {
        Origin {
            connection_id: &self.id,
            connected_at_ms: self.connected_at_ms,
            domain: &app.domain,
            stage: &app.options.stage,
            source_ip: self.peer.ip().to_string(),
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

async fn upgrade(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = ServerFrame::error(
                ErrorCode::InvalidFrame,
                format!("this endpoint only takes WebSocket upgrades: {rejection}"),
                None,
            );
            return plain(StatusCode::UPGRADE_REQUIRED, body.to_json());
        }
    };
    let conn = Conn {
        // API Gateway's ids are opaque, URL-safe strings.
        id: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
        connected_at_ms: events::now_ms(),
        peer,
    };
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event = events::connect(
        &conn.origin(&app),
        headers,
        events::parse_query(query.as_deref()),
    );
    let resp = match function::scope("connect", app.functions.connect.handle(event)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(connection_id = %conn.id, error = %e, "connect handler failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"message":"Internal server error"}"#.into(),
            );
        }
    };
    if !(200..300).contains(&resp.status_code) {
        let status = u16::try_from(resp.status_code)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match resp.body {
            Some(LambdaBody::Text(t)) => Body::from(t),
            Some(LambdaBody::Binary(b)) => Body::from(b),
            _ => Body::empty(),
        };
        return (status, [("content-type", "application/json")], body).into_response();
    }
    let mut ws = ws
        .max_message_size(app.options.max_message_bytes.saturating_mul(4))
        .read_buffer_size(READ_BUFFER_BYTES);
    if let Some(p) = resp
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
    {
        ws = ws.protocols([p.to_owned()]);
    }
    ws.on_upgrade(move |socket| run(app, socket, conn, user_agent))
}

/// Each connection's read buffer. tungstenite fills its whole read buffer
/// with zeros before each read, so the buffer is resident memory for as
/// long as the connection lives: its default, 128 KiB, made an idle
/// connection cost about 150 KiB. Client frames are small (a frame larger
/// than the buffer grows it for that frame, and takes a few more reads).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Why a connection ended: the close code and reason `$disconnect` gets.
struct Ended(u16, String);

async fn run(app: Arc<App>, socket: WebSocket, conn: Conn, user_agent: Option<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let answers = tx.clone();
    let buffered = Arc::new(AtomicUsize::new(0));
    let closer = Arc::new(tokio::sync::Notify::new());
    app.hub.insert(
        &conn.id,
        Live {
            tx: tx.clone(),
            connected_at: SystemTime::now(),
            source_ip: conn.peer,
            user_agent,
            buffered: buffered.clone(),
            closer: closer.clone(),
        },
    );
    tracing::debug!(connection_id = %conn.id, "socket open");
    let conn = Arc::new(conn);
    // Messages are handled one at a time, in order, by a worker, so that the
    // socket keeps writing what handlers post to @connections meanwhile (a
    // long replay streams instead of arriving all at once at the end).
    // `ping` is answered at once by the reader (API Gateway's MOCK route):
    // a client's liveness check never waits behind a slow join.
    let (work, mut incoming_work) = mpsc::unbounded_channel::<(String, String, bool)>();
    let worker = tokio::spawn({
        let (app, conn) = (app.clone(), conn.clone());
        async move {
            while let Some((route_key, text, binary)) = incoming_work.recv().await {
                if let Some(answer) = route(&app, &conn, route_key, text, binary).await
                    && answers.send(Outbound::Text(answer, 0)).is_err()
                {
                    break;
                }
            }
        }
    });
    let (sink, mut stream) = socket.split();
    // The writer has a task of its own: a client that stops reading blocks
    // only the writer, never the reading side or the idle and duration
    // timers (the buffer's bound turns further posts into 429s).
    let mut writer = tokio::spawn(write(sink, rx, buffered));
    let idle = tokio::time::sleep(app.options.idle_timeout);
    let max = tokio::time::sleep(app.options.max_duration);
    tokio::pin!(idle, max);
    // Whether the gateway closes (and the close frame should go out).
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            incoming = stream.next() => {
                let msg = match incoming {
                    None => break Ended(1006, "Connection closed abnormally".into()),
                    Some(Err(e)) => break Ended(1006, format!("socket error: {e}")),
                    Some(Ok(m)) => m,
                };
                let (text, binary) = match msg {
                    Message::Text(t) => (t.to_string(), false),
                    Message::Binary(b) => (base64_encode(&b), true),
                    Message::Close(c) => {
                        let (code, reason) = c.map(|c| (c.code, c.reason.to_string())).unwrap_or((1005, String::new()));
                        break Ended(code, reason);
                    }
                    Message::Ping(_) | Message::Pong(_) => continue,
                };
                idle.as_mut().reset(tokio::time::Instant::now() + app.options.idle_timeout);
                let raw_len = if binary { text.len() / 4 * 3 } else { text.len() };
                if raw_len > app.options.max_message_bytes {
                    let frame = ServerFrame::error(
                        ErrorCode::MessageTooLarge,
                        format!("message is {raw_len} bytes; the gateway accepts at most {}", app.options.max_message_bytes),
                        None,
                    );
                    let _ = tx.send(Outbound::Text(frame.to_json(), 0));
                    let _ = tx.send(Outbound::Close(1009, "Message too big".into()));
                    closing = true;
                    break Ended(1009, "Message too big".into());
                }
                match select_route(&text, binary) {
                    // A pong overtakes the answers of functions still running.
                    RouteTo::Mock(answer) => {
                        let _ = tx.send(Outbound::Text(answer, 0));
                    }
                    RouteTo::Function(route_key) => {
                        if work.send((route_key, text, binary)).is_err() {
                            break Ended(1011, "message worker stopped".into());
                        }
                    }
                }
            }
            done = &mut writer => {
                break match done {
                    Ok(ended) => ended,
                    Err(e) => Ended(1011, format!("writer failed: {e}")),
                };
            }
            () = closer.notified() => {
                // DeleteConnection: the close frame goes out if the writer
                // can send it within the grace; else the socket is dropped.
                let _ = tx.send(Outbound::Close(1000, "closed by the gateway".into()));
                closing = true;
                break Ended(1000, "closed by the gateway".into());
            }
            _ = &mut idle => {
                let _ = tx.send(Outbound::Close(1001, "Going away: idle timeout".into()));
                closing = true;
                break Ended(1001, "idle timeout".into());
            }
            _ = &mut max => {
                let _ = tx.send(Outbound::Close(1001, "Going away: connection duration limit".into()));
                closing = true;
                break Ended(1001, "connection duration limit".into());
            }
        }
    };
    app.hub.remove(&conn.id);
    // The close frame gets a moment to go out; a writer stuck on a client
    // that does not read is dropped with its socket.
    if !writer.is_finished()
        && (!closing
            || tokio::time::timeout(CLOSE_GRACE, &mut writer)
                .await
                .is_err())
    {
        writer.abort();
    }
    // Messages already received are still handled (as API Gateway would),
    // before $disconnect runs.
    drop(work);
    if let Err(e) = worker.await {
        tracing::error!(connection_id = %conn.id, error = %e, "message worker failed");
    }
    tracing::debug!(connection_id = %conn.id, code = ended.0, reason = %ended.1, "socket closed");
    let event = events::disconnect(&conn.origin(&app), ended.0, &ended.1);
    if let Err(e) = function::scope("disconnect", app.functions.disconnect.handle(event)).await {
        tracing::error!(connection_id = %conn.id, error = %e, "disconnect handler failed");
    }
}

/// How long a closing connection's writer may take to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Writes what is queued for the connection, in order, releasing each
/// post's bytes from the outbound buffer once written; ends on a close (sent
/// to the client), a failed write or when the queue is dropped.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    buffered: Arc<AtomicUsize>,
) -> Ended {
    while let Some(out) = rx.recv().await {
        let (result, len) = match out {
            Outbound::Text(t, len) => (sink.send(Message::Text(t.into())).await, len),
            Outbound::Binary(b, len) => (sink.send(Message::Binary(b.into())).await, len),
            Outbound::Close(code, reason) => {
                let _ = sink.send(close(code, &reason)).await;
                return Ended(code, reason);
            }
        };
        buffered.fetch_sub(len, Ordering::AcqRel);
        if result.is_err() {
            return Ended(1006, "send failed".into());
        }
    }
    Ended(1011, "gateway dropped the connection".into())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// Where API Gateway's route selection on `$request.body.action` sends a
/// message: `ping` is the MOCK route, answered without a function (and so
/// without waiting for the functions handling earlier messages).
enum RouteTo {
    Mock(String),
    Function(String),
}

fn select_route(text: &str, binary: bool) -> RouteTo {
    let action = if binary {
        None
    } else {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_owned))
    };
    match action.as_deref() {
        Some("ping") => RouteTo::Mock(ServerFrame::Pong.to_json()),
        Some(a @ ("hello" | "join" | "leave" | "ack" | "refresh")) => {
            RouteTo::Function(a.to_owned())
        }
        _ => RouteTo::Function("$default".to_owned()),
    }
}

/// Invokes the session function for one message on `route_key`.
async fn route(
    app: &App,
    conn: &Conn,
    route_key: String,
    text: String,
    binary: bool,
) -> Option<String> {
    let event = events::message(&conn.origin(app), &route_key, text, binary);
    match function::scope("session", app.functions.session.handle(event)).await {
        Ok(resp) => match resp.body {
            Some(LambdaBody::Text(t)) => Some(t),
            Some(LambdaBody::Binary(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        },
        Err(e) => {
            tracing::error!(connection_id = %conn.id, route_key, error = %e, "route handler failed");
            // What API Gateway sends when an integration fails.
            Some(
                serde_json::json!({
                    "message": "Internal server error",
                    "connectionId": conn.id,
                    "requestId": uuid::Uuid::new_v4().to_string(),
                })
                .to_string(),
            )
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
