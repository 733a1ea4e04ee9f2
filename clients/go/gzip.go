package agentwire

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"unicode/utf8"
)

// Compressed payloads (docs/protocol.md, "Compressed payloads"): the client
// announces "gzip" in hello, and the gateway may then send a stream event
// {"stream", "index", "text"} as {"stream", "index", "gz"} and a chunk
// {"$chunk", "part"} as {"$chunk", "gz"}, gz being the base64 of the gzip
// (one member) of the text. The client puts the text back before anything
// else sees the event.

// featureGzip is the feature a client that decodes gzip announces in hello.
const featureGzip = "gzip"

// maxStreamTextBytes bounds the text a compressed stream event decodes to
// (a plain one is at most 96 KiB): one that decodes to more is handed over
// as it came (with gz).
const maxStreamTextBytes = 4 << 20

var (
	errGzipInvalid  = errors.New("gz: not the base64 of one gzip member of UTF-8 text")
	errGzipTooLarge = errors.New("gz: the text is over the bound")
)

// gunzipText is the UTF-8 text of the one gzip member whose base64
// (standard alphabet, padded) is b64, if it is at most limit bytes. Trailing
// data after the member, a bad checksum and text that is not UTF-8 are
// errGzipInvalid; more than limit bytes errGzipTooLarge. It never reads more
// than limit+1 bytes of text.
func gunzipText(b64 string, limit int64) (string, error) {
	if limit < 0 {
		limit = 0
	}
	if limit == math.MaxInt64 {
		limit-- // room for the one byte over
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", errGzipInvalid
	}
	// A *bytes.Reader is an io.ByteReader, so the gzip reader reads no
	// further than the member: what is left in br after it is trailing data.
	br := bytes.NewReader(raw)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return "", errGzipInvalid
	}
	zr.Multistream(false)
	text, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if int64(len(text)) > limit {
		return "", errGzipTooLarge
	}
	if err != nil {
		return "", errGzipInvalid
	}
	// The text fits: the reader reached the member's end (its checksum and
	// size checked). Anything after it is not ours.
	if br.Len() != 0 || !utf8.Valid(text) {
		return "", errGzipInvalid
	}
	return string(text), nil
}

// decodeGzipData gives an event's data with a compressed stream text or
// chunk part put back: {"stream", "index", "gz"} becomes
// {"stream", "index", "text"} (a text of at most maxText bytes), and
// {"$chunk", "gz"} becomes {"$chunk", "part"} (a part of at most maxPart
// bytes); the other members keep their JSON as it came. Data of any other
// shape (other keys, gz not a string), and data whose gz does not decode,
// is given back as it came: a stream event is then handed over with gz, and
// a chunk without a part loses its message (LostInvalid) in the
// reassembler.
func decodeGzipData(data json.RawMessage, maxText, maxPart int64) json.RawMessage {
	d := bytes.TrimLeft(data, " \t\r\n")
	// A key gz is written "gz" or with \u escapes: anything else is not ours,
	// and is left without decoding it.
	if len(d) == 0 || d[0] != '{' || (!bytes.Contains(d, []byte(`"gz"`)) && !bytes.Contains(d, []byte(`\u`))) {
		return data
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(d, &obj) != nil {
		return data
	}
	gzRaw, ok := obj["gz"]
	if !ok {
		return data
	}
	var gz string
	if json.Unmarshal(gzRaw, &gz) != nil {
		return data
	}
	stream, hasStream := obj["stream"]
	index, hasIndex := obj["index"]
	header, hasChunk := obj[chunkKey]
	var out []byte
	switch {
	case len(obj) == 3 && hasStream && hasIndex:
		text, err := gunzipText(gz, maxText)
		if err != nil {
			return data
		}
		t := marshalString(text)
		out = make([]byte, 0, len(stream)+len(index)+len(t)+32)
		out = append(out, `{"stream":`...)
		out = append(out, stream...)
		out = append(out, `,"index":`...)
		out = append(out, index...)
		out = append(out, `,"text":`...)
		out = append(out, t...)
		out = append(out, '}')
	case len(obj) == 2 && hasChunk:
		part, err := gunzipText(gz, maxPart)
		if err != nil {
			return data
		}
		p := marshalString(part)
		out = make([]byte, 0, len(header)+len(p)+24)
		out = append(out, `{"$chunk":`...)
		out = append(out, header...)
		out = append(out, `,"part":`...)
		out = append(out, p...)
		out = append(out, '}')
	default:
		return data
	}
	return out
}
