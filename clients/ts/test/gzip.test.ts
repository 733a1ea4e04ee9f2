// Compressed payloads (docs/protocol.md, "Compressed payloads"): decodeData
// puts back the text of a compressed stream event or chunk, leaves data of
// any other shape alone, and leaves a `gz` that does not decode (or decodes to
// more than its bound) as it came. The fixtures are gzipped by node:zlib, as
// the gateway's (flate2) would be.
import assert from "node:assert/strict";
import { test } from "node:test";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { Reassembler, toBase64 } from "../src/chunks.js";
import { MAX_STREAM_TEXT_BYTES, decodeData, gunzipText } from "../src/gzip.js";

const MIB = 1024 * 1024;
const gz = (text: string | Uint8Array): string => toBase64(gzipSync(text));
/** The compressed bytes of `text`, for tampering with. */
const gzBytes = (text: string): Uint8Array => new Uint8Array(gzipSync(text));
const terminal = "\u001b[32m   Compiling\u001b[0m agentwire-core v0.1.0\n".repeat(40);
const header = { message: "m1", index: 0, count: 1, encoding: "utf8", bytes: 12 };
/** From conformance/scenarios/gzip-payloads-are-decoded.json (the gateway's gzip). */
const SCENARIO_STREAM = "H4sIAAAAAAACA5OONjbKVVBQcM7PLcjMycxLl442yFVITE/NKynPLErVTc4vSlUoM9Az1DPgkqaRWgBYTBrGhAAAAA==";

test("a compressed stream event becomes {stream, index, text}", () => {
  const out = decodeData({ stream: "s1", index: 4, gz: gz(terminal) }, MIB);
  assert.deepEqual(out, { stream: "s1", index: 4, text: terminal });
  assert.deepEqual(Object.keys(out as object), ["stream", "index", "text"]);
  // Whatever the order of the keys that came.
  const reordered = decodeData({ gz: gz("x"), index: 0, stream: "s" }, MIB);
  assert.deepEqual(Object.keys(reordered as object), ["stream", "index", "text"]);
  // Text of any kind: multi-byte characters, a byte order mark (kept), nothing.
  for (const text of ["héllo wörld ✓ 😀", "\uFEFFwith a BOM", ""]) {
    assert.deepEqual(decodeData({ stream: "s", index: 0, gz: gz(text) }, MIB), { stream: "s", index: 0, text });
  }
});

test("a compressed chunk becomes {$chunk, part}, and reassembles", () => {
  const out = decodeData({ $chunk: header, gz: gz("Hello, world") }, MIB);
  assert.deepEqual(out, { $chunk: header, part: "Hello, world" });
  assert.deepEqual(Object.keys(out as object), ["$chunk", "part"]);
  assert.equal((out as { $chunk: unknown }).$chunk, header);
  const r = new Reassembler();
  const a = r.accept({ channel: "c", seq: 1, epoch: "e1", kind: "out", data: out });
  assert.equal(a.type, "message");
  assert.equal(a.type === "message" && a.message.data, "Hello, world");
});

test("the scenario's payloads (gzipped by the gateway) decode", () => {
  const text = "\u001b[32m   Compiling\u001b[0m agentwire-core v0.1.0\n".repeat(3);
  assert.equal(gunzipText(SCENARIO_STREAM, MIB), text);
  assert.equal(gunzipText("H4sIAAAAAAACA/NIzcnJ11EAAAVvV94HAAAA", MIB), "Hello, ");
});

test("a gz that does not decode leaves the data as it came", () => {
  const good = gzBytes(terminal);
  const tamper = (f: (b: Uint8Array) => Uint8Array): string => toBase64(f(good.slice()));
  const twoMembers = new Uint8Array([...gzBytes("a"), ...gzBytes("b")]);
  const bad: [string, string][] = [
    ["not base64", "@@@@"],
    ["base64 without its padding", SCENARIO_STREAM.slice(0, -2)],
    ["base64 with whitespace", ` ${SCENARIO_STREAM.slice(0, -1)}`],
    ["base64, not gzip", "bm90IGd6aXA="],
    ["empty", ""],
    ["a gzip header alone", toBase64(good.subarray(0, 10))],
    ["truncated", tamper((b) => b.subarray(0, b.length - 20))],
    ["a wrong CRC", tamper((b) => ((b[b.length - 8]! ^= 1), b))],
    ["a trailer that says less", tamper((b) => ((b[b.length - 4]! -= 1), b))],
    ["a trailer that says more", tamper((b) => ((b[b.length - 4]! += 1), b))],
    ["a damaged deflate stream", tamper((b) => ((b[12]! ^= 0xff), (b[13]! ^= 0xff), b))],
    ["two members", toBase64(twoMembers)],
    ["not UTF-8", gz(new Uint8Array([0x61, 0xff, 0xfe, 0x62]))],
    ["a lone surrogate's bytes", gz(new Uint8Array([0xed, 0xa0, 0x80]))],
  ];
  for (const [what, g] of bad) {
    assert.equal(gunzipText(g, MIB), undefined, what);
    const s = { stream: "s1", index: 1, gz: g };
    assert.equal(decodeData(s, MIB), s, what);
    const c = { $chunk: header, gz: g };
    assert.equal(decodeData(c, MIB), c, what);
  }
  // A chunk left compressed has no part: the reassembly loses its message.
  const r = new Reassembler();
  const a = r.accept({ channel: "c", seq: 1, epoch: "e1", kind: "out", data: decodeData({ $chunk: header, gz: "bm90IGd6aXA=" }, MIB) });
  assert.deepEqual(a, { type: "lost", lost: { channel: "c", id: "m1", reason: "invalid" } });
});

test("data of any other shape is never touched, even with a gz", () => {
  const g = gz(terminal);
  const others: unknown[] = [
    { gz: g },
    { gz: "not ours", n: 3 },
    { stream: "s1", gz: g },
    { stream: "s1", index: 0, gz: g, extra: 1 },
    { stream: "s1", index: 0, text: "plain" },
    { stream: "s1", index: 0, end: true },
    { stream: 7, index: 0, gz: g },
    { stream: "s1", index: -1, gz: g },
    { stream: "s1", index: 1.5, gz: g },
    { stream: "s1", index: "0", gz: g },
    { stream: "s1", index: 0, gz: 42 },
    { $chunk: "x", gz: g },
    { $chunk: null, gz: g },
    { $chunk: [header], gz: g },
    { $chunk: header, gz: g, part: "p" },
    { $chunk: header, part: "plain" },
    Object.assign(Object.create({ stream: "s1", index: 0 }), { gz: g, a: 1, b: 2 }),
    [g],
    g,
    null,
    42,
    undefined,
  ];
  for (const data of others) assert.equal(decodeData(data, MIB), data, JSON.stringify(data));
});

test("a decoded text is bounded: a stream event's by its bound, a chunk's by the part bound", () => {
  const text = "é".repeat(500); // 1,000 bytes of UTF-8, 500 characters
  assert.equal(gunzipText(gz(text), 1_000), text);
  assert.equal(gunzipText(gz(text), 999), undefined);
  const s = { stream: "s", index: 0, gz: gz(text) };
  assert.deepEqual(decodeData(s, 0, 1_000), { stream: "s", index: 0, text });
  assert.equal(decodeData(s, MIB, 999), s);
  const c = { $chunk: header, gz: gz(text) };
  assert.deepEqual(decodeData(c, 1_000, 0), { $chunk: header, part: text });
  assert.equal(decodeData(c, 999, MIB), c);
  // By default a stream event's text is bounded at 4 MiB: a bomb of zeros stays compressed.
  assert.equal(MAX_STREAM_TEXT_BYTES, 4 * MIB);
  const bomb = { stream: "s", index: 0, gz: gz("0".repeat(MAX_STREAM_TEXT_BYTES + 1)) };
  assert.ok(bomb.gz.length < 16 * 1024);
  assert.equal(decodeData(bomb, MIB), bomb);
  const fits = decodeData({ stream: "s", index: 0, gz: gz("0".repeat(MAX_STREAM_TEXT_BYTES)) }, MIB) as { text: string };
  assert.equal(fits.text.length, MAX_STREAM_TEXT_BYTES);
});

test("a trailer that claims more than deflate can expand to is refused before inflating", () => {
  const b = gzBytes("a short text");
  // 4 GiB - 1 claimed by a few bytes: refused whatever the bound.
  b.set([0xff, 0xff, 0xff, 0xff], b.length - 4);
  assert.equal(gunzipText(toBase64(b), Number.MAX_SAFE_INTEGER), undefined);
});

test("any text round-trips; decodeData never throws (fast-check)", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 300 }), fc.nat(1_000), (text, index) => {
      const out = decodeData({ stream: "s", index, gz: gz(text) }, 0);
      assert.deepEqual(out, { stream: "s", index, text });
    }),
    { numRuns: 200 },
  );
  const g = gz(terminal);
  const noise = fc.oneof(
    fc.string({ maxLength: 64 }),
    fc.uint8Array({ maxLength: 64 }).map(toBase64),
    fc.nat(g.length - 1).map((i) => g.slice(0, i) + (g[i] === "A" ? "B" : "A") + g.slice(i + 1)),
  );
  fc.assert(
    fc.property(noise, fc.jsonValue({ maxDepth: 2 }), (gzText, header) => {
      for (const data of [{ stream: "s", index: 0, gz: gzText }, { $chunk: header, gz: gzText }, { gz: gzText, x: header }]) {
        // Left as it came, or decoded (a flip in the header's mtime still decodes).
        const out = decodeData(data, MIB) as { text?: unknown; part?: unknown };
        if (out !== data) assert.equal(typeof (out.text ?? out.part), "string");
      }
    }),
    { numRuns: 300 },
  );
});
