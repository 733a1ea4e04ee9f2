use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{ErrorCode, ProtocolRange};

/// A frame sent by a client. Routed on `action`, as API Gateway's route
/// selection expression `$request.body.action` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Version negotiation; answered by `welcome` or `version_unsupported`.
    Hello {
        protocol: ProtocolRange,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// What the client takes beyond the protocol: `gzip` (stream and
        /// chunk texts compressed, see [`gzip`](crate::gzip)).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Subscribe to channels; answered by `joined`.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channels: Vec<JoinChannel>,
    },
    /// Unsubscribe; answered by `left`.
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channels: Vec<String>,
    },
    /// Move the principal's durable cursor forward.
    Ack { channel: String, seq: u64 },
    /// Liveness; answered by `pong`.
    Ping,
    /// Replace the connection's token in place; answered by `refreshed` or
    /// an `error` carrying the same `id`.
    Refresh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        token: String,
    },
}

impl ClientFrame {
    /// The request id the answer will carry, if the frame has one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Refresh { id, .. } => id.as_deref(),
            _ => None,
        }
    }
}

/// One channel of a `join`: a bare name, or `{name, since}`.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinChannel {
    pub name: String,
    pub since: Option<Since>,
}

#[derive(Serialize, Deserialize)]
struct JoinChannelObject {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<Since>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JoinChannelRepr {
    Name(String),
    Object(JoinChannelObject),
}

impl<'de> Deserialize<'de> for JoinChannel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match JoinChannelRepr::deserialize(d)? {
            JoinChannelRepr::Name(name) => JoinChannel { name, since: None },
            JoinChannelRepr::Object(o) => JoinChannel {
                name: o.name,
                since: o.since,
            },
        })
    }
}

impl Serialize for JoinChannel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.since {
            None => s.serialize_str(&self.name),
            Some(since) => JoinChannelObject {
                name: self.name.clone(),
                since: Some(since.clone()),
            }
            .serialize(s),
        }
    }
}

/// Where a join resumes: `"head"` (only new events) or a position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    Head,
    Position { epoch: String, seq: u64 },
}

#[derive(Serialize, Deserialize)]
struct PositionRepr {
    epoch: String,
    seq: u64,
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "head" => Ok(Since::Head),
            v @ Value::Object(_) => {
                let p: PositionRepr =
                    serde_json::from_value(v).map_err(serde::de::Error::custom)?;
                Ok(Since::Position {
                    epoch: p.epoch,
                    seq: p.seq,
                })
            }
            other => Err(serde::de::Error::custom(format!(
                "since must be \"head\" or {{\"epoch\",\"seq\"}}, not {other}"
            ))),
        }
    }
}

impl Serialize for Since {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Since::Head => s.serialize_str("head"),
            Since::Position { epoch, seq } => PositionRepr {
                epoch: epoch.clone(),
                seq: *seq,
            }
            .serialize(s),
        }
    }
}

/// A frame sent by the gateway, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        protocol: u32,
        connection_id: String,
        server: String,
        heartbeat_s: u64,
        limits: Limits,
        /// What this gateway offers beyond protocol v1's base: `refresh`
        /// (the in-band token refresh).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// When the connection's token expires (Unix seconds): the client
        /// refreshes before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_exp: Option<u64>,
    },
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channels: Vec<JoinedChannel>,
        /// Who is on each joined channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<BTreeMap<String, Presence>>,
        /// Server state and each joined channel's log bounds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<Health>,
    },
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        channels: Vec<String>,
    },
    Event(EventFrame),
    Batch {
        events: Vec<EventFrame>,
    },
    Gap {
        channel: String,
        from: u64,
        to: u64,
    },
    Error(ErrorFrame),
    Pong,
    /// The connection now runs on the token of the `refresh` with this `id`,
    /// which expires at `exp` (Unix seconds).
    Refreshed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        exp: u64,
    },
}

impl ServerFrame {
    /// The frame as JSON text. Serialising these types cannot fail (string
    /// keys, no non-finite floats outside `data`, which is already a `Value`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":"unserialisable frame: {e}"}}"#)
        })
    }

    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<String>) -> Self {
        ServerFrame::Error(ErrorFrame {
            code,
            message: message.into(),
            id,
            ..ErrorFrame::default()
        })
    }

    /// A `rate_limited` error: which limit (`tenant`, `channel`,
    /// `connection`) and how long to wait before retrying.
    pub fn rate_limited(
        scope: &str,
        retry_after_ms: u64,
        message: impl Into<String>,
        id: Option<String>,
    ) -> Self {
        ServerFrame::Error(ErrorFrame {
            code: ErrorCode::RateLimited,
            message: message.into(),
            id,
            scope: Some(scope.to_owned()),
            retry_after_ms: Some(retry_after_ms),
            ..ErrorFrame::default()
        })
    }
}

impl From<crate::ProtocolError> for ServerFrame {
    fn from(e: crate::ProtocolError) -> Self {
        let supported = (e.code == ErrorCode::VersionUnsupported).then(crate::supported);
        ServerFrame::Error(ErrorFrame {
            code: e.code,
            message: e.message,
            id: e.id,
            supported,
            reason: e.reason,
            ..ErrorFrame::default()
        })
    }
}

/// The limits a client must respect, announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_channels_per_join: usize,
    pub max_channel_name: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: crate::limits::MAX_CLIENT_FRAME_BYTES,
            max_channels_per_join: crate::limits::MAX_CHANNELS_PER_JOIN,
            max_channel_name: crate::limits::MAX_CHANNEL_NAME,
        }
    }
}

/// One channel of a `joined` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedChannel {
    pub name: String,
    pub epoch: String,
    pub head: u64,
    pub replayed: u64,
    pub recovered: bool,
    /// Present when this join's replay stops short of `head` (the per-request
    /// replay budget): the replay ends at this seq, and the client joins
    /// again from it for the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// Who is on a channel: the number of subscribed connections and a bounded,
/// sorted sample of distinct principals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub count: u64,
    pub principals: Vec<String>,
}

/// Server state sent with `joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub server: String,
    pub protocol: u32,
    /// Server time (RFC 3339).
    pub time: String,
    /// Per joined channel: the head and the oldest retained seq.
    pub channels: BTreeMap<String, ChannelHealth>,
}

/// A channel's log bounds: `head` is the last seq; `oldest` the oldest seq
/// still retained (absent when nothing is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelHealth {
    pub head: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
}

/// One event of a channel's log, as delivered. Clients read its `data` as
/// a JSON tree (`Value`, the default); the gateway carries it as the text
/// it was stored as ([`RawData`](crate::RawData)), so that a read never
/// parses what it forwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame<D = Value> {
    pub channel: String,
    pub epoch: String,
    pub seq: u64,
    pub id: String,
    pub kind: String,
    pub data: D,
    pub ts: String,
}

impl EventFrame {
    /// Its approximate size as JSON text: what holding or sending it costs
    /// (the data's serialisation, the other fields, the keys around them).
    pub fn approx_len(&self) -> usize {
        let data = serde_json::to_string(&self.data).map_or(0, |d| d.len());
        data + self.channel.len()
            + self.epoch.len()
            + self.id.len()
            + self.kind.len()
            + self.ts.len()
            + 80
    }
}

/// A typed error: a stable `code`, a message for humans, the request `id`
/// when the failing frame had one, and the supported range for
/// `version_unsupported`; for `rate_limited`, the limit's `scope` and how
/// long to wait (`retry_after_ms`); for a refused token, the stable
/// `reason` (`unknown_issuer`, `unknown_kid`, `wrong_algorithm`, ...); for
/// channels left because a refreshed token no longer grants them, the
/// `channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<ProtocolRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

impl Default for ErrorFrame {
    fn default() -> Self {
        Self {
            code: ErrorCode::Internal,
            message: String::new(),
            id: None,
            supported: None,
            scope: None,
            retry_after_ms: None,
            reason: None,
            channels: None,
        }
    }
}
