// Command fleet-agent is the agent a fleet node runs: it holds a
// connection for its node channel, re-reads its configuration when a
// config_changed event arrives, reports its status back over the HTTP
// publish route, and while disconnected polls the channel's history over
// HTTP so that a configuration change still gets through.
//
//	go run ./examples/fleet-agent --url ws://127.0.0.1:8080 --http http://127.0.0.1:8080 \
//	  --token "$READER" --publish-token "$AGENT" --node n1 --config ./node.json
//
// Events on node-<node>: {"kind": "config_changed", ...}. Status reports go
// to node-<node>-status as kind "status": {"node", "state", "config", "seq"}.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	agentwire "github.com/agentwire/agentwire/clients/go"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-agent:", err)
		os.Exit(1)
	}
}

type agent struct {
	node, channel, status string
	config                string // the configuration file
	pub                   *agentwire.Publisher
	reader                *agentwire.Publisher // the history reads (a channels grant)
	log                   io.Writer
	// The last seq handled (from the socket or a poll), so an event seen
	// twice is handled once.
	epoch string
	seq   uint64
	// The configuration in force: its digest.
	digest string
}

func run(args []string, log io.Writer) error {
	fs := flag.NewFlagSet("fleet-agent", flag.ContinueOnError)
	fs.SetOutput(log)
	wsURL := fs.String("url", os.Getenv("AGENTWIRE_URL"), "the gateway's WebSocket URL")
	httpURL := fs.String("http", "", "the gateway's HTTP base URL (default: --url with http(s))")
	token := fs.String("token", os.Getenv("AGENTWIRE_TOKEN"), "a token whose channels grant covers node-<node>")
	pubToken := fs.String("publish-token", "", "a token whose publish grant covers node-<node>-status (default --token)")
	node := fs.String("node", "", "this node's id")
	config := fs.String("config", "", "the configuration file re-read on config_changed")
	poll := fs.Duration("poll", 5*time.Second, "how often the history is polled while disconnected")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *wsURL == "" || *token == "" || *node == "" || *config == "" {
		fs.Usage()
		return errors.New("--url, --token, --node and --config are needed")
	}
	if *httpURL == "" {
		*httpURL = "http" + strings.TrimPrefix(*wsURL, "ws")
	}
	if *pubToken == "" {
		*pubToken = *token
	}
	a := &agent{
		node: *node, channel: "node-" + *node, status: "node-" + *node + "-status", config: *config,
		pub:    &agentwire.Publisher{URL: *httpURL, Token: *pubToken, Retries: 5},
		reader: &agentwire.Publisher{URL: *httpURL, Token: *token, Retries: 2},
		log:    log,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.run(ctx, *wsURL, *token, *poll)
}

func (a *agent) run(ctx context.Context, wsURL, token string, poll time.Duration) error {
	a.reload(ctx, "start", 0)
	client, err := agentwire.Connect(ctx, wsURL, agentwire.Options{
		Token:      token,
		Channels:   []agentwire.ChannelSpec{{Name: a.channel}}, // from the durable cursor
		ClientName: "fleet-agent/" + agentwire.Version,
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = client.Close(cctx)
	}()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	connected := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-client.Events():
			if !ok {
				return client.Err()
			}
			switch e := ev.(type) {
			case *agentwire.Joined:
				connected = true
				fmt.Fprintf(a.log, "fleet-agent: holding %s\n", a.channel)
			case *agentwire.Disconnected:
				connected = false
				fmt.Fprintf(a.log, "fleet-agent: disconnected (%s); polling every %v\n", e.Reason, poll)
			case *agentwire.Event:
				a.handle(ctx, e)
			case *agentwire.Gap:
				// Changes were missed: the file is the truth, read it again.
				a.reload(ctx, "gap", e.To)
			case *agentwire.ErrorEvent:
				fmt.Fprintf(a.log, "fleet-agent: %v\n", e.Err)
			}
		case <-ticker.C:
			if !connected {
				a.pollHistory(ctx)
			}
		}
	}
}

// handle takes one event of the node channel, once per seq.
func (a *agent) handle(ctx context.Context, e *agentwire.Event) {
	if e.Epoch == a.epoch && e.Seq <= a.seq {
		return // seen by a poll already
	}
	a.epoch, a.seq = e.Epoch, e.Seq
	if e.Kind == "config_changed" {
		a.reload(ctx, "config_changed", e.Seq)
	}
}

// pollHistory reads what the socket would have brought, over HTTP.
func (a *agent) pollHistory(ctx context.Context) {
	after := a.seq
	for {
		page, err := a.reader.History(ctx, a.channel, after, 100)
		if err != nil {
			fmt.Fprintf(a.log, "fleet-agent: polling %s: %v\n", a.channel, err)
			return
		}
		if a.epoch != "" && page.Epoch != a.epoch && after > 0 {
			after, a.seq = 0, 0 // the log was reset: start over
			a.epoch = page.Epoch
			continue
		}
		if page.Gap != nil {
			a.reload(ctx, "gap", page.Gap.To)
		}
		for i := range page.Events {
			a.handle(ctx, &page.Events[i])
		}
		if page.NextAfter == nil {
			return
		}
		after = *page.NextAfter
	}
}

// reload re-reads the configuration and reports the node's status.
func (a *agent) reload(ctx context.Context, why string, seq uint64) {
	state, digest := "applied", ""
	b, err := os.ReadFile(a.config)
	if err != nil {
		state = "config_unreadable"
		fmt.Fprintf(a.log, "fleet-agent: %v\n", err)
	} else {
		sum := sha256.Sum256(b)
		digest = hex.EncodeToString(sum[:8])
		if digest != a.digest {
			fmt.Fprintf(a.log, "fleet-agent: configuration %s loaded (%s)\n", digest, why)
		}
		a.digest = digest
	}
	key := fmt.Sprintf("%s/%s/%d/%s", a.node, why, seq, digest)
	_, err = a.pub.Publish(ctx, a.status, agentwire.BatchEvent{
		Kind: "status",
		Data: map[string]any{"node": a.node, "state": state, "config": digest, "seq": seq, "reason": why},
		ID:   key,
	})
	if err != nil {
		fmt.Fprintf(a.log, "fleet-agent: reporting status: %v\n", err)
	}
}
