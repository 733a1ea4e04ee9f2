//! `agentwire tail`: connect, say hello, join, print frames as JSON lines.

use agentwire_protocol::{
    ClientFrame, JoinChannel, ProtocolRange, Since, subprotocol_name, supported,
};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway's WebSocket URL, e.g. ws://127.0.0.1:8080.
    #[arg(long, env = "AGENTWIRE_URL")]
    url: String,
    /// A token from `agentwire token`.
    #[arg(long, env = "AGENTWIRE_TOKEN", hide_env_values = true)]
    token: String,
    /// Channels to join (repeat or comma-separate).
    #[arg(long, required = true, value_delimiter = ',')]
    channel: Vec<String>,
    /// Only new events (`head`), instead of resuming from the durable cursor.
    #[arg(long)]
    from_head: bool,
}

pub async fn run(args: Args) -> Result<(), String> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad --url {:?}: {e}", args.url))?;
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", args.token))
            .map_err(|e| format!("bad --token: {e}"))?,
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&subprotocol_name(supported().max)).map_err(|e| e.to_string())?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                format!(
                    "the gateway refused the connection: HTTP {} {body}",
                    resp.status()
                )
            }
            other => format!("cannot connect to {}: {other}", args.url),
        })?;
    eprintln!("agentwire: connected to {}", args.url);
    let (mut sink, mut stream) = ws.split();
    let hello = ClientFrame::Hello {
        protocol: ProtocolRange {
            min: supported().min,
            max: supported().max,
        },
        client: Some(concat!("agentwire-cli/", env!("CARGO_PKG_VERSION")).into()),
    };
    let since = args.from_head.then_some(Since::Head);
    let join = ClientFrame::Join {
        id: Some("tail".into()),
        channels: args
            .channel
            .iter()
            .map(|name| JoinChannel {
                name: name.clone(),
                since: since.clone(),
            })
            .collect(),
    };
    for frame in [hello, join] {
        let text = serde_json::to_string(&frame).map_err(|e| e.to_string())?;
        sink.send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    while let Some(msg) = stream.next().await {
        match msg.map_err(|e| format!("connection lost: {e}"))? {
            Message::Text(t) => println!("{t}"),
            Message::Close(c) => {
                let why = c
                    .map(|c| format!("{} {}", u16::from(c.code), c.reason))
                    .unwrap_or_default();
                return Err(format!("the gateway closed the connection {why}"));
            }
            _ => {}
        }
    }
    Err("the connection ended".into())
}
