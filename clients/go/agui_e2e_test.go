package agentwire

// AG-UI over agentwire end to end (docs/agui.md): a run published with the
// AgUi* builders and PublishAgUi through the dev gateway, seen by a
// subscriber and read back over HTTP history (the chunked tool result
// reassembled), each event the JSON that was sent. Runs with the other
// end-to-end tests (AGENTWIRE_E2E=1; see e2e_test.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestE2EAgUiRunIsReadBackAsPublished(t *testing.T) {
	s := newStack(t)
	// A queue with a longer visibility timeout than newStack's: on a busy
	// machine the gateway may take more than a few seconds to commit what
	// it received, and a message seen again meanwhile would be committed
	// out of order.
	queue := s.ownQueue(30)
	gw := &gateway{s: s, port: freePort(t), env: []string{"AGENTWIRE_EVENTS_QUEUE=" + queue}}
	gw.start()
	defer func() {
		if t.Failed() {
			t.Logf("agentwire-local:\n%s", gw.log.String())
		}
	}()
	defer gw.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	channel := "agent-agui-" + randomHex(3)
	tok, err := s.token(ctx, "agent", "agent-*", "agent-*")
	if err != nil {
		t.Fatal(err)
	}
	client, err := Connect(ctx, gw.ws(), Options{Token: tok, Channels: []ChannelSpec{{Name: channel, Since: SinceHead()}}})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(client)
	defer func() { _ = closeAndDrain(client, col) }()
	col.until(t, 20*time.Second, "joined", func(evs []ClientEvent) bool { return count[*Joined](evs) >= 1 })

	runID := "go-run-" + randomHex(4)
	result := strings.Repeat("src/main.go: 漢字 «ok» 🙂 \"quoted\"\n", 6000) // over 96 KiB
	run := []BatchEvent{
		AgUiRunStarted(channel, runID),
		AgUiStepStarted("answer"),
		AgUiTextMessageStart("m1", "assistant"),
	}
	var text strings.Builder
	for i := range 12 {
		piece := fmt.Sprintf("token %d <&> ", i)
		text.WriteString(piece)
		run = append(run, AgUiTextMessageContent("m1", piece))
	}
	run = append(run,
		AgUiTextMessageEnd("m1"),
		AgUiStepFinished("answer"),
		AgUiToolCallStart("c1", "search", "m1"),
		AgUiToolCallArgs("c1", `{"q":`),
		AgUiToolCallArgs("c1", `"files"}`),
		AgUiToolCallEnd("c1"),
		AgUiToolCallResult("t1", "c1", result),
		AgUiStateSnapshot(map[string]any{"files": 6000, "done": []any{}}),
		AgUiStateDelta(JSONPatchOp{Op: "add", Path: "/done/-", Value: "search"}, JSONPatchOp{Op: "remove", Path: "/files"}),
		AgUiProgressEvent(AgUiProgress{Done: 1, Total: AgUiTotal(2), Label: "half"}),
		AgUiProgressEvent(AgUiProgress{Done: 2, Total: AgUiTotal(2)}),
		AgUiCustom("note", nil),
		AgUiRunFinished(channel, runID, map[string]any{"exitCode": 0}),
	)
	pub := &Publisher{URL: gw.http(), Token: tok, Retries: 3}
	// In two calls: the numbering goes on.
	if err := pub.PublishAgUi(ctx, channel, run[:20]...); err != nil {
		t.Fatal(err)
	}
	if err := pub.PublishAgUi(ctx, channel, run[20:]...); err != nil {
		t.Fatal(err)
	}
	// A commit the local endpoint fails (a busy moto takes tens of seconds
	// to commit a batch, and fails some) is retried once the message is
	// visible again (30 s): allow for a few.
	col.until(t, 5*time.Minute, "RUN_FINISHED", func(evs []ClientEvent) bool {
		for _, ev := range evs {
			if e, ok := ev.(*Event); ok && e.Kind == AgUiRunFinishedType {
				return true
			}
		}
		return false
	})

	// Over HTTP history, chunks reassembled.
	var log []Event
	after := uint64(0)
	for {
		page, err := pub.History(ctx, channel, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if page.Gap != nil {
			t.Fatalf("gap %+v", page.Gap)
		}
		log = append(log, page.Events...)
		if page.NextAfter == nil {
			break
		}
		after = *page.NextAfter
	}
	got := replay(log)
	if len(got) != len(run) {
		t.Fatalf("%d events read back, %d published: %s", len(got), len(run), describe(got))
	}
	if len(log) < len(run)+2 {
		t.Fatalf("the tool result went as %d chunks", len(log)-len(run)+1)
	}
	var seen strings.Builder
	for i, ev := range got {
		want, _ := marshalJSON(run[i].Data)
		var kind, id string
		var data []byte
		switch e := ev.(type) {
		case *Event:
			kind, id, data = e.Kind, e.ID, e.Data
		case *Message:
			kind, id, data = e.Kind, e.ID, e.Data
		default:
			t.Fatalf("%d: %T", i, ev)
		}
		// An event's id is its key behind the publisher's tag; a message's
		// id is its key.
		key := fmt.Sprintf("%s:%d", runID, i+1)
		if kind != run[i].Kind || (id != key && !strings.HasSuffix(id, "~"+key)) {
			t.Fatalf("%d: %s %s", i, kind, id)
		}
		if !reflect.DeepEqual(jsonValue(t, data), jsonValue(t, want)) {
			t.Fatalf("%d: %.200s\nwant %.200s", i, data, want)
		}
		if kind == AgUiTextMessageContentType {
			var d struct{ Delta string }
			_ = json.Unmarshal(data, &d)
			seen.WriteString(d.Delta)
		}
	}
	if seen.String() != text.String() {
		t.Fatalf("text %q", seen.String())
	}
	// The subscriber saw the same run, the result reassembled too.
	if n := count[*Message](col.snapshot()); n != 1 {
		t.Fatalf("%d messages: %s", n, describe(col.snapshot()))
	}
}
