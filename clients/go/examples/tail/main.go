// Command tail follows channels with the reconnecting Go client, like
// `agentwire tail`: each event, message and gap is one JSON line on stdout
// (the same shape), connection state goes to stderr, and it keeps going
// across dropped connections and gateway restarts, resuming from the last
// seq it printed.
//
//	go run ./examples/tail --url ws://127.0.0.1:8080 --token "$TOKEN" --channel agent-1 [--channel agent-2] [--from-head]
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	agentwire "github.com/agentwire/agentwire/clients/go"
)

type channels []string

func (c *channels) String() string { return strings.Join(*c, ",") }

func (c *channels) Set(v string) error {
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n != "" {
			*c = append(*c, n)
		}
	}
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agentwire:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", os.Getenv("AGENTWIRE_URL"), "the gateway's WebSocket URL, e.g. ws://127.0.0.1:8080")
	token := fs.String("token", os.Getenv("AGENTWIRE_TOKEN"), "a token from `agentwire token`")
	tokenCommand := fs.String("token-command", "", "a shell command that prints a fresh token, run before every connection attempt")
	var chans channels
	fs.Var(&chans, "channel", "a channel to follow (repeat or comma-separate)")
	fromHead := fs.Bool("from-head", false, "only new events, instead of resuming from the durable cursor")
	noAck := fs.Bool("no-ack", false, "do not move the durable cursor")
	maxAttempts := fs.Int("max-attempts", 0, "stop after this many reconnect attempts in a row (0: never)")
	maxBackoff := fs.Duration("max-backoff", 30*time.Second, "the largest delay between reconnect attempts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *url == "" || len(chans) == 0 || (*token == "" && *tokenCommand == "") {
		fs.Usage()
		return errors.New("--url, --channel and --token (or --token-command) are needed")
	}
	opts := agentwire.Options{
		Token:             *token,
		MaxAttempts:       *maxAttempts,
		MaxReconnectDelay: *maxBackoff,
		ClientName:        "agentwire-go-tail/" + agentwire.Version,
	}
	if *noAck {
		opts.AckDebounce = -1
	}
	if *tokenCommand != "" {
		cmd := *tokenCommand
		opts.TokenProvider = func(ctx context.Context) (string, error) {
			out, err := exec.CommandContext(ctx, "sh", "-c", cmd).Output()
			if err != nil {
				return "", fmt.Errorf("running %q: %w", cmd, err)
			}
			return strings.TrimSpace(string(out)), nil
		}
	}
	for _, n := range chans {
		since := agentwire.SinceCursor()
		if *fromHead {
			since = agentwire.SinceHead()
		}
		opts.Channels = append(opts.Channels, agentwire.ChannelSpec{Name: n, Since: since})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := agentwire.Connect(context.Background(), *url, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "agentwire: connecting to %s\n", *url)
	for {
		select {
		case ev, ok := <-client.Events():
			if !ok {
				if err := client.Err(); err != nil {
					return err
				}
				return nil
			}
			if err := show(ev, stdout, stderr); err != nil {
				return err
			}
		case <-ctx.Done():
			fmt.Fprintln(stderr, "agentwire: interrupted; acknowledging and closing")
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = client.Close(cctx)
			for ev := range client.Events() {
				if err := show(ev, stdout, stderr); err != nil {
					return err
				}
			}
			return nil
		}
	}
}

// line prints v as one JSON line (keys sorted, as `agentwire tail` does).
func line(w io.Writer, v map[string]any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func show(ev agentwire.ClientEvent, stdout, stderr io.Writer) error {
	switch e := ev.(type) {
	case *agentwire.Event:
		return line(stdout, map[string]any{"type": "event", "channel": e.Channel, "epoch": e.Epoch, "seq": e.Seq,
			"id": e.ID, "kind": e.Kind, "data": e.Data, "ts": e.Ts})
	case *agentwire.Message:
		var data any
		switch e.Encoding {
		case agentwire.EncodingJSON:
			data = json.RawMessage(e.Data)
		case agentwire.EncodingUTF8:
			data = string(e.Data)
		default:
			data = base64.StdEncoding.EncodeToString(e.Data)
		}
		return line(stdout, map[string]any{"type": "message", "channel": e.Channel, "id": e.ID, "kind": e.Kind,
			"seq": e.Seq, "encoding": e.Encoding, "data": data})
	case *agentwire.MessageLost:
		fmt.Fprintf(stderr, "agentwire: %s: message %s is lost (%s)\n", e.Channel, e.ID, e.Reason)
		return line(stdout, map[string]any{"type": "message_lost", "channel": e.Channel, "id": e.ID, "reason": e.Reason})
	case *agentwire.Gap:
		fmt.Fprintf(stderr, "agentwire: %s: seqs %d..=%d are no longer retained\n", e.Channel, e.From, e.To)
		return line(stdout, map[string]any{"type": "gap", "channel": e.Channel, "from": e.From, "to": e.To})
	case *agentwire.Connected:
		fmt.Fprintf(stderr, "agentwire: connected (protocol v%d, connection %s)\n", e.Protocol, e.ConnectionID)
	case *agentwire.Joined:
		for _, c := range e.Channels {
			note := ""
			if !c.Recovered {
				note = ", not fully recovered"
			}
			fmt.Fprintf(stderr, "agentwire: joined %s (epoch %s, head %d, replaying %d%s)\n", c.Name, c.Epoch, c.Head, c.Replayed, note)
		}
	case *agentwire.Left:
		fmt.Fprintf(stderr, "agentwire: left %s\n", strings.Join(e.Channels, ", "))
	case *agentwire.Disconnected:
		fmt.Fprintf(stderr, "agentwire: disconnected: %s\n", e.Reason)
	case *agentwire.Reconnecting:
		fmt.Fprintf(stderr, "agentwire: reconnecting in %.1fs (attempt %d; %s)\n", e.Delay.Seconds(), e.Attempt, e.Reason)
	case *agentwire.Refreshed:
		fmt.Fprintf(stderr, "agentwire: token refreshed (expires %s)\n", e.Exp.UTC().Format(time.RFC3339))
	case *agentwire.ErrorEvent:
		if e.Fatal() {
			return e.Err
		}
		fmt.Fprintf(stderr, "agentwire: %v\n", e.Err)
	}
	return nil
}
