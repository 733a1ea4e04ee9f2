package agentwire

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// ProtocolRange is a range of protocol versions, both ends included.
type ProtocolRange struct {
	Min int `json:"min"` // Oldest version.
	Max int `json:"max"` // Newest version.
}

// ProtocolVersion is the protocol this package speaks (agentwire.v1).
const ProtocolVersion = 1

// Subprotocol is the WebSocket subprotocol of ProtocolVersion.
const Subprotocol = "agentwire.v1"

// Position is a place in a channel's log: the last seq delivered in epoch.
type Position struct {
	Epoch string `json:"epoch"` // The log's incarnation.
	Seq   uint64 `json:"seq"`   // The last seq delivered.
}

type sinceKind uint8

const (
	sinceCursor sinceKind = iota
	sinceHead
	sincePosition
)

// Since says where a join starts. The zero value is the principal's
// durable cursor (the join sends no since).
type Since struct {
	kind sinceKind
	pos  Position
}

// SinceCursor starts from the principal's durable cursor (the zero Since).
func SinceCursor() Since { return Since{} }

// SinceHead starts with the events published from now on.
func SinceHead() Since { return Since{kind: sinceHead} }

// SincePosition starts right after seq in epoch.
func SincePosition(epoch string, seq uint64) Since {
	return Since{kind: sincePosition, pos: Position{Epoch: epoch, Seq: seq}}
}

// IsCursor reports whether the join starts from the durable cursor.
func (s Since) IsCursor() bool { return s.kind == sinceCursor }

// IsHead reports whether the join starts at the head.
func (s Since) IsHead() bool { return s.kind == sinceHead }

// Position gives the position a join starts after, if it is one.
func (s Since) Position() (Position, bool) { return s.pos, s.kind == sincePosition }

// String gives "head", {"epoch", seq} for a position, or "cursor" for the
// durable cursor.
func (s Since) String() string {
	switch s.kind {
	case sinceHead:
		return "head"
	case sincePosition:
		return fmt.Sprintf("{%q, %d}", s.pos.Epoch, s.pos.Seq)
	}
	return "cursor"
}

// MarshalJSON writes the wire form: "head" or {"epoch","seq"} (a cursor
// is written as null; join frames leave it out).
func (s Since) MarshalJSON() ([]byte, error) {
	switch s.kind {
	case sinceHead:
		return []byte(`"head"`), nil
	case sincePosition:
		return json.Marshal(s.pos)
	}
	return []byte("null"), nil
}

// UnmarshalJSON reads "head", {"epoch","seq"} or null.
func (s *Since) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*s = Since{}
	case bytes.Equal(b, []byte(`"head"`)):
		*s = SinceHead()
	default:
		var p struct {
			Epoch *string `json:"epoch"`
			Seq   *uint64 `json:"seq"`
		}
		if err := json.Unmarshal(b, &p); err != nil || p.Epoch == nil || p.Seq == nil {
			return fmt.Errorf("since: want \"head\" or {epoch, seq}, got %s", truncate(string(b), 100))
		}
		*s = SincePosition(*p.Epoch, *p.Seq)
	}
	return nil
}

// joinChannel is one channel of a join frame.
type joinChannel struct {
	Name  string `json:"name"`
	Since *Since `json:"since,omitempty"`
}

type helloFrame struct {
	Action   string        `json:"action"`
	Protocol ProtocolRange `json:"protocol"`
	Client   string        `json:"client,omitempty"`
	Features []string      `json:"features,omitempty"`
}

type joinFrame struct {
	Action   string        `json:"action"`
	ID       string        `json:"id"`
	Channels []joinChannel `json:"channels"`
}

type leaveFrame struct {
	Action   string   `json:"action"`
	ID       string   `json:"id"`
	Channels []string `json:"channels"`
}

type ackFrame struct {
	Action  string `json:"action"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
}

type refreshFrame struct {
	Action string `json:"action"`
	ID     string `json:"id"`
	Token  string `json:"token"`
}

var pingFrame = []byte(`{"action":"ping"}`)

// JoinedChannel is one channel of a joined answer.
type JoinedChannel struct {
	Name  string `json:"name"`  // The channel.
	Epoch string `json:"epoch"` // Its log's incarnation.
	Head  uint64 `json:"head"`  // Its last seq at join time.
	// Replayed is how many events the replay brings.
	Replayed uint64 `json:"replayed"`
	// Recovered is false when the position asked for could not be honoured
	// (a gap, or another epoch).
	Recovered bool `json:"recovered"`
	// Until is where a replay cut short ends (the client joins again from
	// there by itself).
	Until *uint64 `json:"until,omitempty"`
}

// Presence of a channel at join time: the subscribed connections and a
// sample of at most 20 principals.
type Presence struct {
	Count      uint64   `json:"count"`      // Subscribed connections.
	Principals []string `json:"principals"` // A sample of who is subscribed.
}

// Health is the gateway's state at join time.
type Health struct {
	Server   string                   `json:"server"`   // The gateway's name and version.
	Protocol int                      `json:"protocol"` // The protocol version in use.
	Time     string                   `json:"time"`     // The gateway's clock (RFC 3339)
	Channels map[string]ChannelHealth `json:"channels"` // Head and oldest seq by channel.
}

// ChannelHealth is a channel's head and oldest retained seq.
type ChannelHealth struct {
	Head   uint64  `json:"head"`             // The last seq.
	Oldest *uint64 `json:"oldest,omitempty"` // The oldest retained seq (nil: none)
}

// serverFrame is any frame the gateway sends; Type says which fields hold.
type serverFrame struct {
	Type string  `json:"type"`
	ID   *string `json:"-"`

	// welcome
	Protocol     int      `json:"protocol"`
	ConnectionID string   `json:"connection_id"`
	Server       string   `json:"server"`
	HeartbeatS   int      `json:"heartbeat_s"`
	Features     []string `json:"features"`
	TokenExp     *float64 `json:"token_exp"`

	// joined, left, error
	Channels json.RawMessage     `json:"channels"`
	Presence map[string]Presence `json:"presence"`
	Health   *Health             `json:"health"`

	// gap
	Channel string `json:"channel"`
	From    uint64 `json:"from"`
	To      uint64 `json:"to"`

	// refreshed
	Exp *float64 `json:"exp"`
}

// parseServerFrame reads one text frame. What it cannot use is an error
// (never a panic), and the frame is then skipped.
func parseServerFrame(text []byte) (*serverFrame, *errorBody, []Event, error) {
	var head struct {
		Type string  `json:"type"`
		ID   *string `json:"id"`
	}
	if err := json.Unmarshal(text, &head); err != nil {
		return nil, nil, nil, err
	}
	switch head.Type {
	case "error":
		var b errorBody
		if err := json.Unmarshal(text, &b); err != nil {
			return nil, nil, nil, err
		}
		if b.Code == "" {
			return nil, nil, nil, fmt.Errorf("an error frame without a code")
		}
		return &serverFrame{Type: "error", ID: head.ID}, &b, nil, nil
	case "welcome", "joined", "left", "gap", "pong", "refreshed":
		var f serverFrame
		if err := json.Unmarshal(text, &f); err != nil {
			return nil, nil, nil, err
		}
		f.Type, f.ID = head.Type, head.ID
		if f.Type == "gap" && (f.Channel == "" || f.From == 0 || f.From > f.To) {
			return nil, nil, nil, fmt.Errorf("a gap frame without a channel or a range")
		}
		return &f, nil, nil, nil
	case "event":
		e, err := parseEvent(text)
		if err != nil {
			return nil, nil, nil, err
		}
		return &serverFrame{Type: "event"}, nil, []Event{e}, nil
	case "batch":
		var b struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(text, &b); err != nil {
			return nil, nil, nil, err
		}
		events := make([]Event, 0, len(b.Events))
		for i, raw := range b.Events {
			e, err := parseEvent(raw)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("batch event %d: %w", i, err)
			}
			events = append(events, e)
		}
		return &serverFrame{Type: "batch"}, nil, events, nil
	case "":
		return nil, nil, nil, fmt.Errorf("a frame without a type")
	}
	return nil, nil, nil, fmt.Errorf("unknown frame type %q", truncate(head.Type, 40))
}

func parseEvent(raw []byte) (Event, error) {
	var w struct {
		Channel string          `json:"channel"`
		Epoch   *string         `json:"epoch"`
		Seq     uint64          `json:"seq"`
		ID      string          `json:"id"`
		Kind    string          `json:"kind"`
		Data    json.RawMessage `json:"data"`
		Ts      string          `json:"ts"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return Event{}, err
	}
	if w.Channel == "" || w.Epoch == nil || w.Seq == 0 {
		return Event{}, fmt.Errorf("an event without a channel, an epoch or a seq")
	}
	data := w.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return Event{Channel: w.Channel, Epoch: *w.Epoch, Seq: w.Seq, ID: w.ID, Kind: w.Kind, Data: data, Ts: w.Ts}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
