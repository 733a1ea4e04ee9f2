//! `agentwire publish`: validate an event and put it on the events queue
//! (SQS, with AWS credentials) or post it to the HTTP publish API (`--url`,
//! with a token).
//!
//! Three shapes: one event (`--data`); one message of any size from a file
//! or stdin (`--file`, sent as chunk events when it does not fit in one
//! event); a stream from stdin (`--stream`: what arrives within the window,
//! or up to the size bound, goes as one event), so
//! `make 2>&1 | agentwire publish --stream …` follows a build live.

use crate::error::CliError;
use std::sync::Arc;
use std::time::Duration;

use agentwire_aws::SqsEventQueue;
use agentwire_core::clock::SystemClock;
use agentwire_core::stream::{DEFAULT_MAX_BYTES, StreamError, StreamSink, StreamWriter};
use agentwire_core::usecases::{Publication, Publisher};
use agentwire_protocol::chunks::{self, Payload};
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::Credentials;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    channel: String,
    /// The event kind, e.g. status or final.
    #[arg(long)]
    kind: String,
    /// The event data, as JSON.
    #[arg(long, default_value = "null", conflicts_with_all = ["file", "stream"])]
    data: String,
    /// Publish this file (`-`: stdin) as one message: its text, or its
    /// bytes (base64) when it is not UTF-8; as chunk events when it does
    /// not fit in one event. Prints the message id.
    #[arg(long, conflicts_with = "stream")]
    file: Option<String>,
    /// Stream stdin: what arrives within `--window-ms`, or up to
    /// `--max-bytes`, goes as one event `{"stream","index","text"}`, and an
    /// `{"stream","index","end":true}` event closes it. Prints the stream id.
    #[arg(long)]
    stream: bool,
    /// The stream's coalescing window.
    #[arg(long, default_value_t = 50, requires = "stream")]
    window_ms: u64,
    /// The most text one stream event holds (as JSON, at most 65536).
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES, requires = "stream")]
    max_bytes: usize,
    /// Idempotency key: publishing the same id twice makes one event (one
    /// message, one stream). Over HTTP it is the token's own: the event id
    /// is the key behind a tag of its principal (printed). Default: a new
    /// UUID.
    #[arg(long)]
    id: Option<String>,
}

/// Where a command publishes: the events queue (`--tenant`, AWS
/// credentials) or the HTTP publish API (`--url` and `--token`).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The tenant (SQS mode; over HTTP it comes from the token).
    #[arg(long, required_unless_present = "url")]
    tenant: Option<String>,
    /// Publish over HTTP to this publish API (the stack's PublishUrl base,
    /// e.g. https://abc.execute-api.eu-west-1.amazonaws.com, or
    /// http://127.0.0.1:8080 for the dev gateway) instead of SQS.
    #[arg(long, env = "AGENTWIRE_PUBLISH_URL")]
    url: Option<String>,
    /// A token with a `publish` grant for the channel (HTTP mode).
    #[arg(
        long,
        env = "AGENTWIRE_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    token: Option<String>,
    /// The events queue: a name or a URL (SQS mode).
    #[arg(
        long,
        env = "AGENTWIRE_EVENTS_QUEUE",
        default_value = "agentwire-events.fifo"
    )]
    queue: String,
    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local stack.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
}

impl Target {
    /// Where the events go, for messages: the URL or the queue.
    pub(crate) fn describe(&self) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => format!("the events queue {}", self.queue),
        }
    }
}

/// How long one HTTP publish may take before it counts as failed.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// One event of a batch: its kind, idempotency key and data.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub kind: String,
    pub id: String,
    pub data: Value,
}

/// Where events go: the queue (library path) or the HTTP API.
pub(crate) enum Sink {
    Sqs {
        publisher: Box<Publisher>,
        tenant: String,
    },
    Http {
        client: reqwest::Client,
        base: String,
        token: String,
    },
}

impl Sink {
    pub(crate) async fn open(target: &Target, channel: &str) -> Result<Sink, CliError> {
        match (&target.url, target.tenant.clone()) {
            (Some(url), _) => Ok(Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(HTTP_TIMEOUT)
                    .build()
                    .map_err(|source| CliError::Http {
                        endpoint: url.clone(),
                        source,
                    })?,
                base: format!("{}/v1/channels/{}", url.trim_end_matches('/'), channel),
                token: target
                    .token
                    .clone()
                    .ok_or("--url needs --token (a token with a publish grant)")?,
            }),
            (None, Some(tenant)) => {
                let sqs = aws_sdk_sqs::Client::new(&sdk_config(target.endpoint.as_deref()).await);
                let url = queue_url(&sqs, &target.queue).await?;
                Ok(Sink::Sqs {
                    publisher: Box::new(Publisher::new(
                        Arc::new(SqsEventQueue::new(sqs, url)),
                        Arc::new(SystemClock),
                    )),
                    tenant,
                })
            }
            (None, None) => Err("give --tenant (SQS) or --url (HTTP)".into()),
        }
    }

    /// One event; its id.
    async fn event(
        &self,
        channel: &str,
        kind: &str,
        data: Value,
        id: Option<String>,
    ) -> Result<String, CliError> {
        match self {
            Sink::Sqs { publisher, tenant } => Ok(publisher
                .publish(Publication {
                    tenant: tenant.clone(),
                    channel: channel.to_owned(),
                    kind: kind.to_owned(),
                    data,
                    id,
                })
                .await?
                .id),
            Sink::Http {
                client,
                base,
                token,
            } => {
                let endpoint = format!("{base}/events");
                let body = json!({"kind": kind, "data": data});
                let answer = post(client, &endpoint, token, &body, id.as_deref()).await?;
                answer["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| CliError::Refused {
                        status: 200,
                        message: format!("an answer without an id: {answer}"),
                    })
            }
        }
    }

    /// Several events of one kind in order: one queue call (or batch
    /// request) per ten.
    async fn events(
        &self,
        channel: &str,
        kind: &str,
        events: Vec<(String, Value)>,
    ) -> Result<(), CliError> {
        let events = events
            .into_iter()
            .map(|(id, data)| Outgoing {
                kind: kind.to_owned(),
                id,
                data,
            })
            .collect();
        self.batch(channel, events).await
    }

    /// Several events of any kinds in order: one queue call (or batch
    /// request) per ten.
    pub(crate) async fn batch(&self, channel: &str, events: Vec<Outgoing>) -> Result<(), CliError> {
        match self {
            Sink::Sqs { publisher, tenant } => {
                publisher
                    .publish_many(
                        events
                            .into_iter()
                            .map(|e| Publication {
                                tenant: tenant.clone(),
                                channel: channel.to_owned(),
                                kind: e.kind,
                                data: e.data,
                                id: Some(e.id),
                            })
                            .collect(),
                    )
                    .await?;
                Ok(())
            }
            Sink::Http {
                client,
                base,
                token,
            } => {
                let endpoint = format!("{base}/events:batch");
                for batch in events.chunks(10) {
                    let body: Vec<Value> = batch
                        .iter()
                        .map(|e| json!({"kind": e.kind, "data": e.data, "id": e.id}))
                        .collect();
                    post(client, &endpoint, token, &json!({ "events": body }), None).await?;
                }
                Ok(())
            }
        }
    }

    /// One message of any size; how many events it took.
    async fn message(
        &self,
        channel: &str,
        kind: &str,
        id: &str,
        payload: &Payload,
    ) -> Result<usize, CliError> {
        match self {
            Sink::Sqs { publisher, tenant } => Ok(publisher
                .publish_payload(
                    Publication {
                        tenant: tenant.clone(),
                        channel: channel.to_owned(),
                        kind: kind.to_owned(),
                        data: Value::Null,
                        id: Some(id.to_owned()),
                    },
                    payload,
                )
                .await?
                .len()),
            Sink::Http { .. } => {
                if let Some(data) = payload.as_event_data() {
                    self.event(channel, kind, data, Some(id.to_owned())).await?;
                    return Ok(1);
                }
                // Ten chunks of at most 64 KiB: well inside a batch body.
                let parts: Vec<(String, Value)> = chunks::split(id, payload)
                    .into_iter()
                    .map(|c| (c.id, c.data))
                    .collect();
                let n = parts.len();
                self.events(channel, kind, parts).await?;
                Ok(n)
            }
        }
    }
}

pub async fn run(args: Args) -> Result<(), CliError> {
    if args.stream {
        return stream(&args).await;
    }
    if let Some(path) = &args.file {
        return file(&args, path).await;
    }
    let data: Value = serde_json::from_str(&args.data)
        .map_err(|e| CliError::Usage(format!("--data is not valid JSON: {e}")))?;
    let sink = Sink::open(&args.target, &args.channel).await?;
    let id = sink
        .event(&args.channel, &args.kind, data, args.id.clone())
        .await?;
    println!("{id}");
    Ok(())
}

/// `--file`: the whole input as one message.
async fn file(args: &Args, path: &str) -> Result<(), CliError> {
    let bytes = if path == "-" {
        let mut buf = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut buf)
            .await
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        buf
    } else {
        tokio::fs::read(path)
            .await
            .map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))?
    };
    let size = bytes.len();
    let payload = match String::from_utf8(bytes) {
        Ok(text) => Payload::Text(text),
        Err(e) => Payload::Bytes(e.into_bytes()),
    };
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let sink = Sink::open(&args.target, &args.channel).await?;
    let events = sink
        .message(&args.channel, &args.kind, &id, &payload)
        .await?;
    eprintln!(
        "agentwire: published {size} bytes ({}) as {events} event{}",
        match payload {
            Payload::Bytes(_) => "binary, base64",
            _ => "text",
        },
        if events == 1 { "" } else { "s" }
    );
    println!("{id}");
    Ok(())
}

/// `--stream`: stdin, coalesced, until it ends (`core::stream::StreamWriter`:
/// what piles up while a batch is being sent goes as the next batch, so a
/// queue slower than the writer costs lag, not throughput).
async fn stream(args: &Args) -> Result<(), CliError> {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let sink = Sink::open(&args.target, &args.channel).await?;
    let writer = StreamWriter::open(
        StreamTo {
            sink,
            channel: args.channel.clone(),
            kind: args.kind.clone(),
        },
        id.clone(),
        Duration::from_millis(args.window_ms),
        args.max_bytes,
    );
    let read = read_stdin(&writer).await;
    let report = writer.finish().await.map_err(|e| match e {
        StreamError::Send { source, .. } => source,
        StreamError::Task(why) => CliError::Usage(format!("the stream stopped: {why}")),
    })?;
    read?;
    eprintln!(
        "agentwire: streamed {} bytes as {} events (stream {id})",
        report.bytes, report.events
    );
    println!("{id}");
    Ok(())
}

/// Stdin into the stream until it ends (or the stream stops).
async fn read_stdin(writer: &StreamWriter<CliError>) -> Result<(), CliError> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = stdin
            .read(&mut buf)
            .await
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        let text = take_text(&mut carry);
        if !text.is_empty() && !writer.write(text) {
            return Ok(()); // stopped: finish() says why
        }
    }
    if !carry.is_empty() {
        writer.write(String::from_utf8_lossy(&carry).into_owned());
    }
    Ok(())
}

/// A stream's events through the sink: the queue or the HTTP API.
struct StreamTo {
    sink: Sink,
    channel: String,
    kind: String,
}

#[async_trait::async_trait]
impl StreamSink for StreamTo {
    type Error = CliError;

    async fn send(&self, events: Vec<(String, Value)>) -> Result<(), CliError> {
        self.sink.events(&self.channel, &self.kind, events).await
    }
}

/// The text of `carry` that is complete UTF-8 (invalid bytes become
/// U+FFFD); an incomplete character at its end is kept for the next read.
pub(crate) fn take_text(carry: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(carry) {
            Ok(s) => {
                out.push_str(s);
                carry.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(&String::from_utf8_lossy(&carry[..valid]));
                match e.error_len() {
                    None => {
                        carry.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        carry.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

/// A POST to the HTTP API: the JSON answer of a 2xx (201 committed, 200 a
/// repeated idempotency key, 202 queued), else the refusal.
async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    token: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Result<Value, CliError> {
    let mut req = client
        .post(endpoint)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(id) = idempotency_key {
        req = req.header("idempotency-key", id);
    }
    let resp = req.send().await.map_err(|source| CliError::Http {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let json: Value = serde_json::from_str(&text).unwrap_or_default();
    if status.is_success() {
        return Ok(json);
    }
    let message = match (json["code"].as_str(), json["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => text.chars().take(300).collect::<String>(),
    };
    Err(CliError::Refused {
        status: status.as_u16(),
        message,
    })
}

/// The SDK's settings, with `endpoint` if given. A loopback endpoint with no
/// credentials in the environment gets the local stack's dummy key.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(ep) = endpoint {
        loader = loader.endpoint_url(ep);
        let loopback =
            ep.contains("://127.") || ep.contains("://localhost") || ep.contains("://[::1]");
        if loopback && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "local-stack",
            ));
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
    }
    loader.load().await
}

pub(crate) async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, CliError> {
    agentwire_aws::sqs::resolve_queue_url(sqs, queue)
        .await
        .map_err(|source| CliError::Queue {
            queue: queue.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_text_keeps_a_split_character_for_the_next_read() {
        let mut carry = "héllo".as_bytes()[..2].to_vec(); // "h" and half of "é"
        assert_eq!(take_text(&mut carry), "h");
        assert_eq!(carry.len(), 1);
        carry.extend_from_slice(&"héllo".as_bytes()[2..]);
        assert_eq!(take_text(&mut carry), "éllo");
        assert!(carry.is_empty());
        let mut bad = vec![b'a', 0xff, b'b'];
        assert_eq!(take_text(&mut bad), "a\u{FFFD}b");
    }
}
