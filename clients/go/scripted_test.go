package agentwire

// An in-process scripted gateway for the conformance runner and the unit
// tests: each upgrade waits until the test accepts or refuses it; an
// accepted connection's frames are timestamped as they arrive.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

type scriptedServer struct {
	srv      *httptest.Server
	upgrades chan *upgrade
	closed   chan struct{}
	count    atomic.Int64
	once     sync.Once
	mu       sync.Mutex
	conns    []*scriptedConn
}

type upgrade struct {
	w        http.ResponseWriter
	r        *http.Request
	finished chan struct{}
}

type arrived struct {
	data []byte
	at   time.Time
}

type scriptedConn struct {
	c      *websocket.Conn
	frames chan arrived
	done   chan struct{}
	wg     sync.WaitGroup
}

func newScriptedServer(t testing.TB) *scriptedServer {
	s := &scriptedServer{upgrades: make(chan *upgrade), closed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count.Add(1)
		u := &upgrade{w: w, r: r, finished: make(chan struct{})}
		select {
		case s.upgrades <- u:
		case <-s.closed:
			http.Error(w, "the script has ended", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-u.finished:
		case <-s.closed:
		}
	}))
	t.Cleanup(s.close)
	return s
}

func (s *scriptedServer) wsURL() string { return "ws" + strings.TrimPrefix(s.srv.URL, "http") }

func (s *scriptedServer) attempts() int { return int(s.count.Load()) }

func (s *scriptedServer) close() { s.once.Do(s.shutdown) }

func (s *scriptedServer) shutdown() {
	close(s.closed)
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	for _, c := range conns {
		c.drop()
	}
	s.srv.Close()
}

func (s *scriptedServer) nextUpgrade(t testing.TB, deadline time.Time, where string) *upgrade {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case u := <-s.upgrades:
		return u
	case <-timer.C:
		t.Fatalf("%s: no connection attempt", where)
		return nil
	}
}

func (u *upgrade) offers(protocol string) bool {
	for _, v := range u.r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == protocol {
				return true
			}
		}
	}
	return false
}

func (u *upgrade) token() string {
	if t, ok := strings.CutPrefix(u.r.Header.Get("Authorization"), "Bearer "); ok {
		return t
	}
	return u.r.URL.Query().Get("token")
}

func (u *upgrade) refuse(status int, body []byte) {
	u.w.Header().Set("Content-Type", "application/json")
	u.w.WriteHeader(status)
	_, _ = u.w.Write(body)
	close(u.finished)
}

func (s *scriptedServer) accept(t testing.TB, u *upgrade) *scriptedConn {
	t.Helper()
	c, err := websocket.Accept(u.w, u.r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	close(u.finished)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	c.SetReadLimit(1 << 24)
	sc := &scriptedConn{c: c, frames: make(chan arrived, 1024), done: make(chan struct{})}
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				close(sc.frames)
				return
			}
			select {
			case sc.frames <- arrived{data: data, at: time.Now()}:
			case <-sc.done:
				return
			}
		}
	}()
	s.mu.Lock()
	s.conns = append(s.conns, sc)
	s.mu.Unlock()
	return sc
}

// next is the next frame the client sent (pings skipped unless wanted).
func (sc *scriptedConn) next(t testing.TB, deadline time.Time, where string, ping bool) arrived {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case f, ok := <-sc.frames:
			if !ok {
				t.Fatalf("%s: the connection ended", where)
			}
			if !ping && strings.Contains(string(f.data), `"ping"`) {
				var a struct {
					Action string `json:"action"`
				}
				if json.Unmarshal(f.data, &a) == nil && a.Action == "ping" {
					continue
				}
			}
			return f
		case <-timer.C:
			t.Fatalf("%s: the client sent nothing", where)
		}
	}
}

func (sc *scriptedConn) send(t testing.TB, frame any) {
	t.Helper()
	b, err := json.Marshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	sc.sendRaw(t, b)
}

func (sc *scriptedConn) sendRaw(t testing.TB, b []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := sc.c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// drop closes the TCP connection without a close frame.
func (sc *scriptedConn) drop() {
	if sc == nil {
		return
	}
	select {
	case <-sc.done:
	default:
		close(sc.done)
	}
	_ = sc.c.CloseNow()
	sc.wg.Wait()
}

// close sends a close frame, then closes.
func (sc *scriptedConn) close(code int, reason string) {
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		_ = sc.c.Close(websocket.StatusCode(code), reason)
	}()
}
