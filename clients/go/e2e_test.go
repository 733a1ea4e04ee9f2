package agentwire

// End to end on the local stack: the dev gateway (target/debug/agentwire-local)
// on a free port against the LocalStack-compatible endpoint on
// 127.0.0.1:4566 (localstack/up; scripts/test brings it up), tokens and
// queue publishes from the CLI (target/debug/agentwire).
//
// Run only with AGENTWIRE_E2E=1 (scripts/test sets it in the full run), so
// the unit runs stay offline; with it set, a missing endpoint or binary is
// a failure, not a skip.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type stack struct {
	t        *testing.T
	bin      string
	endpoint string
	secret   string
	tenant   string
	queue    string // the events queue of the gateways and the CLI
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newStack(t *testing.T) *stack {
	if os.Getenv("AGENTWIRE_E2E") != "1" {
		t.Skip("end-to-end: set AGENTWIRE_E2E=1 with the local stack up (scripts/test does)")
	}
	bin, err := filepath.Abs(filepath.Join("..", "..", "target", "debug"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"agentwire-local", "agentwire"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s is missing: cargo build -p agentwire-local -p agentwire-cli", filepath.Join(bin, b))
		}
	}
	endpoint := os.Getenv("AGENTWIRE_TEST_ENDPOINT")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:4566"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the local AWS endpoint %s does not answer (localstack/up): %v", endpoint, err)
	}
	resp.Body.Close()
	s := &stack{t: t, bin: bin, endpoint: endpoint, secret: "go-e2e-" + randomHex(24), tenant: fmt.Sprintf("go-e2e-%d-%s", time.Now().Unix(), randomHex(3))}
	// Its own events queue, as the Python end-to-end tests have: a gateway
	// of another test run on the shared queue would take (and commit) this
	// test's events, and its subscribers would not see them live. A 2 s
	// visibility timeout: a stopped gateway's last long poll may still take
	// messages published right after it stopped, which then stay invisible
	// that long.
	s.queue = s.ownQueue(2)
	return s
}

// ownQueue creates a FIFO events queue for this test (like localstack/up's,
// with a visibility timeout of visibility seconds) and deletes it when the
// test ends.
func (s *stack) ownQueue(visibility int) string {
	s.t.Helper()
	name := "agentwire-go-" + randomHex(6) + ".fifo"
	sqs := func(form url.Values) {
		s.t.Helper()
		form.Set("Version", "2012-11-05")
		req, _ := http.NewRequest(http.MethodPost, s.endpoint+"/", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			s.t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			s.t.Fatalf("SQS %s: %d %s", form.Get("Action"), resp.StatusCode, body)
		}
	}
	form := url.Values{"Action": {"CreateQueue"}, "QueueName": {name}}
	for i, kv := range [][2]string{{"FifoQueue", "true"}, {"VisibilityTimeout", strconv.Itoa(visibility)}, {"DeduplicationScope", "messageGroup"}, {"FifoThroughputLimit", "perMessageGroupId"}} {
		form.Set(fmt.Sprintf("Attribute.%d.Name", i+1), kv[0])
		form.Set(fmt.Sprintf("Attribute.%d.Value", i+1), kv[1])
	}
	sqs(form)
	s.t.Cleanup(func() {
		sqs(url.Values{"Action": {"DeleteQueue"}, "QueueUrl": {s.endpoint + "/123456789012/" + name}})
	})
	return name
}

func (s *stack) awsEnv() []string {
	env := os.Environ()
	def := func(k, v string) {
		if os.Getenv(k) == "" {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, "AWS_ENDPOINT_URL="+s.endpoint, "AGENTWIRE_EVENTS_QUEUE="+s.queue)
	def("AWS_REGION", "us-east-1")
	def("AWS_ACCESS_KEY_ID", "test")
	def("AWS_SECRET_ACCESS_KEY", "test")
	return env
}

func (s *stack) cli(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "agentwire"), args...)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("agentwire %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// token mints a token of the stack's tenant.
func (s *stack) token(ctx context.Context, sub, channels, publish string) (string, error) {
	args := []string{"token", "--tenant", s.tenant, "--sub", sub}
	if channels != "" {
		args = append(args, "--channels", channels)
	}
	if publish != "" {
		args = append(args, "--publish", publish)
	}
	return s.cli(ctx, append(os.Environ(), "AGENTWIRE_JWT_SECRET="+s.secret), args...)
}

// publishToQueue publishes straight to the events queue, as when the
// gateway is down.
func (s *stack) publishToQueue(channel string, n int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.cli(ctx, s.awsEnv(), "publish", "--endpoint", s.endpoint, "--tenant", s.tenant, "--channel", channel,
		"--kind", "status", "--data", fmt.Sprintf(`{"n":%d}`, n), "--id", "sqs-"+strconv.Itoa(n)); err != nil {
		s.t.Fatal(err)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gateway is the dev gateway, started and stopped on one port.
type gateway struct {
	s    *stack
	port int
	cmd  *exec.Cmd
	log  *strings.Builder
	done chan struct{}
	env  []string // more environment for agentwire-local (KEY=value)
}

func (g *gateway) ws() string   { return fmt.Sprintf("ws://127.0.0.1:%d", g.port) }
func (g *gateway) http() string { return fmt.Sprintf("http://127.0.0.1:%d", g.port) }

type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (g *gateway) start() {
	t := g.s.t
	t.Helper()
	g.log = &strings.Builder{}
	out := &lockedBuilder{b: g.log}
	cmd := exec.Command(filepath.Join(g.s.bin, "agentwire-local"), "--port", strconv.Itoa(g.port))
	cmd.Env = append(append(g.s.awsEnv(), "AGENTWIRE_JWT_SECRET="+g.s.secret, "RUST_LOG="+envOr("RUST_LOG", "warn")), g.env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.cmd, g.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(g.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", g.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-g.done:
			t.Fatalf("agentwire-local exited before listening:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("agentwire-local did not listen within 30 s:\n%s", out.String())
		}
	}
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop stops it as Ctrl-C does (it finishes the queue receive under way).
func (g *gateway) stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
}

func envOr(k, v string) string {
	if x := os.Getenv(k); x != "" {
		return x
	}
	return v
}

// collector gathers a client's events for a test to wait on.
type collector struct {
	mu      sync.Mutex
	events  []ClientEvent
	changed chan struct{}
	done    chan struct{}
}

func collect(c *Client) *collector {
	col := &collector{changed: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for ev := range c.Events() {
			col.mu.Lock()
			col.events = append(col.events, ev)
			col.mu.Unlock()
			select {
			case col.changed <- struct{}{}:
			default:
			}
		}
	}()
	return col
}

// closeAndDrain closes c (within 10 s) and waits until col has taken its
// last event.
func closeAndDrain(c *Client, col *collector) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Close(ctx)
	<-col.done
	return err
}

func (col *collector) snapshot() []ClientEvent {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]ClientEvent(nil), col.events...)
}

func (col *collector) until(t *testing.T, timeout time.Duration, what string, cond func([]ClientEvent) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond(col.snapshot()) {
		select {
		case <-col.changed:
		case <-deadline.C:
			t.Fatalf("waited %v for %s; events: %s", timeout, what, describe(col.snapshot()))
		}
	}
}

func describe(evs []ClientEvent) string {
	var parts []string
	for _, ev := range evs {
		switch e := ev.(type) {
		case *Event:
			parts = append(parts, fmt.Sprintf("event %d", e.Seq))
		case *Disconnected:
			parts = append(parts, "disconnected: "+e.Reason)
		case *ErrorEvent:
			parts = append(parts, "error: "+e.Err.Error())
		default:
			parts = append(parts, fmt.Sprintf("%T", ev))
		}
	}
	return strings.Join(parts, "; ")
}

func count[T ClientEvent](evs []ClientEvent) int {
	n := 0
	for _, ev := range evs {
		if _, ok := ev.(T); ok {
			n++
		}
	}
	return n
}

func TestE2ETailAcrossAGatewayRestart(t *testing.T) {
	s := newStack(t)
	gw := &gateway{s: s, port: freePort(t)}
	gw.start()
	defer gw.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	channel := "agent-restart-" + randomHex(3)
	agentToken, err := s.token(ctx, "agent", "", "agent-*")
	if err != nil {
		t.Fatal(err)
	}
	client, err := Connect(ctx, gw.ws(), Options{
		TokenProvider:     func(ctx context.Context) (string, error) { return s.token(ctx, "reader", "agent-*", "") },
		Channels:          []ChannelSpec{{Name: channel, Since: SinceHead()}},
		MinReconnectDelay: 50 * time.Millisecond,
		MaxReconnectDelay: 400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(client)
	defer func() {
		if err := closeAndDrain(client, col); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	col.until(t, 20*time.Second, "the first joined", func(evs []ClientEvent) bool { return count[*Joined](evs) >= 1 })

	pub := &Publisher{URL: gw.http(), Token: agentToken, Retries: 3}
	var published string // the epoch the publish answers name
	for n := 1; n <= 3; n++ {
		r, err := pub.Publish(ctx, channel, BatchEvent{Kind: "status", Data: map[string]int{"n": n}, ID: "http-" + strconv.Itoa(n)})
		if err != nil {
			t.Fatal(err)
		}
		// The key behind the publisher's tag; committed now (201) with
		// its seq.
		if r.Channel != channel || !strings.HasSuffix(r.ID, "~http-"+strconv.Itoa(n)) {
			t.Fatalf("publish answer %+v", r)
		}
		if r.Status != http.StatusCreated || r.Queued || r.Seq != uint64(n) || r.Epoch == "" || (published != "" && r.Epoch != published) {
			t.Fatalf("publish %d: committed with seq %d expected: %+v", n, n, r)
		}
		published = r.Epoch
	}
	// The same key again: a repeat (200) with the seq it has, no new event.
	if r, err := pub.Publish(ctx, channel, BatchEvent{Kind: "status", Data: map[string]int{"n": 1}, ID: "http-1"}); err != nil {
		t.Fatal(err)
	} else if r.Status != http.StatusOK || r.Queued || r.Seq != 1 || r.Epoch != published || !strings.HasSuffix(r.ID, "~http-1") {
		t.Fatalf("a repeat of http-1: %+v", r)
	}
	// A batch on another channel: committed in order, each with its seq;
	// sent again, a repeat with the same seqs.
	batch := []BatchEvent{{Kind: "k", Data: 1, ID: "b-1"}, {Kind: "k", Data: 2, ID: "b-2"}, {Kind: "k", Data: 3, ID: "b-3"}}
	for _, status := range []int{http.StatusCreated, http.StatusOK} {
		b, err := pub.PublishBatch(ctx, channel+"-batch", batch)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status != status || b.Queued || len(b.IDs) != 3 || len(b.Events) != 3 {
			t.Fatalf("batch, want %d: %+v", status, b)
		}
		for i, e := range b.Events {
			if e.ID != b.IDs[i] || e.Seq != uint64(i+1) || e.Epoch == "" || e.Epoch != b.Events[0].Epoch {
				t.Fatalf("batch, want %d: event %d %+v of %+v", status, i, e, b)
			}
		}
	}
	col.until(t, 30*time.Second, "seqs 1..=3", func(evs []ClientEvent) bool { return count[*Event](evs) >= 3 })

	gw.stop()
	col.until(t, 30*time.Second, "the disconnect", func(evs []ClientEvent) bool { return count[*Disconnected](evs) >= 1 })
	for n := 4; n <= 6; n++ {
		s.publishToQueue(channel, n)
	}
	connectedBefore := count[*Connected](col.snapshot())
	gw.start()
	col.until(t, 60*time.Second, "a reconnect", func(evs []ClientEvent) bool { return count[*Connected](evs) > connectedBefore })
	// An HTTP publish is committed at once, not behind what waits on the
	// queue: publish 7 and 8 once the dispatcher has committed 4..=6.
	col.until(t, 60*time.Second, "seqs 4..=6 from the queue", func(evs []ClientEvent) bool { return count[*Event](evs) >= 6 })
	for n := 7; n <= 8; n++ {
		r, err := pub.Publish(ctx, channel, BatchEvent{Kind: "status", Data: map[string]int{"n": n}, ID: "http-" + strconv.Itoa(n)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusCreated || r.Seq != uint64(n) || r.Epoch != published {
			t.Fatalf("publish %d after the restart: %+v", n, r)
		}
	}
	col.until(t, 60*time.Second, "seqs 1..=8", func(evs []ClientEvent) bool { return count[*Event](evs) >= 8 })

	var seqs, ns []int
	var epoch string
	for _, ev := range col.snapshot() {
		switch e := ev.(type) {
		case *Event:
			var d struct{ N int }
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			seqs, ns = append(seqs, int(e.Seq)), append(ns, d.N)
			if epoch == "" {
				epoch = e.Epoch
			} else if e.Epoch != epoch {
				t.Fatalf("epoch %s then %s", epoch, e.Epoch)
			}
		case *Gap:
			t.Fatalf("a gap: %+v", e)
		case *ErrorEvent:
			t.Fatalf("an error on the way: %v", e.Err)
		}
	}
	want := []int{1, 2, 3, 4, 5, 6, 7, 8}
	if fmt.Sprint(seqs) != fmt.Sprint(want) || fmt.Sprint(ns) != fmt.Sprint(want) {
		t.Fatalf("every seq once, in publish order: seqs %v, data %v\n%s", seqs, ns, gw.log.String())
	}
	if epoch != published {
		t.Fatalf("the events' epoch %q, the publish answers' %q", epoch, published)
	}
	// The HTTP history agrees.
	reader, err := s.token(ctx, "reader", "agent-*", "")
	if err != nil {
		t.Fatal(err)
	}
	page, err := (&Publisher{URL: gw.http(), Token: reader}).History(ctx, channel, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.Head != 8 || len(page.Events) != 8 || page.Epoch != epoch || page.NextAfter != nil {
		t.Fatalf("history: head %d, %d events, epoch %q", page.Head, len(page.Events), page.Epoch)
	}
}

func TestE2EStreamsAndMessagesReachASubscriber(t *testing.T) {
	s := newStack(t)
	gw := &gateway{s: s, port: freePort(t)}
	gw.start()
	defer gw.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	channel := "agent-stream-" + randomHex(3)
	reader, err := s.token(ctx, "reader", "agent-*", "")
	if err != nil {
		t.Fatal(err)
	}
	agentToken, err := s.token(ctx, "agent", "", "agent-*")
	if err != nil {
		t.Fatal(err)
	}
	client, err := Connect(ctx, gw.ws(), Options{Token: reader, Channels: []ChannelSpec{{Name: channel, Since: SinceHead()}}})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(client)
	defer func() { _ = closeAndDrain(client, col) }()
	col.until(t, 20*time.Second, "joined", func(evs []ClientEvent) bool { return count[*Joined](evs) >= 1 })
	pub := &Publisher{URL: gw.http(), Token: agentToken, Retries: 3}
	st := pub.OpenStream(ctx, channel, "output", StreamOptions{})
	var want strings.Builder
	for i := range 200 {
		piece := fmt.Sprintf("token %d <&> ", i)
		want.WriteString(piece)
		if err := st.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("0123456789abcdef", 20_000)) // 320 KB: chunks
	if _, err := pub.PublishMessage(ctx, channel, "log", "big-1", BytesPayload(big)); err != nil {
		t.Fatal(err)
	}
	col.until(t, 60*time.Second, "the stream's end and the message", func(evs []ClientEvent) bool { return count[*Message](evs) >= 1 })
	var text strings.Builder
	ended := false
	for _, ev := range col.snapshot() {
		switch e := ev.(type) {
		case *Event:
			var d StreamEvent
			if err := json.Unmarshal(e.Data, &d); err != nil || d.Stream != st.ID() {
				t.Fatalf("event %s", e.Data)
			}
			text.WriteString(d.Text)
			ended = ended || d.End
		case *Message:
			if e.ID != "big-1" || e.Encoding != EncodingBase64 || string(e.Data) != string(big) {
				t.Fatalf("message %s: %d bytes", e.ID, len(e.Data))
			}
		case *MessageLost, *Gap:
			t.Fatalf("%#v", e)
		}
	}
	if !ended || text.String() != want.String() {
		t.Fatalf("stream text %d bytes, want %d; ended %v", text.Len(), want.Len(), ended)
	}
}

func TestE2ETailExampleKeepsGoingAcrossARestart(t *testing.T) {
	s := newStack(t)
	gw := &gateway{s: s, port: freePort(t)}
	gw.start()
	defer gw.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "tail")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/tail").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	channel := "agent-tail-" + randomHex(3)
	reader, err := s.token(ctx, "reader", "agent-*", "")
	if err != nil {
		t.Fatal(err)
	}
	agentToken, err := s.token(ctx, "agent", "", "agent-*")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "--url", gw.ws(), "--token", reader, "--channel", channel, "--from-head", "--max-backoff", "400ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuilder{b: &strings.Builder{}}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		dec := json.NewDecoder(stdout)
		for {
			var v json.RawMessage
			if dec.Decode(&v) != nil {
				return
			}
			lines <- string(v)
		}
	}()
	waitStderr := func(what string) {
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("waited for %q on stderr:\n%s", what, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var got []string
	readLines := func(n int) {
		timer := time.NewTimer(60 * time.Second)
		defer timer.Stop()
		for len(got) < n {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("tail's stdout ended; stderr:\n%s", stderr.String())
				}
				got = append(got, l)
			case <-timer.C:
				t.Fatalf("%d lines, want %d: %v\nstderr:\n%s", len(got), n, got, stderr.String())
			}
		}
	}
	waitStderr("agentwire: joined " + channel)
	pub := &Publisher{URL: gw.http(), Token: agentToken, Retries: 3}
	for n := 1; n <= 2; n++ {
		if _, err := pub.Publish(ctx, channel, BatchEvent{Kind: "status", Data: map[string]int{"n": n}, ID: "http-" + strconv.Itoa(n)}); err != nil {
			t.Fatal(err)
		}
	}
	readLines(2)
	gw.stop()
	waitStderr("agentwire: reconnecting")
	s.publishToQueue(channel, 3)
	gw.start()
	// An HTTP publish is committed at once, not behind the queue: publish
	// 4 once 3 is through.
	readLines(3)
	if r, err := pub.Publish(ctx, channel, BatchEvent{Kind: "status", Data: map[string]int{"n": 4}, ID: "http-4"}); err != nil {
		t.Fatal(err)
	} else if r.Status != http.StatusCreated || r.Seq != 4 {
		t.Fatalf("publish 4: %+v", r)
	}
	readLines(4)
	for i, l := range got {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"type": "event", "channel": channel, "seq": float64(i + 1), "kind": "status", "data": map[string]any{"n": float64(i + 1)}}
		if m := mismatch(want, v, "line"); m != "" || v["epoch"] == nil || v["id"] == nil || v["ts"] == nil {
			t.Fatalf("line %d %s: %s", i, l, m)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tail exited: %v\n%s", err, stderr.String())
	}
}
