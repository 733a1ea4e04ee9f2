package agentwire

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Messages larger than one event (docs/protocol.md, "Messages larger than
// one event"): chunk events whose data is
//
//	{"$chunk": {"message": "m1", "index": 0, "count": 3, "encoding": "utf8", "bytes": 200000}, "part": "…"}

// Encoding names what a message's parts, concatenated, are.
type Encoding string

const (
	// EncodingJSON: the parts are the JSON text of the data.
	EncodingJSON Encoding = "json"
	// EncodingUTF8: the parts are the text itself.
	EncodingUTF8 Encoding = "utf8"
	// EncodingBase64: the parts are the base64 of the bytes.
	EncodingBase64 Encoding = "base64"
)

const (
	chunkKey = "$chunk"
	// PartBytes is the most one chunk's part holds, as JSON text.
	PartBytes    = 64 * 1024
	partRawBytes = PartBytes / 4 * 3
	// MaxMessageID is the longest message id, in bytes.
	MaxMessageID = 112
	// MaxEventDataBytes is the largest data of one plain event, as JSON.
	MaxEventDataBytes = 96 * 1024
	// DefaultMaxMessageBytes bounds one reassembled message.
	DefaultMaxMessageBytes = 64 * 1024 * 1024
	// DefaultMaxHeldMessageBytes bounds what all partial messages hold.
	DefaultMaxHeldMessageBytes = 128 * 1024 * 1024
	// lostRemembered: how many lost messages are remembered, to report each once.
	lostRemembered = 1024
	// DefaultMaxPartialMessages bounds the messages in progress at once:
	// one more makes the oldest lost (LostTooLarge).
	DefaultMaxPartialMessages = 64
	// MaxReceivedMessageID is the longest message id taken from a chunk, in
	// bytes: a longer one is lost (LostInvalid), reported under its first
	// bytes.
	MaxReceivedMessageID = 128
)

// Message is a message reassembled from its chunk events, handed over once,
// whole, when its last chunk (Seq) arrives.
type Message struct {
	Channel  string   // The channel it came on.
	ID       string   // The message id.
	Kind     string   // The kind of its events.
	Seq      uint64   // The seq of its last chunk.
	Encoding Encoding // How Data is to be read.
	// Data is the JSON text (EncodingJSON), the UTF-8 text (EncodingUTF8)
	// or the bytes (EncodingBase64).
	Data []byte
}

// LostReason says why a message will never be handed over.
type LostReason string

const (
	// LostMissing: a chunk never came (gone from the log, or before where
	// the client's log starts).
	LostMissing LostReason = "missing"
	// LostTooLarge: over the client's bound.
	LostTooLarge LostReason = "too_large"
	// LostInvalid: its chunks disagree or do not decode.
	LostInvalid LostReason = "invalid"
)

// MessageLost: a message that will never come whole, reported once.
type MessageLost struct {
	Channel string     // The channel it came on.
	ID      string     // The message id.
	Reason  LostReason // Why it will never come whole.
}

type chunkHeader struct {
	Message  string   `json:"message"`
	Index    uint32   `json:"index"`
	Count    uint32   `json:"count"`
	Encoding Encoding `json:"encoding"`
	Bytes    uint64   `json:"bytes"`
}

// parseChunk reads a chunk event's data; ok is false when it is no chunk.
func parseChunk(data []byte) (h chunkHeader, part *string, ok bool) {
	d := bytes.TrimLeft(data, " \t\r\n")
	if len(d) == 0 || d[0] != '{' || !bytes.Contains(d, []byte(`"$chunk"`)) {
		return h, nil, false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(d, &obj) != nil {
		return h, nil, false
	}
	raw, found := obj[chunkKey]
	if !found {
		return h, nil, false
	}
	var w struct {
		Message  *string   `json:"message"`
		Index    *uint32   `json:"index"`
		Count    *uint32   `json:"count"`
		Encoding *Encoding `json:"encoding"`
		Bytes    *uint64   `json:"bytes"`
	}
	if json.Unmarshal(raw, &w) != nil || w.Message == nil || w.Index == nil || w.Count == nil || w.Encoding == nil || w.Bytes == nil {
		return h, nil, false
	}
	switch *w.Encoding {
	case EncodingJSON, EncodingUTF8, EncodingBase64:
	default:
		return h, nil, false
	}
	h = chunkHeader{Message: *w.Message, Index: *w.Index, Count: *w.Count, Encoding: *w.Encoding, Bytes: *w.Bytes}
	if p, found := obj["part"]; found {
		var s string
		if json.Unmarshal(p, &s) == nil {
			part = &s
		}
	}
	return h, part, true
}

type msgKey struct{ channel, message string }

type partial struct {
	started uint64 // in messages started: the smallest is the oldest
	header  chunkHeader
	kind    string
	next    uint32
	text    []byte
}

// reassembler turns chunk events back into messages, per channel, within
// bounds.
type reassembler struct {
	maxMessage uint64
	maxHeld    uint64
	maxPartial int
	held       uint64
	started    uint64
	partial    map[msgKey]*partial
	lost       []msgKey
	// evicted: messages lost to the count bound, not yet taken.
	evicted []ClientEvent
}

// withMaxPartial bounds the messages in progress (n <= 0: the default).
func (r *reassembler) withMaxPartial(n int) *reassembler {
	if n > 0 {
		r.maxPartial = n
	}
	return r
}

// takeEvicted gives the messages lost to the count bound since the last
// call, to report before what accept returned.
func (r *reassembler) takeEvicted() []ClientEvent {
	out := r.evicted
	r.evicted = nil
	return out
}

// cutID is id cut to at most MaxReceivedMessageID bytes, at a character
// boundary.
func cutID(id string) string {
	if len(id) <= MaxReceivedMessageID {
		return id
	}
	n := MaxReceivedMessageID
	for n > 0 && !utf8.RuneStart(id[n]) {
		n--
	}
	return id[:n]
}

func newReassembler(maxMessage, maxHeld uint64) *reassembler {
	if maxMessage == 0 {
		maxMessage = DefaultMaxMessageBytes
	}
	if maxHeld == 0 {
		maxHeld = DefaultMaxHeldMessageBytes
	}
	return &reassembler{maxMessage: maxMessage, maxHeld: maxHeld, maxPartial: DefaultMaxPartialMessages, partial: map[msgKey]*partial{}}
}

// accept takes one delivered event (in seq order per channel): nil when it
// is a chunk held (or a repeat), the event itself when it is no chunk, else
// a *Message or a *MessageLost.
func (r *reassembler) accept(e *Event) ClientEvent {
	h, part, ok := parseChunk(e.Data)
	if !ok {
		return e
	}
	if len(h.Message) > MaxReceivedMessageID {
		return r.lose(msgKey{e.Channel, cutID(h.Message)}, LostInvalid)
	}
	key := msgKey{e.Channel, h.Message}
	if part == nil || h.Count == 0 || h.Index >= h.Count {
		return r.lose(key, LostInvalid)
	}
	if h.Index == 0 {
		if old, ok := r.partial[key]; ok {
			r.held -= uint64(len(old.text))
			delete(r.partial, key)
		}
		r.forget(key)
		if h.Bytes > r.maxMessage {
			return r.lose(key, LostTooLarge)
		}
		for len(r.partial) >= max(1, r.maxPartial) {
			var oldest msgKey
			first := true
			for k, p := range r.partial {
				if first || p.started < r.partial[oldest].started {
					oldest, first = k, false
				}
			}
			if lost := r.lose(oldest, LostTooLarge); lost != nil {
				r.evicted = append(r.evicted, lost)
			}
		}
		r.started++
		r.partial[key] = &partial{started: r.started, header: h, kind: e.Kind}
	} else if r.isLost(key) {
		return nil
	}
	p, ok := r.partial[key]
	if !ok {
		return r.lose(key, LostMissing)
	}
	if h.Index < p.next {
		return nil
	}
	if h.Index > p.next {
		return r.lose(key, LostMissing)
	}
	if h.Count != p.header.Count || h.Encoding != p.header.Encoding {
		return r.lose(key, LostInvalid)
	}
	grows := uint64(len(*part))
	if uint64(len(p.text))+grows > 2*r.maxMessage || r.held+grows > r.maxHeld {
		return r.lose(key, LostTooLarge)
	}
	p.text = append(p.text, *part...)
	p.next++
	r.held += grows
	if p.next < p.header.Count {
		return nil
	}
	delete(r.partial, key)
	r.held -= uint64(len(p.text))
	data, ok := decodeMessage(p)
	if !ok {
		return r.lose(key, LostInvalid)
	}
	return &Message{Channel: e.Channel, ID: h.Message, Kind: p.kind, Seq: e.Seq, Encoding: p.header.Encoding, Data: data}
}

func (r *reassembler) lose(key msgKey, reason LostReason) ClientEvent {
	if p, ok := r.partial[key]; ok {
		r.held -= uint64(len(p.text))
		delete(r.partial, key)
	}
	if r.isLost(key) {
		return nil
	}
	if len(r.lost) >= lostRemembered {
		r.lost = r.lost[1:]
	}
	r.lost = append(r.lost, key)
	return &MessageLost{Channel: key.channel, ID: key.message, Reason: reason}
}

func (r *reassembler) isLost(key msgKey) bool {
	for _, k := range r.lost {
		if k == key {
			return true
		}
	}
	return false
}

func (r *reassembler) forget(key msgKey) {
	out := r.lost[:0]
	for _, k := range r.lost {
		if k != key {
			out = append(out, k)
		}
	}
	r.lost = out
}

func decodeMessage(p *partial) ([]byte, bool) {
	var data []byte
	switch p.header.Encoding {
	case EncodingJSON:
		if !json.Valid(p.text) {
			return nil, false
		}
		data = p.text
	case EncodingUTF8:
		if !utf8.Valid(p.text) {
			return nil, false
		}
		data = p.text
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(string(p.text))
		if err != nil {
			return nil, false
		}
		data = b
	default:
		return nil, false
	}
	return data, uint64(len(data)) == p.header.Bytes
}

// Payload is what a publisher sends as a message: JSON, a text, or bytes.
type Payload struct {
	Encoding Encoding // How Data is to be read.
	// Data: the JSON text (EncodingJSON), the UTF-8 text or the bytes.
	Data []byte
}

// JSONPayload is v as JSON.
func JSONPayload(v any) (Payload, error) {
	b, err := marshalJSON(v)
	if err != nil {
		return Payload{}, &Error{Code: CodeConfig, Message: "the payload cannot be encoded as JSON", Err: err}
	}
	return Payload{Encoding: EncodingJSON, Data: b}, nil
}

// TextPayload is a text.
func TextPayload(s string) Payload { return Payload{Encoding: EncodingUTF8, Data: []byte(s)} }

// BytesPayload is raw bytes (always sent as base64 chunks).
func BytesPayload(b []byte) Payload { return Payload{Encoding: EncodingBase64, Data: b} }

// eventData is the data of one plain event when the payload fits in one
// (nil: chunk it). Bytes always go as chunks.
func (p Payload) eventData() (json.RawMessage, error) {
	var v json.RawMessage
	switch p.Encoding {
	case EncodingJSON:
		var c bytes.Buffer
		if err := json.Compact(&c, p.Data); err != nil {
			return nil, &Error{Code: CodeConfig, Message: "the payload is not JSON", Err: err}
		}
		v = c.Bytes()
	case EncodingUTF8:
		if !utf8.Valid(p.Data) {
			return nil, configError("a text payload must be UTF-8")
		}
		v = marshalString(string(p.Data))
	case EncodingBase64:
		return nil, nil
	default:
		return nil, configError("unknown payload encoding %q", p.Encoding)
	}
	if len(v) > MaxEventDataBytes {
		return nil, nil
	}
	return v, nil
}

// chunkEvent is one chunk event to publish: its id (idempotency key) and data.
type chunkEvent struct {
	ID   string
	Data json.RawMessage
}

// splitMessage gives the chunk events of p as message id, in order.
func splitMessage(id string, p Payload) ([]chunkEvent, error) {
	var parts []string
	var size int
	switch p.Encoding {
	case EncodingJSON:
		var c bytes.Buffer
		if err := json.Compact(&c, p.Data); err != nil {
			return nil, &Error{Code: CodeConfig, Message: "the payload is not JSON", Err: err}
		}
		parts, size = splitText(c.String()), c.Len()
	case EncodingUTF8:
		if !utf8.Valid(p.Data) {
			return nil, configError("a text payload must be UTF-8")
		}
		parts, size = splitText(string(p.Data)), len(p.Data)
	case EncodingBase64:
		for i := 0; i < len(p.Data); i += partRawBytes {
			parts = append(parts, base64.StdEncoding.EncodeToString(p.Data[i:min(i+partRawBytes, len(p.Data))]))
		}
		if len(parts) == 0 {
			parts = []string{""}
		}
		size = len(p.Data)
	default:
		return nil, configError("unknown payload encoding %q", p.Encoding)
	}
	out := make([]chunkEvent, len(parts))
	for i, part := range parts {
		h, _ := marshalJSON(chunkHeader{Message: id, Index: uint32(i), Count: uint32(len(parts)), Encoding: p.Encoding, Bytes: uint64(size)})
		pj := marshalString(part)
		data := make([]byte, 0, len(h)+len(pj)+24)
		data = append(data, `{"$chunk":`...)
		data = append(data, h...)
		data = append(data, `,"part":`...)
		data = append(data, pj...)
		data = append(data, '}')
		out[i] = chunkEvent{ID: id + "#" + strconv.Itoa(i), Data: data}
	}
	return out, nil
}

// escapedLen is how many bytes r takes inside a JSON string.
func escapedLen(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
		return 2
	case r < 0x20 || r == '\u2028' || r == '\u2029':
		// (Go's encoder escapes U+2028 and U+2029 too.)
		return 6
	}
	return utf8.RuneLen(r)
}

// splitText cuts text at character boundaries into parts of at most
// PartBytes as JSON string contents (at least one part).
func splitText(text string) []string {
	var parts []string
	start, size := 0, 0
	for i, r := range text {
		n := escapedLen(r)
		if size+n > PartBytes {
			parts = append(parts, text[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(parts, text[start:])
}

// marshalJSON encodes v without HTML escaping (what the gateway measures).
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// marshalString is s as a JSON string, without HTML escaping (so its
// size is what escapedLen counts).
func marshalString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimRight(b.Bytes(), "\n")
}
