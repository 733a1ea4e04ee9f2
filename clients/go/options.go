package agentwire

import (
	"context"
	"net/http"
	"time"
)

// TokenProvider returns a token for the next connection attempt (or an
// in-band refresh). It is asked before every attempt; ctx ends when the
// client closes. An error is reported and retried on the backoff.
type TokenProvider func(ctx context.Context) (string, error)

// ChannelSpec is a channel to join and where its first join starts.
type ChannelSpec struct {
	Name  string // The channel.
	Since Since  // Where its first join starts (zero: the durable cursor)
}

// Options say how the client behaves. The zero value of every field means
// its default, chosen for API Gateway's limits; a negative duration turns
// off what it times (MaxConnectionAge, AckDebounce).
type Options struct {
	// Token is a fixed token. A refused fixed token ends the client.
	Token string
	// TokenProvider is asked before every connection attempt and for
	// in-band refreshes; it takes precedence over Token.
	TokenProvider TokenProvider
	// Channels are joined at start, in order.
	Channels []ChannelSpec

	// MinReconnectDelay is the first backoff ceiling (default 500 ms);
	// MaxReconnectDelay the largest (default 30 s). Full jitter.
	MinReconnectDelay time.Duration
	MaxReconnectDelay time.Duration // See MinReconnectDelay.
	// MaxAttempts caps reconnect attempts in a row (0: never give up).
	MaxAttempts int
	// Jitter returns a uniform draw in [0, 1) for the backoff (default
	// math/rand/v2); return 1 for no jitter.
	Jitter func() float64
	// JitterFraction is the share of each reconnect delay that is random:
	// the delay is ceiling × (1 − j + j × draw). 0 means the default, full
	// jitter (1); a value in (0, 1) a partial one; a negative value none
	// (every delay is its ceiling).
	JitterFraction float64
	// OnStateChange, if set, is called with every connection state change
	// (previous, current, reason, attempt, delay, error), in order, on the
	// client's goroutine: it must return quickly and must not call Close.
	OnStateChange func(StateChange)

	// PingInterval: how often a ping is sent (default 30 s).
	PingInterval time.Duration
	// PingTimeout: a connection that receives nothing for this long after a
	// ping is dead and replaced (default 20 s).
	PingTimeout time.Duration
	// MaxConnectionAge: the client rolls over (acks, closes, reconnects at
	// once, resumes) after this long, ahead of API Gateway's 2-hour cut
	// (default 115 min; negative: never).
	MaxConnectionAge time.Duration
	// AckDebounce: delivered seqs are acknowledged this long after the first
	// unacknowledged one, before a rollover, on leave and on Close (default
	// 1 s; negative: never acknowledge).
	AckDebounce time.Duration
	// RefreshLead: with a TokenProvider and a gateway that offers in-band
	// refresh, a fresh token is sent this long before the connection's
	// token expires, at most half the time left (default 60 s).
	RefreshLead time.Duration
	// HandshakeTimeout bounds the WebSocket upgrade and hello (default 10 s).
	HandshakeTimeout time.Duration

	// ClientName is sent in hello.
	ClientName string
	// Buffer is how many events wait for the application before the client
	// stops reading the socket (default 1024).
	Buffer int
	// MaxFrameBytes is the largest frame read (default 4 MiB).
	MaxFrameBytes int64
	// MaxHeldEvents and MaxHeldEventBytes bound the events one channel
	// holds while waiting for earlier seqs (10,000 and 32 MiB).
	MaxHeldEvents     int
	MaxHeldEventBytes int // See MaxHeldEvents.
	// MaxMessageBytes bounds one reassembled message (64 MiB);
	// MaxHeldMessageBytes all partial messages (128 MiB).
	MaxMessageBytes     uint64
	MaxHeldMessageBytes uint64 // See MaxMessageBytes.
	// MaxPartialMessages bounds the messages being reassembled at once, over
	// all channels (default 64): starting one more makes the oldest a
	// *MessageLost (LostTooLarge). Message ids over 128 bytes are lost
	// (LostInvalid).
	MaxPartialMessages int
	// HoleGrace is how long a hole in the live stream (an event after a
	// missing seq) waits for the missing frames before the channel re-joins
	// to fetch them (default 250 ms; negative: at once). Frames that fill
	// the hole meanwhile cancel the re-join.
	HoleGrace time.Duration

	// HTTPClient dials the WebSocket (default http.DefaultClient).
	HTTPClient *http.Client
	// Header is added to the upgrade request.
	Header http.Header
}

// Version is this package's version, sent in hello.
const Version = "0.1.0"

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.MinReconnectDelay, 500*time.Millisecond)
	def(&o.MaxReconnectDelay, 30*time.Second)
	def(&o.PingInterval, 30*time.Second)
	def(&o.PingTimeout, 20*time.Second)
	def(&o.MaxConnectionAge, 115*time.Minute)
	def(&o.AckDebounce, time.Second)
	def(&o.HandshakeTimeout, 10*time.Second)
	def(&o.RefreshLead, time.Minute)
	def(&o.HoleGrace, 250*time.Millisecond)
	if o.MaxReconnectDelay < o.MinReconnectDelay {
		o.MaxReconnectDelay = o.MinReconnectDelay
	}
	if o.Jitter == nil {
		o.Jitter = randomUnit
	}
	if o.ClientName == "" {
		o.ClientName = "agentwire-go/" + Version
	}
	if o.Buffer <= 0 {
		o.Buffer = 1024
	}
	if o.MaxFrameBytes <= 0 {
		o.MaxFrameBytes = 4 << 20
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	return o
}
