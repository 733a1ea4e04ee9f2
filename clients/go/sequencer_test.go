package agentwire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The Rust sequencer's tests (clients/rust/src/sequencer.rs), ported.

func ev(seq uint64) *Event {
	return &Event{Channel: "c", Epoch: "e1", Seq: seq, ID: "i", Kind: "k", Data: json.RawMessage("null"), Ts: "t"}
}

// flat lists delivered seqs, gaps as -from.
func flat(ds []delivery) []int64 {
	out := []int64{}
	for _, d := range ds {
		switch x := d.(type) {
		case *Event:
			out = append(out, int64(x.Seq))
		case *Gap:
			out = append(out, -int64(x.From))
		}
	}
	return out
}

func resuming(epoch string, last uint64) *sequencer {
	s := newSequencer("c", 0, 0)
	s.resume(epoch, last)
	return s
}

func eq(t *testing.T, got, want []int64, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func u64(n uint64) *uint64 { return &n }

func TestSequencerLiveEventThatOvertakesTheReplayWaits(t *testing.T) {
	s := resuming("e1", 5)
	out := flat(s.event(ev(11)))
	out = append(out, flat(s.joined("e1", 10, 5, nil))...)
	for q := uint64(6); q <= 10; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{6, 7, 8, 9, 10, 11}, "delivered")
	if s.last != 11 || s.held() != 0 {
		t.Fatalf("last %d held %d", s.last, s.held())
	}
}

func TestSequencerGapNeverCoversDeliveredOrHeld(t *testing.T) {
	s := resuming("e1", 21)
	s.rejoining()
	out := flat(s.event(ev(22)))
	out = append(out, flat(s.joined("e1", 22, 0, nil))...)
	out = append(out, flat(s.gap(22, 22))...)
	eq(t, out, []int64{22}, "22 arrived: no gap")
	out = flat(s.gap(20, 25))
	out = append(out, flat(s.event(ev(26)))...)
	eq(t, out, []int64{-23, 26}, "cut to what is missing")
	s = resuming("e1", 5)
	s.joined("e1", 10, 0, nil)
	if len(s.event(ev(9))) != 0 {
		t.Fatal("9 should be held")
	}
	eq(t, flat(s.gap(6, 9)), []int64{-6, 9}, "held event ends the gap")
}

func TestSequencerLiveEventsThatOvertakeJoinedAreNoReset(t *testing.T) {
	s := resuming("e1", 21)
	s.rejoining()
	out := flat(s.event(ev(22)))
	out = append(out, flat(s.joined("e1", 21, 0, nil))...)
	out = append(out, flat(s.event(ev(23)))...)
	eq(t, out, []int64{22, 23}, "no gap, no repeat")
}

func TestSequencerEmptyEpochAdoptsTheFirstLog(t *testing.T) {
	s := newSequencer("c", 0, 0)
	if len(s.joined("", 0, 0, nil)) != 0 {
		t.Fatal("nothing to deliver")
	}
	out := flat(s.event(ev(1)))
	out = append(out, flat(s.event(ev(2)))...)
	eq(t, out, []int64{1, 2}, "delivered")
	if s.epoch != "e1" {
		t.Fatalf("epoch %q", s.epoch)
	}
}

func TestSequencerDuplicatesOnce(t *testing.T) {
	s := resuming("e1", 0)
	s.joined("e1", 3, 3, nil)
	var out []int64
	for _, q := range []uint64{1, 2, 2, 1, 3, 3} {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{1, 2, 3}, "once each")
}

func TestSequencerHoleAsksForRejoinNeverAGap(t *testing.T) {
	s := resuming("e1", 4)
	s.joined("e1", 4, 0, nil)
	eq(t, flat(s.event(ev(5))), []int64{5}, "5")
	if s.wantsRejoin() {
		t.Fatal("no hole yet")
	}
	if len(s.event(ev(8))) != 0 {
		t.Fatal("8 held")
	}
	if !s.wantsRejoin() || s.last != 5 {
		t.Fatal("6 and 7 are in the log: join again from 5")
	}
	s.rejoining()
	if s.wantsRejoin() {
		t.Fatal("a join is under way")
	}
	s.event(ev(9))
	out := flat(s.joined("e1", 8, 3, nil))
	for q := uint64(6); q <= 8; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{6, 7, 8, 9}, "filled")
	if s.wantsRejoin() || s.held() != 0 {
		t.Fatal("done")
	}
}

func TestSequencerReplayPageContinuesFromItsEnd(t *testing.T) {
	s := resuming("e1", 0)
	out := flat(s.joined("e1", 10, 4, u64(4)))
	for q := uint64(1); q <= 3; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	if s.wantsRejoin() {
		t.Fatal("the page is not complete yet")
	}
	out = append(out, flat(s.event(ev(4)))...)
	if !s.wantsRejoin() {
		t.Fatal("5..=10 are still to come")
	}
	s.rejoining()
	out = append(out, flat(s.joined("e1", 10, 6, nil))...)
	for q := uint64(5); q <= 10; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "all pages")
}

func TestSequencerNewClientStartsWhereTheReplayStarts(t *testing.T) {
	s := newSequencer("c", 0, 0)
	s.joined("e1", 20, 0, nil)
	eq(t, flat(s.event(ev(21))), []int64{21}, "head")
	s = newSequencer("c", 0, 0)
	s.joined("e1", 20, 5, nil)
	var out []int64
	for q := uint64(16); q <= 21; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{16, 17, 18, 19, 20, 21}, "replay")
}

func TestSequencerAnotherEpochRestarts(t *testing.T) {
	s := resuming("old", 50)
	s.joined("e1", 3, 3, nil)
	var out []int64
	for q := uint64(1); q <= 3; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{1, 2, 3}, "new log")
}

func TestSequencerHeldEventsBoundedByCount(t *testing.T) {
	s := newSequencer("c", 3, 0)
	s.resume("e1", 0)
	s.joined("e1", 0, 0, nil)
	for _, q := range []uint64{50, 51, 52} {
		s.event(ev(q))
	}
	if s.held() != 3 {
		t.Fatalf("held %d", s.held())
	}
	if len(s.event(ev(53))) != 0 || s.held() != 0 || s.pendingBytes != 0 {
		t.Fatal("one too many: all dropped, no gap")
	}
	if !s.wantsRejoin() {
		t.Fatal("fetched again by a re-join")
	}
}

func TestSequencerHeldEventsBoundedByBytes(t *testing.T) {
	big := func(q uint64) *Event {
		e := ev(q)
		e.Data = json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)
		return e
	}
	s := newSequencer("c", 0, 3500)
	s.resume("e1", 0)
	s.joined("e1", 0, 0, nil)
	for q := uint64(2); q <= 4; q++ {
		s.event(big(q))
	}
	if s.held() != 3 {
		t.Fatalf("held %d", s.held())
	}
	s.event(big(5))
	if s.held() != 0 || !s.wantsRejoin() {
		t.Fatal("over 3500 bytes: dropped, re-join")
	}
	s.rejoining()
	out := flat(s.joined("e1", 5, 5, nil))
	for q := uint64(1); q <= 5; q++ {
		out = append(out, flat(s.event(big(q)))...)
	}
	eq(t, out, []int64{1, 2, 3, 4, 5}, "refetched")
}

func TestSequencerAfterReconnectEarlyEventsWait(t *testing.T) {
	s := resuming("e1", 0)
	s.joined("e1", 2, 2, nil)
	s.event(ev(1))
	s.event(ev(2))
	s.rejoining()
	if len(s.event(ev(9))) != 0 {
		t.Fatal("held: the replay may bring 3..=8")
	}
	out := flat(s.joined("e1", 8, 6, nil))
	for q := uint64(3); q <= 8; q++ {
		out = append(out, flat(s.event(ev(q)))...)
	}
	eq(t, out, []int64{3, 4, 5, 6, 7, 8, 9}, "in order")
}
