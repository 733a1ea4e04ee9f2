package agentwire

import (
	"encoding/json"
	"time"
)

// ClientEvent is what Client.Events delivers: one of *Connected, *Joined,
// *Event, *Gap, *Message, *MessageLost, *Disconnected, *Reconnecting,
// *Left, *Refreshed, *Resynced or *ErrorEvent. Use a type switch.
type ClientEvent interface{ clientEvent() }

// Event is one event of a channel, delivered once per seq, in seq order.
type Event struct {
	Channel string `json:"channel"` // The channel it was published to.
	// Epoch names the incarnation of the channel's log; seqs compare only
	// within one epoch.
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`  // Its place in the log, from 1.
	ID    string `json:"id"`   // Its id (the idempotency key it was published with, or one generated)
	Kind  string `json:"kind"` // What the publisher called it.
	// Data is the event's JSON (null when it had none). A stream text or
	// chunk part the gateway sent gzip-compressed (a "gz" member) is
	// decoded back to its "text" or "part" before the event is delivered.
	Data json.RawMessage `json:"data"`
	Ts   string          `json:"ts"` // When it was published (RFC 3339)
}

// approxLen is the event's size as JSON, roughly (for the held-event bound).
func (e *Event) approxLen() int {
	return 96 + len(e.Channel) + len(e.Epoch) + len(e.ID) + len(e.Kind) + len(e.Data) + len(e.Ts)
}

// Gap says that seqs From..=To of Channel will never be delivered (they
// left the log); delivery goes on after To.
type Gap struct {
	Channel string `json:"channel"` // The channel.
	From    uint64 `json:"from"`    // The first seq that will never come.
	To      uint64 `json:"to"`      // The last one.
}

// Connected: a connection is up and its welcome received.
type Connected struct {
	Protocol     int    // The negotiated protocol version.
	ConnectionID string // The gateway's id of the connection.
	Server       string // The gateway's name and version.
	// Features the gateway offers ("refresh": in-band token refresh;
	// "gzip": it sends compressed payloads, which the client decodes).
	Features []string
	// TokenExp is when the connection's token expires (zero: not said).
	TokenExp time.Time
}

// Joined: a (re)join was answered, with the presence and health snapshot
// the gateway sent with it.
type Joined struct {
	Channels []JoinedChannel     // The channels joined, with epoch and head.
	Presence map[string]Presence // By channel, when the gateway sent it.
	Health   *Health             // The gateway and the channels, when it sent it.
}

// Disconnected: a connection ended.
type Disconnected struct {
	Reason string // Why the connection ended.
}

// Reconnecting: the next connection attempt comes after Delay.
type Reconnecting struct {
	Attempt int           // The attempt that follows, from 1.
	Delay   time.Duration // How long until it starts.
	Reason  string        // Why the last connection or attempt ended.
}

// Left: a leave took effect.
type Left struct {
	Channels []string // The channels left.
}

// Refreshed: the connection took a fresh token in band; it expires at Exp.
type Refreshed struct {
	Exp time.Time // The fresh token's expiry.
}

// Resynced: Client.Resync dropped the channel's position. What was
// delivered before came first; the channel joins again from the head and
// delivery goes on after the head its next *Joined names. Previous is where
// delivery stood (nil: nothing was delivered yet).
type Resynced struct {
	Channel  string    // The channel resynced.
	Previous *Position // Where delivery stood (nil: nothing delivered)
}

// ConnectionState is where the client's connection stands.
type ConnectionState string

// The connection states.
const (
	// StateIdle: before the client starts.
	StateIdle ConnectionState = "idle"
	// StateConnecting: the first connection attempt.
	StateConnecting ConnectionState = "connecting"
	// StateConnected: a connection is up and its welcome arrived.
	StateConnected ConnectionState = "connected"
	// StateReconnecting: a connection ended (or an attempt failed) and
	// another attempt follows.
	StateReconnecting ConnectionState = "reconnecting"
	// StateClosed: the client stopped (Close, or a fatal error).
	StateClosed ConnectionState = "closed"
)

// StateChange is one connection state change, given to
// Options.OnStateChange: the previous and current state, why, and for a
// reconnect after a backoff delay the attempt that follows (from 1) and the
// delay (both zero for an immediate reconnect); Err is the fatal error of a
// StateClosed caused by one. StateReconnecting to StateReconnecting is a
// change too (one per attempt).
type StateChange struct {
	Previous ConnectionState // The state before.
	Current  ConnectionState // The state now.
	Reason   string          // Why it changed.
	Attempt  int             // For a reconnect after a delay: the attempt, from 1.
	Delay    time.Duration   // That delay.
	Err      *Error          // The fatal error of a StateClosed caused by one.
}

// ErrorEvent reports an error. When Err's Fatal is set it is the last
// event: the client stopped.
type ErrorEvent struct {
	Err *Error // The error (Fatal: the client stopped).
}

// Fatal reports whether the client stopped with this error.
func (e *ErrorEvent) Fatal() bool { return e.Err != nil && e.Err.Fatal }

func (*Event) clientEvent()        {}
func (*Gap) clientEvent()          {}
func (*Connected) clientEvent()    {}
func (*Joined) clientEvent()       {}
func (*Disconnected) clientEvent() {}
func (*Reconnecting) clientEvent() {}
func (*Left) clientEvent()         {}
func (*Refreshed) clientEvent()    {}
func (*ErrorEvent) clientEvent()   {}
func (*Resynced) clientEvent()     {}
func (*Message) clientEvent()      {}
func (*MessageLost) clientEvent()  {}
