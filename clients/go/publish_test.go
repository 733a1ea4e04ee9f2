package agentwire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// A fake of the gateway's HTTP API that keeps a channel's log, so what
// the publisher sends is read back (and reassembled) as a subscriber would.
type fakeAPI struct {
	t       *testing.T
	mu      sync.Mutex
	log     map[string][]Event // channel -> events
	keys    map[string]bool    // channel/id -> seen
	fail    []int              // statuses to answer first, in order
	retryMs []int              // retry_after_ms of those answers (0: none)
	token   string
	reqs    int
	batches [][]BatchEvent
	// queue: publishes are answered 202 queued (committed all the same,
	// as the gateway's dispatcher would shortly).
	queue bool
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{t: t, log: map[string][]Event{}, keys: map[string]bool{}, token: "tok"}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// commit appends an event to the channel's log once per id; repeat: the
// id was committed before (seq is the one it has).
func (f *fakeAPI) commit(channel, id, kind string, data json.RawMessage) (_ string, seq uint64, repeat bool) {
	if id == "" {
		id = NewKey()
	}
	if f.keys[channel+"/"+id] {
		for _, e := range f.log[channel] {
			if e.ID == id {
				return id, e.Seq, true
			}
		}
	}
	f.keys[channel+"/"+id] = true
	seq = uint64(len(f.log[channel]) + 1)
	f.log[channel] = append(f.log[channel], Event{Channel: channel, Epoch: "e1", Seq: seq, ID: id, Kind: kind, Data: data, Ts: "t"})
	return id, seq, false
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs++
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeJSON(w, 401, map[string]any{"type": "error", "code": "unauthorized", "message": "bad token"})
		return
	}
	if len(f.fail) > 0 {
		status := f.fail[0]
		f.fail = f.fail[1:]
		body := map[string]any{"type": "error", "code": "internal", "message": "try again"}
		if status == 429 {
			body = map[string]any{"type": "error", "code": "rate_limited", "message": "slow down", "scope": "tenant"}
			if len(f.retryMs) > 0 {
				if ms := f.retryMs[0]; ms > 0 {
					body["retry_after_ms"] = ms
				}
				f.retryMs = f.retryMs[1:]
			}
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, status, body)
		return
	}
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/channels/")
	channel, rest, _ := strings.Cut(path, "/")
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == http.MethodPost && rest == "events":
		var ev struct {
			Kind string          `json:"kind"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &ev) != nil || ev.Kind == "" {
			writeJSON(w, 400, map[string]any{"type": "error", "code": "invalid_event", "message": "no"})
			return
		}
		if len(ev.Data) > MaxEventDataBytes {
			writeJSON(w, 413, map[string]any{"type": "error", "code": "message_too_large", "message": "too big"})
			return
		}
		id, seq, repeat := f.commit(channel, r.Header.Get("Idempotency-Key"), ev.Kind, ev.Data)
		switch {
		case f.queue:
			writeJSON(w, 202, map[string]any{"id": id, "channel": channel, "queued": true})
		case repeat:
			writeJSON(w, 200, map[string]any{"id": id, "channel": channel, "seq": seq, "epoch": "e1"})
		default:
			writeJSON(w, 201, map[string]any{"id": id, "channel": channel, "seq": seq, "epoch": "e1"})
		}
	case r.Method == http.MethodPost && rest == "events:batch":
		var b struct {
			Events []struct {
				Kind string          `json:"kind"`
				Data json.RawMessage `json:"data"`
				ID   string          `json:"id"`
			} `json:"events"`
		}
		if json.Unmarshal(body, &b) != nil || len(b.Events) < 1 || len(b.Events) > 10 {
			writeJSON(w, 400, map[string]any{"type": "error", "code": "invalid_request", "message": "batch"})
			return
		}
		var sent []BatchEvent
		var ids []string
		for _, e := range b.Events {
			if len(e.Data) > MaxEventDataBytes {
				writeJSON(w, 413, map[string]any{"type": "error", "code": "message_too_large", "message": "too big"})
				return
			}
			sent = append(sent, BatchEvent{Kind: e.Kind, Data: e.Data, ID: e.ID})
		}
		var committed []map[string]any
		repeats := 0
		for _, e := range b.Events {
			id, seq, repeat := f.commit(channel, e.ID, e.Kind, e.Data)
			ids = append(ids, id)
			committed = append(committed, map[string]any{"id": id, "seq": seq, "epoch": "e1"})
			if repeat {
				repeats++
			}
		}
		f.batches = append(f.batches, sent)
		switch {
		case f.queue:
			writeJSON(w, 202, map[string]any{"channel": channel, "ids": ids, "queued": true})
		case repeats == len(ids):
			writeJSON(w, 200, map[string]any{"channel": channel, "ids": ids, "events": committed})
		default:
			writeJSON(w, 201, map[string]any{"channel": channel, "ids": ids, "events": committed})
		}
	case r.Method == http.MethodGet && rest == "events":
		q := r.URL.Query()
		after := 0
		limit := 100
		_ = json.Unmarshal([]byte(q.Get("after")), &after)
		_ = json.Unmarshal([]byte(q.Get("limit")), &limit)
		log := f.log[channel]
		var page []map[string]any
		for _, e := range log {
			if int(e.Seq) > after && len(page) < limit {
				page = append(page, map[string]any{"seq": e.Seq, "id": e.ID, "kind": e.Kind, "data": e.Data, "ts": e.Ts})
			}
		}
		var next any
		if n := after + len(page); n < len(log) {
			next = n
		}
		epoch := ""
		if len(log) > 0 {
			epoch = "e1"
		}
		writeJSON(w, 200, map[string]any{"channel": channel, "epoch": epoch, "head": len(log), "oldest": nil, "events": page, "gap": nil, "next_after": next})
	case r.Method == http.MethodGet && rest == "presence":
		writeJSON(w, 200, map[string]any{"channel": channel, "count": 2, "principals": []string{"a", "b"}})
	case r.Method == http.MethodGet && rest == "":
		writeJSON(w, 200, map[string]any{"channel": channel, "epoch": "e1", "head": len(f.log[channel]), "oldest": 1, "retention_s": 259200, "webhook": nil})
	default:
		writeJSON(w, 404, map[string]any{"type": "error", "code": "not_found", "message": r.URL.Path})
	}
}

func TestPublishWithIdempotencyKeyCommitsOnce(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	for i, status := range []int{201, 200} { // committed, then a repeat
		r, err := p.Publish(ctx, "agent-1", BatchEvent{Kind: "status", Data: map[string]int{"n": 1}, ID: "run-7/status-1"})
		if err != nil {
			t.Fatal(err)
		}
		if r.ID != "run-7/status-1" || r.Channel != "agent-1" || r.Status != status || r.Seq != 1 || r.Epoch != "e1" || r.Queued {
			t.Fatalf("answer %d: %+v", i, r)
		}
	}
	if n := len(f.log["agent-1"]); n != 1 {
		t.Fatalf("%d events committed, want 1", n)
	}
	if string(f.log["agent-1"][0].Data) != `{"n":1}` {
		t.Fatalf("data %s", f.log["agent-1"][0].Data)
	}
	if _, err := p.Publish(ctx, "agent-1", BatchEvent{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no kind: %v", err)
	}
}

func TestPublishErrorsAreTyped(t *testing.T) {
	f, srv := newFakeAPI(t)
	ctx := context.Background()
	_, err := NewPublisher(srv.URL, "wrong").Publish(ctx, "agent-1", BatchEvent{Kind: "k"})
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnauthorized) || e.Status != 401 || e.Retryable {
		t.Fatalf("401: %#v", err)
	}
	f.fail, f.retryMs = []int{429}, []int{0}
	_, err = NewPublisher(srv.URL, "tok").Publish(ctx, "agent-1", BatchEvent{Kind: "k"})
	if !errors.As(err, &e) || !errors.Is(err, ErrRateLimited) || !e.Retryable || e.RetryAfter != time.Second || e.Scope != "tenant" {
		t.Fatalf("429 without retry_after_ms takes Retry-After: %#v", err)
	}
	_, err = NewPublisher(srv.URL, "tok").Publish(ctx, "agent-1", BatchEvent{Kind: "k", Data: strings.Repeat("x", MaxEventDataBytes)})
	if !errors.As(err, &e) || e.Code != CodeMessageTooLarge || e.Status != 413 {
		t.Fatalf("413: %#v", err)
	}
}

func TestPublishRetriesWithTheSameKey(t *testing.T) {
	f, srv := newFakeAPI(t)
	f.fail, f.retryMs = []int{503, 429}, []int{30}
	p := &Publisher{URL: srv.URL, Token: "tok", Retries: 3}
	start := time.Now()
	r, err := p.Publish(context.Background(), "agent-1", BatchEvent{Kind: "k", Data: 1})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("retried before retry_after_ms")
	}
	if f.reqs != 3 || len(f.log["agent-1"]) != 1 || f.log["agent-1"][0].ID != r.ID || r.ID == "" {
		t.Fatalf("requests %d, log %+v, id %q", f.reqs, f.log["agent-1"], r.ID)
	}
	f.fail = []int{503, 503}
	_, err = (&Publisher{URL: srv.URL, Token: "tok", Retries: 1}).Publish(context.Background(), "agent-1", BatchEvent{Kind: "k"})
	if !errors.Is(err, ErrInternal) {
		t.Fatalf("retries used up: %v", err)
	}
}

func TestPublishBatchAndReads(t *testing.T) {
	_, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	if _, err := p.PublishBatch(ctx, "agent-1", nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("empty batch: %v", err)
	}
	if _, err := p.PublishBatch(ctx, "agent-1", make([]BatchEvent, 11)); !errors.Is(err, ErrConfig) {
		t.Fatalf("11 events: %v", err)
	}
	var events []BatchEvent
	for i := range 5 {
		events = append(events, BatchEvent{Kind: "status", Data: map[string]int{"n": i + 1}})
	}
	events[2].ID = "three"
	r, err := p.PublishBatch(ctx, "agent-1", events)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IDs) != 5 || r.IDs[2] != "three" || r.Channel != "agent-1" {
		t.Fatalf("batch answer %+v", r)
	}
	page, err := p.History(ctx, "agent-1", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if page.Epoch != "e1" || page.Head != 5 || len(page.Events) != 2 || page.Events[0].Seq != 2 || page.Events[0].Channel != "agent-1" || page.NextAfter == nil || *page.NextAfter != 3 {
		t.Fatalf("page %+v", page)
	}
	if string(page.Events[1].Data) != `{"n":3}` || page.Events[1].ID != "three" {
		t.Fatalf("event %+v", page.Events[1])
	}
	if _, err := p.History(ctx, "agent-1", 0, 1001); !errors.Is(err, ErrConfig) {
		t.Fatalf("limit 1001: %v", err)
	}
	pr, err := p.Presence(ctx, "agent-1")
	if err != nil || pr.Count != 2 || len(pr.Principals) != 2 {
		t.Fatalf("presence %+v %v", pr, err)
	}
	info, err := p.Channel(ctx, "agent-1")
	if err != nil || info.Head != 5 || info.RetentionS != 259200 || info.Oldest == nil || *info.Oldest != 1 {
		t.Fatalf("channel %+v %v", info, err)
	}
}

func TestPublishAnswersCommittedRepeatAndQueued(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	ev := func(id string) BatchEvent { return BatchEvent{Kind: "status", Data: 1, ID: id} }

	// 201: committed now, with its seq and epoch.
	r, err := p.Publish(ctx, "agent-1", ev("a"))
	if err != nil {
		t.Fatal(err)
	}
	if *r != (PublishResult{ID: "a", Channel: "agent-1", Seq: 1, Epoch: "e1", Status: 201}) {
		t.Fatalf("201: %+v", r)
	}
	if r, err = p.Publish(ctx, "agent-1", ev("b")); err != nil || r.Seq != 2 || r.Status != 201 {
		t.Fatalf("201, the next seq: %+v %v", r, err)
	}
	// 200: a repeat of a committed key, the seq it has.
	if r, err = p.Publish(ctx, "agent-1", ev("a")); err != nil {
		t.Fatal(err)
	}
	if *r != (PublishResult{ID: "a", Channel: "agent-1", Seq: 1, Epoch: "e1", Status: 200}) {
		t.Fatalf("200: %+v", r)
	}
	// 202: queued, no seq yet.
	f.mu.Lock()
	f.queue = true
	f.mu.Unlock()
	if r, err = p.Publish(ctx, "agent-1", ev("c")); err != nil {
		t.Fatal(err)
	}
	if *r != (PublishResult{ID: "c", Channel: "agent-1", Queued: true, Status: 202}) {
		t.Fatalf("202: %+v", r)
	}

	// A batch: 201 with each event's seq in order, 200 when every key was
	// committed, 202 queued without events.
	f.mu.Lock()
	f.queue = false
	f.mu.Unlock()
	b, err := p.PublishBatch(ctx, "agent-2", []BatchEvent{ev("x"), ev("y"), ev("z")})
	if err != nil {
		t.Fatal(err)
	}
	want := []PublishedEvent{{"x", 1, "e1"}, {"y", 2, "e1"}, {"z", 3, "e1"}}
	if b.Status != 201 || b.Queued || fmt.Sprint(b.Events) != fmt.Sprint(want) || fmt.Sprint(b.IDs) != "[x y z]" {
		t.Fatalf("batch 201: %+v", b)
	}
	if b, err = p.PublishBatch(ctx, "agent-2", []BatchEvent{ev("z"), ev("x")}); err != nil {
		t.Fatal(err)
	}
	if b.Status != 200 || b.Queued || fmt.Sprint(b.Events) != fmt.Sprint([]PublishedEvent{{"z", 3, "e1"}, {"x", 1, "e1"}}) {
		t.Fatalf("batch 200: %+v", b)
	}
	// Partly committed before: 201, the repeated event keeps its seq.
	if b, err = p.PublishBatch(ctx, "agent-2", []BatchEvent{ev("y"), ev("w")}); err != nil {
		t.Fatal(err)
	}
	if b.Status != 201 || fmt.Sprint(b.Events) != fmt.Sprint([]PublishedEvent{{"y", 2, "e1"}, {"w", 4, "e1"}}) {
		t.Fatalf("batch 201 with a repeat: %+v", b)
	}
	f.mu.Lock()
	f.queue = true
	f.mu.Unlock()
	if b, err = p.PublishBatch(ctx, "agent-2", []BatchEvent{ev("v")}); err != nil {
		t.Fatal(err)
	}
	if b.Status != 202 || !b.Queued || b.Events != nil || fmt.Sprint(b.IDs) != "[v]" || b.Channel != "agent-2" {
		t.Fatalf("batch 202: %+v", b)
	}
}

// Answers as the gateway may write them: fields this client does not know
// are ignored, null seqs are 0, any 2xx is success, and a 202 without
// "queued" (an older gateway's) is queued.
func TestPublishAnswersToleratedAsWritten(t *testing.T) {
	answers := map[string]struct {
		status int
		body   string
	}{}
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		a := answers[r.URL.Path]
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(srv.Close)
	set := func(suffix string, status int, body string) {
		mu.Lock()
		answers["/v1/channels/c"+suffix] = struct {
			status int
			body   string
		}{status, body}
		mu.Unlock()
	}
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	one := BatchEvent{Kind: "k", Data: 1}

	set("/events", 201, `{"id":"a","channel":"c","seq":7,"epoch":"ep","extra":{"x":[1]},"shard":3}`)
	r, err := p.Publish(ctx, "c", one)
	if err != nil || *r != (PublishResult{ID: "a", Channel: "c", Seq: 7, Epoch: "ep", Status: 201}) {
		t.Fatalf("extra fields: %+v %v", r, err)
	}
	set("/events", 202, `{"id":"a","channel":"c"}`)
	if r, err = p.Publish(ctx, "c", one); err != nil || !r.Queued || r.Status != 202 || r.Seq != 0 {
		t.Fatalf("202 without queued: %+v %v", r, err)
	}
	set("/events", 202, `{"id":"a","channel":"c","queued":true,"seq":null,"epoch":null}`)
	if r, err = p.Publish(ctx, "c", one); err != nil || !r.Queued || r.Seq != 0 || r.Epoch != "" {
		t.Fatalf("202 with nulls: %+v %v", r, err)
	}
	set("/events", 204, ``)
	if r, err = p.Publish(ctx, "c", one); err != nil || r.Status != 204 || r.ID != "" || r.Channel != "c" {
		t.Fatalf("204: %+v %v", r, err)
	}

	set("/events:batch", 201, `{"channel":"c","ids":["a","b"],"events":[{"id":"a","seq":1,"epoch":"ep","more":1},{"seq":2,"epoch":"ep"}],"next":"x"}`)
	b, err := p.PublishBatch(ctx, "c", []BatchEvent{one, one})
	if err != nil || b.Status != 201 || fmt.Sprint(b.Events) != fmt.Sprint([]PublishedEvent{{"a", 1, "ep"}, {"b", 2, "ep"}}) {
		t.Fatalf("batch with extra fields (an id missing from events): %+v %v", b, err)
	}
	set("/events:batch", 202, `{"channel":"c","ids":["a","b"]}`)
	if b, err = p.PublishBatch(ctx, "c", []BatchEvent{one, one}); err != nil || !b.Queued || b.Events != nil || len(b.IDs) != 2 {
		t.Fatalf("batch 202 without queued: %+v %v", b, err)
	}
	set("/events:batch", 201, `{"channel":"c"}`)
	var e *Error
	if _, err = p.PublishBatch(ctx, "c", []BatchEvent{one}); !errors.As(err, &e) || e.Code != CodeDecode || e.Status != 201 {
		t.Fatalf("no ids: %#v", err)
	}
}

// replay reads the channel's log back through a reassembler, as a
// subscriber would: the plain events and the messages.
func replay(log []Event) []ClientEvent {
	r := newReassembler(0, 0)
	var out []ClientEvent
	for i := range log {
		if x := r.accept(&log[i]); x != nil {
			out = append(out, x)
		}
	}
	return out
}

func TestPublishMessageOfAnySizeRoundTrips(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	// Text with characters JSON escapes and multi-byte ones, over one event.
	text := strings.Repeat("line <a&b> \"quoted\" \t é 漢字 🙂\n", 9000)
	binary := make([]byte, 300_000)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	small, _ := JSONPayload(map[string]any{"ok": true})
	big, _ := JSONPayload(map[string]any{"items": strings.Split(text, "\n")})
	cases := []struct {
		id      string
		payload Payload
		events  int // 0: more than one
	}{
		{"small", small, 1},
		{"text", TextPayload(text), 0},
		{"bin", BytesPayload(binary), 0},
		{"big-json", big, 0},
		{"empty-bytes", BytesPayload(nil), 1},
	}
	for _, c := range cases {
		r, err := p.PublishMessage(ctx, "agent-1", "out", c.id, c.payload)
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		if (c.events == 1) != (r.Events == 1) {
			t.Fatalf("%s: %d events", c.id, r.Events)
		}
	}
	for _, b := range f.batches {
		if len(b) > MaxBatchEvents {
			t.Fatalf("a batch of %d", len(b))
		}
		for _, e := range b {
			if len(e.Data.(json.RawMessage)) > MaxEventDataBytes {
				t.Fatalf("a chunk event of %d bytes", len(e.Data.(json.RawMessage)))
			}
		}
	}
	out := replay(f.log["agent-1"])
	if len(out) != len(cases) {
		t.Fatalf("%d items read back: %#v", len(out), out)
	}
	if e, ok := out[0].(*Event); !ok || string(e.Data) != `{"ok":true}` || e.ID != "small" {
		t.Fatalf("small: %#v", out[0])
	}
	if m, ok := out[1].(*Message); !ok || m.Encoding != EncodingUTF8 || string(m.Data) != text || m.ID != "text" || m.Kind != "out" {
		t.Fatalf("text: %#v", out[1])
	}
	if m, ok := out[2].(*Message); !ok || m.Encoding != EncodingBase64 || !bytes.Equal(m.Data, binary) {
		t.Fatalf("bytes: %#v", out[2])
	}
	if m, ok := out[3].(*Message); !ok || m.Encoding != EncodingJSON || !bytes.Equal(m.Data, big.Data) {
		t.Fatalf("json: %T", out[3])
	}
	if m, ok := out[4].(*Message); !ok || len(m.Data) != 0 {
		t.Fatalf("empty bytes: %#v", out[4])
	}
	if _, err := p.PublishMessage(ctx, "agent-1", "out", strings.Repeat("x", 113), BytesPayload([]byte{1})); !errors.Is(err, ErrConfig) {
		t.Fatalf("a long message id: %v", err)
	}
}

func TestReassemblerLosesWhatCannotComplete(t *testing.T) {
	chunks, err := splitMessage("m", TextPayload(strings.Repeat("x", 3*PartBytes)))
	if err != nil || len(chunks) != 3 {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
	evs := make([]Event, len(chunks))
	for i, c := range chunks {
		evs[i] = Event{Channel: "c", Epoch: "e", Seq: uint64(i + 1), ID: c.ID, Kind: "k", Data: c.Data}
	}
	// The middle chunk missing: lost once, as missing.
	r := newReassembler(0, 0)
	var out []ClientEvent
	for _, i := range []int{0, 2} {
		if x := r.accept(&evs[i]); x != nil {
			out = append(out, x)
		}
	}
	if len(out) != 1 || out[0].(*MessageLost).Reason != LostMissing {
		t.Fatalf("missing: %#v", out)
	}
	if r.held != 0 {
		t.Fatalf("held %d after the loss", r.held)
	}
	// Over the bound: too_large, never held.
	r = newReassembler(PartBytes, 0)
	if x, ok := r.accept(&evs[0]).(*MessageLost); !ok || x.Reason != LostTooLarge {
		t.Fatalf("too large: %#v", x)
	}
	if r.accept(&evs[1]) != nil || r.held != 0 {
		t.Fatal("reported once, nothing held")
	}
	// Over the bound on what all partial messages hold.
	r = newReassembler(0, PartBytes+10)
	r.accept(&evs[0])
	if x, ok := r.accept(&evs[1]).(*MessageLost); !ok || x.Reason != LostTooLarge || r.held != 0 {
		t.Fatalf("held bound: %#v, held %d", x, r.held)
	}
	// Chunks that disagree: invalid.
	bad := Event{Channel: "c", Seq: 9, Kind: "k", Data: json.RawMessage(`{"$chunk":{"message":"z","index":0,"count":1,"encoding":"utf8","bytes":99},"part":"short"}`)}
	if x, ok := newReassembler(0, 0).accept(&bad).(*MessageLost); !ok || x.Reason != LostInvalid {
		t.Fatalf("invalid: %#v", x)
	}
	// Not a chunk: delivered as it is.
	plain := Event{Data: json.RawMessage(`{"$chunk":"nope"}`)}
	if newReassembler(0, 0).accept(&plain) != ClientEvent(&plain) {
		t.Fatal("a malformed header is a plain event")
	}
}

func TestStreamCoalescesAndEnds(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	s := p.OpenStream(ctx, "agent-1", "output", StreamOptions{ID: "s1", Window: time.Hour, MaxBytes: 10})
	for _, piece := range []string{"hello ", "wor", "ld, and more <&>"} {
		if err := s.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("tail"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	var text strings.Builder
	var idx []uint64
	ended := false
	for _, e := range f.log["agent-1"] {
		var d StreamEvent
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Stream != "s1" || ended || e.ID != "s1:"+jsonNumber(d.Index) || e.Kind != "output" {
			t.Fatalf("event %+v after end=%v", e, ended)
		}
		if d.Text != "" && len(marshalString(d.Text))-2 > 10 {
			t.Fatalf("a text over the bound: %q", d.Text)
		}
		idx = append(idx, d.Index)
		text.WriteString(d.Text)
		ended = d.End
	}
	if !ended || text.String() != "hello world, and more <&>tail" {
		t.Fatalf("text %q, ended %v", text.String(), ended)
	}
	for i, n := range idx {
		if n != uint64(i) {
			t.Fatalf("indexes %v", idx)
		}
	}
	// The window: a piece goes out by itself once the window passes.
	s = p.OpenStream(ctx, "agent-2", "output", StreamOptions{Window: 10 * time.Millisecond})
	if err := s.Write("alone"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.log["agent-2"])
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the window did not flush")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestCoalescerCutsAtCharacterBoundaries(t *testing.T) {
	c := newCoalescer("s", time.Hour, 5)
	out := c.push("ab漢字\"x", time.Now())
	out = append(out, c.finish()...)
	var joined string
	for _, e := range out {
		if !utf8.ValidString(e.Text) || len(marshalString(e.Text))-2 > 5 {
			t.Fatalf("piece %q", e.Text)
		}
		joined += e.Text
	}
	if joined != "ab漢字\"x" || !out[len(out)-1].End {
		t.Fatalf("%+v", out)
	}
}
