//! The language-neutral client scenarios of `conformance/` (see its README),
//! run against this client: an in-process scripted gateway accepts or
//! refuses each connection attempt, checks the frames the client sends, sends
//! the frames the script says, and the application's observations (joined,
//! events, gaps, a fatal error) are compared in order. The TypeScript client
//! runs the same files, so the two cannot drift.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
// The upgrade callback's error type is tungstenite's own `ErrorResponse`.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_client::{
    Backoff, Client, ClientError, ClientEvent, JoinedSnapshot, Notice, Options, Since, StateChange,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// How long any step waits for what it needs.
const STEP: Duration = Duration::from_secs(5);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// `pattern` ⊆ `actual`: every key of the pattern present and equal
/// (objects recursively, arrays element by element), `"*"` matching any
/// present value.
fn matches(pattern: &Value, actual: &Value) -> bool {
    match (pattern, actual) {
        (Value::String(p), _) if p == "*" => !actual.is_null(),
        (Value::Object(p), Value::Object(a)) => p
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(p), Value::Array(a)) => {
            p.len() == a.len() && p.iter().zip(a).all(|(pv, av)| matches(pv, av))
        }
        (p, a) => p == a,
    }
}

/// Replaces every `"$id"` string with the remembered request id, and every
/// `"$now+N"` with the Unix seconds N from now.
fn substitute(v: &Value, id: &str) -> Value {
    match v {
        Value::String(s) if s == "$id" => Value::String(id.to_owned()),
        Value::String(s) if s.starts_with("$now+") => {
            let n: u64 = s["$now+".len()..]
                .parse()
                .expect("$now+N with N whole seconds");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            Value::from(now + n)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), substitute(v, id)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, id)).collect()),
        other => other.clone(),
    }
}

fn since(v: &Value) -> Option<Since> {
    match v {
        Value::Null => None,
        Value::String(s) if s == "head" => Some(Since::Head),
        Value::Object(o) => Some(Since::Position {
            epoch: o["epoch"].as_str().unwrap().to_owned(),
            seq: o["seq"].as_u64().unwrap(),
        }),
        other => panic!("bad since {other}"),
    }
}

/// The stable code of a fatal client error, as the scenarios name it.
fn fatal_code(e: &ClientError) -> String {
    match e {
        ClientError::Unauthorized { code, .. } => code.to_string(),
        ClientError::VersionUnsupported { .. } => "version_unsupported".into(),
        ClientError::Refused { .. } => "refused".into(),
        ClientError::Exhausted { .. } => "exhausted".into(),
        other => format!("other: {other}"),
    }
}

/// A `joined` answer as one observation per channel, with the channel's
/// presence and health when the frame carried them.
fn joined_observations(s: JoinedSnapshot) -> Vec<Value> {
    s.channels
        .into_iter()
        .map(|c| {
            let mut o = json!({"channel": c.name, "epoch": c.epoch, "head": c.head,
                "replayed": c.replayed, "recovered": c.recovered});
            if let Some(p) = s.presence.get(&c.name) {
                o["presence"] = json!({"count": p.count, "principals": p.principals});
            }
            if let Some(h) = &s.health {
                let mut health =
                    json!({"server": h.server, "protocol": h.protocol, "time": h.time});
                if let Some(ch) = h.channels.get(&c.name) {
                    health["head"] = json!(ch.head);
                    if let Some(oldest) = ch.oldest {
                        health["oldest"] = json!(oldest);
                    }
                }
                o["health"] = health;
            }
            json!({ "joined": o })
        })
        .collect()
}

/// A state change as a `state` observation.
fn state_observation(c: StateChange) -> Value {
    let mut o = json!({"previous": c.previous.as_str(), "current": c.current.as_str(),
        "reason": c.reason});
    if let Some(a) = c.attempt {
        o["attempt"] = json!(a);
    }
    if let Some(d) = c.delay {
        // A whole number of milliseconds as an integer, as JSON would say it.
        o["delay_ms"] = if d.subsec_nanos() % 1_000_000 == 0 {
            json!(d.as_millis() as u64)
        } else {
            json!(d.as_secs_f64() * 1000.0)
        };
    }
    if let Some(e) = &c.error {
        o["error"] = json!({"code": fatal_code(e)});
    }
    json!({ "state": o })
}

/// The client's notices as scenario observations: the main sequence, and
/// state changes (a sequence of their own).
fn notice_observations(n: Notice) -> (Vec<Value>, Vec<Value>) {
    match n {
        Notice::Joined(s) => (joined_observations(s), Vec::new()),
        Notice::State(c) => (Vec::new(), vec![state_observation(c)]),
        Notice::Resync { channel } => (vec![json!({"resync": {"channel": channel}})], Vec::new()),
        Notice::Event(ev) => (observations(ev), Vec::new()),
        other => panic!("an unknown notice {other:?}"),
    }
}

/// The client's events as scenario observations; `None` for what is not one.
fn observations(ev: ClientEvent) -> Vec<Value> {
    match ev {
        ClientEvent::Joined { channels } => joined_observations(JoinedSnapshot {
            channels,
            presence: Default::default(),
            health: None,
        }),
        ClientEvent::Event(e) => vec![json!({ "event": serde_json::to_value(&e).unwrap() })],
        ClientEvent::Gap { channel, from, to } => {
            vec![json!({"gap": {"channel": channel, "from": from, "to": to}})]
        }
        ClientEvent::Message(m) => vec![json!({"message": {
            "channel": m.channel, "id": m.id, "kind": m.kind, "seq": m.seq,
            "encoding": m.encoding().as_str(), "data": m.data_json()}})],
        ClientEvent::MessageLost {
            channel,
            id,
            reason,
        } => {
            vec![json!({"message_lost": {"channel": channel, "id": id, "reason": reason.as_str()}})]
        }
        ClientEvent::Error(e) if e.is_fatal() => vec![json!({"fatal": {"code": fatal_code(&e)}})],
        _ => Vec::new(),
    }
}

struct Runner {
    name: String,
    listener: TcpListener,
    ws: Option<WebSocketStream<TcpStream>>,
    client: Client<Notice>,
    pending: VecDeque<Value>,
    /// State changes not observed yet (a sequence of their own).
    states: VecDeque<Value>,
    ended: bool,
    last_id: String,
    /// When the previous step completed (`notBeforeMs` counts from it).
    last_step: tokio::time::Instant,
}

impl Runner {
    async fn observe(&mut self, pattern: &Value) {
        let state = pattern.get("state").is_some();
        loop {
            let queue = if state {
                &mut self.states
            } else {
                &mut self.pending
            };
            if let Some(o) = queue.pop_front() {
                assert!(
                    matches(pattern, &o),
                    "{}: observed {o}, expected {pattern}",
                    self.name
                );
                return;
            }
            assert!(
                !self.ended,
                "{}: the client ended before {pattern}",
                self.name
            );
            match tokio::time::timeout(STEP, self.client.next()).await {
                Ok(Some(n)) => {
                    let (main, states) = notice_observations(n);
                    self.pending.extend(main);
                    self.states.extend(states);
                }
                Ok(None) => self.ended = true,
                Err(_) => panic!(
                    "{}: nothing observed within {STEP:?}; expected {pattern}",
                    self.name
                ),
            }
        }
    }

    /// Answers the next connection attempt: `Ok` accepts (checking the
    /// token and the offered subprotocol), `Err((status, body))` refuses.
    async fn attempt(&mut self, answer: Result<Option<String>, (u16, Value)>) {
        let (tcp, _) = tokio::time::timeout(STEP, self.listener.accept())
            .await
            .unwrap_or_else(|_| panic!("{}: no connection attempt within {STEP:?}", self.name))
            .unwrap();
        let seen: Arc<Mutex<Option<String>>> = Arc::default();
        let report = seen.clone();
        let answer2 = answer.clone();
        let callback = move |req: &Request, mut resp: Response| {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| {
                    req.uri().query().and_then(|q| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix("token=").map(str::to_owned))
                    })
                });
            let offered = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            *report.lock().unwrap() = Some(format!("{}|{offered}", token.unwrap_or_default()));
            match answer2 {
                Ok(_) => {
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        HeaderValue::from_static("agentwire.v1"),
                    );
                    Ok(resp)
                }
                Err((status, body)) => {
                    let mut r = ErrorResponse::new(Some(body.to_string()));
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    Err(r)
                }
            }
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
        let seen = seen.lock().unwrap().clone().unwrap_or_default();
        let (token, offered) = seen.split_once('|').unwrap_or(("", ""));
        match answer {
            Ok(want) => {
                assert!(
                    offered.split(',').any(|p| p.trim() == "agentwire.v1"),
                    "{}: agentwire.v1 not offered: {offered:?}",
                    self.name
                );
                if let Some(want) = want {
                    assert_eq!(token, want, "{}: the token of this attempt", self.name);
                }
                self.ws = Some(ws.unwrap());
            }
            Err(_) => assert!(ws.is_err()),
        }
    }

    async fn expect(&mut self, pattern: &Value, not_before: Option<Duration>) {
        let ws = self
            .ws
            .as_mut()
            .unwrap_or_else(|| panic!("{}: expect without a connection", self.name));
        loop {
            let msg = tokio::time::timeout(STEP, ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no frame within {STEP:?}; expected {pattern}",
                        self.name
                    )
                });
            let text = match msg {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("{}: expected {pattern}, got {other:?}", self.name),
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["action"] == "ping" && pattern["action"] != "ping" {
                continue;
            }
            assert!(
                matches(pattern, &frame),
                "{}: the client sent {frame}, expected {pattern}",
                self.name
            );
            if let Some(min) = not_before {
                let after = self.last_step.elapsed();
                assert!(
                    after >= min,
                    "{}: {frame} came {after:?} after the previous step; not before {min:?}",
                    self.name
                );
            }
            if let Some(id) = frame["id"].as_str() {
                self.last_id = id.to_owned();
            }
            return;
        }
    }

    async fn step(&mut self, step: &Value) {
        let obj = step.as_object().unwrap();
        let (kind, arg) = obj.iter().find(|(k, _)| *k != "notBeforeMs").unwrap();
        let not_before = obj
            .get("notBeforeMs")
            .map(|v| Duration::from_millis(v.as_u64().unwrap()));
        assert!(
            not_before.is_none() || kind == "expect",
            "{}: notBeforeMs only goes with expect",
            self.name
        );
        self.run_step(kind, arg, not_before).await;
        self.last_step = tokio::time::Instant::now();
    }

    async fn run_step(&mut self, kind: &str, arg: &Value, not_before: Option<Duration>) {
        match kind {
            "accept" => {
                let token = arg["token"].as_str().map(str::to_owned);
                self.attempt(Ok(token)).await;
            }
            "refuse" => {
                let status = arg["status"].as_u64().unwrap() as u16;
                self.attempt(Err((status, arg["body"].clone()))).await;
            }
            "expect" => self.expect(arg, not_before).await,
            "send" => {
                let frame = substitute(arg, &self.last_id);
                let ws = self.ws.as_mut().unwrap();
                ws.send(Message::Text(frame.to_string().into()))
                    .await
                    .unwrap();
            }
            "drop" => {
                // Without a close frame: the TCP connection just ends.
                self.ws = None;
            }
            "close" => {
                let mut ws = self.ws.take().unwrap();
                let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: (arg["code"].as_u64().unwrap() as u16).into(),
                    reason: arg["reason"].as_str().unwrap_or("").to_owned().into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
            "observe" => self.observe(arg).await,
            "act" => {
                let handle = self.client.handle();
                if arg.get("close").is_some() {
                    handle.close().unwrap();
                } else if let Some(leave) = arg.get("leave") {
                    handle.leave(&[leave["channel"].as_str().unwrap()]).unwrap();
                } else if let Some(pause) = arg.get("pause") {
                    handle.pause(pause["channel"].as_str().unwrap()).unwrap();
                } else if let Some(resume) = arg.get("resume") {
                    handle.resume(resume["channel"].as_str().unwrap()).unwrap();
                } else if let Some(resync) = arg.get("resync") {
                    match resync["channel"].as_str() {
                        Some(channel) => handle.resync(channel).unwrap(),
                        None => handle.resync_all().unwrap(),
                    }
                } else if let Some(join) = arg.get("join") {
                    let channel = join["channel"].as_str().unwrap();
                    match since(join.get("since").unwrap_or(&Value::Null)) {
                        None => handle.join(channel).unwrap(),
                        Some(s) => handle.join_since(channel, s).unwrap(),
                    }
                } else {
                    panic!("{}: unknown act {arg}", self.name);
                }
            }
            "no_connection" => {
                // The stream ends first (its driver is done), so no attempt
                // can come after: check the listener without waiting.
                while !self.ended {
                    match tokio::time::timeout(STEP, self.client.next()).await {
                        Ok(Some(n)) => {
                            let (obs, states) = notice_observations(n);
                            self.states.extend(states);
                            assert!(
                                obs.is_empty(),
                                "{}: observed {obs:?} after the end",
                                self.name
                            );
                        }
                        Ok(None) => self.ended = true,
                        Err(_) => panic!("{}: the client's stream did not end", self.name),
                    }
                }
                let attempt = tokio::time::timeout(Duration::ZERO, self.listener.accept()).await;
                assert!(
                    attempt.is_err(),
                    "{}: a connection after the end",
                    self.name
                );
            }
            other => panic!("{}: unknown step {other}", self.name),
        }
    }
}

async fn run(path: &Path) {
    let sc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let name = sc["name"].as_str().unwrap().to_owned();
    let c = &sc["client"];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let ms = |k: &str, d: u64| Duration::from_millis(c[k].as_u64().unwrap_or(d));
    let mut backoff = Backoff::new(ms("minReconnectMs", 10), ms("maxReconnectMs", 40));
    if let Some(n) = c["maxAttempts"].as_u64() {
        backoff = backoff.with_max_attempts(n as u32);
    }
    if let Some(j) = c["jitter"].as_f64() {
        backoff = backoff.with_jitter(j);
    }
    let options = Options {
        backoff,
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        max_connection_age: None,
        ack_debounce: c["ackDebounceMs"].as_u64().map(Duration::from_millis),
        handshake_timeout: STEP,
        hole_grace: ms("holeGraceMs", 250),
        ..Options::default()
    };
    let mut builder = Client::builder().url(url).options(options);
    if let Some(t) = c["token"].as_str() {
        builder = builder.token(t);
    } else {
        let tokens: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(
            c["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        ));
        builder = builder.token_provider(move || {
            let next = tokens.lock().unwrap().pop_front();
            async move { next.ok_or_else(|| "no more tokens".to_owned()) }
        });
    }
    for ch in c["channels"].as_array().unwrap() {
        let n = ch["name"].as_str().unwrap();
        builder = match since(&ch["since"]) {
            None => builder.channel(n),
            Some(s) => builder.channel_since(n, s),
        };
    }
    let mut r = Runner {
        name,
        listener,
        ws: None,
        client: builder.connect_with_notices().unwrap(),
        pending: VecDeque::new(),
        states: VecDeque::new(),
        ended: false,
        last_id: String::new(),
        last_step: tokio::time::Instant::now(),
    };
    for step in sc["script"].as_array().unwrap() {
        r.step(step).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the scenarios are there: {files:?}");
    for f in &files {
        eprintln!("conformance: {}", f.file_name().unwrap().to_string_lossy());
        run(f).await;
    }
}

#[test]
fn the_backoff_schedule() {
    let b: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("backoff.json")).unwrap())
            .unwrap();
    let ms = |v: &Value| Duration::from_millis(v.as_u64().unwrap());
    let fresh = || Backoff::new(ms(&b["min_ms"]), ms(&b["max_ms"]));
    let mut s = fresh();
    for (n, want) in b["ceilings_ms"].as_array().unwrap().iter().enumerate() {
        assert_eq!(s.ceiling(), ms(want), "ceiling before attempt {}", n + 1);
        s.next_delay(0.5);
    }
    for d in b["draws"].as_array().unwrap() {
        let mut s = fresh();
        for _ in 1..d["attempt"].as_u64().unwrap() {
            s.next_delay(0.0);
        }
        let got = s.next_delay(d["unit"].as_f64().unwrap()).unwrap();
        assert_eq!(got, ms(&d["delay_ms"]), "{d}");
    }
    let jitter_draws = b["jitter_draws"].as_array().unwrap();
    assert!(!jitter_draws.is_empty());
    for d in jitter_draws {
        let mut s = fresh().with_jitter(d["jitter"].as_f64().unwrap());
        for _ in 1..d["attempt"].as_u64().unwrap() {
            s.next_delay(0.0);
        }
        let got = s.next_delay(d["unit"].as_f64().unwrap()).unwrap();
        assert_eq!(got, ms(&d["delay_ms"]), "{d}");
    }
}
