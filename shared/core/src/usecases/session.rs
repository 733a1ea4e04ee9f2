//! The message routes (`hello`, `join`, `leave`, `ack`, `$default`): one
//! client frame in, at most one answer frame out.

use std::collections::BTreeSet;
use std::sync::Arc;

use agentwire_protocol::limits::{MAX_CHANNELS_PER_JOIN, validate_channel};
use agentwire_protocol::{
    ClientFrame, ErrorCode, JoinChannel, JoinedChannel, Limits, ProtocolError, SERVER, ServerFrame,
    Since, negotiate, parse_client_frame,
};

use crate::auth::Grants;
use crate::clock::Clock;
use crate::model::{ChannelKey, Connection};
use crate::ports::{ChannelLog, ConnectionRegistry, CursorStore, StoreError};

/// The session use case.
pub struct Session {
    registry: Arc<dyn ConnectionRegistry>,
    log: Arc<dyn ChannelLog>,
    cursors: Arc<dyn CursorStore>,
    clock: Arc<dyn Clock>,
    heartbeat_s: u64,
}

/// A failure answered with an error frame: the client's mistake, or ours.
enum Refusal {
    Client(ProtocolError),
    Store(StoreError),
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

impl Session {
    pub fn new(
        registry: Arc<dyn ConnectionRegistry>,
        log: Arc<dyn ChannelLog>,
        cursors: Arc<dyn CursorStore>,
        clock: Arc<dyn Clock>,
        heartbeat_s: u64,
    ) -> Self {
        Self {
            registry,
            log,
            cursors,
            clock,
            heartbeat_s,
        }
    }

    /// Answers one client frame. `None` only for a successful `ack`, which
    /// has no answer; every failure is an `error` frame with a stable code.
    pub async fn handle(&self, connection_id: &str, text: &str) -> Option<ServerFrame> {
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => return Some(e.into()),
        };
        let request_id = frame.request_id().map(str::to_owned);
        match self.route(connection_id, frame).await {
            Ok(answer) => answer,
            Err(Refusal::Client(e)) => Some(e.with_id(request_id).into()),
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
        match frame {
            ClientFrame::Hello { protocol, .. } => self.hello(&conn, protocol).await.map(Some),
            ClientFrame::Join { id, channels } => self.join(&conn, id, channels).await.map(Some),
            ClientFrame::Leave { id, channels } => self.leave(&conn, id, channels).await.map(Some),
            ClientFrame::Ack { channel, seq } => {
                self.ack(&conn, &channel, seq).await.map(|()| None)
            }
            ClientFrame::Ping => Ok(Some(ServerFrame::Pong)),
        }
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
    ) -> Result<ServerFrame, Refusal> {
        let version = negotiate(protocol)?;
        if !self.registry.set_protocol(&conn.id, version).await? {
            return Err(not_connected());
        }
        Ok(ServerFrame::Welcome {
            protocol: version,
            connection_id: conn.id.clone(),
            server: SERVER.to_owned(),
            heartbeat_s: self.heartbeat_s,
            limits: Limits::default(),
        })
    }

    async fn join(
        &self,
        conn: &Connection,
        id: Option<String>,
        channels: Vec<JoinChannel>,
    ) -> Result<ServerFrame, Refusal> {
        let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        let names = checked_names(&names)?;
        let grants = Grants::compile(&conn.grants)
            .map_err(|e| ProtocolError::new(ErrorCode::Forbidden, e))?;
        let denied: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !grants.allows(n))
            .collect();
        if !denied.is_empty() {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!(
                    "the token of {:?} does not grant {}; nothing was joined",
                    conn.principal,
                    denied.join(", ")
                ),
            )
            .into());
        }
        let mut joined = Vec::with_capacity(names.len());
        for ch in &channels {
            if joined.iter().any(|j: &JoinedChannel| j.name == ch.name) {
                continue;
            }
            let key = ChannelKey::new(&conn.tenant, &ch.name);
            let state = self.log.ensure_channel(&key).await?;
            if !self.registry.subscribe(conn, &key, conn.expires_at).await? {
                return Err(not_connected());
            }
            // Replay from a cursor is not served yet: a client that asked to
            // resume from a position is told it was not recovered.
            let recovered = !matches!(ch.since, Some(Since::Position { .. }));
            joined.push(JoinedChannel {
                name: ch.name.clone(),
                epoch: state.epoch,
                head: state.head,
                replayed: 0,
                recovered,
            });
        }
        Ok(ServerFrame::Joined {
            id,
            channels: joined,
            presence: None,
            health: None,
        })
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

    async fn ack(&self, conn: &Connection, channel: &str, seq: u64) -> Result<(), Refusal> {
        validate_channel(channel)?;
        let grants = Grants::compile(&conn.grants)
            .map_err(|e| ProtocolError::new(ErrorCode::Forbidden, e))?;
        if !grants.allows(channel) {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                format!("the token of {:?} does not grant {channel}", conn.principal),
            )
            .into());
        }
        self.cursors
            .advance(&conn.tenant, &conn.principal, channel, seq)
            .await?;
        Ok(())
    }

    /// The clock the session reads (for the snapshot's server time).
    pub fn now_s(&self) -> u64 {
        self.clock.epoch_s()
    }
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
    use crate::memory::{MemoryCursors, MemoryLog, MemoryRegistry, connection};

    struct Fx {
        session: Session,
        reg: Arc<MemoryRegistry>,
        cursors: Arc<MemoryCursors>,
    }

    async fn fx() -> Fx {
        let reg = Arc::new(MemoryRegistry::default());
        let cursors = Arc::new(MemoryCursors::default());
        reg.put_connection(&connection("c1", "acme", "ana", &["agent-*"]))
            .await
            .unwrap();
        let session = Session::new(
            reg.clone(),
            Arc::new(MemoryLog::default()),
            cursors.clone(),
            Arc::new(SystemClock),
            300,
        );
        Fx {
            session,
            reg,
            cursors,
        }
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
        assert!(!channels[0].epoch.is_empty());
        let key = ChannelKey::new("acme", "agent-1");
        assert_eq!(
            f.reg.subscribers(&key).await.unwrap(),
            vec!["c1".to_string()]
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
                .subscribers(&ChannelKey::new("acme", "agent-2"))
                .await
                .unwrap()
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
                .subscribers(&ChannelKey::new("acme", "agent-1"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ack_moves_the_cursor_forward_only() {
        let f = fx().await;
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
}
