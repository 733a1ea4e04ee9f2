package agentwire

import "sort"

// Default bounds on the events one channel holds while waiting for earlier
// seqs; over either, the held events are dropped and fetched again from
// the log by a re-join (never turned into a gap).
const (
	DefaultMaxHeldEvents     = 10_000
	DefaultMaxHeldEventBytes = 32 * 1024 * 1024
)

// delivery is an *Event or a *Gap, in the order the application gets them.
type delivery = ClientEvent

// sequencer is one channel's delivery order: each seq exactly once, in
// order. The gateway subscribes before it replays, so a live event may
// overtake the replay (even the joined answer) and a seq may come twice.
// Only the gateway's gap frame becomes a Gap; a hole in the live stream, a
// replay page that stops short of the head, or held events dropped to stay
// bounded make the channel want a re-join from last (wantsRejoin).
type sequencer struct {
	channel string
	epoch   string
	hasEp   bool
	last    uint64
	hasLast bool
	// Where the current replay ends.
	replayUntil uint64
	// The highest seq known to exist in this epoch.
	known uint64
	// A join was sent and its joined has not come.
	awaitingJoin bool
	pending      map[uint64]*Event
	order        []uint64 // the held seqs, ascending
	pendingBytes int
	maxPending   int
	maxBytes     int
}

func newSequencer(channel string, maxPending, maxBytes int) *sequencer {
	if maxPending <= 0 {
		maxPending = DefaultMaxHeldEvents
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxHeldEventBytes
	}
	return &sequencer{channel: channel, awaitingJoin: true, pending: map[uint64]*Event{}, maxPending: maxPending, maxBytes: maxBytes}
}

// resume sets a position the client kept.
func (s *sequencer) resume(epoch string, last uint64) {
	s.epoch, s.hasEp = epoch, true
	s.last, s.hasLast = last, true
}

// position is where a re-join resumes, once the channel's log is known.
func (s *sequencer) position() (Position, bool) {
	if s.hasEp && s.hasLast {
		return Position{Epoch: s.epoch, Seq: s.last}, true
	}
	return Position{}, false
}

func (s *sequencer) rejoining() { s.awaitingJoin = true }

func (s *sequencer) wantsRejoin() bool {
	return s.hasLast && !s.awaitingJoin && s.last >= s.replayUntil && s.last < s.known
}

func (s *sequencer) joined(epoch string, head, replayed uint64, until *uint64) []delivery {
	end := head
	if until != nil && *until < head {
		end = *until
	}
	sameLog := s.hasEp && s.epoch == epoch && s.hasLast
	if !sameLog {
		s.retain(func(e *Event) bool { return e.Epoch == epoch })
		if end >= replayed {
			s.last = end - replayed
		} else {
			s.last = 0
		}
		s.hasLast = true
		s.known = 0
	}
	s.epoch, s.hasEp = epoch, true
	s.replayUntil = end
	s.known = max(s.known, head)
	if n := len(s.order); n > 0 {
		s.known = max(s.known, s.order[n-1])
	}
	s.awaitingJoin = false
	return s.drain(nil)
}

func (s *sequencer) gap(from, to uint64) []delivery {
	if s.hasLast {
		from = max(from, s.last+1)
	}
	if from > to {
		return s.drain(nil)
	}
	// A held event inside the range is here after all: the gap ends before it.
	i := sort.Search(len(s.order), func(i int) bool { return s.order[i] >= from })
	if i < len(s.order) && s.order[i] <= to {
		to = s.order[i] - 1
	}
	var out []delivery
	if from <= to {
		out = append(out, &Gap{Channel: s.channel, From: from, To: to})
		s.last, s.hasLast = to, true
	}
	return s.drain(out)
}

func (s *sequencer) event(e *Event) []delivery {
	if s.hasEp && s.epoch == "" && s.hasLast && s.last == 0 {
		// Joined before the channel had a log: the first log is this one.
		s.epoch = e.Epoch
	}
	if s.hasEp && s.epoch != e.Epoch && s.hasLast {
		// Another incarnation of the log: the next joined decides.
		s.hold(e)
		return nil
	}
	if !s.hasLast {
		s.hold(e)
		return nil
	}
	if e.Seq <= s.last {
		return nil
	}
	s.known = max(s.known, e.Seq)
	if e.Seq == s.last+1 {
		s.last = e.Seq
		return s.drain([]delivery{e})
	}
	s.hold(e)
	return nil
}

func (s *sequencer) hold(e *Event) {
	if _, ok := s.pending[e.Seq]; ok {
		return
	}
	if s.hasEp && s.epoch == e.Epoch {
		s.known = max(s.known, e.Seq)
	}
	s.pending[e.Seq] = e
	i := sort.Search(len(s.order), func(i int) bool { return s.order[i] >= e.Seq })
	s.order = append(s.order, 0)
	copy(s.order[i+1:], s.order[i:])
	s.order[i] = e.Seq
	s.pendingBytes += e.approxLen()
	if len(s.order) > s.maxPending || s.pendingBytes > s.maxBytes {
		clear(s.pending)
		s.order = s.order[:0]
		s.pendingBytes = 0
	}
}

func (s *sequencer) retain(keep func(*Event) bool) {
	order := s.order[:0]
	s.pendingBytes = 0
	for _, q := range s.order {
		e := s.pending[q]
		if keep(e) {
			order = append(order, q)
			s.pendingBytes += e.approxLen()
		} else {
			delete(s.pending, q)
		}
	}
	s.order = order
}

func (s *sequencer) drain(out []delivery) []delivery {
	if !s.hasLast {
		return out
	}
	n := 0
	for n < len(s.order) && s.order[n] <= s.last+1 {
		q := s.order[n]
		e := s.pending[q]
		delete(s.pending, q)
		s.pendingBytes -= e.approxLen()
		if q == s.last+1 {
			out = append(out, e)
			s.last = q
		}
		n++
	}
	if n > 0 {
		s.order = append(s.order[:0], s.order[n:]...)
	}
	return out
}

func (s *sequencer) held() int { return len(s.order) }
