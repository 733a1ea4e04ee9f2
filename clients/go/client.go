package agentwire

import (
	"context"
	"net/url"
	"sync"
)

// Client holds one reconnecting, resuming WebSocket to the gateway and
// delivers every channel's events, each seq once, in order, on Events.
//
// It runs in its own goroutine from Connect until Close, the end of the
// context given to Connect, or a fatal error (the last event, an
// *ErrorEvent whose Err is Fatal; Err returns it). Events is closed then.
type Client struct {
	events chan ClientEvent
	stop   context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	cmds   []command
	signal chan struct{}
	err    *Error
}

type cmdKind uint8

const (
	cmdJoin cmdKind = iota
	cmdLeave
	cmdPause
	cmdResume
	cmdResync
)

type command struct {
	kind     cmdKind
	channels []ChannelSpec
	names    []string
}

// Connect validates the options and starts the client; it returns at once
// (the first connection is opened in the background: watch Events for
// *Connected and *Joined). The client stops when ctx ends, like Close.
// rawURL is the gateway's WebSocket URL (ws:// or wss://).
func Connect(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, configError("a gateway URL ws://host… or wss://host… is needed, not %q", rawURL)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return nil, configError("the gateway URL's scheme must be ws or wss, not %q", u.Scheme)
	}
	if opts.Token == "" && opts.TokenProvider == nil {
		return nil, configError("a Token or a TokenProvider is needed")
	}
	for _, ch := range opts.Channels {
		if err := ValidChannel(ch.Name); err != nil {
			return nil, err
		}
	}
	opts = opts.withDefaults()
	stopCtx, stop := context.WithCancel(ctx)
	c := &Client{
		events: make(chan ClientEvent, opts.Buffer),
		stop:   stop,
		done:   make(chan struct{}),
		signal: make(chan struct{}, 1),
	}
	d := newDriver(c, rawURL, opts, stopCtx)
	go d.run()
	return c, nil
}

// Events delivers what happens, in order; it is closed when the client
// stops. An event counts as delivered (and may be acknowledged) once it is
// in this channel's buffer (Options.Buffer); when the buffer is full the
// client stops reading the socket.
func (c *Client) Events() <-chan ClientEvent { return c.events }

// Done is closed when the client has stopped.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the fatal error the client stopped with (nil while it runs, and
// after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return nil
	}
	return c.err
}

// Close flushes the acks, closes the connection and waits until the
// client's goroutine has ended (or ctx ends). Closing twice is harmless.
func (c *Client) Close(ctx context.Context) error {
	c.stop()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Join joins a channel from since (a channel already joined is left as
// it is). While disconnected it takes effect with the next re-join.
func (c *Client) Join(name string, since Since) error {
	if err := ValidChannel(name); err != nil {
		return err
	}
	return c.push(command{kind: cmdJoin, channels: []ChannelSpec{{Name: name, Since: since}}})
}

// Leave leaves channels, acknowledging what was delivered on them first.
func (c *Client) Leave(names ...string) error {
	return c.push(command{kind: cmdLeave, names: names})
}

// Pause acknowledges what was delivered on a channel and leaves it (no
// live delivery; not re-joined on reconnect), keeping its position.
func (c *Client) Pause(name string) error {
	return c.push(command{kind: cmdPause, names: []string{name}})
}

// Resume joins a paused channel again from the last seq delivered before
// the pause, so the replay brings what was published meanwhile.
func (c *Client) Resume(name string) error {
	return c.push(command{kind: cmdResume, names: []string{name}})
}

// Resync drops the local position of a channel: its last delivered seq,
// the events it holds and its last ack are forgotten, a *Resynced event
// follows what was delivered before, and the channel joins again from the
// head (at once when connected, else with the next connection; a paused
// channel when resumed). Delivery goes on after the head the next *Joined
// names. A channel not joined is ignored.
func (c *Client) Resync(name string) error {
	return c.push(command{kind: cmdResync, names: []string{name}})
}

// ResyncAll is Resync for every joined (and paused) channel.
func (c *Client) ResyncAll() error {
	return c.push(command{kind: cmdResync})
}

func (c *Client) push(cmd command) error {
	select {
	case <-c.done:
		return &Error{Code: CodeClosed, Message: "the client has stopped"}
	default:
	}
	c.mu.Lock()
	c.cmds = append(c.cmds, cmd)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
	return nil
}

func (c *Client) takeCommands() []command {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmds := c.cmds
	c.cmds = nil
	return cmds
}

// ValidChannel checks a channel name: 1 to 128 characters of
// A-Z a-z 0-9 - _ . : / @.
func ValidChannel(name string) error {
	if len(name) == 0 || len(name) > 128 {
		return &Error{Code: CodeInvalidChannel, Message: "a channel name is 1 to 128 characters: " + truncate(name, 140)}
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
			b == '-' || b == '_' || b == '.' || b == ':' || b == '/' || b == '@'
		if !ok {
			return &Error{Code: CodeInvalidChannel, Message: "a channel name is made of A-Z a-z 0-9 - _ . : / @: " + truncate(name, 140)}
		}
	}
	return nil
}
