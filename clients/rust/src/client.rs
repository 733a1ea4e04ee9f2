//! The public face: [`ClientBuilder`] → [`Client`] (a stream of
//! [`ClientEvent`]s) and its cloneable [`Handle`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use agentwire_protocol::limits::validate_channel;
use agentwire_protocol::{JoinChannel, Since};
use tokio::sync::mpsc;

use crate::driver::{Command, Driver};
use crate::notice::{Notice, StreamItem};
use crate::token::{TokenProvider, TokenSource};
use crate::{ClientError, ClientEvent, Options};

/// Builds a [`Client`]. `url` and a token (fixed or provider) are required.
#[derive(Default)]
pub struct ClientBuilder {
    url: Option<String>,
    token: Option<TokenSource>,
    channels: Vec<JoinChannel>,
    options: Options,
}

impl ClientBuilder {
    /// The gateway's WebSocket URL (`wss://…/prod` or `ws://127.0.0.1:8080`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// A fixed token. A 401 on (re)connect then stops the client.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Fixed(token.into()));
        self
    }

    /// A provider asked for a token before every connection attempt, so an
    /// expired token is replaced on reconnect.
    pub fn token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token = Some(TokenSource::Provider(Arc::new(provider)));
        self
    }

    /// A channel resumed from the principal's durable cursor.
    pub fn channel(mut self, name: impl Into<String>) -> Self {
        self.channels.push(JoinChannel {
            name: name.into(),
            since: None,
        });
        self
    }

    /// A channel started at `since`: [`Since::Head`] for new events only, or
    /// a position `{epoch, seq}` the application kept (delivery starts at
    /// `seq + 1`).
    pub fn channel_since(mut self, name: impl Into<String>, since: Since) -> Self {
        self.channels.push(JoinChannel {
            name: name.into(),
            since: Some(since),
        });
        self
    }

    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Checks the configuration and starts the connection loop on the
    /// current tokio runtime. Returns at once; progress arrives as events.
    pub fn connect(self) -> Result<Client, ClientError> {
        self.start()
    }

    /// Like [`ClientBuilder::connect`], but the stream yields [`Notice`]s:
    /// every [`ClientEvent`], and in addition each `joined` answer with its
    /// presence and health ([`Notice::Joined`], in place of
    /// `ClientEvent::Joined`), every connection state change
    /// ([`Notice::State`]) and every resync ([`Notice::Resync`]).
    pub fn connect_with_notices(self) -> Result<Client<Notice>, ClientError> {
        self.start()
    }

    fn start<E: StreamItem>(self) -> Result<Client<E>, ClientError> {
        let url = self
            .url
            .ok_or_else(|| ClientError::Config("no url given".into()))?;
        let token = self
            .token
            .ok_or_else(|| ClientError::Config("no token or token provider given".into()))?;
        let o = &self.options;
        if o.protocol.min > o.protocol.max || o.protocol.min == 0 {
            return Err(ClientError::Config(format!(
                "protocol range {}..={} is empty",
                o.protocol.min, o.protocol.max
            )));
        }
        if o.ping_interval.is_zero() || o.ping_timeout.is_zero() || o.buffer == 0 {
            return Err(ClientError::Config(
                "ping_interval, ping_timeout and buffer must be above zero".into(),
            ));
        }
        for c in &self.channels {
            validate_channel(&c.name).map_err(|e| ClientError::InvalidChannel(e.message))?;
        }
        // Checks the URL's form now rather than on the first attempt.
        crate::socket::request(&url, "check", o.protocol)?;
        let tls = if url.starts_with("wss://") {
            Some(crate::socket::tls_connector()?)
        } else {
            None
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ClientError::Config("connect() must be called inside a tokio runtime".into())
        })?;
        let (events_tx, events) = mpsc::channel(self.options.buffer);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let driver = Driver::new(
            url,
            token,
            self.options,
            tls,
            self.channels,
            events_tx,
            commands_rx,
        )
        .with_notices(E::NOTICES);
        runtime.spawn(driver.run());
        Ok(Client {
            handle: Handle { commands },
            events,
            _item: PhantomData,
        })
    }
}

/// A running client: read it with [`Client::next`] (or as a
/// `futures::Stream`); steer it with [`Client::handle`]. The stream ends
/// after the application closes the client or a fatal error. It yields
/// [`ClientEvent`]s, or [`Notice`]s when started with
/// [`ClientBuilder::connect_with_notices`].
pub struct Client<E: StreamItem = ClientEvent> {
    handle: Handle,
    events: mpsc::Receiver<Notice>,
    _item: PhantomData<fn() -> E>,
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

impl<E: StreamItem> Client<E> {
    /// The next event; `None` once the client has stopped.
    pub async fn next(&mut self) -> Option<E> {
        loop {
            if let Some(e) = E::from_notice(self.events.recv().await?) {
                return Some(e);
            }
        }
    }

    /// A handle to join, leave and close from anywhere.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Acknowledges what was delivered, closes the connection and waits for
    /// the loop to end; the events still queued are returned.
    pub async fn close(mut self) -> Vec<E> {
        let _ = self.handle.close();
        let mut rest = Vec::new();
        while let Some(ev) = self.next().await {
            rest.push(ev);
        }
        rest
    }
}

impl<E: StreamItem> futures::Stream for Client<E> {
    type Item = E;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<E>> {
        loop {
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(n)) => {
                    if let Some(e) = E::from_notice(n) {
                        return Poll::Ready(Some(e));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Steers a running client. Commands issued while it is reconnecting take
/// effect on the next connection; none is dropped.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Joins a channel from the principal's durable cursor.
    pub fn join(&self, channel: impl Into<String>) -> Result<(), ClientError> {
        self.join_channels(vec![JoinChannel {
            name: channel.into(),
            since: None,
        }])
    }

    /// Joins a channel from `since`.
    pub fn join_since(&self, channel: impl Into<String>, since: Since) -> Result<(), ClientError> {
        self.join_channels(vec![JoinChannel {
            name: channel.into(),
            since: Some(since),
        }])
    }

    /// Joins several channels; a channel already joined is left as it is.
    pub fn join_channels(&self, channels: Vec<JoinChannel>) -> Result<(), ClientError> {
        for c in &channels {
            validate_channel(&c.name).map_err(|e| ClientError::InvalidChannel(e.message))?;
        }
        self.send(Command::Join(channels))
    }

    /// Leaves channels; they are not re-joined on reconnect.
    pub fn leave(&self, channels: &[&str]) -> Result<(), ClientError> {
        self.send(Command::Leave(
            channels.iter().map(|c| (*c).to_owned()).collect(),
        ))
    }

    /// Pauses a channel: what was delivered is acknowledged and the channel
    /// is left (no live delivery, not re-joined on reconnect), and its
    /// position is kept for [`Handle::resume`].
    pub fn pause(&self, channel: &str) -> Result<(), ClientError> {
        self.send(Command::Pause(channel.to_owned()))
    }

    /// Resumes a paused channel from the last seq delivered before the
    /// pause (the replay brings what was published meanwhile); a channel
    /// never paused is joined from the durable cursor.
    pub fn resume(&self, channel: &str) -> Result<(), ClientError> {
        validate_channel(channel).map_err(|e| ClientError::InvalidChannel(e.message))?;
        self.send(Command::Resume(channel.to_owned()))
    }

    /// Drops the local position of `channel`: its last delivered seq, the
    /// events it holds and its last ack are forgotten, the reset is
    /// reported ([`Notice::Resync`] on a stream of
    /// [`ClientBuilder::connect_with_notices`]) after what was delivered
    /// before, and the channel joins again from the head (at once when
    /// connected, else with the next connection). Delivery goes on after
    /// the head the new `joined` names. A channel not joined is ignored.
    pub fn resync(&self, channel: &str) -> Result<(), ClientError> {
        self.send(Command::Resync(Some(vec![channel.to_owned()])))
    }

    /// [`Handle::resync`] for every joined (or paused) channel.
    pub fn resync_all(&self) -> Result<(), ClientError> {
        self.send(Command::Resync(None))
    }

    /// Acknowledges what was delivered and closes; the event stream then
    /// ends with `Disconnected { reason: "closed by the application" }`.
    pub fn close(&self) -> Result<(), ClientError> {
        self.send(Command::Close)
    }

    fn send(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands.send(cmd).map_err(|_| ClientError::Closed)
    }
}
