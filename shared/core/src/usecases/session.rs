//! The message routes (`hello`, `join`, `leave`, `ack`, `$default`): one
//! client frame in, at most one answer frame out, except `join`, which may
//! also replay the log to the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agentwire_protocol::limits::{MAX_CHANNELS_PER_JOIN, validate_channel};
use agentwire_protocol::{
    ChannelHealth, ClientFrame, ErrorCode, EventFrame, Health, JoinChannel, JoinedChannel, Limits,
    Presence, ProtocolError, RawData, SERVER, ServerFrame, Since, negotiate, parse_client_frame,
    supported,
};

use crate::auth::{AuthError, Grants, Verifier};
use crate::clock::{Clock, rfc3339};
use crate::limits::Scope;
use crate::model::{ChannelKey, ChannelState, Connection};
use crate::ports::{
    ChannelLog, Claim, ConnectionRegistry, CursorStore, PushError, Pusher, ReadBudget, StoreError,
};
use crate::usecases::delivery::push::{PushRetry, post_retrying};
use crate::usecases::quotas::{Limited, Quotas};
use crate::usecases::resume::{self, ResumePlan};
use agentwire_protocol::framing::coalesce;

/// Events read from the log per page while replaying.
pub const REPLAY_PAGE: usize = 250;

/// What one join request replays at most, over all its channels: the rest
/// follows on the client's next join from where this one ended (`until`).
/// It bounds the time a join holds the route (API Gateway's 29 s) and the
/// memory it holds (the replay is read before the answer that announces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayBudget {
    pub events: usize,
    /// The events' approximate JSON size.
    pub bytes: usize,
}

impl Default for ReplayBudget {
    /// 2,000 events or 2 MiB.
    fn default() -> Self {
        Self {
            events: 2_000,
            bytes: 2 * 1024 * 1024,
        }
    }
}

/// One channel's replay, read: the frames of `from..=to`, or of
/// `from..=until` when the budget cut it short.
struct Replay {
    from: u64,
    to: u64,
    until: Option<u64>,
    frames: Vec<EventFrame<RawData>>,
}

impl Replay {
    /// The last seq this replay covers.
    fn end(&self) -> u64 {
        self.until.unwrap_or(self.to)
    }
}

/// The session use case.
pub struct Session {
    registry: Arc<dyn ConnectionRegistry>,
    log: Arc<dyn ChannelLog>,
    cursors: Arc<dyn CursorStore>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    heartbeat_s: u64,
    replay_budget: ReplayBudget,
    quotas: Option<Arc<Quotas>>,
    verifier: Option<Arc<Verifier>>,
}

/// A failure answered with an error frame: the client's mistake, or ours.
enum Refusal {
    Client(ProtocolError),
    Store(StoreError),
    Limited(Limited),
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal::Client(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

impl From<AuthError> for Refusal {
    /// A refused token is the client's; keys or a store unavailable are
    /// ours (answered `internal`, retryable).
    fn from(e: AuthError) -> Self {
        match e.unavailable() {
            Some(s) => Refusal::Store(s),
            None => Refusal::Client(e.protocol_error()),
        }
    }
}

/// One channel of a join, once subscribed.
struct Resume {
    key: ChannelKey,
    state: ChannelState,
    oldest: Option<u64>,
    plan: ResumePlan,
}

impl Session {
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        log: Arc<dyn ChannelLog>,
        cursors: Arc<dyn CursorStore>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        heartbeat_s: u64,
    ) -> Self {
        Self {
            registry,
            log,
            cursors,
            pusher,
            clock,
            heartbeat_s,
            replay_budget: ReplayBudget::default(),
            quotas: None,
            verifier: None,
        }
    }

    /// Takes in-band token refreshes (verified by `verifier`, announced in
    /// `welcome`) and refuses joins and acks of revoked principals.
    pub fn with_verifier(mut self, verifier: Arc<Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Checks the connection's join/ack rate and the channels it may join.
    pub fn with_quotas(mut self, quotas: Arc<Quotas>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// How much one join request replays at most.
    pub fn with_replay_budget(mut self, budget: ReplayBudget) -> Self {
        self.replay_budget = budget;
        self
    }

    /// Answers one client frame. `None` when there is nothing to send back:
    /// after a successful `ack`, and after a `join` that posted its answer
    /// and its replay to the connection itself. Every failure is an `error`
    /// frame with a stable code.
    pub async fn handle(&self, connection_id: &str, text: &str) -> Option<ServerFrame> {
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => return Some(e.into()),
        };
        let request_id = frame.request_id().map(str::to_owned);
        match self.route(connection_id, frame).await {
            Ok(answer) => answer,
            Err(Refusal::Client(e)) => Some(e.with_id(request_id).into()),
            Err(Refusal::Limited(l)) => Some(ServerFrame::rate_limited(
                l.scope.as_str(),
                l.retry_after_ms,
                format!(
                    "this connection is over its join/ack rate; retry after {} ms",
                    l.retry_after_ms
                ),
                request_id,
            )),
            Err(Refusal::Store(e)) => {
                tracing::error!(connection_id, error = %e, "session request failed");
                Some(ServerFrame::error(
                    ErrorCode::Internal,
                    "the gateway could not complete the request; retry it",
                    request_id,
                ))
            }
        }
    }

    /// The typed answer to a binary frame.
    pub fn binary_refused() -> ServerFrame {
        ServerFrame::error(
            ErrorCode::BinaryUnsupported,
            "binary frames are not part of protocol v1; send JSON text frames",
            None,
        )
    }

    async fn route(
        &self,
        connection_id: &str,
        frame: ClientFrame,
    ) -> Result<Option<ServerFrame>, Refusal> {
        if let ClientFrame::Ping = frame {
            return Ok(Some(ServerFrame::Pong));
        }
        let conn = self.connection(connection_id).await?;
        if matches!(frame, ClientFrame::Join { .. } | ClientFrame::Ack { .. })
            && crate::model::token_expired(conn.token_exp, self.clock.epoch_s())
        {
            return Err(ProtocolError::new(
                ErrorCode::TokenExpired,
                "the token this connection was opened with has expired; reconnect with a fresh token (your position is kept: resume from your last seq)",
            )
            .into());
        }
        if matches!(frame, ClientFrame::Join { .. } | ClientFrame::Ack { .. })
            && let Some(verifier) = &self.verifier
        {
            verifier
                .check_revoked(&conn.tenant, &conn.principal, conn.token_iat)
                .await?;
        }
        if matches!(
            frame,
            ClientFrame::Join { .. } | ClientFrame::Ack { .. } | ClientFrame::Refresh { .. }
        ) && let Some(quotas) = &self.quotas
        {
            quotas
                .check_action(&conn.tenant, &conn.id)
                .await
                .map_err(Refusal::Limited)?;
        }
        match frame {
            ClientFrame::Hello {
                protocol, features, ..
            } => self.hello(&conn, protocol, &features).await.map(Some),
            ClientFrame::Join { id, channels } => self.join(&conn, id, channels).await,
            ClientFrame::Leave { id, channels } => self.leave(&conn, id, channels).await.map(Some),
            ClientFrame::Ack { channel, seq } => {
                self.ack(&conn, &channel, seq).await.map(|()| None)
            }
            ClientFrame::Ping => Ok(Some(ServerFrame::Pong)),
            ClientFrame::Refresh { id, token } => self.refresh(&conn, id, &token).await.map(Some),
        }
    }

    /// Replaces the connection's token: same tenant and principal; the
    /// new grants replace the old, channels no longer granted are left
    /// (one `forbidden` error frame names them, before `refreshed`).
    async fn refresh(
        &self,
        conn: &Connection,
        id: Option<String>,
        token: &str,
    ) -> Result<ServerFrame, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Err(ProtocolError::new(
                ErrorCode::UnknownAction,
                "this gateway does not take refresh (its welcome does not offer it); reconnect with a fresh token",
            )
            .into());
        };
        let claims = verifier.verify(token, self.clock.epoch_s()).await?;
        if claims.tenant != conn.tenant || claims.sub != conn.principal {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "the new token must name the same tenant and principal as the connection's",
            )
            .with_reason("other_principal")
            .into());
        }
        let grants = Grants::compile(&claims.channels).map_err(AuthError::from)?;
        let (kept, lost): (Vec<String>, Vec<String>) = conn
            .channels
            .iter()
            .cloned()
            .partition(|c| grants.allows(c));
        let updated = Connection {
            grants: claims.channels,
            publish: claims.publish,
            token_exp: claims.exp,
            token_iat: claims.iat,
            channels: kept.clone(),
            ..conn.clone()
        };
        if !self.registry.update_token(&updated).await? {
            return Err(not_connected());
        }
        for name in &lost {
            self.registry
                .unsubscribe(&conn.id, &ChannelKey::new(&conn.tenant, name))
                .await?;
        }
        // The subscriptions carry the token's exp (live delivery stops
        // after it): written again with the new one.
        for name in &kept {
            let key = ChannelKey::new(&conn.tenant, name);
            if !self
                .registry
                .subscribe(&updated, &key, conn.expires_at)
                .await?
            {
                return Err(not_connected());
            }
        }
        if !lost.is_empty() {
            let left = ServerFrame::Error(agentwire_protocol::ErrorFrame {
                code: ErrorCode::Forbidden,
                message: format!("the new token does not grant {}: left", lost.join(", ")),
                channels: Some(lost),
                ..Default::default()
            });
            if let Err(e) = self.post(&conn.id, &left).await {
                tracing::warn!(connection_id = %conn.id, error = %e, "could not post the channels a refresh left");
            }
        }
        ::metrics::counter!(crate::metrics::TOKENS_REFRESHED).increment(1);
        Ok(ServerFrame::Refreshed {
            id,
            exp: claims.exp,
        })
    }

    async fn connection(&self, id: &str) -> Result<Connection, Refusal> {
        self.registry.get_connection(id).await?.ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::NotConnected,
                "this connection is not registered (it expired or was removed); reconnect",
            )
            .into()
        })
    }

    async fn hello(
        &self,
        conn: &Connection,
        protocol: agentwire_protocol::ProtocolRange,
        asked: &[String],
    ) -> Result<ServerFrame, Refusal> {
        let version = negotiate(protocol)?;
        // Once announced, kept: the connection's subscriptions carry it,
        // and a repeated `hello` does not take it back from them.
        let gzip = conn.gzip || asked.iter().any(|f| f == agentwire_protocol::gzip::FEATURE);
        if !self.registry.set_protocol(&conn.id, version, gzip).await? {
            return Err(not_connected());
        }
        let mut features = Vec::new();
        if self.verifier.is_some() {
            features.push("refresh".to_owned());
        }
        if gzip {
            features.push(agentwire_protocol::gzip::FEATURE.to_owned());
        }
        Ok(ServerFrame::Welcome {
            protocol: version,
            connection_id: conn.id.clone(),
            server: SERVER.to_owned(),
            heartbeat_s: self.heartbeat_s,
            limits: Limits::default(),
            features,
            token_exp: (conn.token_exp != 0).then_some(conn.token_exp),
        })
    }

    /// `forbidden` unless the token grants every one of `names`; the message
    /// names the channels refused and ends with `consequence`.
    fn require_grants(conn: &Connection, names: &[&str], consequence: &str) -> Result<(), Refusal> {
        let grants = Grants::compile(&conn.grants)
            .map_err(|e| Refusal::from(ProtocolError::new(ErrorCode::Forbidden, e.to_string())))?;
        let denied: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !grants.allows(n))
            .collect();
        if denied.is_empty() {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!(
                "the token of {:?} does not grant {}{consequence}",
                conn.principal,
                denied.join(", ")
            ),
        )
        .into())
    }

    /// `too_many_channels` when joining `names` would take the connection
    /// past its tenant's maximum of joined channels.
    async fn require_room(&self, conn: &Connection, names: &[&str]) -> Result<(), Refusal> {
        let Some(quotas) = &self.quotas else {
            return Ok(());
        };
        let limits = quotas.limits(&conn.tenant).await;
        let Some(max) = limits.max_channels else {
            return Ok(());
        };
        let new: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !conn.channels.iter().any(|c| c == n))
            .collect();
        let refused = |has: usize| -> Result<(), Refusal> {
            if quotas
                .over_quota(&limits, &conn.tenant, Scope::Channels)
                .is_ok()
            {
                return Ok(()); // dry run: counted and logged, let through
            }
            Err(ProtocolError::new(
                ErrorCode::TooManyChannels,
                format!(
                    "this connection may join at most {max} channels and has {has}; leave one first; nothing was joined"
                ),
            )
            .into())
        };
        // The record read with the connection may be stale (another join
        // of this connection running meanwhile): a first check on it
        // answers most refusals without a write, then each new channel is
        // claimed in one conditional write, which no concurrent join can
        // pass on the same stale count.
        if conn.channels.len() + new.len() > max as usize {
            return refused(conn.channels.len());
        }
        let mut claimed: Vec<&str> = Vec::with_capacity(new.len());
        for name in &new {
            match self.registry.claim_channel(&conn.id, name, max).await? {
                Claim::Claimed => claimed.push(name),
                Claim::Gone => return Err(not_connected()),
                Claim::Full => {
                    // Nothing of this join stays: give back what it claimed.
                    for c in claimed {
                        self.registry
                            .unsubscribe(&conn.id, &ChannelKey::new(&conn.tenant, c))
                            .await?;
                    }
                    return refused(max as usize);
                }
            }
        }
        Ok(())
    }

    /// Subscribe first, then read the head: an event committed after the
    /// head was read is fanned out to this connection, one committed before
    /// it is replayed. So nothing falls between replay and live delivery;
    /// the same seq may come twice.
    async fn join(
        &self,
        conn: &Connection,
        id: Option<String>,
        channels: Vec<JoinChannel>,
    ) -> Result<Option<ServerFrame>, Refusal> {
        let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        let names = checked_names(&names)?;
        Self::require_grants(conn, &names, "; nothing was joined")?;
        self.require_room(conn, &names).await?;
        let mut resumes: Vec<Resume> = Vec::with_capacity(names.len());
        let mut joined = Vec::with_capacity(names.len());
        let mut presence = BTreeMap::new();
        let mut health = BTreeMap::new();
        for ch in &channels {
            if resumes.iter().any(|r| r.key.channel == ch.name) {
                continue;
            }
            let key = ChannelKey::new(&conn.tenant, &ch.name);
            if !self.registry.subscribe(conn, &key, conn.expires_at).await? {
                return Err(not_connected());
            }
            // A channel with no log yet is not created by a join: it has
            // head 0 and the empty epoch until its first event (whose epoch
            // the client adopts).
            let state = self.log.channel(&key).await?.unwrap_or_default();
            let cursor = match ch.since {
                None => {
                    self.cursors
                        .get(&conn.tenant, &conn.principal, &ch.name)
                        .await?
                }
                Some(_) => None,
            };
            let oldest = self.log.oldest_retained(&key, state.head).await?;
            let plan = resume::plan(ch.since.as_ref(), cursor, &state, oldest);
            // A join from a position (given, or the durable cursor) is a
            // resume: recovered when everything missed is replayed (the
            // reconnection-success ratio).
            if matches!(ch.since, Some(Since::Position { .. }))
                || (ch.since.is_none() && cursor.is_some())
            {
                let recovered = if plan.recovered { "true" } else { "false" };
                ::metrics::counter!(crate::metrics::RESUMES, "recovered" => recovered).increment(1);
            }
            presence.insert(ch.name.clone(), self.presence(&key).await?);
            health.insert(
                ch.name.clone(),
                ChannelHealth {
                    head: state.head,
                    oldest,
                },
            );
            joined.push(JoinedChannel {
                name: ch.name.clone(),
                epoch: state.epoch.clone(),
                head: state.head,
                replayed: plan.replayed(),
                recovered: plan.recovered,
                until: None,
            });
            resumes.push(Resume {
                key,
                state,
                oldest,
                plan,
            });
        }
        // The replays are read before the answer (which says where each one
        // ends), within the request's budget.
        let replays = self
            .read_replays(&resumes, self.replay_budget, conn.gzip)
            .await
            .map_err(Refusal::Store)?;
        for (j, r) in joined.iter_mut().zip(&replays) {
            if let Some(until) = r.as_ref().and_then(|r| r.until) {
                j.until = Some(until);
                j.replayed = r.as_ref().map_or(0, |r| until + 1 - r.from);
            }
        }
        ::metrics::counter!(crate::metrics::JOINS).increment(joined.len() as u64);
        ::metrics::histogram!(crate::metrics::REPLAYED_EVENTS)
            .record(joined.iter().map(|j| j.replayed).sum::<u64>() as f64);
        let answer = ServerFrame::Joined {
            id: id.clone(),
            channels: joined,
            presence: Some(presence),
            health: Some(Health {
                server: SERVER.to_owned(),
                protocol: conn.protocol.unwrap_or(supported().max),
                time: rfc3339(self.clock.now()),
                channels: health,
            }),
        };
        if resumes
            .iter()
            .all(|r| r.plan.replay.is_none() && r.plan.gap.is_none())
        {
            return Ok(Some(answer));
        }
        // The answer, gaps and replay go out in this order through
        // @connections; the route response stays empty.
        match self.send_resumes(&conn.id, answer, &resumes, replays).await {
            Ok(()) | Err(PushError::Gone) => Ok(None),
            Err(e) => {
                // The client would wait for the rest of a replay that is
                // not coming: the connection is closed, and the client
                // reconnects and joins again from its last seq.
                tracing::warn!(connection_id = %conn.id, error = %e, "replay interrupted; closing the connection");
                crate::usecases::delivery::fanout::close_missed(self.pusher.as_ref(), &conn.id)
                    .await;
                Err(ProtocolError::new(
                    ErrorCode::Internal,
                    "the replay was interrupted; join again from the last seq you received",
                )
                .into())
            }
        }
    }

    /// From the registry's kept count and sample: a join's cost does not
    /// grow with the channel.
    async fn presence(&self, key: &ChannelKey) -> Result<Presence, StoreError> {
        let p = self.registry.presence(key).await?;
        Ok(Presence {
            count: p.count,
            principals: p.principals,
        })
    }

    async fn post(&self, connection_id: &str, frame: &ServerFrame) -> Result<(), PushError> {
        self.post_text(connection_id, &frame.to_json()).await
    }

    /// Posts with bounded retries of throttled posts (a slow consumer).
    async fn post_text(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        post_retrying(
            self.pusher.as_ref(),
            connection_id,
            frame,
            PushRetry::default(),
        )
        .await
        .result
    }

    async fn send_resumes(
        &self,
        connection_id: &str,
        answer: ServerFrame,
        resumes: &[Resume],
        replays: Vec<Option<Replay>>,
    ) -> Result<(), PushError> {
        self.post(connection_id, &answer).await?;
        for (r, replay) in resumes.iter().zip(replays) {
            if let Some((from, to)) = r.plan.gap {
                self.post(connection_id, &gap(&r.key, from, to)).await?;
            }
            if let Some(replay) = replay {
                tracing::debug!(channel = %r.key, from = replay.from, to = replay.end(), events = replay.frames.len(), oldest = ?r.oldest, epoch = %r.state.epoch, "replaying");
                self.post_replay(connection_id, &r.key, replay).await?;
            }
        }
        Ok(())
    }

    /// Reads each channel's replay, in join order, until the request's
    /// budget (events and bytes) is spent: a replay cut short ends at
    /// `until`, and the client joins again from there. At least one event
    /// is always read, so every request makes progress.
    ///
    /// A connection that did not announce gzip (`gzip` false) gets the
    /// compressed texts expanded; the budget counts them expanded, as they
    /// are held and sent.
    async fn read_replays(
        &self,
        resumes: &[Resume],
        budget: ReplayBudget,
        gzip: bool,
    ) -> Result<Vec<Option<Replay>>, StoreError> {
        let (mut events_left, mut bytes_left) = (budget.events, budget.bytes);
        let mut first = true;
        let mut out = Vec::with_capacity(resumes.len());
        for r in resumes {
            let Some((from, to)) = r.plan.replay else {
                out.push(None);
                continue;
            };
            let mut replay = Replay {
                from,
                to,
                until: None,
                frames: Vec::new(),
            };
            let mut next = from;
            'pages: while next <= to {
                if !first && (events_left == 0 || bytes_left == 0) {
                    // Spent: no read at all for this channel, or no more.
                    replay.until = Some(next - 1);
                    break;
                }
                // The adapter reads no more than what is left of the
                // budget (and one event when nothing was read yet).
                let budget = ReadBudget {
                    events: events_left.clamp(1, REPLAY_PAGE),
                    bytes: bytes_left,
                };
                let page = self.log.read_range(&r.key, next, to, budget).await?;
                let Some(last) = page.last().map(|e| e.seq) else {
                    break;
                };
                for e in page {
                    // Charged as sent: a connection that did not announce
                    // gzip gets the texts expanded, up to 96 KiB each.
                    let e = if gzip { e } else { e.expanded() };
                    let size = e.approx_len();
                    if !first && (events_left == 0 || size > bytes_left) {
                        replay.until = Some(next - 1);
                        break 'pages;
                    }
                    first = false;
                    events_left = events_left.saturating_sub(1);
                    bytes_left = bytes_left.saturating_sub(size);
                    next = e.seq + 1;
                    replay.frames.push(e.into_frame());
                }
                next = next.max(last + 1);
            }
            out.push(Some(replay));
        }
        Ok(out)
    }

    /// Posts a replay coalesced into frames within the message limit; a
    /// hole in it (events that expired meanwhile) becomes a `gap`.
    async fn post_replay(
        &self,
        connection_id: &str,
        key: &ChannelKey,
        replay: Replay,
    ) -> Result<(), PushError> {
        let end = replay.end();
        let mut next = replay.from;
        for run in contiguous_runs(replay.frames) {
            let first = run.first().map(|e| e.seq).unwrap_or(next);
            if first > next {
                self.post(connection_id, &gap(key, next, first - 1)).await?;
            }
            next = run.last().map(|e| e.seq + 1).unwrap_or(next);
            for frame in coalesce(run) {
                self.post_text(connection_id, &frame).await?;
            }
        }
        if next <= end {
            self.post(connection_id, &gap(key, next, end)).await?;
        }
        Ok(())
    }

    async fn leave(
        &self,
        conn: &Connection,
        id: Option<String>,
        channels: Vec<String>,
    ) -> Result<ServerFrame, Refusal> {
        let names: Vec<&str> = channels.iter().map(String::as_str).collect();
        let names = checked_names(&names)?;
        for name in &names {
            self.registry
                .unsubscribe(&conn.id, &ChannelKey::new(&conn.tenant, *name))
                .await?;
        }
        Ok(ServerFrame::Left {
            id,
            channels: names.into_iter().map(str::to_owned).collect(),
        })
    }

    /// Moves the durable cursor forward; an ack past the head is refused (it
    /// would make every later resume look like a log reset).
    async fn ack(&self, conn: &Connection, channel: &str, seq: u64) -> Result<(), Refusal> {
        validate_channel(channel)?;
        Self::require_grants(conn, &[channel], "")?;
        // Never creates a channel (nor a cursor for one without a log).
        let head = self
            .log
            .channel(&ChannelKey::new(&conn.tenant, channel))
            .await?
            .map_or(0, |s| s.head);
        if seq > head || head == 0 {
            return Err(ProtocolError::new(
                ErrorCode::InvalidFrame,
                format!("ack of seq {seq} on {channel} is past its head {head}"),
            )
            .into());
        }
        self.cursors
            .advance(&conn.tenant, &conn.principal, channel, seq)
            .await?;
        Ok(())
    }
}

/// A `gap` frame to send (counted: `gaps_sent`).
fn gap(key: &ChannelKey, from: u64, to: u64) -> ServerFrame {
    ::metrics::counter!(crate::metrics::GAPS_SENT).increment(1);
    ServerFrame::Gap {
        channel: key.channel.clone(),
        from,
        to,
    }
}

/// Splits seq-ordered events into runs without holes.
fn contiguous_runs(events: Vec<EventFrame<RawData>>) -> Vec<Vec<EventFrame<RawData>>> {
    let mut runs: Vec<Vec<EventFrame<RawData>>> = Vec::new();
    for e in events {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|l| l.seq + 1 == e.seq) => run.push(e),
            _ => runs.push(vec![e]),
        }
    }
    runs
}

fn not_connected() -> Refusal {
    ProtocolError::new(
        ErrorCode::NotConnected,
        "this connection is no longer registered; reconnect",
    )
    .into()
}

/// Validates a join/leave list: 1 to the limit, each a valid name; duplicates
/// collapse, order kept.
fn checked_names<'a>(names: &[&'a str]) -> Result<Vec<&'a str>, ProtocolError> {
    if names.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::InvalidFrame,
            "channels is empty",
        ));
    }
    if names.len() > MAX_CHANNELS_PER_JOIN {
        return Err(ProtocolError::new(
            ErrorCode::InvalidFrame,
            format!(
                "{} channels in one request; at most {MAX_CHANNELS_PER_JOIN}",
                names.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        validate_channel(n)?;
        if seen.insert(*n) {
            out.push(*n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::memory::{MemoryCursors, MemoryLog, MemoryPusher, MemoryRegistry, connection};

    struct Fx {
        session: Session,
        reg: Arc<MemoryRegistry>,
        cursors: Arc<MemoryCursors>,
        log: Arc<MemoryLog>,
        pusher: Arc<MemoryPusher>,
    }

    async fn fx() -> Fx {
        let reg = Arc::new(MemoryRegistry::default());
        let cursors = Arc::new(MemoryCursors::default());
        let log = Arc::new(MemoryLog::default());
        let pusher = Arc::new(MemoryPusher::default());
        reg.put_connection(&connection("c1", "acme", "ana", &["agent-*"]))
            .await
            .unwrap();
        let session = Session::new(
            reg.clone(),
            log.clone(),
            cursors.clone(),
            pusher.clone(),
            Arc::new(SystemClock),
            300,
        );
        Fx {
            session,
            reg,
            cursors,
            log,
            pusher,
        }
    }

    /// Commits `n` events to the channel; returns its epoch.
    async fn commit(f: &Fx, channel: &str, n: u64) -> String {
        let key = ChannelKey::new("acme", channel);
        let state = f.log.ensure_channel(&key).await.unwrap();
        let envs: Vec<crate::model::Envelope> = (state.head + 1..=state.head + n)
            .map(|i| crate::model::Envelope {
                tenant: "acme".into(),
                channel: channel.into(),
                id: format!("id{i}"),
                kind: "status".into(),
                data: serde_json::json!({ "i": i }).into(),
                ts: "t".into(),
            })
            .collect();
        f.log
            .append(&key, &state, &envs, crate::ports::Dedup::Record, u64::MAX)
            .await
            .unwrap();
        state.epoch
    }

    /// Every frame posted to c1, batches flattened into their events.
    fn posted(f: &Fx) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for p in f.pusher.posts("c1") {
            let v: serde_json::Value = serde_json::from_str(&p).unwrap();
            if v["type"] == "batch" {
                for mut e in v["events"].as_array().unwrap().clone() {
                    e["type"] = "event".into();
                    out.push(e);
                }
            } else {
                out.push(v);
            }
        }
        out
    }

    /// A revoked principal's joins and acks are refused on a connection
    /// still open; a refresh needs a token issued after the revocation, for
    /// the same principal; the welcome offers refresh with the token's exp.
    #[tokio::test]
    async fn revocation_and_refresh_on_an_open_connection() {
        use crate::auth::{TokenKey, Verifier};
        use crate::memory::MemoryRevocations;
        use crate::ports::Revocations;
        let f = fx().await;
        let key = TokenKey::hs256(b"k");
        let revs = Arc::new(MemoryRevocations::default());
        let clock = Arc::new(SystemClock);
        let verifier =
            Arc::new(Verifier::new(key.clone(), clock.clone()).with_revocations(revs.clone()));
        let session = Session::new(
            f.reg.clone(),
            f.log.clone(),
            f.cursors.clone(),
            f.pusher.clone(),
            clock.clone(),
            300,
        )
        .with_verifier(verifier);
        let now = SystemClock.epoch_s();
        let mut c = connection("c2", "acme", "ana", &["agent-*"]);
        c.token_exp = now + 60;
        c.token_iat = Some(now - 10);
        f.reg.put_connection(&c).await.unwrap();
        let w = session
            .handle("c2", r#"{"action":"hello","protocol":{"min":1,"max":1}}"#)
            .await
            .unwrap();
        let ServerFrame::Welcome {
            features,
            token_exp,
            ..
        } = w
        else {
            panic!("{w:?}")
        };
        assert_eq!(
            (features, token_exp),
            (vec!["refresh".to_string()], Some(now + 60))
        );
        revs.revoke("acme", "ana", (now - 5) * 1000).await.unwrap();
        for frame in [
            r#"{"action":"join","id":"j1","channels":["agent-1"]}"#,
            r#"{"action":"ack","channel":"agent-1","seq":1}"#,
        ] {
            let ServerFrame::Error(e) = session.handle("c2", frame).await.unwrap() else {
                panic!("{frame} was not refused")
            };
            assert_eq!(e.code, ErrorCode::TokenRevoked, "{frame}");
        }
        let token = |sub: &str, iat: u64| {
            key.sign(&TokenKey::claims(
                "acme",
                sub,
                vec!["agent-1".into()],
                vec![],
                iat,
                std::time::Duration::from_secs(600),
            ))
            .unwrap()
        };
        let refresh = |t: String| format!(r#"{{"action":"refresh","id":"r1","token":"{t}"}}"#);
        let ServerFrame::Error(e) = session
            .handle("c2", &refresh(token("ana", now - 10)))
            .await
            .unwrap()
        else {
            panic!("an old token refreshed")
        };
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::TokenRevoked, Some("r1"))
        );
        let ServerFrame::Error(e) = session
            .handle("c2", &refresh(token("bo", now)))
            .await
            .unwrap()
        else {
            panic!("another principal refreshed")
        };
        assert_eq!(e.reason.as_deref(), Some("other_principal"));
        let answer = session
            .handle("c2", &refresh(token("ana", now)))
            .await
            .unwrap();
        assert_eq!(
            answer,
            ServerFrame::Refreshed {
                id: Some("r1".into()),
                exp: now + 600
            }
        );
        let joined = session
            .handle(
                "c2",
                r#"{"action":"join","id":"j2","channels":["agent-1"]}"#,
            )
            .await;
        assert!(
            !matches!(joined, Some(ServerFrame::Error(_))),
            "a token issued after the revocation joins: {joined:?}"
        );
    }

    fn seqs(frames: &[serde_json::Value]) -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["type"] == "event")
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn join_from_a_position_posts_joined_then_the_replay_in_order() {
        let f = fx().await;
        let epoch = commit(&f, "agent-1", 250).await;
        let join = serde_json::json!({"action":"join","id":"r","channels":[{"name":"agent-1","since":{"epoch":epoch,"seq":17}}]});
        assert!(
            f.session.handle("c1", &join.to_string()).await.is_none(),
            "the answer went through @connections"
        );
        let frames = posted(&f);
        assert_eq!(frames[0]["type"], "joined");
        assert_eq!(frames[0]["channels"][0]["replayed"], 233);
        assert_eq!(frames[0]["channels"][0]["recovered"], true);
        assert_eq!(frames[0]["health"]["channels"]["agent-1"]["head"], 250);
        assert_eq!(frames[0]["health"]["channels"]["agent-1"]["oldest"], 1);
        assert_eq!(
            frames[0]["presence"]["agent-1"]["principals"],
            serde_json::json!(["ana"])
        );
        assert_eq!(seqs(&frames), (18..=250).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn join_without_since_resumes_from_the_durable_cursor() {
        let f = fx().await;
        commit(&f, "agent-1", 20).await;
        f.cursors
            .advance("acme", "ana", "agent-1", 5)
            .await
            .unwrap();
        f.session
            .handle("c1", r#"{"action":"join","channels":["agent-1"]}"#)
            .await;
        assert_eq!(seqs(&posted(&f)), (6..=20).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn an_expired_cursor_gets_joined_unrecovered_a_gap_then_the_retained_events() {
        let f = fx().await;
        commit(&f, "agent-1", 8).await;
        f.log.expire_through(&ChannelKey::new("acme", "agent-1"), 5);
        f.cursors
            .advance("acme", "ana", "agent-1", 2)
            .await
            .unwrap();
        f.session
            .handle("c1", r#"{"action":"join","channels":["agent-1"]}"#)
            .await;
        let frames = posted(&f);
        assert_eq!(frames[0]["channels"][0]["recovered"], false);
        assert_eq!(
            frames[1],
            serde_json::json!({"type":"gap","channel":"agent-1","from":3,"to":5})
        );
        assert_eq!(seqs(&frames), vec![6, 7, 8]);
    }

    #[tokio::test]
    async fn nothing_to_replay_answers_in_the_route_response() {
        let f = fx().await;
        commit(&f, "agent-1", 3).await;
        let j = f
            .session
            .handle(
                "c1",
                r#"{"action":"join","channels":[{"name":"agent-1","since":"head"}]}"#,
            )
            .await;
        let Some(ServerFrame::Joined { channels, .. }) = j else {
            panic!("{j:?}")
        };
        assert_eq!(
            (
                channels[0].head,
                channels[0].replayed,
                channels[0].recovered
            ),
            (3, 0, true)
        );
        assert!(f.pusher.posts("c1").is_empty());
    }

    #[tokio::test]
    async fn a_gone_connection_ends_the_replay_quietly() {
        let f = fx().await;
        commit(&f, "agent-1", 3).await;
        f.pusher.set_gone("c1");
        let a = f
            .session
            .handle("c1", r#"{"action":"join","channels":[{"name":"agent-1","since":{"epoch":"x","seq":0}}]}"#)
            .await;
        assert!(a.is_none());
    }

    fn code(f: Option<ServerFrame>) -> ErrorCode {
        match f {
            Some(ServerFrame::Error(e)) => e.code,
            other => panic!("expected an error frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hello_negotiates_or_refuses() {
        let f = fx().await;
        let w = f
            .session
            .handle("c1", r#"{"action":"hello","protocol":{"min":1,"max":3}}"#)
            .await;
        assert!(
            matches!(w, Some(ServerFrame::Welcome { protocol: 1, .. })),
            "{w:?}"
        );
        let e = f
            .session
            .handle("c1", r#"{"action":"hello","protocol":{"min":2,"max":3}}"#)
            .await;
        let Some(ServerFrame::Error(e)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(e.code, ErrorCode::VersionUnsupported);
        assert_eq!(e.supported, Some(agentwire_protocol::supported()));
    }

    #[tokio::test]
    async fn joins_over_the_connections_rate_and_channels_past_the_maximum_are_refused_typed() {
        let f = fx_with_limits(crate::limits::TenantLimits {
            connection_action_rate: Some(1),
            connection_action_burst: Some(3),
            max_channels: Some(2),
            ..Default::default()
        })
        .await;
        let join =
            |id: &str, ch: &str| format!(r#"{{"action":"join","id":"{id}","channels":["{ch}"]}}"#);
        assert!(matches!(
            f.session.handle("c1", &join("r1", "agent-1")).await,
            Some(ServerFrame::Joined { .. })
        ));
        assert!(matches!(
            f.session.handle("c1", &join("r2", "agent-2")).await,
            Some(ServerFrame::Joined { .. })
        ));
        // A third channel: the maximum is 2.
        let Some(ServerFrame::Error(e)) = f.session.handle("c1", &join("r3", "agent-3")).await
        else {
            panic!("joined past the maximum")
        };
        assert_eq!(e.code, ErrorCode::TooManyChannels);
        assert_eq!(e.id.as_deref(), Some("r3"));
        assert!(
            f.reg
                .subscriber_ids(&ChannelKey::new("acme", "agent-3"))
                .is_empty()
        );
        // The burst of 3 actions is spent: the 4th is rate limited.
        let Some(ServerFrame::Error(e)) = f.session.handle("c1", &join("r4", "agent-1")).await
        else {
            panic!("over the rate and still joined")
        };
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.id.as_deref(), Some("r4"));
        assert_eq!(e.scope.as_deref(), Some("connection"));
        assert!(e.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1000));
    }

    /// The race: a join reads the connection (no channels yet) and is held
    /// there while two other joins fill it to its maximum of 2; released, it
    /// acts on its stale count. The conditional claim refuses it anyway.
    #[tokio::test]
    async fn concurrent_joins_cannot_take_a_connection_past_its_maximum() {
        let f = fx_with_limits(crate::limits::TenantLimits {
            max_channels: Some(2),
            ..Default::default()
        })
        .await;
        let session = Arc::new(f.session);
        let join =
            |id: &str, ch: &str| format!(r#"{{"action":"join","id":"{id}","channels":["{ch}"]}}"#);
        f.reg.after_get.arm();
        let held = tokio::spawn({
            let session = session.clone();
            let frame = join("late", "agent-3");
            async move { session.handle("c1", &frame).await }
        });
        f.reg.after_get.reached().await;
        for (id, ch) in [("a", "agent-1"), ("b", "agent-2")] {
            assert!(matches!(
                session.handle("c1", &join(id, ch)).await,
                Some(ServerFrame::Joined { .. })
            ));
        }
        f.reg.after_get.release();
        let Some(ServerFrame::Error(e)) = held.await.unwrap() else {
            panic!("joined past the maximum on a stale count")
        };
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::TooManyChannels, Some("late"))
        );
        let mut held = f.reg.get_connection("c1").await.unwrap().unwrap().channels;
        held.sort();
        assert_eq!(held, ["agent-1", "agent-2"]);
        assert!(
            f.reg
                .subscriber_ids(&ChannelKey::new("acme", "agent-3"))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn join_subscribes_granted_channels_and_refuses_others() {
        let f = fx().await;
        let j = f
            .session
            .handle(
                "c1",
                r#"{"action":"join","id":"r1","channels":["agent-1","agent-1"]}"#,
            )
            .await;
        let Some(ServerFrame::Joined { id, channels, .. }) = j else {
            panic!("{j:?}")
        };
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0].head, 0);
        assert!(
            channels[0].epoch.is_empty(),
            "a channel without a log has the empty epoch"
        );
        let key = ChannelKey::new("acme", "agent-1");
        assert_eq!(f.reg.subscriber_ids(&key), vec!["c1".to_string()]);
        assert!(
            f.log.channel(&key).await.unwrap().is_none(),
            "a join never creates a channel"
        );

        let e = f
            .session
            .handle(
                "c1",
                r#"{"action":"join","id":"r2","channels":["agent-2","ops"]}"#,
            )
            .await;
        let Some(ServerFrame::Error(e)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(e.id.as_deref(), Some("r2"));
        assert!(
            f.reg
                .subscriber_ids(&ChannelKey::new("acme", "agent-2"))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn leave_unsubscribes() {
        let f = fx().await;
        f.session
            .handle("c1", r#"{"action":"join","channels":["agent-1"]}"#)
            .await;
        let l = f
            .session
            .handle(
                "c1",
                r#"{"action":"leave","id":"r","channels":["agent-1"]}"#,
            )
            .await;
        assert!(matches!(l, Some(ServerFrame::Left { .. })), "{l:?}");
        assert!(
            f.reg
                .subscriber_ids(&ChannelKey::new("acme", "agent-1"))
                .is_empty()
        );
    }

    #[tokio::test]
    async fn after_its_tokens_exp_a_connection_may_not_join_or_ack() {
        let f = fx().await;
        commit(&f, "agent-1", 2).await;
        let now = SystemClock.epoch_s();
        let mut stale = connection("c2", "acme", "ana", &["agent-*"]);
        stale.token_exp = now - 60;
        f.reg.put_connection(&stale).await.unwrap();
        let mut fresh = connection("c3", "acme", "ana", &["agent-*"]);
        fresh.token_exp = now + 60;
        f.reg.put_connection(&fresh).await.unwrap();
        for frame in [
            r#"{"action":"join","id":"j","channels":["agent-1"]}"#,
            r#"{"action":"ack","channel":"agent-1","seq":1}"#,
        ] {
            assert_eq!(
                code(f.session.handle("c2", frame).await),
                ErrorCode::TokenExpired
            );
        }
        assert!(
            f.reg
                .subscriber_ids(&ChannelKey::new("acme", "agent-1"))
                .is_empty()
        );
        assert!(matches!(
            f.session
                .handle("c3", r#"{"action":"join","id":"j","channels":["agent-1"]}"#)
                .await,
            Some(ServerFrame::Joined { .. })
        ));
        assert!(matches!(
            f.session.handle("c2", r#"{"action":"ping"}"#).await,
            Some(ServerFrame::Pong)
        ));
    }

    /// The fixture with tenant `acme`'s own limits set to `limits`.
    async fn fx_with_limits(limits: crate::limits::TenantLimits) -> Fx {
        use crate::ports::LimitSettings;
        let store = Arc::new(crate::memory::MemoryLimits::default());
        store.put("acme", &limits).await.unwrap();
        let mut f = fx().await;
        f.session = f.session.with_quotas(Arc::new(Quotas::new(
            store.clone(),
            store,
            crate::limits::TenantLimits::default(),
            Arc::new(SystemClock),
        )));
        f
    }

    /// A session over the fixture's stores whose joins replay at most
    /// `events` events.
    fn with_event_budget(f: &Fx, events: usize) -> Session {
        Session::new(
            f.reg.clone(),
            f.log.clone(),
            f.cursors.clone(),
            f.pusher.clone(),
            Arc::new(SystemClock),
            300,
        )
        .with_replay_budget(ReplayBudget {
            events,
            bytes: 1 << 20,
        })
    }

    /// A replay longer than the request's budget ends at `until`; joining
    /// again from there brings the rest, with nothing lost or repeated.
    #[tokio::test]
    async fn a_replay_over_the_budget_is_paged_by_joining_again_from_until() {
        let f = fx().await;
        let epoch = commit(&f, "agent-1", 10).await;
        let session = with_event_budget(&f, 4);
        let mut since = 0;
        let mut pages = Vec::new();
        let mut delivered = Vec::new();
        loop {
            let frame = format!(
                r#"{{"action":"join","id":"j","channels":[{{"name":"agent-1","since":{{"epoch":"{epoch}","seq":{since}}}}}]}}"#
            );
            assert!(session.handle("c1", &frame).await.is_none(), "posted");
            let posts = f.pusher.posts("c1");
            let mut until = None;
            for p in &posts[delivered_frames(&pages)..] {
                let v: serde_json::Value = serde_json::from_str(p).unwrap();
                match v["type"].as_str().unwrap() {
                    "joined" => {
                        until = v["channels"][0]["until"].as_u64();
                        pages.push((v["channels"][0]["replayed"].as_u64().unwrap(), until));
                    }
                    "batch" => delivered.extend(
                        v["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e["seq"].as_u64().unwrap()),
                    ),
                    "event" => delivered.push(v["seq"].as_u64().unwrap()),
                    other => panic!("{other}: {v}"),
                }
            }
            match until {
                Some(u) => since = u,
                None => break,
            }
        }
        assert_eq!(delivered, (1..=10).collect::<Vec<u64>>());
        assert_eq!(pages, vec![(4, Some(4)), (4, Some(8)), (2, None)]);

        fn delivered_frames(pages: &[(u64, Option<u64>)]) -> usize {
            // Each page so far posted its `joined` and one frame of events.
            pages.len() * 2
        }
    }

    /// A join of many channels stops reading once its budget is spent: the
    /// channels it did not reach answer `until` at their starting point
    /// and cost no read at all.
    #[tokio::test]
    async fn a_join_whose_budget_is_spent_reads_no_further_channel() {
        let f = fx().await;
        let mut joins = Vec::new();
        for i in 1..=5 {
            let ch = format!("agent-{i}");
            let epoch = commit(&f, &ch, 5).await;
            joins.push(serde_json::json!({"name": ch, "since": {"epoch": epoch, "seq": 0}}));
        }
        let session = with_event_budget(&f, 3);
        let reads_before = f.log.range_reads();
        let frame = serde_json::json!({"action": "join", "id": "j", "channels": joins});
        assert!(
            session.handle("c1", &frame.to_string()).await.is_none(),
            "posted"
        );
        let joined: serde_json::Value = serde_json::from_str(&f.pusher.posts("c1")[0]).unwrap();
        let untils: Vec<Option<u64>> = joined["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["until"].as_u64())
            .collect();
        assert_eq!(untils, [Some(3), Some(0), Some(0), Some(0), Some(0)]);
        // The memory log finds each channel's oldest seq with a read of
        // one event (5); the replay itself reads once, for agent-1.
        assert_eq!(f.log.range_reads() - reads_before, 5 + 1);
    }

    #[tokio::test]
    async fn ack_moves_the_cursor_forward_only() {
        let f = fx().await;
        commit(&f, "agent-1", 5).await;
        let e = f
            .session
            .handle("c1", r#"{"action":"ack","channel":"agent-1","seq":6}"#)
            .await;
        assert_eq!(
            code(e),
            ErrorCode::InvalidFrame,
            "an ack past the head is refused"
        );
        assert!(
            f.session
                .handle("c1", r#"{"action":"ack","channel":"agent-1","seq":5}"#)
                .await
                .is_none()
        );
        assert!(
            f.session
                .handle("c1", r#"{"action":"ack","channel":"agent-1","seq":3}"#)
                .await
                .is_none()
        );
        assert_eq!(
            f.cursors.get("acme", "ana", "agent-1").await.unwrap(),
            Some(5)
        );
        let e = f
            .session
            .handle("c1", r#"{"action":"ack","channel":"ops","seq":3}"#)
            .await;
        assert_eq!(code(e), ErrorCode::Forbidden);
        // A channel without a log: refused, and nothing is created.
        for seq in [0, 1] {
            let e = f
                .session
                .handle(
                    "c1",
                    &format!(r#"{{"action":"ack","channel":"agent-404","seq":{seq}}}"#),
                )
                .await;
            assert_eq!(code(e), ErrorCode::InvalidFrame);
        }
        let key = ChannelKey::new("acme", "agent-404");
        assert!(f.log.channel(&key).await.unwrap().is_none());
        assert_eq!(
            f.cursors.get("acme", "ana", "agent-404").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn client_mistakes_get_stable_codes() {
        let f = fx().await;
        assert_eq!(
            code(f.session.handle("c1", "{oops").await),
            ErrorCode::BadJson
        );
        assert_eq!(
            code(f.session.handle("c1", r#"{"action":"dance"}"#).await),
            ErrorCode::UnknownAction
        );
        assert_eq!(
            code(
                f.session
                    .handle("c1", r#"{"action":"join","channels":["bad name"]}"#)
                    .await
            ),
            ErrorCode::InvalidChannel
        );
        assert_eq!(
            code(
                f.session
                    .handle("c1", r#"{"action":"join","channels":[]}"#)
                    .await
            ),
            ErrorCode::InvalidFrame
        );
        let big = format!(
            r#"{{"action":"join","channels":["{}"]}}"#,
            "a".repeat(40_000)
        );
        assert_eq!(
            code(f.session.handle("c1", &big).await),
            ErrorCode::FrameTooLarge
        );
        assert_eq!(
            code(
                f.session
                    .handle("nobody", r#"{"action":"join","channels":["agent-1"]}"#)
                    .await
            ),
            ErrorCode::NotConnected
        );
        assert!(matches!(
            f.session.handle("c1", r#"{"action":"ping"}"#).await,
            Some(ServerFrame::Pong)
        ));
    }

    /// A stream text as the log stores it (compressed at commit).
    fn terminal_text() -> String {
        "\u{1b}[32m   Compiling\u{1b}[0m agentwire-core v0.1.0\n".repeat(50)
    }

    #[tokio::test]
    async fn a_connection_that_announced_gzip_replays_compressed_texts_others_get_them_expanded() {
        let f = fx().await;
        let key = ChannelKey::new("acme", "agent-1");
        let state = f.log.ensure_channel(&key).await.unwrap();
        let plain = serde_json::json!({"stream": "s1", "index": 0, "text": terminal_text()});
        let env = crate::model::Envelope {
            tenant: "acme".into(),
            channel: "agent-1".into(),
            id: "s1:0".into(),
            kind: "out".into(),
            data: plain.clone().into(),
            ts: "t".into(),
        };
        f.log
            .append(
                &key,
                &state,
                &[env.compressed()],
                crate::ports::Dedup::Record,
                u64::MAX,
            )
            .await
            .unwrap();
        f.reg
            .put_connection(&connection("c2", "acme", "bo", &["agent-*"]))
            .await
            .unwrap();

        let w = f
            .session
            .handle(
                "c1",
                r#"{"action":"hello","protocol":{"min":1,"max":1},"features":["gzip","later"]}"#,
            )
            .await;
        let Some(ServerFrame::Welcome { features, .. }) = w else {
            panic!("{w:?}")
        };
        assert_eq!(
            features,
            ["gzip"],
            "the welcome confirms gzip, nothing unknown"
        );
        let w = f
            .session
            .handle("c2", r#"{"action":"hello","protocol":{"min":1,"max":1}}"#)
            .await;
        let Some(ServerFrame::Welcome { features, .. }) = w else {
            panic!("{w:?}")
        };
        assert!(features.is_empty());

        let join = serde_json::json!({"action":"join","id":"r","channels":[{"name":"agent-1","since":{"epoch":state.epoch,"seq":0}}]});
        for c in ["c1", "c2"] {
            assert!(f.session.handle(c, &join.to_string()).await.is_none());
        }
        let event = |c: &str| -> serde_json::Value {
            let frame = f
                .pusher
                .posts(c)
                .into_iter()
                .find(|p| p.contains(r#""type":"event""#))
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&frame).unwrap()["data"].clone()
        };
        let compressed = event("c1");
        assert!(compressed.get("text").is_none() && compressed["gz"].is_string());
        assert_eq!(
            agentwire_protocol::gzip::expand(&compressed, 1 << 20).unwrap(),
            Some(plain.clone())
        );
        assert_eq!(event("c2"), plain, "c2 did not announce gzip");
        // Its subscriptions carry the choice, for live delivery.
        let mut subs = f.reg.subscribers(&key).await.unwrap();
        subs.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        assert_eq!(
            subs.iter()
                .map(|s| (s.connection_id.as_str(), s.gzip))
                .collect::<Vec<_>>(),
            [("c1", true), ("c2", false)]
        );
    }
}
