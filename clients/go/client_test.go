package agentwire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const welcome = `{"type":"welcome","protocol":1,"connection_id":"c1","server":"scripted","heartbeat_s":300,"limits":{"max_frame_bytes":32768,"max_channels_per_join":50,"max_channel_name":128}}`

// session drives one client against the scripted server in a unit test.
type session struct {
	t      *testing.T
	srv    *scriptedServer
	client *Client
	conn   *scriptedConn
	// welcome answers hello (default: the constant welcome).
	welcome string
}

func startSession(t *testing.T, opts Options) *session {
	t.Helper()
	srv := newScriptedServer(t)
	if opts.Token == "" && opts.TokenProvider == nil {
		opts.Token = "t1"
	}
	if opts.MinReconnectDelay == 0 {
		opts.MinReconnectDelay, opts.MaxReconnectDelay = 5*time.Millisecond, 20*time.Millisecond
	}
	c, err := Connect(context.Background(), srv.wsURL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, srv: srv, client: c}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		_ = c.Close(ctx)
	})
	return s
}

// connect accepts the next upgrade, answers hello and the join (of one
// channel at e1/0, head head).
func (s *session) connect(head uint64) string {
	s.t.Helper()
	s.conn = s.srv.accept(s.t, s.srv.nextUpgrade(s.t, time.Now().Add(stepTimeout), "connect"))
	s.expect(`"hello"`)
	w := s.welcome
	if w == "" {
		w = welcome
	}
	s.conn.sendRaw(s.t, []byte(w))
	join := s.expect(`"join"`)
	var j struct {
		ID       string `json:"id"`
		Channels []struct {
			Name string `json:"name"`
		} `json:"channels"`
	}
	if err := json.Unmarshal(join, &j); err != nil {
		s.t.Fatal(err)
	}
	entries := []string{}
	for _, c := range j.Channels {
		entries = append(entries, fmt.Sprintf(`{"name":%q,"epoch":"e1","head":%d,"replayed":0,"recovered":true}`, c.Name, head))
	}
	s.conn.sendRaw(s.t, []byte(fmt.Sprintf(`{"type":"joined","id":%q,"channels":[%s]}`, j.ID, strings.Join(entries, ","))))
	s.waitFor(func(ev ClientEvent) bool { _, ok := ev.(*Joined); return ok }, "joined")
	return string(join)
}

// expect is the next frame the client sends, which must contain want.
func (s *session) expect(want string) []byte {
	s.t.Helper()
	f := s.conn.next(s.t, time.Now().Add(stepTimeout), "expect "+want, strings.Contains(want, "ping"))
	if !bytes.Contains(f.data, []byte(want)) {
		s.t.Fatalf("the client sent %s, want %s", f.data, want)
	}
	return f.data
}

func (s *session) event(seq uint64) string {
	return fmt.Sprintf(`{"type":"event","channel":"agent-1","epoch":"e1","seq":%d,"id":"i%d","kind":"status","data":{"n":%d},"ts":"t"}`, seq, seq, seq)
}

// waitFor reads events until match, failing after stepTimeout; it returns
// the events read before.
func (s *session) waitFor(match func(ClientEvent) bool, what string) []ClientEvent {
	s.t.Helper()
	var seen []ClientEvent
	timer := time.NewTimer(stepTimeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-s.client.Events():
			if !ok {
				s.t.Fatalf("the stream ended waiting for %s; saw %#v", what, seen)
			}
			if match(ev) {
				return seen
			}
			seen = append(seen, ev)
		case <-timer.C:
			s.t.Fatalf("waited for %s; saw %#v", what, seen)
		}
	}
}

func isEvent(seq uint64) func(ClientEvent) bool {
	return func(ev ClientEvent) bool { e, ok := ev.(*Event); return ok && e.Seq == seq }
}

func TestFramesTheClientCannotUseAreReportedAndItGoesOn(t *testing.T) {
	s := startSession(t, Options{Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}}, AckDebounce: -1})
	s.connect(0)
	bad := []string{
		`not json`, `[]`, `null`, `{}`, `{"type":"nope"}`, `{"type":"event"}`,
		`{"type":"event","channel":"agent-1","epoch":"e1","seq":-1}`,
		`{"type":"batch","events":[1,2]}`, `{"type":"joined","channels":"x"}`,
		`{"type":"gap","channel":"agent-1","from":5,"to":2}`, `{"type":"error"}`,
		`{"type":"event","channel":"agent-1","epoch":"e1","seq":1,"data":{"$chunk":{"message":"m","index":0,"count":0,"encoding":"utf8","bytes":1},"part":"x"}}`,
	}
	for _, b := range bad {
		s.conn.sendRaw(s.t, []byte(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := s.conn.c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	s.conn.sendRaw(s.t, []byte(s.event(2)))
	seen := s.waitFor(isEvent(2), "event 2 after the bad frames")
	decode, lost := 0, 0
	for _, ev := range seen {
		switch e := ev.(type) {
		case *ErrorEvent:
			if e.Fatal() {
				t.Fatalf("a fatal error: %v", e.Err)
			}
			if errors.Is(e.Err, ErrDecode) {
				decode++
			}
		case *MessageLost:
			lost++
		default:
			t.Fatalf("unexpected %#v", ev)
		}
	}
	// Every frame but the chunk of count 0 (seq 1: a message lost as invalid) is a decode error.
	if decode != len(bad) || lost != 1 {
		t.Fatalf("%d decode errors, %d lost messages; want %d and 1", decode, lost, len(bad))
	}
}

func TestAnUnansweredPingDeclaresTheConnectionDead(t *testing.T) {
	s := startSession(t, Options{Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}}, PingInterval: 30 * time.Millisecond, PingTimeout: 60 * time.Millisecond})
	s.connect(0)
	s.expect(`"ping"`)
	seen := s.waitFor(func(ev ClientEvent) bool {
		d, ok := ev.(*Disconnected)
		return ok && strings.Contains(d.Reason, "no answer to ping")
	}, "the dead connection")
	if len(seen) != 0 {
		t.Fatalf("before: %#v", seen)
	}
	s.connect(0) // and it reconnects
}

func TestAnAnsweredPingKeepsTheConnection(t *testing.T) {
	s := startSession(t, Options{Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}}, PingInterval: 20 * time.Millisecond, PingTimeout: 2 * time.Second})
	s.connect(0)
	for range 5 {
		s.expect(`"ping"`)
		s.conn.sendRaw(t, []byte(`{"type":"pong"}`))
	}
	s.conn.sendRaw(t, []byte(s.event(1)))
	for _, ev := range s.waitFor(isEvent(1), "event 1") {
		if _, ok := ev.(*Disconnected); ok {
			t.Fatal("disconnected although every ping was answered")
		}
	}
}

func TestRolloverAcknowledgesReconnectsAtOnceAndResumes(t *testing.T) {
	s := startSession(t, Options{
		Channels:          []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}},
		MaxConnectionAge:  time.Second,
		AckDebounce:       time.Hour,
		MinReconnectDelay: time.Hour, // a rollover waits for no backoff
	})
	s.connect(0)
	s.conn.sendRaw(t, []byte(s.event(1)))
	s.waitFor(isEvent(1), "event 1")
	s.expect(`{"action":"ack","channel":"agent-1","seq":1}`)
	s.waitFor(func(ev ClientEvent) bool {
		d, ok := ev.(*Disconnected)
		return ok && strings.Contains(d.Reason, "age limit")
	}, "the rollover")
	join := s.connect(1)
	if !strings.Contains(join, `"since":{"epoch":"e1","seq":1}`) {
		t.Fatalf("re-join %s", join)
	}
}

func TestCloseReturnsWhileTheApplicationReadsNothing(t *testing.T) {
	s := startSession(t, Options{Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}}, Buffer: 1, AckDebounce: time.Hour})
	s.conn = s.srv.accept(t, s.srv.nextUpgrade(t, time.Now().Add(stepTimeout), "connect"))
	s.expect(`"hello"`)
	s.conn.sendRaw(t, []byte(welcome))
	join := s.expect(`"join"`)
	var j struct{ ID string }
	_ = json.Unmarshal(join, &j)
	s.conn.sendRaw(t, []byte(`{"type":"joined","id":"`+j.ID+`","channels":[{"name":"agent-1","epoch":"e1","head":0,"replayed":0,"recovered":true}]}`))
	for q := uint64(1); q <= 20; q++ {
		s.conn.sendRaw(t, []byte(s.event(q)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := s.client.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	// The events in the buffer are still there; the stream then ends.
	n := 0
	for range s.client.Events() {
		n++
	}
	if n > 3 {
		t.Fatalf("%d events buffered past a buffer of 1", n)
	}
	if err := s.client.Join("agent-2", SinceHead()); !errors.Is(err, ErrClosed) {
		t.Fatalf("join after close: %v", err)
	}
	if s.client.Err() != nil {
		t.Fatalf("Err after Close: %v", s.client.Err())
	}
}

func TestConnectRefusesWhatCannotWork(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		url  string
		opts Options
	}{
		{"", Options{Token: "t"}},
		{"ftp://x", Options{Token: "t"}},
		{"ws://127.0.0.1:1", Options{}},
		{"ws://127.0.0.1:1", Options{Token: "t", Channels: []ChannelSpec{{Name: "bad name"}}}},
		{"ws://127.0.0.1:1", Options{Token: "t", Channels: []ChannelSpec{{Name: strings.Repeat("x", 129)}}}},
	} {
		if _, err := Connect(ctx, c.url, c.opts); err == nil {
			t.Errorf("%q %+v: no error", c.url, c.opts)
		} else if CodeOf(err) != CodeConfig && CodeOf(err) != CodeInvalidChannel {
			t.Errorf("%q: %v", c.url, err)
		}
	}
}

func TestAttemptsRunOutAsExhausted(t *testing.T) {
	c, err := Connect(context.Background(), "ws://127.0.0.1:1", Options{Token: "t", MinReconnectDelay: time.Millisecond, MaxReconnectDelay: 2 * time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	var last ClientEvent
	reconnects := 0
	timer := time.NewTimer(stepTimeout)
	defer timer.Stop()
	for done := false; !done; {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				done = true
				break
			}
			if _, r := ev.(*Reconnecting); r {
				reconnects++
			}
			last = ev
		case <-timer.C:
			t.Fatal("the client did not give up")
		}
	}
	e, ok := last.(*ErrorEvent)
	if !ok || !e.Fatal() || !errors.Is(e.Err, ErrExhausted) || !errors.Is(c.Err(), ErrExhausted) || reconnects != 2 {
		t.Fatalf("last %#v, %d reconnects, Err %v", last, reconnects, c.Err())
	}
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, b.String())
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestNoGoroutineOutlivesTheClient(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srv := newScriptedServer(t)
		defer srv.close()
		opts := Options{
			TokenProvider:     func(context.Context) (string, error) { return "t", nil },
			Channels:          []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}},
			MinReconnectDelay: time.Millisecond, MaxReconnectDelay: 2 * time.Millisecond,
		}
		for range 3 {
			c, err := Connect(context.Background(), srv.wsURL(), opts)
			if err != nil {
				t.Fatal(err)
			}
			// The token is due for a refresh at once: the provider is asked
			// in the background while the connection drops.
			s := &session{t: t, srv: srv, client: c, welcome: `{"type":"welcome","protocol":1,"connection_id":"c1","features":["refresh"],"token_exp":` + fmt.Sprint(time.Now().Unix()-1) + `}`}
			s.connect(0)
			s.expect(`"refresh"`)
			s.conn.drop()
			s.connect(0)
			ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			for range c.Events() {
			}
		}
	}()
	waitGoroutines(t, before)
}

// FuzzFrames feeds arbitrary frames (one per line) through the driver's
// frame handling: it never panics, never stops on a frame it cannot use,
// delivers each channel's seqs in increasing order within an epoch, and
// stays within its bounds.
func FuzzFrames(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "conformance", "scenarios", "*.json"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var s scenario
		if err := json.Unmarshal(b, &s); err != nil {
			f.Fatal(err)
		}
		var lines []string
		for _, step := range s.Script {
			if raw, ok := step["send"]; ok {
				var v any
				_ = json.Unmarshal(raw, &v)
				frame, _ := json.Marshal(substitute(v, "j1", time.Unix(1_800_000_000, 0)))
				lines = append(lines, string(frame))
			}
		}
		f.Add(strings.Join(lines, "\n"))
	}
	f.Add("{\"type\":\"batch\",\"events\":[{\"channel\":\"agent-1\",\"epoch\":\"e1\",\"seq\":18446744073709551615}]}\n{\"type\":\"gap\",\"channel\":\"agent-1\",\"from\":1,\"to\":18446744073709551615}")
	// Adversarial chunks: many messages left in progress, a huge id, JSON
	// nested deeper than any decoder goes, wrong types.
	chunkEv := func(seq int, id string, index, count int, enc, part string) string {
		return fmt.Sprintf(`{"type":"event","channel":"agent-1","epoch":"e1","seq":%d,"id":"x","kind":"k","ts":"t","data":{"$chunk":{"message":%q,"index":%d,"count":%d,"encoding":%q,"bytes":%d},"part":%q}}`,
			seq, id, index, count, enc, len(part), part)
	}
	joined := `{"type":"joined","id":"j1","channels":[{"name":"agent-1","epoch":"e1","head":0,"replayed":0,"recovered":true}]}`
	var many []string
	many = append(many, joined)
	for i := 1; i <= 100; i++ {
		many = append(many, chunkEv(i, fmt.Sprintf("m%d", i), 0, 2, "utf8", "ab"))
	}
	many = append(many, chunkEv(101, strings.Repeat("é", 5000), 0, 2, "utf8", "ab"))
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	many = append(many, chunkEv(102, "deep", 0, 1, "json", deep))
	many = append(many, `{"type":"event","channel":"agent-1","epoch":"e1","seq":103,"id":"x","kind":"k","ts":"t","data":`+deep+`}`)
	many = append(many, deep, `{"type":"event","channel":["agent-1"],"seq":"104"}`, `{"type":"batch","events":[1,"x",null,{"seq":-1}]}`)
	f.Add(strings.Join(many, "\n"))
	f.Fuzz(func(t *testing.T, input string) {
		// The driver emits on this goroutine. A collector takes the events
		// as they come (no buffer for a frame to outgrow: a batch of any
		// size delivers all its events), and a barrier after each frame
		// hands over what that frame emitted: no timers, no sleeps.
		events := make(chan ClientEvent)
		emitted := make(chan []ClientEvent)
		go func() {
			defer close(emitted)
			var got []ClientEvent
			for ev := range events {
				if _, ok := ev.(fuzzBarrier); ok {
					emitted <- got
					got = nil
					continue
				}
				got = append(got, ev)
			}
		}()
		defer func() {
			close(events)
			for range emitted {
			}
		}()
		c := &Client{events: events, done: make(chan struct{}), signal: make(chan struct{}, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c.stop = cancel
		// HoleGrace is longer than any run: a live hole waits for its
		// frames whatever the machine's speed (the grace ending is a timer
		// in the connection loop, not a frame).
		opts := Options{Token: "t", MaxHeldEvents: 64, MaxHeldEventBytes: 1 << 16, MaxMessageBytes: 1 << 12, MaxHeldMessageBytes: 1 << 13, MaxPartialMessages: 8,
			HoleGrace: time.Hour,
			Channels:  []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}, {Name: "agent-2"}}}.withDefaults()
		d := newDriver(c, "ws://x", opts, ctx)
		d.connCtx = ctx
		sent := 0
		d.write = func(context.Context, []byte) error { sent++; return nil }
		type pos struct {
			epoch string
			seq   uint64
		}
		last := map[string]pos{}
		for _, line := range strings.Split(input, "\n") {
			e := d.onMessage(inbound{typ: websocket.MessageText, data: []byte(line)})
			if e == nil {
				e = d.rejoinLagging()
			}
			events <- fuzzBarrier{}
			for _, ev := range <-emitted {
				switch x := ev.(type) {
				case *Event:
					p := last[x.Channel]
					if p.epoch == x.Epoch && x.Seq <= p.seq {
						t.Fatalf("seq %d after %d in %s", x.Seq, p.seq, x.Channel)
					}
					last[x.Channel] = pos{x.Epoch, x.Seq}
				case *ErrorEvent:
					if x.Fatal() {
						t.Fatalf("a fatal error event: %v", x.Err)
					}
				case *MessageLost:
					if len(x.ID) > MaxReceivedMessageID {
						t.Fatalf("a lost message reported under an id of %d bytes", len(x.ID))
					}
				}
			}
			for name, ch := range d.channels {
				if ch.seq.held() > 64 {
					t.Fatalf("%s holds %d events", name, ch.seq.held())
				}
			}
			if d.messages.held > 1<<13 {
				t.Fatalf("partial messages hold %d bytes", d.messages.held)
			}
			if len(d.messages.partial) > 8 {
				t.Fatalf("%d messages in progress", len(d.messages.partial))
			}
			for k := range d.messages.partial {
				if len(k.message) > MaxReceivedMessageID {
					t.Fatalf("a message id of %d bytes held", len(k.message))
				}
			}
			if e != nil {
				switch e.kind {
				case endFatal:
					if e.err == nil || e.err.Code != CodeVersionUnsupported {
						t.Fatalf("fatal on %q: %+v", line, e)
					}
					return
				case endRollover, endLost:
					return // a token or connection error: a reconnect
				default:
					t.Fatalf("ended %+v on %q", e, line)
				}
			}
		}
	})
}

// fuzzBarrier ends, on the events channel, what one frame emitted
// (FuzzFrames).
type fuzzBarrier struct{}

func (fuzzBarrier) clientEvent() {}

func TestATokenProviderFailureIsReportedAndRetried(t *testing.T) {
	cause := errors.New("the auth service is down")
	calls := 0
	s := startSession(t, Options{
		Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}},
		TokenProvider: func(context.Context) (string, error) {
			calls++ // the client's goroutine only
			if calls == 1 {
				return "", cause
			}
			return "t2", nil
		},
	})
	seen := s.waitFor(func(ev ClientEvent) bool { _, ok := ev.(*Reconnecting); return ok }, "the retry")
	if len(seen) != 1 {
		t.Fatalf("before the retry: %#v", seen)
	}
	e, ok := seen[0].(*ErrorEvent)
	if !ok || e.Fatal() || e.Err.Code != CodeTokenProvider || !errors.Is(e.Err, cause) {
		t.Fatalf("%#v", seen[0])
	}
	u := s.srv.nextUpgrade(t, time.Now().Add(stepTimeout), "the retry")
	if u.token() != "t2" {
		t.Fatalf("token %q", u.token())
	}
	u.refuse(503, []byte(`{"type":"error","code":"internal","message":"busy"}`))
	s.connect(0)
}

func TestARefreshWhoseProviderFailsReconnects(t *testing.T) {
	cause := errors.New("no fresh token")
	tokens := make(chan func() (string, error), 3)
	tokens <- func() (string, error) { return "t1", nil }
	tokens <- func() (string, error) { return "", cause }
	tokens <- func() (string, error) { return "t3", nil }
	s := startSession(t, Options{
		Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}},
		TokenProvider: func(context.Context) (string, error) {
			select {
			case next := <-tokens:
				return next()
			default:
				return "t4", nil
			}
		},
		RefreshLead: time.Hour, // capped at half the time left: refresh after ~1 s
	})
	s.welcome = `{"type":"welcome","protocol":1,"connection_id":"c1","features":["refresh"],"token_exp":` + fmt.Sprint(time.Now().Unix()+2) + `}`
	s.connect(0)
	seen := s.waitFor(func(ev ClientEvent) bool { _, ok := ev.(*Disconnected); return ok }, "the end of the connection")
	if len(seen) != 1 {
		t.Fatalf("before the disconnect: %#v", seen)
	}
	if e, ok := seen[0].(*ErrorEvent); !ok || e.Fatal() || !errors.Is(e.Err, cause) || e.Err.Code != CodeTokenProvider {
		t.Fatalf("%#v", seen[0])
	}
	s.welcome = ""
	u := s.srv.nextUpgrade(t, time.Now().Add(stepTimeout), "the reconnect")
	if u.token() != "t3" {
		t.Fatalf("token %q", u.token())
	}
	u.refuse(503, nil)
	s.connect(0)
}
