// Command bench is the Go client's driver for `agentwire-bench --only
// clients` (bench/src/main.rs), the counterpart of clients/ts/bench/*.ts and
// clients/python/bench/*.py, with the same arguments and output:
//
//	bench follow URL TOKEN CHANNEL
//	    follows one channel from the head, reconnecting without a delay;
//	    prints `joined` each time a join is answered (the first and every
//	    re-join) and `{"seq":N}` per event, until stdin ends.
//	bench replay URL TOKEN CHANNEL EPOCH N
//	    joins from {EPOCH, 0}, consumes N events from Events and prints one
//	    JSON line: events, first_ms, elapsed_ms.
//	bench memory URL TOKEN N channels|connections
//	    the memory kept per channel (one client joins N channels) or per
//	    connection (N clients, no channel), after a warm-up client took the
//	    one-off costs: the live heap and the goroutine stacks after two full
//	    GCs (runtime.ReadMemStats HeapAlloc + StackInuse), before and after,
//	    printed as one JSON line.
//
// The bench builds it with `go build -o target/go-bench/agentwire-go-bench
// ./bench` from clients/go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	agentwire "github.com/agentwire/agentwire/clients/go"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const usage = `usage: bench follow URL TOKEN CHANNEL
       bench replay URL TOKEN CHANNEL EPOCH N
       bench memory URL TOKEN N channels|connections`

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch {
	case args[0] == "follow" && len(args) == 4:
		return follow(args[1], args[2], args[3])
	case args[0] == "replay" && len(args) == 6:
		n, err := strconv.ParseUint(args[5], 10, 64)
		if err != nil {
			return err
		}
		return replay(args[1], args[2], args[3], args[4], n)
	case args[0] == "memory" && len(args) == 5:
		n, err := strconv.Atoi(args[3])
		if err != nil || n < 1 {
			return fmt.Errorf("N: %q is not a positive count", args[3])
		}
		return memory(args[1], args[2], n, args[4])
	}
	return errors.New(usage)
}

// line prints v as one JSON line on stdout.
func line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}

// noDelay makes every reconnect immediate: with full jitter the delay is
// the ceiling times the draw, and the draw is 0.
func noDelay() float64 { return 0 }

func follow(url, token, channel string) error {
	client, err := agentwire.Connect(context.Background(), url, agentwire.Options{
		Token:       token,
		Channels:    []agentwire.ChannelSpec{{Name: channel, Since: agentwire.SinceHead()}},
		Jitter:      noDelay,
		AckDebounce: -1,
	})
	if err != nil {
		return err
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	for {
		select {
		case ev, ok := <-client.Events():
			if !ok {
				return client.Err()
			}
			switch e := ev.(type) {
			case *agentwire.Joined:
				fmt.Println("joined")
			case *agentwire.Event:
				if err := line(map[string]uint64{"seq": e.Seq}); err != nil {
					return err
				}
			case *agentwire.Gap:
				if err := line(map[string][2]uint64{"gap": {e.From, e.To}}); err != nil {
					return err
				}
			case *agentwire.ErrorEvent:
				fmt.Fprintf(os.Stderr, "follow: %v\n", e.Err)
			}
		case <-stdinClosed:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return client.Close(ctx)
		}
	}
}

func replay(url, token, channel, epoch string, n uint64) error {
	t0 := time.Now()
	client, err := agentwire.Connect(context.Background(), url, agentwire.Options{
		Token:       token,
		Channels:    []agentwire.ChannelSpec{{Name: channel, Since: agentwire.SincePosition(epoch, 0)}},
		AckDebounce: -1,
	})
	if err != nil {
		return err
	}
	var first time.Duration
	var got uint64
	for got < n {
		ev, ok := <-client.Events()
		if !ok {
			return fmt.Errorf("the client stopped after %d events: %v", got, client.Err())
		}
		if e, isEvent := ev.(*agentwire.Event); isEvent {
			got++
			if got == 1 {
				first = time.Since(t0)
			}
			if e.Seq != got {
				return fmt.Errorf("replay: seq %d at position %d", e.Seq, got)
			}
		}
	}
	elapsed := time.Since(t0)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if err := line(map[string]any{"events": got, "first_ms": ms(first), "elapsed_ms": ms(elapsed)}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return client.Close(ctx)
}

// kept is the live heap plus the goroutine stacks, after two full GCs.
func kept() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, m.StackInuse
}

// rss is the process's resident set (Linux; 0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// until reads c's events until want accepts one (30 s at most).
func until(c *agentwire.Client, want func(agentwire.ClientEvent) bool) error {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return fmt.Errorf("the client stopped: %v", c.Err())
			}
			if e, isErr := ev.(*agentwire.ErrorEvent); isErr {
				return e.Err
			}
			if want(ev) {
				return nil
			}
		case <-timeout:
			return errors.New("nothing within 30 s")
		}
	}
}

func isConnected(ev agentwire.ClientEvent) bool {
	_, ok := ev.(*agentwire.Connected)
	return ok
}

func memory(url, token string, n int, what string) error {
	if what != "channels" && what != "connections" {
		return errors.New(usage)
	}
	opts := agentwire.Options{Token: token, AckDebounce: -1}
	// One client first (with one channel when channels are counted): the
	// one-off costs are not per channel or per connection.
	warmOpts := opts
	if what == "channels" {
		warmOpts.Channels = []agentwire.ChannelSpec{{Name: "mem-warm", Since: agentwire.SinceHead()}}
	}
	warm, err := agentwire.Connect(context.Background(), url, warmOpts)
	if err != nil {
		return err
	}
	if what == "channels" {
		err = until(warm, func(ev agentwire.ClientEvent) bool { _, ok := ev.(*agentwire.Joined); return ok })
	} else {
		err = until(warm, isConnected)
	}
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	heap0, stacks0 := kept()
	t0 := time.Now()
	var clients []*agentwire.Client
	if what == "channels" {
		for i := range n {
			if err := warm.Join(fmt.Sprintf("mem-%d", i), agentwire.SinceHead()); err != nil {
				return err
			}
		}
		joined := 0
		for joined < n {
			var names []string
			if err := until(warm, func(ev agentwire.ClientEvent) bool {
				j, ok := ev.(*agentwire.Joined)
				if ok {
					for _, c := range j.Channels {
						names = append(names, c.Name)
					}
				}
				return ok
			}); err != nil {
				return fmt.Errorf("after %d joined: %w", joined, err)
			}
			joined += len(names)
		}
	} else {
		clients = make([]*agentwire.Client, 0, n)
		for range n {
			c, err := agentwire.Connect(context.Background(), url, opts)
			if err != nil {
				return err
			}
			clients = append(clients, c)
		}
		for i, c := range clients {
			if err := until(c, isConnected); err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
		}
	}
	joinedIn := time.Since(t0)
	time.Sleep(300 * time.Millisecond)
	heap1, stacks1 := kept()
	out := map[string]any{
		what:        n,
		"joined_ms": float64(joinedIn) / float64(time.Millisecond),
		"heap":      int64(heap1) - int64(heap0),
		"stacks":    int64(stacks1) - int64(stacks0),
		"bytes":     int64(heap1+stacks1) - int64(heap0+stacks0),
		"rss":       rss(),
	}
	if err := line(out); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range clients {
		_ = c.Close(ctx)
	}
	runtime.KeepAlive(clients)
	return warm.Close(ctx)
}
