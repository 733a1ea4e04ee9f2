//! The connection loop: one task per client that connects, negotiates,
//! (re)joins every channel from the last delivered seq, feeds frames through
//! each channel's [`Sequencer`], pings, acknowledges, rolls over ahead of the
//! gateway's age limit, and reconnects with backoff when anything breaks.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agentwire_protocol::limits::MAX_CHANNELS_PER_JOIN;
use agentwire_protocol::{
    ClientFrame, ErrorCode, ErrorFrame, EventFrame, JoinChannel, ServerFrame, Since,
};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::notice::{ConnectionState, JoinedSnapshot, Notice, StateChange};
use crate::socket::{self, OpenError, Ws};
use crate::token::TokenSource;
use crate::{Backoff, ClientError, ClientEvent, Delivery, Options, Sequencer};
use agentwire_protocol::chunks::{Assembled, Reassembler};

/// What the application asks of the loop through a [`crate::Handle`].
#[derive(Debug)]
pub(crate) enum Command {
    Join(Vec<JoinChannel>),
    Leave(Vec<String>),
    Pause(String),
    Resume(String),
    /// Drop the position of these channels (`None`: all) and join from the head.
    Resync(Option<Vec<String>>),
    Close,
}

/// One subscribed channel.
struct Channel {
    seq: Sequencer,
    /// Where the first join starts (`None`: the durable cursor).
    initial: Option<Since>,
    /// The last seq acknowledged to the gateway.
    acked: Option<u64>,
    /// Since when a live hole has been waiting for its missing frames (the
    /// re-join that fetches them goes out `Options::hole_grace` later).
    hole_since: Option<Instant>,
}

impl Channel {
    /// The ack of the last delivered seq, if it is past the last one sent
    /// (which it then becomes).
    fn due_ack(&mut self, name: &str) -> Option<ClientFrame> {
        let last = self.seq.last().filter(|&l| l > 0)?;
        if self.acked.is_some_and(|a| a >= last) {
            return None;
        }
        self.acked = Some(last);
        Some(ClientFrame::Ack {
            channel: name.to_owned(),
            seq: last,
        })
    }

    /// Where a (re)join resumes: right after the last delivered seq once the
    /// channel's log is known, else where the application asked.
    fn since(&self) -> Option<Since> {
        match (self.seq.epoch(), self.seq.last()) {
            (Some(epoch), Some(seq)) => Some(Since::Position {
                epoch: epoch.to_owned(),
                seq,
            }),
            _ => self.initial.clone(),
        }
    }
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// The application closed (or dropped) the client.
    Closed,
    /// The connection broke: reconnect after a backoff delay.
    Lost(String),
    /// Closed by the client ahead of the gateway's age limit: reconnect now.
    Rollover(String),
    /// Nothing a reconnect could fix.
    Fatal(ClientError),
}

/// How one connection attempt went.
enum Attempt {
    Ended(Ended),
    Failed(String),
    TokenRefused(ClientError),
}

pub(crate) struct Driver {
    url: String,
    token: TokenSource,
    options: Options,
    tls: Option<Connector>,
    channels: BTreeMap<String, Channel>,
    /// Leaves issued while disconnected, reported once the re-join is sent.
    deferred_left: Vec<String>,
    /// Paused channels and where they resume.
    paused: HashMap<String, Since>,
    /// Chunk events being reassembled into messages.
    messages: Reassembler,
    /// Join request id → its channels, until `joined` or an error answers.
    pending: HashMap<String, Vec<String>>,
    /// Joins refused `rate_limited` on this connection: when to send them
    /// again, and their channels.
    join_retries: Vec<(Instant, Vec<String>)>,
    /// An ack refused `rate_limited`: no ack goes out before this.
    acks_paused_until: Option<Instant>,
    /// When to refresh the token in band (the gateway offers it and a
    /// provider gives tokens).
    refresh_at: Option<Instant>,
    /// The id of the `refresh` awaiting its answer.
    refresh_id: Option<String>,
    /// The `exp` of the connection's current token, as the gateway said.
    token_exp: Option<u64>,
    next_id: u64,
    backoff: Backoff,
    events: mpsc::Sender<Notice>,
    /// Whether the stream takes state changes and resyncs (a
    /// `connect_with_notices` client).
    notices: bool,
    state: ConnectionState,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
}

impl Driver {
    pub(crate) fn new(
        url: String,
        token: TokenSource,
        options: Options,
        tls: Option<Connector>,
        channels: Vec<JoinChannel>,
        events: mpsc::Sender<Notice>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        let backoff = options.backoff.clone();
        let messages = Reassembler::new(options.max_message_bytes, options.max_held_message_bytes)
            .with_max_partial(options.max_partial_messages);
        let mut driver = Self {
            url,
            token,
            options,
            tls,
            channels: BTreeMap::new(),
            deferred_left: Vec::new(),
            paused: HashMap::new(),
            messages,
            pending: HashMap::new(),
            join_retries: Vec::new(),
            acks_paused_until: None,
            refresh_at: None,
            refresh_id: None,
            token_exp: None,
            next_id: 0,
            backoff,
            events,
            notices: false,
            state: ConnectionState::Idle,
            commands,
            commands_open: true,
        };
        driver.add_channels(channels);
        driver
    }

    /// Whether the stream takes state changes and resyncs.
    pub(crate) fn with_notices(mut self, on: bool) -> Self {
        self.notices = on;
        self
    }

    /// Adds channels not yet subscribed; returns the names added.
    fn add_channels(&mut self, list: Vec<JoinChannel>) -> Vec<String> {
        let mut added = Vec::new();
        for jc in list {
            if self.channels.contains_key(&jc.name) {
                continue;
            }
            let seq = match &jc.since {
                Some(Since::Position { epoch, seq }) => Sequencer::resuming(&jc.name, epoch, *seq),
                _ => Sequencer::new(&jc.name),
            };
            self.channels.insert(
                jc.name.clone(),
                Channel {
                    seq,
                    initial: jc.since,
                    acked: None,
                    hole_since: None,
                },
            );
            self.deferred_left.retain(|n| n != &jc.name);
            added.push(jc.name);
        }
        added
    }

    /// Runs until the application closes the client or a fatal error.
    pub(crate) async fn run(mut self) {
        let mut token_refused_once = false;
        if self
            .set_state(ConnectionState::Connecting, "connecting".into(), None)
            .await
            .is_err()
        {
            return;
        }
        loop {
            let failure = match self.attempt().await {
                Attempt::Ended(Ended::Closed) => return self.closed_by_app().await,
                Attempt::Ended(Ended::Fatal(e)) => return self.fatal(e).await,
                Attempt::Ended(Ended::Rollover(reason)) => {
                    token_refused_once = false;
                    if self
                        .emit(ClientEvent::Disconnected {
                            reason: reason.clone(),
                        })
                        .await
                        .is_err()
                        || self
                            .set_state(ConnectionState::Reconnecting, reason, None)
                            .await
                            .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Attempt::Ended(Ended::Lost(reason)) => {
                    token_refused_once = false;
                    if self
                        .emit(ClientEvent::Disconnected {
                            reason: reason.clone(),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    reason
                }
                Attempt::Failed(reason) => reason,
                Attempt::TokenRefused(e) => {
                    // A provider is asked for a fresh token once; a fresh
                    // token refused as well means retrying would only hammer.
                    if !self.token.renews() || token_refused_once {
                        return self.fatal(e).await;
                    }
                    token_refused_once = true;
                    e.to_string()
                }
            };
            let Some(delay) = self.backoff.next_delay(random_unit()) else {
                let attempts = self.backoff.attempt();
                return self
                    .fatal(ClientError::Exhausted {
                        attempts,
                        last: failure,
                    })
                    .await;
            };
            let attempt = self.backoff.attempt();
            tracing::debug!(attempt, ?delay, reason = %failure, "agentwire: reconnecting");
            if self
                .emit(ClientEvent::Reconnecting {
                    attempt,
                    delay,
                    reason: failure.clone(),
                })
                .await
                .is_err()
                || self
                    .set_state(
                        ConnectionState::Reconnecting,
                        failure,
                        Some((attempt, delay)),
                    )
                    .await
                    .is_err()
            {
                return;
            }
            if let Err(Ended::Closed) = self.wait(delay).await {
                return self.closed_by_app().await;
            }
        }
    }

    /// The last event after the application closed the client.
    async fn closed_by_app(&mut self) {
        let reason = String::from("closed by the application");
        let _ = self
            .events
            .send(Notice::Event(ClientEvent::Disconnected {
                reason: reason.clone(),
            }))
            .await;
        let _ = self.closed(reason, None).await;
    }

    async fn fatal(&mut self, e: ClientError) {
        tracing::warn!(error = %e, "agentwire: client stopped");
        let _ = self
            .events
            .send(Notice::Event(ClientEvent::Error(e.clone())))
            .await;
        let _ = self.closed(e.to_string(), Some(e)).await;
    }

    /// The state change to `closed`, the last item of a notices stream.
    async fn closed(&mut self, reason: String, error: Option<ClientError>) -> Result<(), Ended> {
        let previous = std::mem::replace(&mut self.state, ConnectionState::Closed);
        if previous == ConnectionState::Closed {
            return Ok(());
        }
        self.notice(Notice::State(StateChange {
            previous,
            current: ConnectionState::Closed,
            reason,
            attempt: None,
            delay: None,
            error,
        }))
        .await
    }

    /// A state change: `previous` → `current` (`reconnecting` →
    /// `reconnecting` counts: one per attempt).
    async fn set_state(
        &mut self,
        current: ConnectionState,
        reason: String,
        backoff: Option<(u32, Duration)>,
    ) -> Result<(), Ended> {
        let previous = self.state;
        if previous == current && current != ConnectionState::Reconnecting {
            return Ok(());
        }
        self.state = current;
        self.notice(Notice::State(StateChange {
            previous,
            current,
            reason,
            attempt: backoff.map(|(a, _)| a),
            delay: backoff.map(|(_, d)| d),
            error: None,
        }))
        .await
    }

    /// Sends to the application; `Err(Closed)` once it dropped the client.
    async fn emit(&self, ev: ClientEvent) -> Result<(), Ended> {
        self.notice(Notice::Event(ev)).await
    }

    /// Sends a notice; state changes and resyncs only to a notices stream.
    async fn notice(&self, n: Notice) -> Result<(), Ended> {
        if !self.notices && matches!(n, Notice::State(_) | Notice::Resync { .. }) {
            return Ok(());
        }
        self.events.send(n).await.map_err(|_| Ended::Closed)
    }

    /// Sleeps `delay`, applying the application's commands meanwhile.
    async fn wait(&mut self, delay: Duration) -> Result<(), Ended> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = self.events.closed() => return Err(Ended::Closed),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    None => self.commands_open = false,
                    Some(Command::Close) => return Err(Ended::Closed),
                    Some(cmd) => self.apply(cmd, None).await?,
                },
            }
        }
    }

    /// One connection: open, negotiate, join, then serve until it ends.
    async fn attempt(&mut self) -> Attempt {
        let token = match self.token.get().await {
            Ok(t) => t,
            Err(e) => return Attempt::Failed(ClientError::TokenProvider(e).to_string()),
        };
        let req = match socket::request(&self.url, &token, self.options.protocol) {
            Ok(r) => r,
            Err(e) => return Attempt::Ended(Ended::Fatal(e)),
        };
        let opened = socket::open(
            req,
            self.tls.clone(),
            self.options.protocol,
            self.options.handshake_timeout,
        )
        .await;
        let mut ws = match opened {
            Ok(ws) => ws,
            Err(OpenError::Retry(reason)) => return Attempt::Failed(reason),
            Err(OpenError::Token(e)) => return Attempt::TokenRefused(e),
            Err(OpenError::Fatal(e)) => return Attempt::Ended(Ended::Fatal(e)),
        };
        let started = Instant::now();
        let ended = match self.serve(&mut ws, started).await {
            Ok(()) => Ended::Closed,
            Err(end) => end,
        };
        if matches!(ended, Ended::Closed | Ended::Rollover(_)) {
            let reason = match &ended {
                Ended::Rollover(_) => "rollover",
                _ => "closed by the client",
            };
            let _ = ws
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: reason.into(),
                })))
                .await;
        }
        self.backoff.connection_ended(started.elapsed());
        self.pending.clear();
        Attempt::Ended(ended)
    }

    /// Negotiates, joins, then handles frames, commands and timers until the
    /// connection ends (always an `Err` saying how).
    async fn serve(&mut self, ws: &mut Ws, started: Instant) -> Result<(), Ended> {
        self.handshake(ws).await?;
        // The re-join below covers what a rate limit held back.
        self.join_retries.clear();
        self.acks_paused_until = None;
        self.refresh_id = None;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        self.send_joins(ws, &names).await?;
        if !self.deferred_left.is_empty() {
            let channels = std::mem::take(&mut self.deferred_left);
            self.emit(ClientEvent::Left { channels }).await?;
        }
        let interval = self.options.ping_interval;
        let rollover_at = self.options.max_connection_age.map(|a| started + a);
        let mut ping_at = Instant::now() + interval;
        let mut pong_deadline: Option<Instant> = None;
        let mut ack_at: Option<Instant> = None;
        loop {
            let join_retry_at = self.join_retries.iter().map(|(t, _)| *t).min();
            let grace = self.options.hole_grace;
            let hole_at = self
                .channels
                .values()
                .filter_map(|ch| ch.hole_since)
                .min()
                .map(|t| t + grace);
            let next_timer = [
                Some(ping_at),
                hole_at,
                pong_deadline,
                ack_at,
                rollover_at,
                join_retry_at,
                self.refresh_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(ping_at);
            tokio::select! {
                biased;
                msg = ws.next() => {
                    pong_deadline = None;
                    match msg {
                        None => return Err(Ended::Lost("the connection ended".into())),
                        Some(Err(e)) => return Err(Ended::Lost(format!("connection error: {e}"))),
                        Some(Ok(Message::Text(text))) => {
                            match serde_json::from_str::<ServerFrame>(&text) {
                                Ok(frame) => {
                                    self.on_frame(frame, &mut ack_at).await?;
                                    self.rejoin_lagging(ws).await?;
                                }
                                Err(e) => self.emit(ClientEvent::Error(ClientError::Decode(
                                    format!("{e}: {}", text.chars().take(200).collect::<String>()),
                                ))).await?,
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame
                                .map(|f| format!(" ({} {})", u16::from(f.code), f.reason))
                                .unwrap_or_default();
                            return Err(Ended::Lost(format!("the gateway closed the connection{why}")));
                        }
                        Some(Ok(_)) => {}
                    }
                }
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    None => self.commands_open = false,
                    Some(Command::Close) => {
                        self.flush_acks(ws).await?;
                        return Err(Ended::Closed);
                    }
                    Some(cmd) => self.apply(cmd, Some(ws)).await?,
                },
                _ = self.events.closed() => {
                    self.flush_acks(ws).await?;
                    return Err(Ended::Closed);
                }
                _ = tokio::time::sleep_until(next_timer) => {
                    let now = Instant::now();
                    if pong_deadline.is_some_and(|d| now >= d) {
                        return Err(Ended::Lost(format!(
                            "no answer to ping within {:?}: the connection is dead",
                            self.options.ping_timeout
                        )));
                    }
                    if rollover_at.is_some_and(|d| now >= d) {
                        self.flush_acks(ws).await?;
                        return Err(Ended::Rollover(format!(
                            "connection age limit ({:?}) reached: reconnecting",
                            self.options.max_connection_age.unwrap_or_default()
                        )));
                    }
                    if ack_at.is_some_and(|d| now >= d) {
                        match self.acks_paused_until {
                            Some(p) if now < p => ack_at = Some(p),
                            _ => {
                                ack_at = None;
                                self.acks_paused_until = None;
                                self.flush_acks(ws).await?;
                            }
                        }
                    }
                    if join_retry_at.is_some_and(|d| now >= d) {
                        self.retry_joins(ws, now).await?;
                    }
                    if hole_at.is_some_and(|d| now >= d) {
                        self.rejoin_lagging(ws).await?;
                    }
                    if self.refresh_at.is_some_and(|d| now >= d) {
                        self.refresh(ws).await?;
                    }
                    if now >= ping_at {
                        send(ws, &ClientFrame::Ping).await?;
                        ping_at = now + interval;
                        pong_deadline.get_or_insert(now + self.options.ping_timeout);
                    }
                }
            }
        }
    }

    /// `hello` → `welcome` (or the typed refusal), within the handshake timeout.
    async fn handshake(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        let range = self.options.protocol;
        send(
            ws,
            &ClientFrame::Hello {
                protocol: range,
                client: Some(self.options.client_name.clone()),
                features: vec![agentwire_protocol::gzip::FEATURE.to_owned()],
            },
        )
        .await?;
        let limit = self.options.handshake_timeout;
        let welcome = tokio::time::timeout(limit, async {
            loop {
                let frame = match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                        return Err(Ended::Lost("the connection ended before `welcome`".into()));
                    }
                    Some(Ok(Message::Text(t))) => serde_json::from_str::<ServerFrame>(&t).ok(),
                    Some(Ok(_)) => None,
                };
                match frame {
                    Some(ServerFrame::Welcome {
                        protocol,
                        connection_id,
                        features,
                        token_exp,
                        ..
                    }) => {
                        let refresh = features.iter().any(|f| f == "refresh");
                        return Ok((protocol, connection_id, token_exp.filter(|_| refresh)));
                    }
                    Some(ServerFrame::Error(e)) if e.code == ErrorCode::VersionUnsupported => {
                        return Err(Ended::Fatal(ClientError::VersionUnsupported {
                            offered_min: range.min,
                            offered_max: range.max,
                            supported: e.supported,
                            message: e.message,
                        }));
                    }
                    Some(ServerFrame::Error(e)) => {
                        return Err(Ended::Lost(format!(
                            "`hello` refused ({}): {}",
                            e.code, e.message
                        )));
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| Ended::Lost(format!("no `welcome` within {limit:?}")))??;
        let (protocol, connection_id, refresh_exp) = welcome;
        self.plan_refresh(refresh_exp);
        tracing::debug!(protocol, %connection_id, "agentwire: connected");
        let reason = format!("connected (protocol v{protocol}, connection {connection_id})");
        self.emit(ClientEvent::Connected {
            protocol,
            connection_id,
        })
        .await?;
        self.set_state(ConnectionState::Connected, reason, None)
            .await
    }

    /// Joins `names`, each from where its delivery stands, in frames of at
    /// most the protocol's channels-per-join.
    async fn send_joins(&mut self, ws: &mut Ws, names: &[String]) -> Result<(), Ended> {
        for chunk in names.chunks(MAX_CHANNELS_PER_JOIN) {
            let mut list = Vec::with_capacity(chunk.len());
            for name in chunk {
                if let Some(ch) = self.channels.get_mut(name) {
                    ch.seq.rejoining();
                    ch.hole_since = None;
                    list.push(JoinChannel {
                        name: name.clone(),
                        since: ch.since(),
                    });
                }
            }
            if list.is_empty() {
                continue;
            }
            self.next_id += 1;
            let id = format!("j{}", self.next_id);
            self.pending
                .insert(id.clone(), list.iter().map(|c| c.name.clone()).collect());
            send(
                ws,
                &ClientFrame::Join {
                    id: Some(id),
                    channels: list,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Sends again the joins a rate limit held back whose wait is over, for
    /// the channels still wanted and not in another pending join.
    async fn retry_joins(&mut self, ws: &mut Ws, now: Instant) -> Result<(), Ended> {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.join_retries)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.join_retries = later;
        let names: Vec<String> = due
            .into_iter()
            .flat_map(|(_, names)| names)
            .filter(|n| {
                self.channels.contains_key(n) && !self.pending.values().any(|p| p.contains(n))
            })
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        self.send_joins(ws, &names).await
    }

    /// Joins again, from their last delivered seq, the channels whose
    /// sequencer knows of seqs that did not arrive (a hole in the live
    /// stream, held events dropped to stay bounded, a replay page that
    /// stopped short of the head): the log still has them. A live hole (an
    /// event held after a missing seq) first waits `Options::hole_grace`
    /// for the missing frames, which often are only late: frames that fill
    /// it meanwhile cancel the re-join.
    async fn rejoin_lagging(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        let now = Instant::now();
        let grace = self.options.hole_grace;
        let mut lagging: Vec<String> = Vec::new();
        for (name, ch) in self.channels.iter_mut() {
            if !ch.seq.wants_rejoin() {
                ch.hole_since = None;
                continue;
            }
            let live_hole = ch.seq.pending() > 0;
            if live_hole && !grace.is_zero() {
                let since = *ch.hole_since.get_or_insert(now);
                if now < since + grace {
                    continue;
                }
            }
            ch.hole_since = None;
            lagging.push(name.clone());
        }
        if lagging.is_empty() {
            return Ok(());
        }
        tracing::debug!(channels = ?lagging, "agentwire: fetching missed seqs from the log");
        self.send_joins(ws, &lagging).await
    }

    /// Applies a join or leave; sends it when connected, else it takes
    /// effect with the next connection's re-join.
    async fn apply(&mut self, cmd: Command, ws: Option<&mut Ws>) -> Result<(), Ended> {
        match cmd {
            Command::Close => Err(Ended::Closed),
            Command::Join(list) => {
                let added = self.add_channels(list);
                match ws {
                    Some(ws) if !added.is_empty() => self.send_joins(ws, &added).await,
                    _ => Ok(()),
                }
            }
            Command::Pause(name) => {
                if let Some(since) = self.channels.get(&name).and_then(Channel::since) {
                    self.paused.insert(name.clone(), since);
                }
                Box::pin(self.apply(Command::Leave(vec![name]), ws)).await
            }
            Command::Resume(name) => {
                let since = self.paused.remove(&name);
                Box::pin(self.apply(Command::Join(vec![JoinChannel { name, since }]), ws)).await
            }
            Command::Resync(names) => {
                let names: Vec<String> = match names {
                    Some(names) => names,
                    None => self
                        .channels
                        .keys()
                        .chain(self.paused.keys())
                        .cloned()
                        .collect(),
                };
                let mut rejoin = Vec::new();
                for name in names {
                    if let Some(ch) = self.channels.get_mut(&name) {
                        ch.seq = Sequencer::new(&name);
                        ch.initial = Some(Since::Head);
                        ch.acked = None;
                        rejoin.push(name.clone());
                    } else if let Some(since) = self.paused.get_mut(&name) {
                        // Resumed from the head.
                        *since = Since::Head;
                    } else {
                        continue;
                    }
                    self.notice(Notice::Resync { channel: name }).await?;
                }
                match ws {
                    Some(ws) if !rejoin.is_empty() => self.send_joins(ws, &rejoin).await,
                    _ => Ok(()),
                }
            }
            Command::Leave(names) => {
                let mut left = Vec::new();
                let mut acks = Vec::new();
                for name in names {
                    let Some(mut ch) = self.channels.remove(&name) else {
                        continue;
                    };
                    // What was delivered on it is acknowledged before leaving.
                    if self.options.ack_debounce.is_some()
                        && let Some(ack) = ch.due_ack(&name)
                    {
                        acks.push(ack);
                    }
                    left.push(name);
                }
                if left.is_empty() {
                    return Ok(());
                }
                match ws {
                    Some(ws) => {
                        for ack in &acks {
                            send(ws, ack).await?;
                        }
                        self.next_id += 1;
                        let frame = ClientFrame::Leave {
                            id: Some(format!("l{}", self.next_id)),
                            channels: left,
                        };
                        send(ws, &frame).await
                    }
                    None => {
                        self.deferred_left.extend(left);
                        Ok(())
                    }
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: ServerFrame,
        ack_at: &mut Option<Instant>,
    ) -> Result<(), Ended> {
        match frame {
            ServerFrame::Joined {
                id,
                channels,
                presence,
                health,
            } => {
                if let Some(id) = id {
                    self.pending.remove(&id);
                }
                let mut confirmed = Vec::with_capacity(channels.len());
                let mut deliveries = Vec::new();
                for jc in channels {
                    if let Some(ch) = self.channels.get_mut(&jc.name) {
                        deliveries.extend(ch.seq.joined(&jc.epoch, jc.head, jc.replayed, jc.until));
                        confirmed.push(jc);
                    }
                }
                if !confirmed.is_empty() {
                    let mut presence = presence.unwrap_or_default();
                    presence.retain(|name, _| confirmed.iter().any(|c| &c.name == name));
                    self.notice(Notice::Joined(JoinedSnapshot {
                        channels: confirmed,
                        presence,
                        health,
                    }))
                    .await?;
                }
                self.deliver(deliveries, ack_at).await
            }
            ServerFrame::Event(e) => {
                let ds = match self.channels.get_mut(&e.channel) {
                    Some(ch) => ch
                        .seq
                        .event(decompressed(e, self.options.max_message_bytes)),
                    None => Vec::new(),
                };
                self.deliver(ds, ack_at).await
            }
            ServerFrame::Batch { events } => {
                for e in events {
                    let ds = match self.channels.get_mut(&e.channel) {
                        Some(ch) => ch
                            .seq
                            .event(decompressed(e, self.options.max_message_bytes)),
                        None => continue,
                    };
                    self.deliver(ds, ack_at).await?;
                }
                Ok(())
            }
            ServerFrame::Gap { channel, from, to } => {
                let ds = match self.channels.get_mut(&channel) {
                    Some(ch) => ch.seq.gap(from, to),
                    None => Vec::new(),
                };
                self.deliver(ds, ack_at).await
            }
            ServerFrame::Left { channels, .. } => self.emit(ClientEvent::Left { channels }).await,
            ServerFrame::Refreshed { id, exp } => {
                if id.is_some() && id == self.refresh_id {
                    self.refresh_id = None;
                    // A token that expires no later than the one it
                    // replaces gives nothing to refresh again: no refresh
                    // storm towards `exp`; the connection ends on
                    // `token_expired` and reconnects with a fresh token.
                    if self.token_exp.is_some_and(|old| exp <= old) {
                        self.refresh_at = None;
                    } else {
                        self.plan_refresh(Some(exp));
                    }
                }
                Ok(())
            }
            ServerFrame::Error(e) => self.on_error(e).await,
            ServerFrame::Welcome { .. } | ServerFrame::Pong => Ok(()),
        }
    }

    /// Plans the next in-band refresh for a token expiring at `exp` (Unix
    /// seconds): `exp` minus the lead, the lead at most half the time left.
    /// Only a provider has a fresh token to send.
    /// At least this long between two refreshes.
    fn plan_refresh(&mut self, exp: Option<u64>) {
        const MIN_REFRESH_GAP_MS: u64 = 1000;
        self.token_exp = exp;
        self.refresh_at = exp.filter(|_| self.token.renews()).map(|exp| {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let left_ms = (exp * 1000).saturating_sub(now_ms);
            let lead_ms = (self.options.refresh_lead.as_millis() as u64).min(left_ms / 2);
            Instant::now() + Duration::from_millis((left_ms - lead_ms).max(MIN_REFRESH_GAP_MS))
        });
    }

    /// Asks the provider for a token and sends it in a `refresh`; a
    /// provider that fails ends the connection (the next one asks again).
    async fn refresh(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        self.refresh_at = None;
        let token =
            self.token.get().await.map_err(|e| {
                Ended::Lost(format!("the token provider failed while refreshing: {e}"))
            })?;
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        self.refresh_id = Some(id.clone());
        send(
            ws,
            &ClientFrame::Refresh {
                id: Some(id),
                token,
            },
        )
        .await
    }

    async fn on_error(&mut self, e: ErrorFrame) -> Result<(), Ended> {
        if e.id.is_some() && e.id == self.refresh_id {
            // A refused refresh: a new connection, with a token the
            // provider is asked for again, resumes from the last seq.
            self.refresh_id = None;
            self.emit(ClientEvent::Error(ClientError::Server {
                code: e.code,
                message: e.message.clone(),
                id: e.id.clone(),
            }))
            .await?;
            return Err(Ended::Lost(format!(
                "the refresh was refused ({}): {}",
                e.code, e.message
            )));
        }
        // Channels a refreshed token no longer grants: left by the gateway,
        // dropped here for good.
        for n in e.channels.iter().flatten() {
            self.channels.remove(n);
        }
        let request = e.id.as_ref().and_then(|id| self.pending.remove(id));
        match e.code {
            ErrorCode::VersionUnsupported => {
                return Err(Ended::Fatal(ClientError::VersionUnsupported {
                    offered_min: self.options.protocol.min,
                    offered_max: self.options.protocol.max,
                    supported: e.supported,
                    message: e.message,
                }));
            }
            // The token expired while connected: a new connection with a
            // fresh token (a provider is asked again) resumes from the last seq.
            ErrorCode::TokenExpired => {
                return Err(Ended::Rollover(format!(
                    "the token expired: {}; reconnecting at once with a fresh token",
                    e.message
                )));
            }
            ErrorCode::NotConnected => {
                return Err(Ended::Lost(format!(
                    "the gateway no longer knows this connection: {}",
                    e.message
                )));
            }
            // A join the gateway failed to serve: re-join on a new connection.
            ErrorCode::Internal if request.is_some() => {
                return Err(Ended::Lost(format!("a join failed: {}", e.message)));
            }
            // Over the connection's join/ack rate: the join is sent again,
            // or acks wait, for as long as the gateway says (1 s if it
            // does not); the application is told, nothing is dropped.
            ErrorCode::RateLimited => {
                let until = Instant::now()
                    + std::time::Duration::from_millis(e.retry_after_ms.unwrap_or(1000));
                match request {
                    Some(names) => self.join_retries.push((until, names)),
                    None => self.acks_paused_until = Some(until),
                }
                return self
                    .emit(ClientEvent::Error(ClientError::Server {
                        code: e.code,
                        message: e.message,
                        id: e.id,
                    }))
                    .await;
            }
            _ => {}
        }
        if let Some(names) = request {
            // Refused for good (forbidden, invalid channel): not re-joined.
            for n in &names {
                self.channels.remove(n);
            }
        }
        self.emit(ClientEvent::Error(ClientError::Server {
            code: e.code,
            message: e.message,
            id: e.id,
        }))
        .await
    }

    async fn deliver(
        &mut self,
        ds: Vec<Delivery>,
        ack_at: &mut Option<Instant>,
    ) -> Result<(), Ended> {
        if ds.is_empty() {
            return Ok(());
        }
        for d in ds {
            let ev = match d {
                Delivery::Event(e) => {
                    let assembled = self.messages.accept(&e.channel, e.seq, &e.kind, &e.data);
                    for lost in self.messages.take_evicted() {
                        if let Assembled::Lost {
                            channel,
                            message,
                            reason,
                        } = lost
                        {
                            self.emit(ClientEvent::MessageLost {
                                channel,
                                id: message,
                                reason,
                            })
                            .await?;
                        }
                    }
                    match assembled {
                        Assembled::NotChunk => ClientEvent::Event(e),
                        Assembled::Pending => continue,
                        Assembled::Complete(m) => ClientEvent::Message(m),
                        Assembled::Lost {
                            channel,
                            message,
                            reason,
                        } => ClientEvent::MessageLost {
                            channel,
                            id: message,
                            reason,
                        },
                    }
                }
                Delivery::Gap { channel, from, to } => ClientEvent::Gap { channel, from, to },
            };
            self.emit(ev).await?;
        }
        if let Some(debounce) = self.options.ack_debounce {
            ack_at.get_or_insert(Instant::now() + debounce);
        }
        Ok(())
    }

    /// Acknowledges each channel's last delivered seq, if it moved.
    async fn flush_acks(&mut self, ws: &mut Ws) -> Result<(), Ended> {
        if self.options.ack_debounce.is_none() {
            return Ok(());
        }
        let acks: Vec<ClientFrame> = self
            .channels
            .iter_mut()
            .filter_map(|(name, ch)| ch.due_ack(name))
            .collect();
        for ack in &acks {
            send(ws, ack).await?;
        }
        Ok(())
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<(), Ended> {
    let text = serde_json::to_string(frame)
        .map_err(|e| Ended::Fatal(ClientError::Decode(format!("cannot encode a frame: {e}"))))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| Ended::Lost(format!("send failed: {e}")))
}

/// A uniform draw in 0..1 from the operating system's random source (0.5
/// if it cannot be read), for the backoff's jitter.
fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// The most text a stream event's `gz` decodes to (the gateway sends at
/// most an event's 96 KiB; a bound, whatever a frame claims).
const MAX_DECODED_TEXT: usize = 4 * 1024 * 1024;

/// An event with its compressed text decoded (docs/protocol.md,
/// "Compressed payloads"), so the application sees what was published. A
/// chunk's part is bounded as the reassembler bounds a message's parts
/// (twice `max_message_bytes`: base64 is 4/3 of the bytes). A `gz` that
/// does not decode is left in place: a chunk without its part loses its
/// message (`invalid`), a stream event is handed over as it came.
fn decompressed(mut e: EventFrame, max_message_bytes: u64) -> EventFrame {
    let max = if e.data.get(agentwire_protocol::chunks::CHUNK_KEY).is_some() {
        usize::try_from(max_message_bytes.saturating_mul(2)).unwrap_or(usize::MAX)
    } else {
        MAX_DECODED_TEXT
    };
    if let Ok(Some(plain)) = agentwire_protocol::gzip::expand(&e.data, max) {
        e.data = plain;
    }
    e
}
