package agentwire

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// gzipMember is the gzip (one member) of b.
func gzipMember(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzB64(t testing.TB, b []byte) string {
	return base64.StdEncoding.EncodeToString(gzipMember(t, b))
}

// sameJSON says whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("not JSON: %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("not JSON: %s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func TestDecodeGzipStream(t *testing.T) {
	text := "\x1b[32m   Compiling\x1b[0m agentwire-core v0.1.0\n\"quoted\" <b> é 😀\n"
	data := []byte(`{"stream":"s1","index":7,"gz":"` + gzB64(t, []byte(text)) + `"}`)
	got := decodeGzipData(data, maxStreamTextBytes, 1<<20)
	var v struct {
		Stream string `json:"stream"`
		Index  int    `json:"index"`
		Text   string `json:"text"`
	}
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	if v.Stream != "s1" || v.Index != 7 || v.Text != text {
		t.Fatalf("decoded %s", got)
	}
	var keys map[string]json.RawMessage
	_ = json.Unmarshal(got, &keys)
	if len(keys) != 3 {
		t.Fatalf("keys of %s", got)
	}

	// The other members keep their JSON as it came; an empty text is a text.
	data = []byte(` {"index" : 1.50, "stream":"s\u0031", "gz":"` + gzB64(t, nil) + `"}`)
	got = decodeGzipData(data, maxStreamTextBytes, 1<<20)
	if want := `{"stream":"s\u0031","index":1.50,"text":""}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}

	// A key written with escapes is the same key.
	data = []byte(`{"stream":"s1","index":0,"g\u007a":"` + gzB64(t, []byte("hi")) + `"}`)
	if got := decodeGzipData(data, maxStreamTextBytes, 1<<20); !sameJSON(t, got, []byte(`{"stream":"s1","index":0,"text":"hi"}`)) {
		t.Fatalf("escaped key: %s", got)
	}
}

func TestDecodeGzipChunk(t *testing.T) {
	header := `{"message":"m1","index":0,"count":2,"encoding":"utf8","bytes":12}`
	data := []byte(`{"$chunk":` + header + `,"gz":"` + gzB64(t, []byte("Hello, ")) + `"}`)
	got := decodeGzipData(data, maxStreamTextBytes, 1<<20)
	if want := `{"$chunk":` + header + `,"part":"Hello, "}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	h, part, ok := parseChunk(got)
	if !ok || part == nil || *part != "Hello, " || h.Message != "m1" {
		t.Fatalf("parseChunk(%s) = %+v, %v, %v", got, h, part, ok)
	}

	// The scenario's chunk, as the gateway sends it.
	data = []byte(`{"$chunk":{"message":"m1","index":0,"count":2,"encoding":"utf8","bytes":12},"gz":"H4sIAAAAAAACA/NIzcnJ11EAAAVvV94HAAAA"}`)
	if _, part, _ := parseChunk(decodeGzipData(data, maxStreamTextBytes, 1<<20)); part == nil || *part != "Hello, " {
		t.Fatalf("scenario chunk: %v", part)
	}
}

func TestDecodeGzipInvalid(t *testing.T) {
	valid := gzipMember(t, []byte("some text"))
	for n := 0; len(valid)%3 == 0; n++ { // one whose base64 has padding
		valid = gzipMember(t, []byte("some text"+strings.Repeat("!", n)))
	}
	twoMembers := append(gzipMember(t, []byte("a")), gzipMember(t, []byte("b"))...)
	badCRC := bytes.Clone(valid)
	badCRC[len(badCRC)-8] ^= 0xff
	badSize := bytes.Clone(valid)
	badSize[len(badSize)-1] ^= 0xff
	cases := map[string]string{
		"not base64":       "not base64!",
		"unpadded":         strings.TrimRight(base64.StdEncoding.EncodeToString(valid), "="),
		"url alphabet":     base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}),
		"not gzip":         base64.StdEncoding.EncodeToString([]byte("not gzip")),
		"empty":            "",
		"truncated":        base64.StdEncoding.EncodeToString(valid[:len(valid)-4]),
		"bad checksum":     base64.StdEncoding.EncodeToString(badCRC),
		"bad size":         base64.StdEncoding.EncodeToString(badSize),
		"two members":      base64.StdEncoding.EncodeToString(twoMembers),
		"trailing garbage": base64.StdEncoding.EncodeToString(append(bytes.Clone(valid), 0)),
		"not UTF-8":        gzB64(t, []byte{'a', 0xff, 'b'}),
		"half a rune":      gzB64(t, []byte("é")[:1]),
	}
	for name, gz := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := gunzipText(gz, 1<<20); !errors.Is(err, errGzipInvalid) {
				t.Fatalf("gunzipText: %v, want errGzipInvalid", err)
			}
			q, _ := json.Marshal(gz)
			stream := []byte(`{"stream":"s1","index":1,"gz":` + string(q) + `}`)
			if got := decodeGzipData(stream, maxStreamTextBytes, 1<<20); !bytes.Equal(got, stream) {
				t.Fatalf("a stream event whose gz does not decode changed: %s", got)
			}
			chunk := []byte(`{"$chunk":{"message":"m2","index":0,"count":1,"encoding":"utf8","bytes":8},"gz":` + string(q) + `}`)
			got := decodeGzipData(chunk, maxStreamTextBytes, 1<<20)
			if !bytes.Equal(got, chunk) {
				t.Fatalf("a chunk whose gz does not decode changed: %s", got)
			}
			// ... and loses its message, invalid, in the reassembler.
			r := newReassembler(0, 0)
			ev := r.accept(&Event{Channel: "c", Epoch: "e1", Seq: 1, Kind: "out", Data: got})
			if l, ok := ev.(*MessageLost); !ok || l.ID != "m2" || l.Reason != LostInvalid {
				t.Fatalf("reassembler: %#v", ev)
			}
		})
	}
}

func TestDecodeGzipOtherShapesUntouched(t *testing.T) {
	gz := gzB64(t, []byte("hello"))
	for _, data := range []string{
		`null`, `"gz"`, `42`, `[{"stream":"s1","index":0,"gz":"` + gz + `"}]`,
		`{}`,
		`{"gz":"` + gz + `"}`,
		`{"gz":"not ours","n":3}`,
		`{"stream":"s1","gz":"` + gz + `"}`,
		`{"index":0,"gz":"` + gz + `"}`,
		`{"stream":"s1","index":0,"gz":"` + gz + `","extra":1}`,
		`{"stream":"s1","index":0,"text":"x","gz":"` + gz + `"}`,
		`{"stream":"s1","index":0,"gz":null}`,
		`{"stream":"s1","index":0,"gz":["` + gz + `"]}`,
		`{"stream":"s1","index":0,"text":"` + gz + `"}`,
		`{"stream":"s1","index":0,"GZ":"` + gz + `"}`,
		`{"$chunk":{"message":"m"},"gz":"` + gz + `","part":"x"}`,
		`{"$chunk":{"message":"m"},"gz":"` + gz + `","stream":"s"}`,
		`{"$chunk":{"message":"m"},"gz":7}`,
		`{"$chunk":{"message":"m"},"part":"x"}`,
		`{"outer":{"stream":"s1","index":0,"gz":"` + gz + `"}}`,
		`{"stream":"s1","index":0,"gz":"` + gz + `"`, // not JSON
	} {
		if got := decodeGzipData(json.RawMessage(data), maxStreamTextBytes, 1<<20); string(got) != data {
			t.Errorf("%s became %s", data, got)
		}
	}
}

func TestDecodeGzipBound(t *testing.T) {
	text := strings.Repeat("a", 1000)
	gz := gzB64(t, []byte(text))
	if got, err := gunzipText(gz, 1000); err != nil || got != text {
		t.Fatalf("exactly the bound: %d bytes, %v", len(got), err)
	}
	if _, err := gunzipText(gz, 999); !errors.Is(err, errGzipTooLarge) {
		t.Fatalf("one over the bound: %v", err)
	}
	stream := []byte(`{"stream":"s1","index":0,"gz":"` + gz + `"}`)
	if got := decodeGzipData(stream, 999, 1<<20); !bytes.Equal(got, stream) {
		t.Fatalf("a stream text over its bound was decoded: %.80s", got)
	}
	if got := decodeGzipData(stream, 1000, 0); bytes.Equal(got, stream) {
		t.Fatal("a stream text within its bound was not decoded")
	}
	chunk := []byte(`{"$chunk":{"message":"m","index":0,"count":1,"encoding":"utf8","bytes":1000},"gz":"` + gz + `"}`)
	if got := decodeGzipData(chunk, 1<<20, 999); !bytes.Equal(got, chunk) {
		t.Fatalf("a part over its bound was decoded: %.80s", got)
	}
	if got := decodeGzipData(chunk, 0, 1000); bytes.Equal(got, chunk) {
		t.Fatal("a part within its bound was not decoded")
	}

	// A bomb: 8 MiB of zeros in about 8 KiB of gzip stops at the bound.
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 8 {
		_, _ = zw.Write(zero)
	}
	_ = zw.Close()
	bomb := base64.StdEncoding.EncodeToString(buf.Bytes())
	if _, err := gunzipText(bomb, maxStreamTextBytes); !errors.Is(err, errGzipTooLarge) {
		t.Fatalf("bomb: %v", err)
	}
	if _, err := gunzipText(gz, -1); !errors.Is(err, errGzipTooLarge) {
		t.Fatalf("a negative bound: %v", err)
	}
}

// TestDriverDecodesGzip: the driver announces gzip and decodes events,
// single and in batches, before the sequencer and the reassembler see them:
// a stream text within 4 MiB, a chunk's part within twice
// Options.MaxMessageBytes.
func TestDriverDecodesGzip(t *testing.T) {
	b, err := json.Marshal(helloFrame{Action: "hello", Protocol: ProtocolRange{Min: 1, Max: 1}, Features: []string{featureGzip}})
	if err != nil || !strings.Contains(string(b), `"features":["gzip"]`) {
		t.Fatalf("hello: %s, %v", b, err)
	}

	c := &Client{events: make(chan ClientEvent, 64), done: make(chan struct{}), signal: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.stop = cancel
	opts := Options{Token: "t", AckDebounce: -1, MaxMessageBytes: 16,
		Channels: []ChannelSpec{{Name: "agent-1", Since: SincePosition("e1", 0)}}}.withDefaults()
	d := newDriver(c, "ws://x", opts, ctx)
	d.connCtx = ctx
	d.write = func(context.Context, []byte) error { return nil }

	long := strings.Repeat("0123456789", 10) // over MaxMessageBytes: a stream text is not bounded by it
	ev := func(seq int, data string) string {
		return fmt.Sprintf(`{"channel":"agent-1","epoch":"e1","seq":%d,"id":"i%d","kind":"out","data":%s,"ts":"t"}`, seq, seq, data)
	}
	frames := []string{
		`{"type":"joined","id":"j1","channels":[{"name":"agent-1","epoch":"e1","head":0,"replayed":0,"recovered":true}]}`,
		`{"type":"event",` + ev(1, `{"stream":"s1","index":0,"gz":"`+gzB64(t, []byte(long))+`"}`)[1:],
		`{"type":"batch","events":[` +
			ev(2, `{"$chunk":{"message":"m1","index":0,"count":1,"encoding":"utf8","bytes":5},"gz":"`+gzB64(t, []byte("hello"))+`"}`) + "," +
			ev(3, `{"$chunk":{"message":"m3","index":0,"count":2,"encoding":"utf8","bytes":16},"gz":"`+gzB64(t, []byte(strings.Repeat("y", 32)))+`"}`) + "," +
			ev(4, `{"$chunk":{"message":"m2","index":0,"count":1,"encoding":"utf8","bytes":10},"gz":"`+gzB64(t, []byte(strings.Repeat("x", 33)))+`"}`) +
			`]}`,
	}
	for _, f := range frames {
		if e := d.onMessage(inbound{typ: websocket.MessageText, data: []byte(f)}); e != nil {
			t.Fatalf("%s: ended %+v", f, e)
		}
	}
	var got []ClientEvent
	for len(c.events) > 0 {
		got = append(got, <-c.events)
	}
	if len(got) != 4 {
		t.Fatalf("%d events: %#v", len(got), got)
	}
	if e, ok := got[1].(*Event); !ok || !sameJSON(t, e.Data, []byte(`{"stream":"s1","index":0,"text":"`+long+`"}`)) {
		t.Fatalf("stream event: %#v", got[1])
	}
	if m, ok := got[2].(*Message); !ok || m.ID != "m1" || string(m.Data) != "hello" || m.Seq != 2 {
		t.Fatalf("message: %#v", got[2])
	}
	// A part of exactly twice MaxMessageBytes decodes (and waits for the
	// next chunk); one byte more does not, and its message is lost.
	if p, ok := d.messages.partial[msgKey{"agent-1", "m3"}]; !ok || string(p.text) != strings.Repeat("y", 32) {
		t.Fatalf("m3 in progress: %v, %+v", ok, p)
	}
	if l, ok := got[3].(*MessageLost); !ok || l.ID != "m2" || l.Reason != LostInvalid {
		t.Fatalf("lost: %#v", got[3])
	}
}

// FuzzDecodeGzip: whatever gz holds, decoding never panics, never gives
// more than the bound, and gives valid UTF-8 in data of the right shape.
func FuzzDecodeGzip(f *testing.F) {
	f.Add(gzipMember(f, []byte("Hello, world")), uint16(64), `{"stream":"s1","index":0,"gz":"x"}`)
	f.Add(gzipMember(f, bytes.Repeat([]byte("ab"), 5000)), uint16(100), `{"$chunk":{},"gz":"x"}`)
	f.Add(append(gzipMember(f, []byte("a")), gzipMember(f, []byte("b"))...), uint16(10), `{"gz":"x"}`)
	f.Add(gzipMember(f, []byte{0xff, 0xfe}), uint16(10), `{"stream":1,"index":[],"g\u007a":"x"}`)
	f.Add([]byte("not gzip"), uint16(0), `not json`)
	f.Add(gzipMember(f, make([]byte, 1<<16)), uint16(4096), `{"$chunk":null,"gz":""}`)
	f.Fuzz(func(t *testing.T, member []byte, bound uint16, data string) {
		limit := int64(bound)
		gz := base64.StdEncoding.EncodeToString(member)
		text, err := gunzipText(gz, limit)
		if err == nil && (int64(len(text)) > limit || !utf8.ValidString(text)) {
			t.Fatalf("gunzipText gave %d bytes (bound %d), UTF-8 %v", len(text), limit, utf8.ValidString(text))
		}
		if err != nil && text != "" {
			t.Fatal("text with an error")
		}
		q, _ := json.Marshal(gz)
		for _, in := range []string{
			`{"stream":"s1","index":0,"gz":` + string(q) + `}`,
			`{"$chunk":{"message":"m"},"gz":` + string(q) + `}`,
			data,
		} {
			out := decodeGzipData(json.RawMessage(in), limit, limit)
			if string(out) == in {
				continue
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(out, &obj); err != nil {
				t.Fatalf("%q became %q: not a JSON object: %v", in, out, err)
			}
			if _, had := obj["gz"]; had || len(obj) < 2 || len(obj) > 3 {
				t.Fatalf("%q became %q", in, out)
			}
			var s string
			key := "text"
			if len(obj) == 2 {
				key = "part"
			}
			if err := json.Unmarshal(obj[key], &s); err != nil {
				t.Fatalf("%q became %q: %s is not a string", in, out, key)
			}
			if int64(len(s)) > limit || !utf8.ValidString(s) {
				t.Fatalf("%q became %d bytes of %s (bound %d)", in, len(s), key, limit)
			}
		}
	})
}
