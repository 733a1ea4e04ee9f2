// Package agentwire is the Go client of the agentwire push gateway: a
// WebSocket client that reconnects, re-joins and resumes by itself, and a
// publisher for the gateway's HTTP API.
//
// Connect opens a Client; its Events channel delivers each channel's events
// once per seq, in order (*Event), the gaps the gateway reports (*Gap),
// messages reassembled from chunk events (*Message), and the connection's
// life (*Connected, *Joined, *Disconnected, *Reconnecting, *ErrorEvent…):
//
//	client, err := agentwire.Connect(ctx, "wss://…", agentwire.Options{
//		TokenProvider: fetchToken, // asked before every attempt; or Token: "…"
//		Channels:      []agentwire.ChannelSpec{{Name: "agent-1"}},
//	})
//	if err != nil {
//		return err
//	}
//	defer client.Close(context.Background()) // flushes acks
//	for ev := range client.Events() {
//		if e, ok := ev.(*agentwire.Event); ok {
//			fmt.Println(e.Channel, e.Seq, e.Kind, string(e.Data))
//		}
//	}
//
// The client negotiates the protocol version, backs off with full jitter
// between attempts, re-joins every channel from the last seq it delivered,
// fetches holes in the live stream again instead of reporting them, pings
// and replaces a silent connection, rolls over ahead of API Gateway's
// 2-hour cut, acknowledges what it delivered, and refreshes its token in
// band when the gateway offers it. Errors are *Error values with a stable
// Code, matched with errors.Is against the Err sentinels.
//
// Publisher publishes over HTTP (one event, a batch, a coalesced stream, a
// message of any size) and reads a channel's history, presence and state.
package agentwire
