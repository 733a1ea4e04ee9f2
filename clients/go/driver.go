package agentwire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The connection loop: one goroutine per client that connects, negotiates,
// (re)joins every channel from the last delivered seq, feeds frames through
// each channel's sequencer, pings, acknowledges, refreshes its token in
// band, rolls over ahead of the gateway's age limit, and reconnects with
// backoff when anything breaks.

// maxChannelsPerJoin is the protocol's limit of channels in one join.
const maxChannelsPerJoin = 50

// writeTimeout bounds one frame write.
const writeTimeout = 10 * time.Second

// closeWait bounds the close handshake before the socket is cut.
const closeWait = 2 * time.Second

type chanState struct {
	seq     *sequencer
	initial Since
	acked   uint64
	// holeSince: since when a live hole waits for its missing frames (the
	// re-join that fetches them goes out Options.HoleGrace later).
	holeSince time.Time
}

// since is where a (re)join resumes: right after the last delivered seq
// once the channel's log is known, else where the application asked.
func (ch *chanState) since() Since {
	if p, ok := ch.seq.position(); ok {
		return SincePosition(p.Epoch, p.Seq)
	}
	return ch.initial
}

// dueAck is the seq to acknowledge, if it moved past the last one sent.
func (ch *chanState) dueAck() (uint64, bool) {
	p, ok := ch.seq.position()
	if !ok || p.Seq == 0 || ch.acked >= p.Seq {
		return 0, false
	}
	ch.acked = p.Seq
	return p.Seq, true
}

type endKind uint8

const (
	endClosed endKind = iota
	endLost
	endRollover
	endFatal
	endFailed
	endTokenRefused
)

// ended says how a connection (or an attempt) ended.
type ended struct {
	kind   endKind
	reason string
	err    *Error
}

func lost(format string, args ...any) *ended {
	return &ended{kind: endLost, reason: fmt.Sprintf(format, args...)}
}

var stopped = &ended{kind: endClosed, reason: "closed by the application"}

type inbound struct {
	typ  websocket.MessageType
	data []byte
	err  error
}

type joinRetry struct {
	at    time.Time
	names []string
}

type tokenResult struct {
	token string
	err   error
}

type driver struct {
	c     *Client
	url   string
	opts  Options
	stop  context.Context
	renew bool

	channels     map[string]*chanState
	names        []string // the channels in join order
	deferredLeft []string
	paused       map[string]Since
	messages     *reassembler
	pending      map[string][]string // join id -> its channels
	joinRetries  []joinRetry
	acksPaused   time.Time
	nextID       uint64
	backoff      Backoff
	state        ConnectionState

	// The current connection: write sends one text frame (nil while
	// disconnected).
	write     func(ctx context.Context, data []byte) error
	frames    chan inbound
	ackAt     time.Time
	refreshAt time.Time
	refreshID string
	// tokenExp is the exp of the connection's token, as the gateway said.
	tokenExp    time.Time
	refreshing  bool
	refreshDone chan tokenResult
	connCtx     context.Context
	wg          sync.WaitGroup
}

func newDriver(c *Client, rawURL string, opts Options, stop context.Context) *driver {
	d := &driver{
		c:        c,
		url:      rawURL,
		opts:     opts,
		stop:     stop,
		renew:    opts.TokenProvider != nil,
		channels: map[string]*chanState{},
		paused:   map[string]Since{},
		messages: newReassembler(opts.MaxMessageBytes, opts.MaxHeldMessageBytes).withMaxPartial(opts.MaxPartialMessages),
		pending:  map[string][]string{},
		backoff: Backoff{
			Min: opts.MinReconnectDelay, Max: opts.MaxReconnectDelay,
			MaxAttempts: opts.MaxAttempts, StableAfter: time.Minute,
			JitterFraction: opts.JitterFraction,
		},
		state: StateIdle,
	}
	d.addChannels(opts.Channels)
	return d
}

func (d *driver) addChannels(list []ChannelSpec) []string {
	var added []string
	for _, spec := range list {
		if _, ok := d.channels[spec.Name]; ok {
			continue
		}
		s := newSequencer(spec.Name, d.opts.MaxHeldEvents, d.opts.MaxHeldEventBytes)
		if p, ok := spec.Since.Position(); ok {
			s.resume(p.Epoch, p.Seq)
		}
		d.channels[spec.Name] = &chanState{seq: s, initial: spec.Since}
		d.names = append(d.names, spec.Name)
		d.deferredLeft = slices.DeleteFunc(d.deferredLeft, func(n string) bool { return n == spec.Name })
		added = append(added, spec.Name)
	}
	return added
}

func (d *driver) dropChannel(name string) bool {
	if _, ok := d.channels[name]; !ok {
		return false
	}
	delete(d.channels, name)
	d.names = slices.DeleteFunc(d.names, func(n string) bool { return n == name })
	return true
}

func (d *driver) run() {
	c := d.c
	defer func() {
		close(c.events)
		close(c.done)
	}()
	defer c.stop()
	defer func() {
		// However the loop ended, the last state change is to closed.
		d.setState(StateChange{Current: StateClosed, Reason: "closed by the application"})
	}()
	refusedOnce := false
	d.setState(StateChange{Current: StateConnecting, Reason: "connecting"})
	for {
		var failure string
		e := d.attempt()
		switch e.kind {
		case endClosed:
			d.tryEmit(&Disconnected{Reason: "closed by the application"})
			d.setState(StateChange{Current: StateClosed, Reason: "closed by the application"})
			return
		case endFatal:
			d.fatal(e.err)
			return
		case endRollover:
			refusedOnce = false
			if d.emit(&Disconnected{Reason: e.reason}) != nil {
				d.setState(StateChange{Current: StateClosed, Reason: "closed by the application"})
				return
			}
			d.setState(StateChange{Current: StateReconnecting, Reason: e.reason})
			continue
		case endLost:
			refusedOnce = false
			if d.emit(&Disconnected{Reason: e.reason}) != nil {
				return
			}
			failure = e.reason
		case endFailed:
			failure = e.reason
			if e.err != nil && d.emit(&ErrorEvent{Err: e.err}) != nil {
				return
			}
		case endTokenRefused:
			// A provider is asked for a fresh token once; a fresh token
			// refused as well means retrying would only hammer.
			if !d.renew || refusedOnce {
				d.fatal(e.err)
				return
			}
			refusedOnce = true
			failure = e.err.Error()
		}
		delay, ok := d.backoff.Next(d.opts.Jitter())
		if !ok {
			d.fatal(&Error{Code: CodeExhausted, Message: fmt.Sprintf("gave up after %d reconnect attempts; last failure: %s", d.backoff.Attempt(), failure)})
			return
		}
		if d.emit(&Reconnecting{Attempt: d.backoff.Attempt(), Delay: delay, Reason: failure}) != nil {
			d.setState(StateChange{Current: StateClosed, Reason: "closed by the application"})
			return
		}
		d.setState(StateChange{Current: StateReconnecting, Reason: failure, Attempt: d.backoff.Attempt(), Delay: delay})
		if !d.wait(delay) {
			d.tryEmit(&Disconnected{Reason: "closed by the application"})
			d.setState(StateChange{Current: StateClosed, Reason: "closed by the application"})
			return
		}
	}
}

// setState records a state change and tells Options.OnStateChange
// (StateReconnecting to StateReconnecting counts; other repeats do not).
func (d *driver) setState(ch StateChange) {
	ch.Previous = d.state
	if ch.Previous == ch.Current && ch.Current != StateReconnecting {
		return
	}
	d.state = ch.Current
	if d.opts.OnStateChange != nil {
		d.opts.OnStateChange(ch)
	}
}

func (d *driver) fatal(err *Error) {
	err.Fatal = true
	d.c.mu.Lock()
	d.c.err = err
	d.c.mu.Unlock()
	_ = d.emit(&ErrorEvent{Err: err})
	d.setState(StateChange{Current: StateClosed, Reason: err.Error(), Err: err})
}

// emit hands an event to the application; an error once the client is
// stopping.
func (d *driver) emit(ev ClientEvent) error {
	select {
	case d.c.events <- ev:
		return nil
	case <-d.stop.Done():
		return errStopping
	}
}

var errStopping = errors.New("stopping")

// tryEmit hands over an event if there is room.
func (d *driver) tryEmit(ev ClientEvent) {
	select {
	case d.c.events <- ev:
	default:
	}
}

// wait sleeps delay, applying commands meanwhile; false when stopping.
func (d *driver) wait(delay time.Duration) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-d.stop.Done():
			return false
		case <-d.c.signal:
			for _, cmd := range d.c.takeCommands() {
				if d.apply(cmd) != nil {
					return false
				}
			}
		}
	}
}

func (d *driver) token(ctx context.Context) (string, error) {
	if d.opts.TokenProvider == nil {
		return d.opts.Token, nil
	}
	t, err := d.opts.TokenProvider(ctx)
	if err == nil && t == "" {
		err = errors.New("the token provider returned an empty token")
	}
	return t, err
}

// attempt is one connection: open, negotiate, join, serve until it ends.
func (d *driver) attempt() *ended {
	if d.stop.Err() != nil {
		return stopped
	}
	tctx, cancel := context.WithTimeout(d.stop, d.opts.HandshakeTimeout)
	tok, err := d.token(tctx)
	cancel()
	if err != nil {
		if d.stop.Err() != nil {
			return stopped
		}
		e := &Error{Code: CodeTokenProvider, Message: "the token provider failed", Retryable: true, Err: err}
		return &ended{kind: endFailed, reason: e.Error(), err: e}
	}
	header := http.Header{}
	for k, v := range d.opts.Header {
		header[k] = v
	}
	header.Set("Authorization", "Bearer "+tok)
	dctx, cancel := context.WithTimeout(d.stop, d.opts.HandshakeTimeout)
	conn, resp, err := websocket.Dial(dctx, d.url, &websocket.DialOptions{
		HTTPClient:   d.opts.HTTPClient,
		HTTPHeader:   header,
		Subprotocols: []string{Subprotocol},
	})
	cancel()
	if err != nil {
		if d.stop.Err() != nil {
			return stopped
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != 0 {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
			}
			return classifyRefusal(resp.StatusCode, body)
		}
		return &ended{kind: endFailed, reason: "cannot connect: " + err.Error()}
	}
	if p := conn.Subprotocol(); p != "" && p != Subprotocol {
		_ = conn.CloseNow()
		return &ended{kind: endFatal, err: &Error{Code: CodeVersionUnsupported, Message: "the gateway chose the subprotocol " + p}}
	}
	conn.SetReadLimit(d.opts.MaxFrameBytes)
	started := time.Now()

	connCtx, cancelConn := context.WithCancel(context.Background())
	d.connCtx = connCtx
	d.write = func(ctx context.Context, data []byte) error { return conn.Write(ctx, websocket.MessageText, data) }
	d.frames = make(chan inbound)
	d.refreshDone = make(chan tokenResult, 1)
	d.refreshAt, d.refreshID, d.refreshing = time.Time{}, "", false
	d.ackAt = time.Time{}
	d.wg.Add(1)
	go func(frames chan<- inbound) {
		defer d.wg.Done()
		for {
			typ, data, err := conn.Read(connCtx)
			select {
			case frames <- inbound{typ, data, err}:
			case <-connCtx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}(d.frames)

	e := d.serve(started)

	switch e.kind {
	case endClosed, endRollover:
		reason := "closed by the client"
		if e.kind == endRollover {
			reason = "rollover"
		}
		watchdog := time.AfterFunc(closeWait, cancelConn)
		_ = conn.Close(websocket.StatusNormalClosure, reason)
		watchdog.Stop()
	default:
		_ = conn.CloseNow()
	}
	cancelConn()
	d.wg.Wait()
	d.write, d.frames = nil, nil
	clear(d.pending)
	d.backoff.connectionEnded(time.Since(started))
	return e
}

// classifyRefusal says what a non-101 answer to the upgrade means.
func classifyRefusal(status int, body []byte) *ended {
	b := parseErrorBody(body)
	e := &Error{Status: status, Message: truncate(string(body), 300)}
	if b != nil {
		e = b.toError()
		e.Status = status
	}
	switch {
	case b != nil && b.Code == CodeVersionUnsupported:
		return &ended{kind: endFatal, err: e}
	case status == http.StatusUnauthorized:
		if e.Code == "" {
			e.Code = CodeUnauthorized
		}
		return &ended{kind: endTokenRefused, err: e}
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return &ended{kind: endFailed, reason: fmt.Sprintf("the gateway answered HTTP %d: %s", status, e.Message)}
	}
	msg := e.Message
	if b != nil {
		msg = b.Code + ": " + b.Message
	}
	return &ended{kind: endFatal, err: &Error{Code: CodeRefused, Status: status, Message: msg}}
}

// send writes one frame; a failure ends the connection.
func (d *driver) send(frame any) *ended {
	var data []byte
	if b, ok := frame.([]byte); ok {
		data = b
	} else {
		var err error
		if data, err = json.Marshal(frame); err != nil {
			return &ended{kind: endFatal, err: &Error{Code: CodeDecode, Message: "cannot encode a frame", Err: err}}
		}
	}
	ctx, cancel := context.WithTimeout(d.connCtx, writeTimeout)
	defer cancel()
	if err := d.write(ctx, data); err != nil {
		return lost("send failed: %v", err)
	}
	return nil
}

func (d *driver) serve(started time.Time) *ended {
	if e := d.handshake(); e != nil {
		return e
	}
	// The re-join below covers what a rate limit held back.
	d.joinRetries = nil
	d.acksPaused = time.Time{}
	if e := d.sendJoins(slices.Clone(d.names)); e != nil {
		return e
	}
	if len(d.deferredLeft) > 0 {
		left := d.deferredLeft
		d.deferredLeft = nil
		if d.emit(&Left{Channels: left}) != nil {
			return d.closing()
		}
	}
	var rolloverAt time.Time
	if d.opts.MaxConnectionAge > 0 {
		rolloverAt = started.Add(d.opts.MaxConnectionAge)
	}
	pingAt := time.Now().Add(d.opts.PingInterval)
	var pongDeadline time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := pingAt
		for _, t := range []time.Time{pongDeadline, d.ackAt, rolloverAt, d.refreshAt, d.joinRetryAt(), d.holeAt()} {
			if !t.IsZero() && t.Before(next) {
				next = t
			}
		}
		timer.Reset(time.Until(next))
		select {
		case in := <-d.frames:
			pongDeadline = time.Time{}
			if in.err != nil {
				return lost("%s", describeReadError(in.err))
			}
			if e := d.onMessage(in); e != nil {
				return e
			}
			if e := d.rejoinLagging(); e != nil {
				return e
			}
		case <-d.c.signal:
			for _, cmd := range d.c.takeCommands() {
				if e := d.apply(cmd); e != nil {
					return e
				}
			}
		case <-d.stop.Done():
			return d.closing()
		case r := <-d.refreshDone:
			d.refreshing = false
			if r.err != nil {
				// The connection's token runs out: a new connection (on the
				// backoff) asks the provider again.
				err := &Error{Code: CodeTokenProvider, Message: "the token provider failed; the token was not refreshed", Retryable: true, Err: r.err}
				if d.emit(&ErrorEvent{Err: err}) != nil {
					return d.closing()
				}
				return lost("%s; reconnecting", err.Error())
			}
			d.nextID++
			d.refreshID = "r" + strconv.FormatUint(d.nextID, 10)
			if e := d.send(refreshFrame{Action: "refresh", ID: d.refreshID, Token: r.token}); e != nil {
				return e
			}
		case <-timer.C:
			now := time.Now()
			if !pongDeadline.IsZero() && !now.Before(pongDeadline) {
				return lost("no answer to ping within %v: the connection is dead", d.opts.PingTimeout)
			}
			if !rolloverAt.IsZero() && !now.Before(rolloverAt) {
				if e := d.flushAcks(); e != nil {
					return e
				}
				return &ended{kind: endRollover, reason: fmt.Sprintf("connection age limit (%v) reached: reconnecting", d.opts.MaxConnectionAge)}
			}
			if !d.ackAt.IsZero() && !now.Before(d.ackAt) {
				if now.Before(d.acksPaused) {
					d.ackAt = d.acksPaused
				} else {
					d.ackAt, d.acksPaused = time.Time{}, time.Time{}
					if e := d.flushAcks(); e != nil {
						return e
					}
				}
			}
			if t := d.joinRetryAt(); !t.IsZero() && !now.Before(t) {
				if e := d.retryJoins(now); e != nil {
					return e
				}
			}
			if t := d.holeAt(); !t.IsZero() && !now.Before(t) {
				if e := d.rejoinLagging(); e != nil {
					return e
				}
			}
			if !d.refreshAt.IsZero() && !now.Before(d.refreshAt) {
				d.refreshAt = time.Time{}
				d.startRefresh()
			}
			if !now.Before(pingAt) {
				if e := d.send(pingFrame); e != nil {
					return e
				}
				pingAt = now.Add(d.opts.PingInterval)
				if pongDeadline.IsZero() {
					pongDeadline = now.Add(d.opts.PingTimeout)
				}
			}
		}
	}
}

// closing applies the commands still queued, flushes the acks and ends
// the connection (the application closed the client).
func (d *driver) closing() *ended {
	for _, cmd := range d.c.takeCommands() {
		if e := d.apply(cmd); e != nil {
			if e.kind == endClosed {
				break
			}
			return e
		}
	}
	if e := d.flushAcks(); e != nil {
		return e
	}
	return stopped
}

func describeReadError(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("the gateway closed the connection (%d %s)", int(ce.Code), ce.Reason)
	}
	return "the connection ended: " + err.Error()
}

// startRefresh asks the token provider for a fresh token in the
// background; the answer comes on refreshDone.
func (d *driver) startRefresh() {
	if !d.renew || d.refreshing {
		return
	}
	d.refreshing = true
	ctx, done := d.connCtx, d.refreshDone
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		tctx, cancel := context.WithTimeout(ctx, d.opts.HandshakeTimeout)
		defer cancel()
		t, err := d.token(tctx)
		done <- tokenResult{t, err}
	}()
}

// minRefreshGap is the least time between two in-band refreshes.
const minRefreshGap = time.Second

// planRefresh schedules the in-band refresh of a token that expires at
// exp: at exp minus the smaller of Options.RefreshLead (60 s) and half the
// time left.
func (d *driver) planRefresh(exp time.Time) {
	if !d.renew {
		return
	}
	now := time.Now()
	left := exp.Sub(now)
	if left <= 0 {
		d.refreshAt = now
		return
	}
	d.refreshAt = exp.Add(-min(d.opts.RefreshLead, left/2))
}

func unixTime(s float64) time.Time {
	sec := int64(s)
	return time.Unix(sec, int64((s-float64(sec))*1e9))
}

// handshake sends hello and waits for welcome (or the typed refusal).
func (d *driver) handshake() *ended {
	hello := helloFrame{
		Action:   "hello",
		Protocol: ProtocolRange{Min: ProtocolVersion, Max: ProtocolVersion},
		Client:   d.opts.ClientName,
		Features: []string{featureGzip},
	}
	if e := d.send(hello); e != nil {
		return e
	}
	deadline := time.NewTimer(d.opts.HandshakeTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-d.stop.Done():
			return stopped
		case <-deadline.C:
			return lost("no welcome within %v", d.opts.HandshakeTimeout)
		case in := <-d.frames:
			if in.err != nil {
				return lost("the connection ended before welcome: %s", describeReadError(in.err))
			}
			if in.typ != websocket.MessageText {
				continue
			}
			f, eb, _, err := parseServerFrame(in.data)
			if err != nil {
				continue
			}
			if eb != nil {
				e := eb.toError()
				if e.Code == CodeVersionUnsupported {
					return &ended{kind: endFatal, err: e}
				}
				return lost("hello refused (%s): %s", e.Code, e.Message)
			}
			if f.Type != "welcome" {
				continue
			}
			ev := &Connected{Protocol: f.Protocol, ConnectionID: f.ConnectionID, Server: f.Server, Features: f.Features}
			if f.TokenExp != nil {
				ev.TokenExp = unixTime(*f.TokenExp)
				if slices.Contains(f.Features, "refresh") {
					d.tokenExp = ev.TokenExp
					d.planRefresh(ev.TokenExp)
				}
			}
			if d.emit(ev) != nil {
				return stopped
			}
			d.setState(StateChange{Current: StateConnected, Reason: fmt.Sprintf("connected (protocol v%d, connection %s)", f.Protocol, f.ConnectionID)})
			return nil
		}
	}
}

// sendJoins joins names, each from where its delivery stands, in frames of
// at most maxChannelsPerJoin channels.
func (d *driver) sendJoins(names []string) *ended {
	for chunk := range slices.Chunk(names, maxChannelsPerJoin) {
		var list []joinChannel
		var joined []string
		for _, name := range chunk {
			ch, ok := d.channels[name]
			if !ok {
				continue
			}
			ch.seq.rejoining()
			ch.holeSince = time.Time{}
			jc := joinChannel{Name: name}
			if s := ch.since(); !s.IsCursor() {
				jc.Since = &s
			}
			list = append(list, jc)
			joined = append(joined, name)
		}
		if len(list) == 0 {
			continue
		}
		d.nextID++
		id := "j" + strconv.FormatUint(d.nextID, 10)
		d.pending[id] = joined
		if e := d.send(joinFrame{Action: "join", ID: id, Channels: list}); e != nil {
			return e
		}
	}
	return nil
}

func (d *driver) joinRetryAt() time.Time {
	var at time.Time
	for _, r := range d.joinRetries {
		if at.IsZero() || r.at.Before(at) {
			at = r.at
		}
	}
	return at
}

// retryJoins sends again the joins a rate limit held back whose wait is
// over, for the channels still wanted and not in another pending join.
func (d *driver) retryJoins(now time.Time) *ended {
	var due []string
	later := d.joinRetries[:0]
	for _, r := range d.joinRetries {
		if now.Before(r.at) {
			later = append(later, r)
		} else {
			due = append(due, r.names...)
		}
	}
	d.joinRetries = later
	var names []string
	for _, n := range due {
		if _, ok := d.channels[n]; ok && !d.inPendingJoin(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return d.sendJoins(names)
}

func (d *driver) inPendingJoin(name string) bool {
	for _, names := range d.pending {
		if slices.Contains(names, name) {
			return true
		}
	}
	return false
}

// rejoinLagging joins again, from their last delivered seq, the channels
// whose sequencer knows of seqs that did not arrive: the log has them. A
// live hole (events held after a missing seq) first waits Options.HoleGrace
// for the missing frames: frames that fill it meanwhile cancel the re-join.
func (d *driver) rejoinLagging() *ended {
	now := time.Now()
	var lagging []string
	for _, n := range d.names {
		ch := d.channels[n]
		if !ch.seq.wantsRejoin() {
			ch.holeSince = time.Time{}
			continue
		}
		if ch.seq.held() > 0 && d.opts.HoleGrace > 0 {
			if ch.holeSince.IsZero() {
				ch.holeSince = now
			}
			if now.Before(ch.holeSince.Add(d.opts.HoleGrace)) {
				continue
			}
		}
		ch.holeSince = time.Time{}
		lagging = append(lagging, n)
	}
	if len(lagging) == 0 {
		return nil
	}
	return d.sendJoins(lagging)
}

// holeAt is when the first live hole's grace ends (zero: none waits).
func (d *driver) holeAt() time.Time {
	var at time.Time
	for _, ch := range d.channels {
		if ch.holeSince.IsZero() {
			continue
		}
		if t := ch.holeSince.Add(d.opts.HoleGrace); at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at
}

// apply carries out a command; connected when d.write is set, else it takes
// effect with the next connection's re-join.
func (d *driver) apply(cmd command) *ended {
	switch cmd.kind {
	case cmdJoin:
		added := d.addChannels(cmd.channels)
		if d.write != nil && len(added) > 0 {
			return d.sendJoins(added)
		}
	case cmdPause:
		for _, n := range cmd.names {
			if ch, ok := d.channels[n]; ok {
				d.paused[n] = ch.since()
			}
		}
		return d.leave(cmd.names)
	case cmdResume:
		var specs []ChannelSpec
		for _, n := range cmd.names {
			if since, ok := d.paused[n]; ok {
				delete(d.paused, n)
				specs = append(specs, ChannelSpec{Name: n, Since: since})
			}
		}
		return d.apply(command{kind: cmdJoin, channels: specs})
	case cmdLeave:
		return d.leave(cmd.names)
	case cmdResync:
		return d.resync(cmd.names)
	}
	return nil
}

// resync drops the position of names (none: every channel, then the paused
// ones), reports it and joins them again from the head.
func (d *driver) resync(names []string) *ended {
	if len(names) == 0 {
		names = slices.Clone(d.names)
		paused := make([]string, 0, len(d.paused))
		for n := range d.paused {
			paused = append(paused, n)
		}
		slices.Sort(paused)
		names = append(names, paused...)
	}
	var rejoin []string
	for _, n := range names {
		ev := &Resynced{Channel: n}
		if ch, ok := d.channels[n]; ok {
			if p, had := ch.seq.position(); had {
				ev.Previous = &p
			}
			ch.seq = newSequencer(n, d.opts.MaxHeldEvents, d.opts.MaxHeldEventBytes)
			ch.initial = SinceHead()
			ch.acked = 0
			rejoin = append(rejoin, n)
		} else if since, ok := d.paused[n]; ok {
			if p, had := since.Position(); had {
				ev.Previous = &p
			}
			d.paused[n] = SinceHead() // resumed from the head
		} else {
			continue
		}
		if d.emit(ev) != nil {
			return stopped
		}
	}
	if d.write != nil && len(rejoin) > 0 {
		return d.sendJoins(rejoin)
	}
	return nil
}

func (d *driver) acksOn() bool { return d.opts.AckDebounce > 0 }

func (d *driver) leave(names []string) *ended {
	var left []string
	var acks []ackFrame
	for _, n := range names {
		ch, ok := d.channels[n]
		if !ok {
			continue
		}
		// What was delivered on it is acknowledged before leaving (unless a
		// rate limit paused the acks).
		if d.acksOn() && !time.Now().Before(d.acksPaused) {
			if seq, ok := ch.dueAck(); ok {
				acks = append(acks, ackFrame{Action: "ack", Channel: n, Seq: seq})
			}
		}
		d.dropChannel(n)
		left = append(left, n)
	}
	if len(left) == 0 {
		return nil
	}
	if d.write == nil {
		d.deferredLeft = append(d.deferredLeft, left...)
		return nil
	}
	for _, a := range acks {
		if e := d.send(a); e != nil {
			return e
		}
	}
	d.nextID++
	return d.send(leaveFrame{Action: "leave", ID: "l" + strconv.FormatUint(d.nextID, 10), Channels: left})
}

// flushAcks acknowledges each channel's last delivered seq, if it moved.
func (d *driver) flushAcks() *ended {
	if !d.acksOn() || d.write == nil || time.Now().Before(d.acksPaused) {
		return nil
	}
	for _, n := range d.names {
		if seq, ok := d.channels[n].dueAck(); ok {
			if e := d.send(ackFrame{Action: "ack", Channel: n, Seq: seq}); e != nil {
				return e
			}
		}
	}
	return nil
}

// onMessage handles one message; a frame the client cannot use is
// reported and skipped.
func (d *driver) onMessage(in inbound) *ended {
	if in.typ != websocket.MessageText {
		return d.report(&Error{Code: CodeDecode, Message: "a binary frame from the gateway"})
	}
	f, eb, events, err := parseServerFrame(in.data)
	if err != nil {
		return d.report(&Error{Code: CodeDecode, Message: "unreadable frame from the gateway: " + truncate(string(in.data), 200), Err: err})
	}
	switch f.Type {
	case "error":
		return d.onError(eb)
	case "event", "batch":
		for i := range events {
			e := &events[i]
			ch, ok := d.channels[e.Channel]
			if !ok {
				continue
			}
			// Compressed texts are put back before anything else sees
			// the event.
			e.Data = decodeGzipData(e.Data, maxStreamTextBytes, d.maxPartBytes())
			if end := d.deliver(ch.seq.event(e)); end != nil {
				return end
			}
		}
	case "gap":
		if ch, ok := d.channels[f.Channel]; ok {
			return d.deliver(ch.seq.gap(f.From, f.To))
		}
	case "joined":
		var entries []JoinedChannel
		if len(f.Channels) > 0 {
			if err := json.Unmarshal(f.Channels, &entries); err != nil {
				return d.report(&Error{Code: CodeDecode, Message: "unreadable joined frame", Err: err})
			}
		}
		if f.ID != nil {
			delete(d.pending, *f.ID)
		}
		var confirmed []JoinedChannel
		var ds []delivery
		for _, jc := range entries {
			if ch, ok := d.channels[jc.Name]; ok {
				ds = append(ds, ch.seq.joined(jc.Epoch, jc.Head, jc.Replayed, jc.Until)...)
				confirmed = append(confirmed, jc)
			}
		}
		if len(confirmed) > 0 {
			if d.emit(&Joined{Channels: confirmed, Presence: f.Presence, Health: f.Health}) != nil {
				return d.closing()
			}
		}
		return d.deliver(ds)
	case "left":
		var names []string
		_ = json.Unmarshal(f.Channels, &names)
		if d.emit(&Left{Channels: names}) != nil {
			return d.closing()
		}
	case "refreshed":
		if f.ID != nil && *f.ID == d.refreshID && d.refreshID != "" {
			d.refreshID = ""
			ev := &Refreshed{}
			if f.Exp != nil {
				ev.Exp = unixTime(*f.Exp)
				// A token that expires no later than the one it replaces
				// gives nothing to refresh again: no refresh loop towards
				// exp (the connection ends on token_expired and reconnects).
				if d.tokenExp.IsZero() || ev.Exp.After(d.tokenExp) {
					d.tokenExp = ev.Exp
					d.planRefresh(ev.Exp)
					if floor := time.Now().Add(minRefreshGap); d.refreshAt.Before(floor) {
						d.refreshAt = floor
					}
				}
			}
			if d.emit(ev) != nil {
				return d.closing()
			}
		}
	}
	return nil
}

// maxPartBytes bounds the part a compressed chunk decodes to: the bound of
// a message's text in the reassembler, twice Options.MaxMessageBytes.
func (d *driver) maxPartBytes() int64 {
	return int64(min(d.messages.maxMessage, math.MaxInt64/2)) * 2
}

// report hands a non-fatal error to the application.
func (d *driver) report(err *Error) *ended {
	if d.emit(&ErrorEvent{Err: err}) != nil {
		return d.closing()
	}
	return nil
}

func (d *driver) onError(b *errorBody) *ended {
	e := b.toError()
	var request []string
	if e.ID != "" {
		request = d.pending[e.ID]
		delete(d.pending, e.ID)
		if e.ID == d.refreshID {
			// A refused refresh leaves the connection on its old token: it
			// ends, and a new connection (on the backoff) with a token from
			// the provider resumes.
			d.refreshID = ""
			if d.emit(&ErrorEvent{Err: e}) != nil {
				return d.closing()
			}
			return lost("the token refresh was refused (%s): %s; reconnecting with a fresh token", e.Code, e.Message)
		}
	}
	switch e.Code {
	case CodeVersionUnsupported:
		return &ended{kind: endFatal, err: e}
	case CodeTokenExpired, CodeTokenRevoked:
		// A new connection with a fresh token resumes from the last seq.
		return &ended{kind: endRollover, reason: fmt.Sprintf("the token is no longer valid (%s): %s; reconnecting at once with a fresh token", e.Code, e.Message)}
	case CodeNotConnected:
		return lost("the gateway no longer knows this connection: %s", e.Message)
	case CodeInternal:
		if request != nil {
			return lost("a join failed: %s", e.Message)
		}
	case CodeRateLimited:
		wait := e.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		until := time.Now().Add(wait)
		if request != nil {
			d.joinRetries = append(d.joinRetries, joinRetry{at: until, names: request})
		} else {
			d.acksPaused = until
		}
		return d.report(e)
	}
	// Refused for good (forbidden, too_many_channels, invalid_channel): the
	// channels are dropped, not joined again.
	for _, n := range request {
		d.dropChannel(n)
	}
	if request == nil && (e.Code == CodeForbidden || e.Code == CodeTooManyChannels) {
		// A refresh whose token no longer grants these channels: left.
		for _, n := range e.Channels {
			d.dropChannel(n)
		}
	}
	return d.report(e)
}

// deliver hands deliveries over (chunk events through the reassembler).
func (d *driver) deliver(ds []delivery) *ended {
	if len(ds) == 0 {
		return nil
	}
	for _, x := range ds {
		ev := x
		if e, ok := x.(*Event); ok {
			ev = d.messages.accept(e)
			for _, lost := range d.messages.takeEvicted() {
				if d.emit(lost) != nil {
					return d.closing()
				}
			}
			if ev == nil {
				continue
			}
		}
		if d.emit(ev) != nil {
			return d.closing()
		}
	}
	if d.acksOn() && d.ackAt.IsZero() {
		d.ackAt = time.Now().Add(d.opts.AckDebounce)
	}
	return nil
}
