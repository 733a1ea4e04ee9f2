package agentwire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// aguiBuilt are the builder calls whose JSON must equal the JSON the Python
// AG-UI package (ag-ui-protocol 1.x) writes for the same event:
// testdata/agui_events.json, written by testdata/agui_fixtures.py.
func aguiBuilt() map[string]BatchEvent {
	return map[string]BatchEvent{
		"run_started":                AgUiRunStarted("agent-1", "run-7"),
		"run_finished":               AgUiRunFinished("agent-1", "run-7", nil),
		"run_finished_result":        AgUiRunFinished("agent-1", "run-7", map[string]any{"exitCode": 0, "durationMs": 3200}),
		"run_error":                  AgUiRunError("exited with status 2 after 3.2 s", "exit:2"),
		"run_error_no_code":          AgUiRunError("failed", ""),
		"step_started":               AgUiStepStarted("plan"),
		"step_finished":              AgUiStepFinished("plan"),
		"text_message_start":         AgUiTextMessageStart("m1", "assistant"),
		"text_message_start_no_role": AgUiTextMessageStart("m1", ""),
		"text_message_content":       AgUiTextMessageContent("m1", "Hello, \"world\" <é> 🙂\n"),
		"text_message_content_empty": AgUiTextMessageContent("m1", ""),
		"text_message_end":           AgUiTextMessageEnd("m1"),
		"tool_call_start":            AgUiToolCallStart("c1", "search", "m1"),
		"tool_call_start_no_parent":  AgUiToolCallStart("c1", "search", ""),
		"tool_call_args":             AgUiToolCallArgs("c1", `{"q":`),
		"tool_call_end":              AgUiToolCallEnd("c1"),
		"tool_call_result":           AgUiToolCallResult("t1", "c1", "3 files"),
		"state_snapshot":             AgUiStateSnapshot(map[string]any{"files": 3, "done": []any{}, "note": nil}),
		"state_delta": AgUiStateDelta(
			JSONPatchOp{Op: "add", Path: "/done/-", Value: "plan"},
			JSONPatchOp{Op: "add", Path: "/note"},
			JSONPatchOp{Op: "replace", Path: "/files", Value: 4},
			JSONPatchOp{Op: "remove", Path: "/tmp"},
			JSONPatchOp{Op: "move", From: "/a", Path: "/b"},
			JSONPatchOp{Op: "copy", From: "/b", Path: "/c"},
			JSONPatchOp{Op: "test", Path: "/files", Value: 4},
		),
		"custom":         AgUiCustom("deploy", map[string]any{"env": "prod"}),
		"custom_null":    AgUiCustom("cleared", nil),
		"progress":       AgUiProgressEvent(AgUiProgress{Done: 3, Total: AgUiTotal(10), Label: "Analyzing code... 3/10 files"}),
		"progress_count": AgUiProgressEvent(AgUiProgress{Done: 42}),
	}
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

func TestAgUiBuildersWriteWhatTheAgUiPackageWrites(t *testing.T) {
	raw, err := os.ReadFile("testdata/agui_events.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixtures struct {
		Events map[string]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(raw, &fixtures); err != nil {
		t.Fatal(err)
	}
	built := aguiBuilt()
	if len(fixtures.Events) != len(built) {
		t.Fatalf("%d fixtures, %d builder calls: regenerate testdata (testdata/agui_fixtures.py) or add the call", len(fixtures.Events), len(built))
	}
	for name, want := range fixtures.Events {
		ev, ok := built[name]
		if !ok {
			t.Errorf("%s: no builder call for this fixture", name)
			continue
		}
		got, err := marshalJSON(ev.Data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(jsonValue(t, got), jsonValue(t, want)) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		var head struct{ Type string }
		_ = json.Unmarshal(got, &head)
		if ev.Kind != head.Type || ev.ID != "" {
			t.Errorf("%s: kind %q, type %q, id %q", name, ev.Kind, head.Type, ev.ID)
		}
		if bytes.Contains(got, []byte("null")) && name != "custom_null" && name != "state_delta" && name != "state_snapshot" {
			t.Errorf("%s: an optional field written as null: %s", name, got)
		}
	}
}

func TestAgUiProgressIsTheEventOfDocsAgui(t *testing.T) {
	doc, err := os.ReadFile("../../docs/agui.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Progress with an ETA.*?```json\n(.*?)\n```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/agui.md has no progress example")
	}
	ev := AgUiProgressEvent(AgUiProgress{Done: 3, Total: AgUiTotal(10), Label: "Analyzing code... 3/10 files"})
	got, _ := marshalJSON(ev.Data)
	if !reflect.DeepEqual(jsonValue(t, got), jsonValue(t, m[1])) {
		t.Fatalf("got %s\nthe doc has %s", got, m[1])
	}
}

func TestPublishAgUiSendsARunInOrderKeyedByRunAndCounter(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	ctx := context.Background()
	result := strings.Repeat("src/main.go: 漢字 \"ok\" 🙂\n", 8000) // over 96 KiB of JSON
	first := []BatchEvent{AgUiRunStarted("agent-1", "run-7"), AgUiStepStarted("search")}
	for i := range 12 {
		first = append(first, AgUiProgressEvent(AgUiProgress{Done: float64(i + 1), Total: AgUiTotal(12)}))
	}
	if err := p.PublishAgUi(ctx, "agent-1", first...); err != nil {
		t.Fatal(err)
	}
	second := []BatchEvent{
		AgUiToolCallStart("c1", "search", ""),
		AgUiToolCallResult("t1", "c1", result),
		AgUiStepFinished("search"),
		AgUiRunFinished("agent-1", "run-7", map[string]any{"files": 8000}),
		AgUiRunStarted("agent-1", "run-8"),
	}
	if err := p.PublishAgUi(ctx, "agent-1", second...); err != nil {
		t.Fatal(err)
	}
	for _, b := range f.batches {
		if len(b) > MaxBatchEvents {
			t.Fatalf("a batch of %d", len(b))
		}
	}
	sent := append(append([]BatchEvent(nil), first...), second...)
	var wantIDs []string
	for i := range 18 {
		wantIDs = append(wantIDs, fmt.Sprintf("run-7:%d", i+1))
	}
	wantIDs = append(wantIDs, "run-8:1")
	got := replay(f.log["agent-1"])
	if len(got) != len(sent) {
		t.Fatalf("%d events read back, %d sent: %s", len(got), len(sent), describe(got))
	}
	for i, ev := range got {
		want, _ := marshalJSON(sent[i].Data)
		var kind, id string
		var data []byte
		switch e := ev.(type) {
		case *Event:
			kind, id, data = e.Kind, e.ID, e.Data
		case *Message:
			kind, id, data = e.Kind, e.ID, e.Data
			if e.Encoding != EncodingJSON || sent[i].Kind != AgUiToolCallResultType {
				t.Fatalf("message %d: %s %s", i, e.Kind, e.Encoding)
			}
		default:
			t.Fatalf("%d: %T", i, ev)
		}
		if kind != sent[i].Kind || id != wantIDs[i] || sent[i].ID != wantIDs[i] || !reflect.DeepEqual(jsonValue(t, data), jsonValue(t, want)) {
			t.Fatalf("%d: %s %s (want %s %s, key written %q)", i, kind, id, sent[i].Kind, wantIDs[i], sent[i].ID)
		}
	}
	if chunks := len(f.log["agent-1"]) - len(sent) + 1; chunks < 3 {
		t.Fatalf("the tool result went as %d chunks", chunks)
	}
}

// failNth fails the nth request it carries (from 1) as a lost connection.
type failNth struct {
	n, seen int
	mu      sync.Mutex
}

func (f *failNth) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.seen++
	fail := f.seen == f.n
	f.mu.Unlock()
	if fail {
		return nil, errors.New("connection reset")
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestPublishAgUiAgainAfterAFailureCommitsEachEventOnce(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := &Publisher{URL: srv.URL, Token: "tok", HTTPClient: &http.Client{Transport: &failNth{n: 2}}}
	ctx := context.Background()
	run := []BatchEvent{AgUiRunStarted("agent-1", "r"), AgUiTextMessageStart("m", ""), AgUiTextMessageContent("m", "hi"), AgUiTextMessageEnd("m")}
	for range 10 {
		run = append(run, AgUiCustom("tick", nil))
	}
	run = append(run, AgUiRunFinished("agent-1", "r", nil))
	var e *Error
	if err := p.PublishAgUi(ctx, "agent-1", run...); !errors.As(err, &e) || e.Code != CodeNetwork {
		t.Fatalf("%v", err)
	}
	if n := len(f.log["agent-1"]); n != MaxBatchEvents {
		t.Fatalf("%d events committed before the failure", n)
	}
	// The first batch went, the second did not: the same slice again.
	if err := p.PublishAgUi(ctx, "agent-1", run...); err != nil {
		t.Fatal(err)
	}
	log := f.log["agent-1"]
	if len(log) != len(run) {
		t.Fatalf("%d events committed, %d published", len(log), len(run))
	}
	for i, ev := range log {
		if ev.ID != fmt.Sprintf("r:%d", i+1) || ev.Kind != run[i].Kind {
			t.Fatalf("%d: %s %s", i, ev.ID, ev.Kind)
		}
	}
}

func TestPublishAgUiWithRetriesResendsTheSameKeys(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := &Publisher{URL: srv.URL, Token: "tok", Retries: 2}
	f.fail = []int{500}
	if err := p.PublishAgUi(context.Background(), "agent-1", AgUiRunStarted("agent-1", "r2"), AgUiRunError("boom", "")); err != nil {
		t.Fatal(err)
	}
	if f.reqs != 2 || len(f.log["agent-1"]) != 2 || f.log["agent-1"][1].ID != "r2:2" {
		t.Fatalf("%d requests, log %+v", f.reqs, f.log["agent-1"])
	}
}

func TestPublishAgUiRefusesWhatIsNotAnAgUiEventOfItsKind(t *testing.T) {
	f, srv := newFakeAPI(t)
	p := NewPublisher(srv.URL, "tok")
	for _, ev := range []BatchEvent{
		{Kind: AgUiRunStartedType, Data: map[string]any{"type": AgUiRunFinishedType, "threadId": "t", "runId": "r"}},
		{Kind: AgUiCustomType, Data: "CUSTOM"},
		{Kind: AgUiCustomType, Data: map[string]any{"name": "x", "value": 1}},
		{Kind: "", Data: map[string]any{"type": ""}},
		{Kind: AgUiCustomType, Data: func() {}},
	} {
		var e *Error
		if err := p.PublishAgUi(context.Background(), "agent-1", AgUiStepStarted("ok"), ev); !errors.As(err, &e) || e.Code != CodeConfig {
			t.Fatalf("%+v: %v", ev, err)
		}
	}
	if f.reqs != 0 {
		t.Fatalf("%d requests", f.reqs)
	}
}
