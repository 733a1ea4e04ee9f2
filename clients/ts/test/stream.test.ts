// Streams and messages in chunks: the coalescer's window and bound, the
// chunk format round trip, and the HTTP calls against a real local server.
import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Coalescer, Reassembler, openStream, publishMessage, splitMessage } from "../src/index.js";

describe("Coalescer", () => {
  test("pieces within the window are one event; the end marker closes the stream", () => {
    const c = new Coalescer("s1", 50, 64 * 1024);
    assert.equal(c.deadline(), undefined);
    for (const [i, t] of ["Hel", "lo", ", ", "world"].entries()) assert.deepEqual(c.push(t, 1000 + i * 10), []);
    assert.equal(c.deadline(), 1050);
    assert.deepEqual(c.flush(), { stream: "s1", index: 0, text: "Hello, world" });
    assert.deepEqual(c.finish(), [{ stream: "s1", index: 1, end: true }]);
    assert.deepEqual(c.finish(), []);
  });

  test("the size bound cuts on character boundaries, counting JSON escapes", () => {
    const c = new Coalescer("s", 50, 10);
    const due = c.push('ééééééé"""', 0);
    assert.equal(due.length, 1);
    assert.deepEqual(due[0], { stream: "s", index: 0, text: "ééééé" });
    const rest = c.finish();
    assert.deepEqual(rest[0], { stream: "s", index: 1, text: 'éé"""' });
  });
});

describe("chunks", () => {
  test("text, bytes and JSON round trip through chunk events that each fit in one event", () => {
    const text = Array.from({ length: 200_000 }, (_, i) => ["a", "é", '"', "\n", "\u0001", "🙂"][i % 6]).join("");
    const bytes = Uint8Array.from({ length: 300_000 }, (_, i) => i % 251);
    const json = { rows: Array.from({ length: 20_000 }, (_, i) => i) };
    for (const payload of [{ text }, { bytes }, { json }]) {
      const chunks = splitMessage("m1", payload);
      assert.ok(chunks.length > 1);
      for (const c of chunks) assert.ok(Buffer.byteLength(JSON.stringify(c.data)) <= 96 * 1024);
      const r = new Reassembler();
      const out = chunks.map((c, i) =>
        r.accept({ channel: "ch", seq: 10 + i, epoch: "e", kind: "out", data: c.data }),
      );
      const done = out.filter((a) => a.type !== "pending");
      assert.equal(done.length, 1);
      const a = done[0]!;
      assert.equal(a.type, "message");
      if (a.type !== "message") return;
      assert.equal(a.message.seq, 10 + chunks.length - 1);
      if ("bytes" in payload) assert.deepEqual(a.message.data, payload.bytes);
      else assert.deepEqual(a.message.data, "text" in payload ? payload.text : payload.json);
      assert.equal(r.held, 0);
    }
  });

  test("a missing chunk loses its message once; too large holds nothing", () => {
    const a = splitMessage("a", { text: "y".repeat(200_000) });
    const r = new Reassembler();
    assert.equal(r.accept({ channel: "c", seq: 1, epoch: "e", kind: "k", data: a[0]!.data }).type, "pending");
    const lost = r.accept({ channel: "c", seq: 3, epoch: "e", kind: "k", data: a[2]!.data });
    assert.deepEqual(lost, { type: "lost", lost: { channel: "c", id: "a", reason: "missing" } });
    assert.equal(r.accept({ channel: "c", seq: 4, epoch: "e", kind: "k", data: a[3]!.data }).type, "pending");
    const small = new Reassembler(100_000, 1_000_000);
    const big = splitMessage("big", { bytes: new Uint8Array(200_000) });
    assert.equal(small.accept({ channel: "c", seq: 1, epoch: "e", kind: "k", data: big[0]!.data }).type, "lost");
    assert.equal(small.held, 0);
  });
});

describe("over HTTP (a real local server)", () => {
  const bodies: { url: string; auth: string; body: unknown }[] = [];
  let url = "";
  const server = createServer((req: IncomingMessage, res) => {
    let b = "";
    req.on("data", (d) => (b += d));
    req.on("end", () => {
      const body = JSON.parse(b) as { events?: { id: string }[] };
      bodies.push({ url: req.url ?? "", auth: req.headers.authorization ?? "", body });
      // As the gateway answers a commit: 201 with each event's seq.
      res.writeHead(201, { "content-type": "application/json" });
      res.end(
        JSON.stringify(
          body.events
            ? { channel: "c", ids: body.events.map((e) => e.id), events: body.events.map((e, i) => ({ id: e.id, seq: i + 1, epoch: "e" })) }
            : { id: "x", channel: "c", seq: 1, epoch: "e" },
        ),
      );
    });
  });
  before(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test("a stream sends its events in order, batched, each with its idempotency key", async () => {
    bodies.length = 0;
    const s = openStream({ url, token: "t", channel: "build-1", kind: "output", id: "s9", windowMs: 20 });
    for (let i = 0; i < 100; i++) s.write(`line ${i}\n`);
    await s.flush();
    s.write("tail\n");
    await s.close();
    assert.ok(bodies.every((b) => b.url === "/v1/channels/build-1/events:batch" && b.auth === "Bearer t"));
    const events = bodies.flatMap((b) => (b.body as { events: { id: string; kind: string; data: Record<string, unknown> }[] }).events);
    assert.deepEqual(events.map((e) => e.data.index), events.map((_, i) => i));
    assert.deepEqual(events.map((e) => e.id), events.map((_, i) => `s9:${i}`));
    assert.equal(events.at(-1)!.data.end, true);
    const text = events.map((e) => (e.data.text as string | undefined) ?? "").join("");
    assert.equal(text, Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join("") + "tail\n");
  });

  test("a large message goes as chunk events, ten per batch; a small one as one event", async () => {
    bodies.length = 0;
    const bytes = Uint8Array.from({ length: 1_000_000 }, (_, i) => (i * 7) % 256);
    const r = await publishMessage({ url, token: "t", channel: "c", kind: "blob", id: "m1", payload: { bytes } });
    assert.equal(r.events, Math.ceil(1_000_000 / 49_152));
    assert.ok(bodies.every((b) => (b.body as { events: unknown[] }).events.length <= 10));
    const events = bodies.flatMap((b) => (b.body as { events: { id: string; data: unknown }[] }).events);
    const re = new Reassembler();
    const got = events.map((e, i) => re.accept({ channel: "c", seq: i + 1, epoch: "e", kind: "blob", data: e.data }));
    const m = got.find((a) => a.type === "message");
    assert.ok(m && m.type === "message");
    assert.deepEqual(m.message.data, bytes);

    bodies.length = 0;
    const one = await publishMessage({ url, token: "t", channel: "c", kind: "note", payload: { text: "hi" } });
    assert.equal(one.events, 1);
    assert.equal(bodies[0]!.url, "/v1/channels/c/events");
  });
});
