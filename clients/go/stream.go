package agentwire

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"
)

// Streams (docs/protocol.md, "Streams"): what is written within a window
// (default 50 ms) or up to a size bound (default 64 KiB) goes as one event
// {"stream": ID, "index": N, "text": "…"}, indexes from 0 without holes,
// and the stream ends with {"stream": ID, "index": N, "end": true}. Each
// event's idempotency key is <stream>:<index>.

// Stream defaults.
const (
	DefaultStreamWindow   = 50 * time.Millisecond
	DefaultStreamMaxBytes = 64 * 1024
)

// StreamEvent is the data of one stream event.
type StreamEvent struct {
	Stream string `json:"stream"`         // The stream id.
	Index  uint64 `json:"index"`          // Its place in the stream, from 0.
	Text   string `json:"text,omitempty"` // The text written.
	End    bool   `json:"end,omitempty"`  // The end marker: nothing follows.
}

// coalescer gathers one stream's pieces into event data; the clock is the
// caller's.
type coalescer struct {
	stream   string
	window   time.Duration
	maxBytes int
	buf      []byte
	size     int
	since    time.Time
	index    uint64
	ended    bool
}

func newCoalescer(stream string, window time.Duration, maxBytes int) *coalescer {
	if window <= 0 {
		window = DefaultStreamWindow
	}
	if maxBytes <= 0 || maxBytes > DefaultStreamMaxBytes {
		maxBytes = DefaultStreamMaxBytes
	}
	return &coalescer{stream: stream, window: window, maxBytes: maxBytes}
}

// push adds text; it gives the events due because the buffer reached the bound.
func (c *coalescer) push(text string, now time.Time) []StreamEvent {
	var out []StreamEvent
	for _, r := range text {
		n := escapedLen(r)
		if c.size+n > c.maxBytes {
			if e, ok := c.flush(); ok {
				out = append(out, e)
			}
		}
		if len(c.buf) == 0 {
			c.since = now
		}
		c.buf = append(c.buf, string(r)...)
		c.size += n
	}
	return out
}

// deadline is when the buffered text must go (false: nothing buffered).
func (c *coalescer) deadline() (time.Time, bool) {
	if len(c.buf) == 0 {
		return time.Time{}, false
	}
	return c.since.Add(c.window), true
}

func (c *coalescer) flush() (StreamEvent, bool) {
	if len(c.buf) == 0 {
		return StreamEvent{}, false
	}
	e := StreamEvent{Stream: c.stream, Index: c.index, Text: string(c.buf)}
	c.index++
	c.buf, c.size = c.buf[:0], 0
	return e, true
}

// finish gives the buffered text and the end marker (once).
func (c *coalescer) finish() []StreamEvent {
	if c.ended {
		return nil
	}
	c.ended = true
	var out []StreamEvent
	if e, ok := c.flush(); ok {
		out = append(out, e)
	}
	out = append(out, StreamEvent{Stream: c.stream, Index: c.index, End: true})
	c.index++
	return out
}

// StreamOptions tune a stream.
type StreamOptions struct {
	// ID of the stream (default a new UUID).
	ID string
	// Window: what is written within it goes as one event (default 50 ms).
	Window time.Duration
	// MaxBytes bounds one event's text, as JSON (default and most 64 KiB).
	MaxBytes int
}

// Stream is a stream being published: Write pieces, then Close. Its
// events go out in order, the pending ones as one batch request (up to
// ten). Safe for concurrent use.
type Stream struct {
	p       *Publisher
	channel string
	kind    string
	id      string

	mu      sync.Mutex
	c       *coalescer
	queue   []StreamEvent
	failure error
	timer   *time.Timer
	sending bool
	idle    *sync.Cond
	ctx     context.Context
	cancel  context.CancelFunc
}

// OpenStream opens a stream of kind on channel. ctx bounds its requests.
func (p *Publisher) OpenStream(ctx context.Context, channel, kind string, opts StreamOptions) *Stream {
	id := opts.ID
	if id == "" {
		id = NewKey()
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &Stream{p: p, channel: channel, kind: kind, id: id, c: newCoalescer(id, opts.Window, opts.MaxBytes), ctx: sctx, cancel: cancel}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// ID is the stream's id.
func (s *Stream) ID() string { return s.id }

// Write adds a piece (a token, a line). It returns the error that stopped
// the stream, if one did.
func (s *Stream) Write(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure != nil {
		return s.failure
	}
	if s.c.ended {
		return &Error{Code: CodeClosed, Message: "the stream is closed"}
	}
	s.enqueue(s.c.push(text, time.Now()))
	if d, ok := s.c.deadline(); ok && s.timer == nil {
		s.timer = time.AfterFunc(time.Until(d), s.onTimer)
	}
	return nil
}

func (s *Stream) onTimer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if e, ok := s.c.flush(); ok {
		s.enqueue([]StreamEvent{e})
	}
}

// enqueue queues events and makes sure a sender runs (s.mu held).
func (s *Stream) enqueue(events []StreamEvent) {
	if len(events) == 0 {
		return
	}
	s.queue = append(s.queue, events...)
	if !s.sending {
		s.sending = true
		go s.send()
	}
}

// send posts the queue, ten events per request, in order.
func (s *Stream) send() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 && s.failure == nil {
		batch := s.queue[:min(len(s.queue), MaxBatchEvents)]
		s.queue = s.queue[len(batch):]
		events := make([]BatchEvent, len(batch))
		for i, e := range batch {
			data, _ := marshalJSON(e)
			events[i] = BatchEvent{Kind: s.kind, Data: json.RawMessage(data), ID: s.id + ":" + strconv.FormatUint(e.Index, 10)}
		}
		s.mu.Unlock()
		_, err := s.p.PublishBatch(s.ctx, s.channel, events)
		s.mu.Lock()
		if err != nil {
			s.failure = err
		}
	}
	s.sending = false
	s.idle.Broadcast()
}

// wait blocks until nothing is being sent (s.mu held).
func (s *Stream) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	for s.sending && ctx.Err() == nil {
		s.idle.Wait()
	}
	if s.failure != nil {
		return s.failure
	}
	return ctx.Err()
}

// Flush sends what is buffered now and waits until everything written was
// accepted.
func (s *Stream) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if e, ok := s.c.flush(); ok {
		s.enqueue([]StreamEvent{e})
	}
	return s.wait(ctx)
}

// Close sends the rest and the end marker and waits until all were
// accepted (the first failure, if any).
func (s *Stream) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.failure == nil {
		s.enqueue(s.c.finish())
	}
	err := s.wait(ctx)
	if !s.sending {
		s.cancel()
	}
	return err
}

// MessageResult says how a message went out.
type MessageResult struct {
	ID     string // The message id.
	Events int    // How many events carried it.
}

// PublishMessage publishes data of any size: one event when it fits (and
// is not bytes), else its chunk events, ten per batch request, in order.
// id (at most 112 bytes; "" for a new UUID) makes sending it again commit
// it once.
func (p *Publisher) PublishMessage(ctx context.Context, channel, kind, id string, payload Payload) (*MessageResult, error) {
	if id == "" {
		id = NewKey()
	}
	data, err := payload.eventData()
	if err != nil {
		return nil, err
	}
	if data != nil {
		if _, err := p.Publish(ctx, channel, BatchEvent{Kind: kind, Data: data, ID: id}); err != nil {
			return nil, err
		}
		return &MessageResult{ID: id, Events: 1}, nil
	}
	if len(id) > MaxMessageID {
		return nil, configError("a message id is at most %d bytes", MaxMessageID)
	}
	chunks, err := splitMessage(id, payload)
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(chunks); i += MaxBatchEvents {
		part := chunks[i:min(i+MaxBatchEvents, len(chunks))]
		events := make([]BatchEvent, len(part))
		for j, c := range part {
			events[j] = BatchEvent{Kind: kind, Data: c.Data, ID: c.ID}
		}
		if _, err := p.PublishBatch(ctx, channel, events); err != nil {
			return nil, err
		}
	}
	return &MessageResult{ID: id, Events: len(chunks)}, nil
}
