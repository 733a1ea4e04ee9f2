package agentwire

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"sync"
)

// AG-UI events over agentwire (docs/agui.md): one AG-UI event is one
// agentwire event, its kind the AG-UI type and its data the AG-UI event's
// JSON (camelCase, optional fields left out, "type" included). The AgUi*
// builders make the events a Go agent publishes; Publisher.PublishAgUi
// publishes them in order.
//
// There is no tagged AG-UI Go SDK to build on: the community one
// (github.com/ag-ui-protocol/ag-ui/sdks/community/go) is published as
// pseudo-versions only, pulls in logrus, and writes some events the 1.0
// schemas refuse (a CUSTOM event without "value" when it is nil, a JSON
// Patch "add" of null without "value"), so the builders here are small and
// checked against the JSON of the Python ag-ui-protocol 1.0 models
// (testdata/agui_events.json).

// AG-UI event types: the kind of the agentwire event that carries each.
const (
	AgUiRunStartedType         = "RUN_STARTED"          // A run starts.
	AgUiRunFinishedType        = "RUN_FINISHED"         // A run ends well.
	AgUiRunErrorType           = "RUN_ERROR"            // A run fails.
	AgUiStepStartedType        = "STEP_STARTED"         // A step starts.
	AgUiStepFinishedType       = "STEP_FINISHED"        // A step ends.
	AgUiTextMessageStartType   = "TEXT_MESSAGE_START"   // A streamed text message opens.
	AgUiTextMessageContentType = "TEXT_MESSAGE_CONTENT" // Text appended to it.
	AgUiTextMessageEndType     = "TEXT_MESSAGE_END"     // It closes.
	AgUiToolCallStartType      = "TOOL_CALL_START"      // A tool call opens.
	AgUiToolCallArgsType       = "TOOL_CALL_ARGS"       // Its arguments' JSON text, appended.
	AgUiToolCallEndType        = "TOOL_CALL_END"        // It closes.
	AgUiToolCallResultType     = "TOOL_CALL_RESULT"     // What the tool gave back.
	AgUiStateSnapshotType      = "STATE_SNAPSHOT"       // The whole state.
	AgUiStateDeltaType         = "STATE_DELTA"          // A JSON Patch to the state.
	AgUiCustomType             = "CUSTOM"               // An application's own event.
)

// AgUiProgressName is the name of the CUSTOM event that carries progress
// (docs/agui.md, "Progress with an ETA").
const AgUiProgressName = "agentwire.progress"

// The data of each builder: the AG-UI event's fields in its JSON names,
// optional ones omitted when empty.
type (
	aguiRun struct {
		Type     string `json:"type"`
		ThreadID string `json:"threadId"`
		RunID    string `json:"runId"`
		Result   any    `json:"result,omitempty"`
	}
	aguiRunError struct {
		Type    string `json:"type"`
		Message string `json:"message"`
		Code    string `json:"code,omitempty"`
	}
	aguiStep struct {
		Type     string `json:"type"`
		StepName string `json:"stepName"`
	}
	aguiText struct {
		Type      string  `json:"type"`
		MessageID string  `json:"messageId"`
		Role      string  `json:"role,omitempty"`
		Delta     *string `json:"delta,omitempty"`
	}
	aguiTool struct {
		Type            string  `json:"type"`
		ToolCallID      string  `json:"toolCallId"`
		ToolCallName    string  `json:"toolCallName,omitempty"`
		ParentMessageID string  `json:"parentMessageId,omitempty"`
		Delta           *string `json:"delta,omitempty"`
	}
	aguiToolResult struct {
		Type       string `json:"type"`
		MessageID  string `json:"messageId"`
		ToolCallID string `json:"toolCallId"`
		Content    string `json:"content"`
		Role       string `json:"role"`
	}
	aguiSnapshot struct {
		Type     string `json:"type"`
		Snapshot any    `json:"snapshot"`
	}
	aguiDelta struct {
		Type  string        `json:"type"`
		Delta []JSONPatchOp `json:"delta"`
	}
	aguiCustom struct {
		Type  string `json:"type"`
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
)

// AgUiProgress is the value of an agentwire.progress event: Done and
// Total in one unit (Total nil: unknown, shown as a count), Label text.
type AgUiProgress struct {
	Done  float64  `json:"done"`            // How much is done.
	Total *float64 `json:"total,omitempty"` // Of how much (nil: unknown).
	Label string   `json:"label,omitempty"` // What is being done, for people.
}

// JSONPatchOp is one operation of a STATE_DELTA (RFC 6902): Op "add",
// "remove", "replace", "move", "copy" or "test"; Path and From JSON
// Pointers. Value is written for add, replace and test (null when nil),
// From for move and copy.
type JSONPatchOp struct {
	Op    string // The operation.
	Path  string // Where it applies.
	From  string // Where move and copy take from.
	Value any    // What add, replace and test write or compare.
}

// MarshalJSON writes the operation with the fields its op has.
func (o JSONPatchOp) MarshalJSON() ([]byte, error) {
	m := map[string]any{"op": o.Op, "path": o.Path}
	switch o.Op {
	case "add", "replace", "test":
		m["value"] = o.Value
	case "move", "copy":
		m["from"] = o.From
	}
	return marshalJSON(m)
}

func agui(kind string, data any) BatchEvent { return BatchEvent{Kind: kind, Data: data} }

// AgUiRunStarted is RUN_STARTED of run runID in thread threadID (the
// channel's name, by docs/agui.md's convention).
func AgUiRunStarted(threadID, runID string) BatchEvent {
	return agui(AgUiRunStartedType, aguiRun{Type: AgUiRunStartedType, ThreadID: threadID, RunID: runID})
}

// AgUiRunFinished is RUN_FINISHED of the run, with its result (any JSON
// value; nil: none).
func AgUiRunFinished(threadID, runID string, result any) BatchEvent {
	return agui(AgUiRunFinishedType, aguiRun{Type: AgUiRunFinishedType, ThreadID: threadID, RunID: runID, Result: result})
}

// AgUiRunError is RUN_ERROR: what went wrong, and a code ("": none; for
// example "exit:2").
func AgUiRunError(message, code string) BatchEvent {
	return agui(AgUiRunErrorType, aguiRunError{Type: AgUiRunErrorType, Message: message, Code: code})
}

// AgUiStepStarted is STEP_STARTED of the step named name.
func AgUiStepStarted(name string) BatchEvent {
	return agui(AgUiStepStartedType, aguiStep{Type: AgUiStepStartedType, StepName: name})
}

// AgUiStepFinished is STEP_FINISHED of the step named name.
func AgUiStepFinished(name string) BatchEvent {
	return agui(AgUiStepFinishedType, aguiStep{Type: AgUiStepFinishedType, StepName: name})
}

// AgUiTextMessageStart is TEXT_MESSAGE_START of message messageID; role is
// "assistant", "user", "system" or "developer" ("": left out, meaning
// assistant).
func AgUiTextMessageStart(messageID, role string) BatchEvent {
	return agui(AgUiTextMessageStartType, aguiText{Type: AgUiTextMessageStartType, MessageID: messageID, Role: role})
}

// AgUiTextMessageContent is TEXT_MESSAGE_CONTENT: delta appended to the message.
func AgUiTextMessageContent(messageID, delta string) BatchEvent {
	return agui(AgUiTextMessageContentType, aguiText{Type: AgUiTextMessageContentType, MessageID: messageID, Delta: &delta})
}

// AgUiTextMessageEnd is TEXT_MESSAGE_END of the message.
func AgUiTextMessageEnd(messageID string) BatchEvent {
	return agui(AgUiTextMessageEndType, aguiText{Type: AgUiTextMessageEndType, MessageID: messageID})
}

// AgUiToolCallStart is TOOL_CALL_START of tool call toolCallID of the tool
// named name, in message parentMessageID ("": none).
func AgUiToolCallStart(toolCallID, name, parentMessageID string) BatchEvent {
	return agui(AgUiToolCallStartType, aguiTool{Type: AgUiToolCallStartType, ToolCallID: toolCallID, ToolCallName: name, ParentMessageID: parentMessageID})
}

// AgUiToolCallArgs is TOOL_CALL_ARGS: delta appended to the call's
// arguments (JSON text, in pieces).
func AgUiToolCallArgs(toolCallID, delta string) BatchEvent {
	return agui(AgUiToolCallArgsType, aguiTool{Type: AgUiToolCallArgsType, ToolCallID: toolCallID, Delta: &delta})
}

// AgUiToolCallEnd is TOOL_CALL_END of the call.
func AgUiToolCallEnd(toolCallID string) BatchEvent {
	return agui(AgUiToolCallEndType, aguiTool{Type: AgUiToolCallEndType, ToolCallID: toolCallID})
}

// AgUiToolCallResult is TOOL_CALL_RESULT: the tool's answer (content, a
// text of any size: over 96 KiB it goes as a chunked message) to call
// toolCallID, as message messageID with role "tool".
func AgUiToolCallResult(messageID, toolCallID, content string) BatchEvent {
	return agui(AgUiToolCallResultType, aguiToolResult{Type: AgUiToolCallResultType, MessageID: messageID, ToolCallID: toolCallID, Content: content, Role: "tool"})
}

// AgUiStateSnapshot is STATE_SNAPSHOT: the whole state (any JSON value).
func AgUiStateSnapshot(snapshot any) BatchEvent {
	return agui(AgUiStateSnapshotType, aguiSnapshot{Type: AgUiStateSnapshotType, Snapshot: snapshot})
}

// AgUiStateDelta is STATE_DELTA: a JSON Patch to the state.
func AgUiStateDelta(ops ...JSONPatchOp) BatchEvent {
	if ops == nil {
		ops = []JSONPatchOp{}
	}
	return agui(AgUiStateDeltaType, aguiDelta{Type: AgUiStateDeltaType, Delta: ops})
}

// AgUiCustom is CUSTOM: an event named name with value (any JSON value;
// nil is null).
func AgUiCustom(name string, value any) BatchEvent {
	return agui(AgUiCustomType, aguiCustom{Type: AgUiCustomType, Name: name, Value: value})
}

// AgUiProgressEvent is the agentwire.progress CUSTOM event:
// {"done","total"?,"label"?} (see AgUiProgress and AgUiTotal).
func AgUiProgressEvent(p AgUiProgress) BatchEvent {
	return AgUiCustom(AgUiProgressName, p)
}

// AgUiTotal is a total for AgUiProgress.Total.
func AgUiTotal(total float64) *float64 { return &total }

// aguiKeys numbers the AG-UI events a Publisher sends on each channel.
type aguiKeys struct {
	mu   sync.Mutex
	runs map[string]*aguiRunKeys
}

type aguiRunKeys struct {
	run string
	n   uint64
}

// maxKeyRunID is the longest run id used in keys (a key is at most 115
// characters, a message id 112).
const maxKeyRunID = 64

func keyRunID(id string) string {
	if id == "" || len(id) > maxKeyRunID {
		return NewKey()
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return NewKey()
		}
	}
	return id
}

// next gives the keys of n events on channel, RUN_STARTED events (runs
// given by runs[i] != "") starting a new numbering.
func (k *aguiKeys) next(channel string, runs []string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.runs == nil {
		k.runs = map[string]*aguiRunKeys{}
	}
	r := k.runs[channel]
	if r == nil {
		r = &aguiRunKeys{run: NewKey()}
		k.runs[channel] = r
	}
	keys := make([]string, len(runs))
	for i, run := range runs {
		if run != "" {
			r.run, r.n = keyRunID(run), 0
		}
		r.n++
		keys[i] = r.run + ":" + strconv.FormatUint(r.n, 10)
	}
	return keys
}

// PublishAgUi publishes AG-UI events (the AgUi* builders', or any
// BatchEvent whose Data is an AG-UI event with its "type" the Kind) to
// channel, in order, in batch requests of at most ten events; an event
// whose data is over 96 KiB of JSON goes as a chunked message of its kind.
//
// An event without an ID is given the idempotency key <runId>:<n>: runId
// that of the last RUN_STARTED this Publisher published on the channel (a
// new UUID before any, or when it is not 1 to 64 printable ASCII
// characters), n counting the run's events from 1. Keys are written into
// the events, so calling PublishAgUi again with the same slice (evs...)
// after an error commits each event once; and with Retries each request is
// retried under the same keys. Publishing a run id again as another run
// makes its events duplicates of the first one's: a run id names one run.
func (p *Publisher) PublishAgUi(ctx context.Context, channel string, events ...BatchEvent) error {
	type prepared struct {
		data json.RawMessage
		run  string
	}
	ready := make([]prepared, len(events))
	var runs []string
	for i, e := range events {
		data, run, err := aguiData(e)
		if err != nil {
			return &Error{Code: CodeConfig, Message: "AG-UI event " + strconv.Itoa(i) + ": " + err.Error(), Err: err}
		}
		ready[i] = prepared{data: data, run: run}
		if e.ID == "" {
			runs = append(runs, run)
		}
	}
	keys := p.agui.next(channel, runs)
	var out []BatchEvent
	for i := range events {
		if events[i].ID == "" {
			events[i].ID, keys = keys[0], keys[1:]
		}
		e := events[i]
		if len(ready[i].data) <= MaxEventDataBytes {
			out = append(out, BatchEvent{Kind: e.Kind, Data: ready[i].data, ID: e.ID})
			continue
		}
		if len(e.ID) > MaxMessageID {
			return configError("AG-UI event %d: a chunked event's id is at most %d bytes", i, MaxMessageID)
		}
		chunks, err := splitMessage(e.ID, Payload{Encoding: EncodingJSON, Data: ready[i].data})
		if err != nil {
			return err
		}
		for _, c := range chunks {
			out = append(out, BatchEvent{Kind: e.Kind, Data: c.Data, ID: c.ID})
		}
	}
	for i := 0; i < len(out); i += MaxBatchEvents {
		if _, err := p.PublishBatch(ctx, channel, out[i:min(i+MaxBatchEvents, len(out))]); err != nil {
			return err
		}
	}
	return nil
}

// aguiData is an AG-UI event's JSON, checked to be an object whose "type"
// is the event's kind, and its runId when it is a RUN_STARTED.
func aguiData(e BatchEvent) (json.RawMessage, string, error) {
	if e.Kind == "" {
		return nil, "", configError("a kind (the AG-UI type) is needed")
	}
	data, err := marshalJSON(e.Data)
	if err != nil {
		return nil, "", err
	}
	var head struct {
		Type  *string `json:"type"`
		RunID string  `json:"runId"`
	}
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) || json.Unmarshal(data, &head) != nil {
		return nil, "", configError("the data of an AG-UI event is a JSON object")
	}
	if head.Type == nil || *head.Type != e.Kind {
		return nil, "", configError("the data's type must be the kind %q", e.Kind)
	}
	run := ""
	if e.Kind == AgUiRunStartedType {
		run = head.RunID
		if run == "" {
			run = NewKey() // a run without an id: a new numbering all the same
		}
	}
	return data, run, nil
}
