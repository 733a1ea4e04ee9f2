package agentwire

// Runs every conformance scenario (../../conformance/scenarios/*.json)
// against an in-process scripted gateway, exactly as conformance/README.md
// says, and checks the reconnect schedule in conformance/backoff.json.
// AGENTWIRE_CONFORMANCE_DIR points the runner at another copy.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const stepTimeout = 5 * time.Second

func conformanceDir(t testing.TB) string {
	if d := os.Getenv("AGENTWIRE_CONFORMANCE_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "conformance"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type scenario struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Client      struct {
		Channels []struct {
			Name  string          `json:"name"`
			Since json.RawMessage `json:"since"`
		} `json:"channels"`
		Token          *string  `json:"token"`
		Tokens         []string `json:"tokens"`
		AckDebounceMs  *float64 `json:"ackDebounceMs"`
		MinReconnectMs *float64 `json:"minReconnectMs"`
		MaxReconnectMs *float64 `json:"maxReconnectMs"`
		MaxAttempts    *int     `json:"maxAttempts"`
		Jitter         *float64 `json:"jitter"`
		HoleGraceMs    *float64 `json:"holeGraceMs"`
	} `json:"client"`
	Script []map[string]json.RawMessage `json:"script"`
}

func loadScenarios(t *testing.T) []scenario {
	dir := filepath.Join(conformanceDir(t), "scenarios")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in %s: %v", dir, err)
	}
	sort.Strings(files)
	var out []scenario
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s scenario
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if s.Name == "" {
			s.Name = strings.TrimSuffix(filepath.Base(f), ".json")
		}
		out = append(out, s)
	}
	return out
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func sinceOf(t testing.TB, raw json.RawMessage) Since {
	if len(raw) == 0 {
		return SinceCursor()
	}
	var s Since
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("since %s: %v", raw, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	for _, s := range loadScenarios(t) {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			runScenario(t, s)
		})
	}
}

// observer turns the client's events into the README's observations, in
// the order the client produces them.
type observer struct {
	events <-chan ClientEvent
	queue  []map[string]any
	ended  bool
}

func (o *observer) next(deadline time.Time) (map[string]any, error) {
	for len(o.queue) == 0 {
		if o.ended {
			return nil, errors.New("the client's event stream ended")
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case ev, ok := <-o.events:
			timer.Stop()
			if !ok {
				o.ended = true
				continue
			}
			o.queue = append(o.queue, observations(ev)...)
		case <-timer.C:
			return nil, errors.New("timed out")
		}
	}
	ob := o.queue[0]
	o.queue = o.queue[1:]
	return ob, nil
}

// endsWithin says whether the stream ends with nothing more observable.
func (o *observer) endsWithin(deadline time.Time) error {
	if len(o.queue) > 0 {
		return fmt.Errorf("observed after the end: %v", o.queue[0])
	}
	for !o.ended {
		timer := time.NewTimer(time.Until(deadline))
		select {
		case ev, ok := <-o.events:
			timer.Stop()
			if !ok {
				o.ended = true
				break
			}
			return fmt.Errorf("an event after the fatal error: %#v", ev)
		case <-timer.C:
			return errors.New("the stream did not end")
		}
	}
	return nil
}

func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func observations(ev ClientEvent) []map[string]any {
	switch e := ev.(type) {
	case *Joined:
		var out []map[string]any
		for _, c := range e.Channels {
			o := map[string]any{
				"channel": c.Name, "epoch": c.Epoch, "head": c.Head, "replayed": c.Replayed, "recovered": c.Recovered,
			}
			if p, ok := e.Presence[c.Name]; ok {
				o["presence"] = p
			}
			if h := e.Health; h != nil {
				health := map[string]any{"server": h.Server, "protocol": h.Protocol, "time": h.Time}
				if ch, ok := h.Channels[c.Name]; ok {
					health["head"] = ch.Head
					if ch.Oldest != nil {
						health["oldest"] = *ch.Oldest
					}
				}
				o["health"] = health
			}
			out = append(out, map[string]any{"joined": normalize(o)})
		}
		return out
	case *Resynced:
		return []map[string]any{{"resync": map[string]any{"channel": e.Channel}}}
	case *Event:
		return []map[string]any{{"event": normalize(e)}}
	case *Gap:
		return []map[string]any{{"gap": normalize(e)}}
	case *Message:
		var data any
		switch e.Encoding {
		case EncodingJSON:
			data = json.RawMessage(e.Data)
		case EncodingUTF8:
			data = string(e.Data)
		default:
			data = base64.StdEncoding.EncodeToString(e.Data)
		}
		return []map[string]any{{"message": normalize(map[string]any{
			"channel": e.Channel, "id": e.ID, "kind": e.Kind, "seq": e.Seq, "encoding": e.Encoding, "data": data,
		})}}
	case *MessageLost:
		return []map[string]any{{"message_lost": normalize(map[string]any{"channel": e.Channel, "id": e.ID, "reason": e.Reason})}}
	case *ErrorEvent:
		if e.Fatal() {
			return []map[string]any{{"fatal": map[string]any{"code": e.Err.Code}}}
		}
	}
	return nil
}

// mismatch says how value fails to match pattern by subset ("" if it matches).
func mismatch(pattern, value any, path string) string {
	if s, ok := pattern.(string); ok && s == "*" {
		if value == nil {
			return path + ": absent"
		}
		return ""
	}
	switch p := pattern.(type) {
	case map[string]any:
		v, ok := value.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: want an object, got %v", path, value)
		}
		for k, pv := range p {
			vv, present := v[k]
			if !present {
				return fmt.Sprintf("%s.%s: absent", path, k)
			}
			if m := mismatch(pv, vv, path+"."+k); m != "" {
				return m
			}
		}
		return ""
	case []any:
		v, ok := value.([]any)
		if !ok || len(v) != len(p) {
			return fmt.Sprintf("%s: want %v, got %v", path, p, value)
		}
		for i := range p {
			if m := mismatch(p[i], v[i], fmt.Sprintf("%s[%d]", path, i)); m != "" {
				return m
			}
		}
		return ""
	}
	if !reflect.DeepEqual(pattern, value) {
		return fmt.Sprintf("%s: want %v, got %v", path, pattern, value)
	}
	return ""
}

// substitute replaces "$id" and "$now+N" in a frame to send.
func substitute(v any, id string, now time.Time) any {
	switch x := v.(type) {
	case string:
		if x == "$id" {
			return id
		}
		if n, ok := strings.CutPrefix(x, "$now+"); ok {
			if secs, err := strconv.Atoi(n); err == nil {
				return now.Unix() + int64(secs)
			}
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = substitute(e, id, now)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = substitute(e, id, now)
		}
		return out
	}
	return v
}

// stateObservation is a state change as a `state` observation.
func stateObservation(c StateChange) map[string]any {
	o := map[string]any{"previous": string(c.Previous), "current": string(c.Current), "reason": c.Reason}
	if c.Current == StateReconnecting && (c.Attempt > 0 || c.Delay > 0) {
		o["attempt"] = c.Attempt
		o["delay_ms"] = float64(c.Delay) / float64(time.Millisecond)
	}
	if c.Err != nil {
		o["error"] = map[string]any{"code": c.Err.Code}
	}
	return map[string]any{"state": normalize(o)}
}

func runScenario(t *testing.T, s scenario) {
	srv := newScriptedServer(t)
	// State changes: a sequence of their own (conformance/README.md).
	states := make(chan map[string]any, 256)
	opts := Options{
		MinReconnectDelay: 10 * time.Millisecond,
		MaxReconnectDelay: 40 * time.Millisecond,
		PingInterval:      60 * time.Second,
		MaxConnectionAge:  -1,
		AckDebounce:       -1,
	}
	c := s.Client
	if c.MinReconnectMs != nil {
		opts.MinReconnectDelay = ms(*c.MinReconnectMs)
	}
	if c.MaxReconnectMs != nil {
		opts.MaxReconnectDelay = ms(*c.MaxReconnectMs)
	}
	if c.MaxAttempts != nil {
		opts.MaxAttempts = *c.MaxAttempts
	}
	if c.Jitter != nil {
		opts.JitterFraction = *c.Jitter
		if *c.Jitter == 0 {
			opts.JitterFraction = -1 // none: a zero JitterFraction means the default
		}
	}
	opts.OnStateChange = func(ch StateChange) {
		select {
		case states <- stateObservation(ch):
		default:
			t.Errorf("more than %d state changes", cap(states))
		}
	}
	if c.HoleGraceMs != nil {
		opts.HoleGrace = ms(*c.HoleGraceMs)
	}
	if c.AckDebounceMs != nil {
		opts.AckDebounce = ms(*c.AckDebounceMs)
	}
	if c.Tokens != nil {
		var mu sync.Mutex
		tokens := slicesClone(c.Tokens)
		opts.TokenProvider = func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if len(tokens) == 0 {
				return "", errors.New("the scenario's token list is used up")
			}
			tok := tokens[0]
			tokens = tokens[1:]
			return tok, nil
		}
	} else if c.Token != nil {
		opts.Token = *c.Token
	} else {
		opts.Token = "t"
	}
	for _, ch := range c.Channels {
		opts.Channels = append(opts.Channels, ChannelSpec{Name: ch.Name, Since: sinceOf(t, ch.Since)})
	}
	client, err := Connect(context.Background(), srv.wsURL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var acts sync.WaitGroup
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := client.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		acts.Wait()
	}()
	obs := &observer{events: client.Events()}
	var id string
	var conn *scriptedConn
	consumed := 0 // upgrades the script has taken
	stepDone := time.Now()
	for i, step := range s.Script {
		where := fmt.Sprintf("step %d %s", i, stepJSON(step))
		deadline := time.Now().Add(stepTimeout)
		switch {
		case step["accept"] != nil:
			var a struct {
				Token *string `json:"token"`
			}
			mustUnmarshal(t, step["accept"], &a)
			u := srv.nextUpgrade(t, deadline, where)
			consumed++
			if !u.offers(Subprotocol) {
				t.Fatalf("%s: the upgrade does not offer %s: %q", where, Subprotocol, u.r.Header.Values("Sec-WebSocket-Protocol"))
			}
			if a.Token != nil && u.token() != *a.Token {
				t.Fatalf("%s: the upgrade carries token %q, want %q", where, u.token(), *a.Token)
			}
			conn = srv.accept(t, u)
		case step["refuse"] != nil:
			var r struct {
				Status int             `json:"status"`
				Body   json.RawMessage `json:"body"`
			}
			mustUnmarshal(t, step["refuse"], &r)
			u := srv.nextUpgrade(t, deadline, where)
			consumed++
			u.refuse(r.Status, r.Body)
		case step["expect"] != nil:
			var pattern map[string]any
			mustUnmarshal(t, step["expect"], &pattern)
			if conn == nil {
				t.Fatalf("%s: no connection", where)
			}
			f := conn.next(t, deadline, where, pattern["action"] == "ping")
			var got map[string]any
			if err := json.Unmarshal(f.data, &got); err != nil {
				t.Fatalf("%s: the client sent %q: %v", where, f.data, err)
			}
			if m := mismatch(pattern, got, "frame"); m != "" {
				t.Fatalf("%s: the client sent %s: %s", where, f.data, m)
			}
			if raw, ok := step["notBeforeMs"]; ok {
				var n float64
				mustUnmarshal(t, raw, &n)
				if early := f.at.Sub(stepDone); early < ms(n) {
					t.Fatalf("%s: the frame came %v after the previous step, before %v ms", where, early, n)
				}
			}
			if v, ok := got["id"].(string); ok {
				id = v
			}
		case step["send"] != nil:
			var frame any
			mustUnmarshal(t, step["send"], &frame)
			if conn == nil {
				t.Fatalf("%s: no connection", where)
			}
			conn.send(t, substitute(frame, id, time.Now()))
		case step["drop"] != nil:
			conn.drop()
			conn = nil
		case step["close"] != nil:
			var cl struct {
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			}
			mustUnmarshal(t, step["close"], &cl)
			conn.close(cl.Code, cl.Reason)
			conn = nil
		case step["observe"] != nil:
			var pattern map[string]any
			mustUnmarshal(t, step["observe"], &pattern)
			var got map[string]any
			if _, state := pattern["state"]; state {
				select {
				case got = <-states:
				case <-time.After(time.Until(deadline)):
					t.Fatalf("%s: no state change within %v", where, stepTimeout)
				}
			} else {
				var err error
				if got, err = obs.next(deadline); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
			if m := mismatch(pattern, got, "observation"); m != "" {
				t.Fatalf("%s: observed %v: %s", where, got, m)
			}
			if _, fatal := pattern["fatal"]; fatal {
				if err := obs.endsWithin(deadline); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
			}
		case step["act"] != nil:
			act(t, client, step["act"], &acts, where)
		case step["no_connection"] != nil:
			if !obs.ended {
				t.Fatalf("%s: no_connection before the stream ended", where)
			}
			<-client.Done()
			if n := srv.attempts(); n != consumed {
				t.Fatalf("%s: the client opened %d connections, the script took %d", where, n, consumed)
			}
		default:
			t.Fatalf("%s: unknown step", where)
		}
		stepDone = time.Now()
	}
}

func act(t *testing.T, client *Client, raw json.RawMessage, acts *sync.WaitGroup, where string) {
	var a map[string]json.RawMessage
	mustUnmarshal(t, raw, &a)
	var arg struct {
		Channel string          `json:"channel"`
		Since   json.RawMessage `json:"since"`
	}
	for k, v := range a {
		mustUnmarshal(t, v, &arg)
		var err error
		switch k {
		case "close":
			acts.Add(1)
			go func() {
				defer acts.Done()
				ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
				defer cancel()
				if err := client.Close(ctx); err != nil {
					t.Errorf("%s: %v", where, err)
				}
			}()
		case "leave":
			err = client.Leave(arg.Channel)
		case "pause":
			err = client.Pause(arg.Channel)
		case "resume":
			err = client.Resume(arg.Channel)
		case "join":
			err = client.Join(arg.Channel, sinceOf(t, arg.Since))
		case "resync":
			if arg.Channel == "" {
				err = client.ResyncAll()
			} else {
				err = client.Resync(arg.Channel)
			}
		default:
			t.Fatalf("%s: unknown act %q", where, k)
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	}
}

func mustUnmarshal(t testing.TB, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
}

func stepJSON(step map[string]json.RawMessage) string {
	b, _ := json.Marshal(step)
	return truncate(string(b), 160)
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

func TestBackoffSchedule(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(conformanceDir(t), "backoff.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		MinMs    float64   `json:"min_ms"`
		MaxMs    float64   `json:"max_ms"`
		Ceilings []float64 `json:"ceilings_ms"`
		Draws    []struct {
			Attempt int     `json:"attempt"`
			Unit    float64 `json:"unit"`
			DelayMs float64 `json:"delay_ms"`
		} `json:"draws"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	if len(spec.Ceilings) == 0 || len(spec.Draws) == 0 {
		t.Fatal("backoff.json has no ceilings or draws")
	}
	bo := Backoff{Min: ms(spec.MinMs), Max: ms(spec.MaxMs)}
	for n, want := range spec.Ceilings {
		if got := bo.Ceiling(); got != ms(want) {
			t.Errorf("ceiling before attempt %d: %v, want %v ms", n+1, got, want)
		}
		if _, ok := bo.Next(0.5); !ok {
			t.Fatal("no attempt cap was set")
		}
	}
	for _, d := range spec.Draws {
		bo := Backoff{Min: ms(spec.MinMs), Max: ms(spec.MaxMs)}
		for range d.Attempt - 1 {
			bo.Next(0)
		}
		got, _ := bo.Next(d.Unit)
		if got != ms(d.DelayMs) {
			t.Errorf("attempt %d with unit %v: %v, want %v ms", d.Attempt, d.Unit, got, d.DelayMs)
		}
	}
	var jitter struct {
		Draws []struct {
			Attempt int     `json:"attempt"`
			Unit    float64 `json:"unit"`
			Jitter  float64 `json:"jitter"`
			DelayMs float64 `json:"delay_ms"`
		} `json:"jitter_draws"`
	}
	if err := json.Unmarshal(b, &jitter); err != nil || len(jitter.Draws) == 0 {
		t.Fatalf("backoff.json has no jitter_draws: %v", err)
	}
	for _, d := range jitter.Draws {
		bo := Backoff{Min: ms(spec.MinMs), Max: ms(spec.MaxMs), JitterFraction: d.Jitter}
		if d.Jitter == 0 {
			bo.JitterFraction = -1 // none
		}
		for range d.Attempt - 1 {
			bo.Next(0)
		}
		if got, _ := bo.Next(d.Unit); got != ms(d.DelayMs) {
			t.Errorf("attempt %d, unit %v, jitter %v: %v, want %v ms", d.Attempt, d.Unit, d.Jitter, got, d.DelayMs)
		}
	}
	// Defaults: the same schedule.
	o := Options{Token: "t"}.withDefaults()
	if o.MinReconnectDelay != ms(spec.MinMs) || o.MaxReconnectDelay != ms(spec.MaxMs) {
		t.Errorf("default delays %v..%v, want backoff.json's", o.MinReconnectDelay, o.MaxReconnectDelay)
	}
	capped := Backoff{Min: time.Millisecond, Max: time.Second, MaxAttempts: 2}
	capped.Next(1)
	capped.Next(1)
	if _, ok := capped.Next(1); ok {
		t.Error("a third attempt past MaxAttempts 2")
	}
}
