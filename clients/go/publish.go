package agentwire

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Publisher calls the gateway's HTTP API (docs/openapi.yaml) as an agent
// without AWS credentials does: publish (one event or a batch of up to
// ten), streams, messages of any size, and the reads (history, presence,
// channel). Its methods are safe for concurrent use.
type Publisher struct {
	// URL is the gateway's HTTP base URL (https://…/prod, http://127.0.0.1:8080).
	URL string
	// Token has a publish grant for the channels written and a channels
	// grant for those read.
	Token string
	// HTTPClient makes the requests (default http.DefaultClient).
	HTTPClient *http.Client
	// Retries: a retryable failure (429, 408, 5xx, network) is retried up
	// to this many times, after max(the gateway's retry_after_ms, a
	// full-jitter backoff of 200 ms doubling to 5 s), with the same
	// idempotency keys (generated when none is given). 0: one attempt.
	Retries int

	agui aguiKeys // PublishAgUi's numbering, per channel.
}

// MaxBatchEvents is the most events one batch request carries.
const MaxBatchEvents = 10

// NewPublisher is a Publisher for the gateway at baseURL with token.
func NewPublisher(baseURL, token string) *Publisher {
	return &Publisher{URL: baseURL, Token: token}
}

// PublishResult is the gateway's answer to a publish. Status says which:
//
//   - 201 Created: committed now; Seq and Epoch are the event's place in
//     the channel's log.
//   - 200 OK: a repeat; the Idempotency-Key (ev.ID) was already committed,
//     nothing was committed again, and Seq and Epoch are the ones the event
//     already has.
//   - 202 Accepted: queued; the gateway could not commit it at once and put
//     it on its events queue, to be committed shortly. Queued is true and
//     Seq is 0 and Epoch "" (not known yet).
//
// Any other 2xx is taken as success too, with what its body holds.
type PublishResult struct {
	ID      string `json:"id"`      // The event's id.
	Channel string `json:"channel"` // The channel.
	// Seq is the event's seq in the channel's log (0 when Queued).
	Seq uint64 `json:"seq"`
	// Epoch is the incarnation of the log Seq is in ("" when Queued).
	Epoch string `json:"epoch"`
	// Queued: on the gateway's queue, not committed yet (202).
	Queued bool `json:"queued"`
	// Status is the HTTP status of the answer: 201, 200 or 202.
	Status int `json:"-"`
}

// BatchEvent is one event of a batch (or of Publish).
type BatchEvent struct {
	Kind string `json:"kind"` // What the event is called; required.
	// Data is any value that encodes as JSON (json.RawMessage as it is).
	Data any `json:"data"`
	// ID is the event's id and idempotency key (unique per channel): the
	// event is committed once however often it is sent. Optional.
	ID string `json:"id,omitempty"`
}

// PublishedEvent is where a committed event of a batch is in the
// channel's log.
type PublishedEvent struct {
	ID    string `json:"id"`    // The event's id.
	Seq   uint64 `json:"seq"`   // Its seq.
	Epoch string `json:"epoch"` // The incarnation of the log Seq is in.
}

// BatchResult is the gateway's answer to a batch: the ids in order and,
// once committed, their seqs. Status says which:
//
//   - 201 Created: committed now (an event whose id was committed before
//     keeps the seq it has); Events holds each event's seq and epoch.
//   - 200 OK: a repeat; every event's id was already committed, nothing
//     was committed again, and Events holds the seqs they already have.
//   - 202 Accepted: queued; the gateway could not commit the batch at once
//     and put it on its events queue, to be committed shortly (all or
//     nothing, in order). Queued is true and Events nil.
type BatchResult struct {
	Channel string   `json:"channel"` // The channel.
	IDs     []string `json:"ids"`     // The events' ids, in order.
	// Events are the committed events, in request order (nil when Queued).
	Events []PublishedEvent `json:"events"`
	// Queued: on the gateway's queue, not committed yet (202).
	Queued bool `json:"queued"`
	// Status is the HTTP status of the answer: 201, 200 or 202.
	Status int `json:"-"`
}

// Publish publishes one event (POST /v1/channels/{channel}/events); ev.ID,
// if given, is the Idempotency-Key. It returns once the gateway accepted
// it: committed (201, with its Seq and Epoch), committed before under the
// same key (200, the Seq it has) or queued to be committed shortly (202,
// Queued). Errors are *Error with the gateway's code.
func (p *Publisher) Publish(ctx context.Context, channel string, ev BatchEvent) (*PublishResult, error) {
	if ev.Kind == "" {
		return nil, configError("an event needs a kind")
	}
	endpoint, err := p.channelURL(channel, "/events")
	if err != nil {
		return nil, err
	}
	if ev.ID == "" && p.Retries > 0 {
		ev.ID = NewKey()
	}
	body, err := marshalJSON(map[string]any{"kind": ev.Kind, "data": ev.Data})
	if err != nil {
		return nil, &Error{Code: CodeConfig, Message: "the data cannot be encoded as JSON", Err: err}
	}
	header := http.Header{}
	if ev.ID != "" {
		header.Set("Idempotency-Key", ev.ID)
	}
	var res PublishResult
	status, err := p.do(ctx, http.MethodPost, endpoint, header, body, &res)
	if err != nil {
		return nil, err
	}
	res.Status = status
	if status == http.StatusAccepted {
		// Queued (older gateways answer 202 without "queued").
		res.Queued = true
	}
	if res.Channel == "" {
		res.Channel = channel
	}
	return &res, nil
}

// PublishBatch publishes 1 to 10 events in one request
// (POST /v1/channels/{channel}/events:batch), all or nothing, committed in
// this order. With Retries, every event without an ID is given one first,
// so a retry commits each event once. The answer is committed (201, each
// event's seq in Events), committed before (200) or queued (202, Queued).
func (p *Publisher) PublishBatch(ctx context.Context, channel string, events []BatchEvent) (*BatchResult, error) {
	if len(events) < 1 || len(events) > MaxBatchEvents {
		return nil, configError("a batch holds 1 to %d events, not %d", MaxBatchEvents, len(events))
	}
	sent := make([]BatchEvent, len(events))
	for i, e := range events {
		if e.Kind == "" {
			return nil, configError("event %d: a kind is needed", i)
		}
		if e.ID == "" && p.Retries > 0 {
			e.ID = NewKey()
		}
		if e.Data == nil {
			e.Data = json.RawMessage("null")
		}
		sent[i] = e
	}
	endpoint, err := p.channelURL(channel, "/events:batch")
	if err != nil {
		return nil, err
	}
	body, err := marshalJSON(map[string]any{"events": sent})
	if err != nil {
		return nil, &Error{Code: CodeConfig, Message: "an event's data cannot be encoded as JSON", Err: err}
	}
	var res BatchResult
	status, err := p.do(ctx, http.MethodPost, endpoint, nil, body, &res)
	if err != nil {
		return nil, err
	}
	if res.IDs == nil {
		return nil, &Error{Code: CodeDecode, Status: status, Message: "an answer to a batch publish without ids"}
	}
	res.Status = status
	if status == http.StatusAccepted {
		res.Queued = true
	}
	if len(res.Events) == len(res.IDs) {
		for i := range res.Events {
			if res.Events[i].ID == "" {
				res.Events[i].ID = res.IDs[i]
			}
		}
	}
	if res.Channel == "" {
		res.Channel = channel
	}
	return &res, nil
}

// NewKey is a new random idempotency key (a UUID v4).
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (p *Publisher) channelURL(channel, suffix string) (string, error) {
	if p.URL == "" {
		return "", configError("the gateway's URL is needed")
	}
	if channel == "" {
		return "", configError("a channel is needed")
	}
	return strings.TrimRight(p.URL, "/") + "/v1/channels/" + url.PathEscape(channel) + suffix, nil
}

func (p *Publisher) client() *http.Client {
	if p.HTTPClient != nil {
		return p.HTTPClient
	}
	return http.DefaultClient
}

// do runs a request (with retries), decoding a 2xx answer into out, and
// returns the answer's status.
func (p *Publisher) do(ctx context.Context, method, endpoint string, header http.Header, body []byte, out any) (int, error) {
	backoff := Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second, MaxAttempts: max(p.Retries, 0)}
	for {
		status, err := p.once(ctx, method, endpoint, header, body, out)
		var e *Error
		if err == nil || p.Retries <= 0 || !errors.As(err, &e) || !e.Retryable || ctx.Err() != nil {
			return status, err
		}
		delay, ok := backoff.Next(randomUnit())
		if !ok {
			return status, err
		}
		t := time.NewTimer(max(delay, e.RetryAfter))
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

func (p *Publisher) once(ctx context.Context, method, endpoint string, header http.Header, body []byte, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return 0, &Error{Code: CodeConfig, Message: "cannot make the request", Err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, &Error{Code: CodeNetwork, Message: "cannot reach " + endpoint, Retryable: true, Err: err}
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, &Error{Code: CodeNetwork, Message: "reading the answer failed", Retryable: true, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return resp.StatusCode, httpError(resp.StatusCode, text, resp.Header.Get("Retry-After"))
	}
	if out != nil && len(bytes.TrimSpace(text)) > 0 {
		if err := json.Unmarshal(text, out); err != nil {
			return resp.StatusCode, &Error{Code: CodeDecode, Status: resp.StatusCode, Message: "unexpected answer: " + truncate(string(text), 200), Err: err}
		}
	}
	return resp.StatusCode, nil
}

// httpError is the typed error of an HTTP answer status with body text.
func httpError(status int, text []byte, retryAfter string) *Error {
	b := parseErrorBody(text)
	e := &Error{Message: strings.TrimSpace(truncate(string(text), 300))}
	if b != nil {
		e = b.toError()
	}
	e.Status = status
	if e.Message == "" {
		e.Message = "HTTP " + strconv.Itoa(status)
	}
	fallback := ""
	switch {
	case status == http.StatusTooManyRequests:
		fallback = CodeRateLimited
		e.Retryable = true
		if e.RetryAfter == 0 && retryAfter != "" {
			if s, err := strconv.ParseFloat(strings.TrimSpace(retryAfter), 64); err == nil && s >= 0 {
				e.RetryAfter = time.Duration(s * float64(time.Second))
			}
		}
	case status == http.StatusUnauthorized:
		fallback = CodeUnauthorized
	case status >= 500:
		fallback = CodeInternal
		e.Retryable = true
	case status == http.StatusRequestTimeout:
		fallback = CodeTimeout
		e.Retryable = true
	case status == http.StatusForbidden:
		fallback = CodeForbidden
	case status == http.StatusNotFound:
		fallback = CodeNotFound
	case status == http.StatusRequestEntityTooLarge:
		fallback = CodeMessageTooLarge
	default:
		fallback = CodeInvalidRequest
	}
	if e.Code == "" {
		e.Code = fallback
	}
	return e
}

// HistoryPage is one page of a channel's history.
type HistoryPage struct {
	Channel string `json:"channel"` // The channel.
	// Epoch of the log ("" when the channel has no events yet); another
	// epoch than the one paged in means the log was reset.
	Epoch  string  `json:"epoch"`
	Head   uint64  `json:"head"`   // Its last seq.
	Oldest *uint64 `json:"oldest"` // The oldest retained seq (nil: none)
	// Events after `after`, ascending, with Channel and Epoch filled in.
	Events []Event `json:"events"`
	// Gap names the seqs after `after` no longer retained.
	Gap *HistoryGap `json:"gap"`
	// NextAfter is the `after` of the next page (nil at the head).
	NextAfter *uint64 `json:"next_after"`
}

// HistoryGap: seqs From..=To are no longer retained.
type HistoryGap struct {
	From uint64 `json:"from"` // The first seq no longer retained.
	To   uint64 `json:"to"`   // The last one.
}

// ChannelPresence is who is subscribed to a channel.
type ChannelPresence struct {
	Channel    string   `json:"channel"`    // The channel.
	Count      uint64   `json:"count"`      // Subscribed connections.
	Principals []string `json:"principals"` // A sample of who is subscribed.
}

// ChannelInfo is a channel's state.
type ChannelInfo struct {
	Channel    string  `json:"channel"`     // The channel.
	Epoch      string  `json:"epoch"`       // Its log's incarnation.
	Head       uint64  `json:"head"`        // Its last seq.
	Oldest     *uint64 `json:"oldest"`      // The oldest retained seq (nil: none)
	RetentionS uint64  `json:"retention_s"` // How long events are kept, in seconds.
	// Webhook is the channel's webhook, if it has one.
	Webhook *struct {
		Mode  string `json:"mode"`
		Scope string `json:"scope"`
	} `json:"webhook"`
}

// History reads one page of a channel's history: the retained events with
// a seq greater than after, at most limit (1 to 1000; 0: 100).
func (p *Publisher) History(ctx context.Context, channel string, after uint64, limit int) (*HistoryPage, error) {
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		return nil, configError("limit is 1 to 1000, not %d", limit)
	}
	endpoint, err := p.channelURL(channel, "/events")
	if err != nil {
		return nil, err
	}
	endpoint += "?after=" + strconv.FormatUint(after, 10) + "&limit=" + strconv.Itoa(limit)
	var page HistoryPage
	if _, err := p.do(ctx, http.MethodGet, endpoint, nil, nil, &page); err != nil {
		return nil, err
	}
	if page.Channel == "" {
		page.Channel = channel
	}
	for i := range page.Events {
		page.Events[i].Channel, page.Events[i].Epoch = page.Channel, page.Epoch
		if len(page.Events[i].Data) == 0 {
			page.Events[i].Data = json.RawMessage("null")
		}
	}
	return &page, nil
}

// Presence reads who is subscribed to a channel.
func (p *Publisher) Presence(ctx context.Context, channel string) (*ChannelPresence, error) {
	endpoint, err := p.channelURL(channel, "/presence")
	if err != nil {
		return nil, err
	}
	var out ChannelPresence
	if _, err := p.do(ctx, http.MethodGet, endpoint, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Channel reads a channel's state.
func (p *Publisher) Channel(ctx context.Context, channel string) (*ChannelInfo, error) {
	endpoint, err := p.channelURL(channel, "")
	if err != nil {
		return nil, err
	}
	var out ChannelInfo
	if _, err := p.do(ctx, http.MethodGet, endpoint, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
