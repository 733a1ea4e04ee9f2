// No frame ends the client (fast-check, bounded runs), the reassembly of chunk
// events stays within its bounds, and `stream()` is bounded and acknowledges
// only what its consumer took.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { WebSocket } from "ws";
import { AgentWire, type AgentWireOptions, type StreamItem } from "../src/index.js";
import { MAX_RECEIVED_ID_BYTES, Reassembler } from "../src/chunks.js";
import { ScriptedServer, type Connection } from "./scripted.js";

const STEP = 5_000;
const deep = (n: number) => "[".repeat(n) + "]".repeat(n);

/** The next item of a stream, failing after STEP. */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`waited ${STEP} ms for ${what}`)), STEP);
    }),
  ]);
}

async function connected(options: Partial<AgentWireOptions> = {}, channels = ["agent-1", "probe"]) {
  const server = await ScriptedServer.start();
  const client = new AgentWire(server.url, {
    WebSocket, token: "t", minReconnectDelay: 10, maxReconnectDelay: 40, ackDebounce: null, maxConnectionAge: null, ...options,
  });
  const chans = channels.map((n) => client.channel(n, { since: { epoch: n === "probe" ? "p" : "e1", seq: 0 } }));
  client.connect();
  const conn: Connection = await server.accept(await server.upgrades.next(STEP, "upgrade"));
  assert.equal((await conn.frames.next(STEP, "hello")).action, "hello");
  conn.ws.send(JSON.stringify({ type: "welcome", protocol: 1, connection_id: "c1", server: "t", heartbeat_s: 300 }));
  const join = await conn.frames.next(STEP, "join");
  assert.equal(join.action, "join");
  conn.ws.send(JSON.stringify({
    type: "joined", id: join.id,
    channels: channels.map((name) => ({ name, epoch: name === "probe" ? "p" : "e1", head: 0, replayed: 0, recovered: true })),
  }));
  return { server, client, conn, chans };
}

const json = fc.jsonValue({ maxDepth: 4 });
const seq = fc.oneof(fc.integer({ min: 0, max: 8 }), fc.maxSafeNat(), json);
const id = fc.oneof(fc.constantFrom("a", "b", "c"), fc.integer({ min: 129, max: 4000 }).map((n) => "x".repeat(n)), fc.nat(500).map((n) => `m${n}`));
const num = fc.oneof(fc.integer({ min: 0, max: 3 }), json);
const part = fc.oneof(fc.string({ maxLength: 16 }), fc.integer({ min: 1, max: 50_000 }).map(deep), json);
const chunkData = fc.record({ id, index: num, count: num, encoding: fc.oneof(fc.constantFrom("json", "utf8", "base64"), json), part })
  .map(({ id, index, count, encoding, part }) => ({ $chunk: { message: id, index, count, encoding, bytes: 10 }, part }));
const event = fc.record({ seq, data: fc.oneof(json, chunkData), epoch: fc.oneof(fc.constant("e1"), json) })
  .map(({ seq, data, epoch }) => ({ type: "event", channel: "agent-1", epoch, seq, id: "i", kind: "k", data, ts: "t" }));
const frame = fc.oneof(
  event.map((e) => JSON.stringify(e)),
  fc.array(event, { maxLength: 40 }).map((events) => JSON.stringify({ type: "batch", events })),
  fc.tuple(seq, seq).map(([from, to]) => JSON.stringify({ type: "gap", channel: "agent-1", from, to })),
  fc.tuple(seq, seq, json).map(([head, replayed, epoch]) =>
    JSON.stringify({ type: "joined", channels: [{ name: "agent-1", epoch, head, replayed, recovered: true }] })),
  fc.tuple(json, fc.string({ maxLength: 10 })).map(([data, type]) => JSON.stringify({ type, channel: "agent-1", data })),
  json.map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 64 }),
  fc.integer({ min: 1, max: 100_000 }).map(deep),
  fc.integer({ min: 1, max: 20_000 }).map((n) =>
    `{"type":"event","channel":"agent-1","epoch":"e1","seq":1,"id":"i","kind":"k","ts":"t","data":${deep(n)}}`),
);

test("no frame stops the client (fast-check)", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(frame, { minLength: 1, maxLength: 25 }), async (sent) => {
      const { server, client, conn, chans } = await connected({ holeGrace: 20, maxMessageBytes: 1 << 20, maxHeldMessageBytes: 4 << 20 });
      const states: string[] = [];
      client.on("state", (s) => states.push(s.current));
      try {
        const probe = chans[1]!.stream();
        for (const f of sent) conn.ws.send(f);
        conn.ws.send(JSON.stringify({ type: "event", channel: "probe", epoch: "p", seq: 1, id: "probe", kind: "k", data: {}, ts: "t" }));
        const first = await within(probe.next(), "the probe event");
        assert.equal(first.done, false);
        assert.equal((first.value as StreamItem & { seq: number }).seq, 1);
        assert.deepEqual(states, [], "no reconnect, no close");
      } finally {
        await client.close();
        await server.stop();
      }
    }),
    { numRuns: 25 },
  );
});

test("the reassembly stays within its bounds (fast-check)", () => {
  const chunk = fc.tuple(
    fc.oneof(fc.nat(200).map((n) => `m${n}`), fc.integer({ min: 129, max: 600 }).map((n) => "é".repeat(n))),
    fc.integer({ min: 0, max: 2 }),
    fc.integer({ min: 1, max: 3 }),
    fc.constantFrom("utf8", "json", "base64"),
    fc.oneof(fc.string({ maxLength: 64 }), fc.integer({ min: 1, max: 3000 }).map(deep)),
    fc.nat(300),
  );
  fc.assert(
    fc.property(fc.array(chunk, { minLength: 1, maxLength: 400 }), (chunks) => {
      const r = new Reassembler(4_000, 16_000, 8);
      chunks.forEach(([message, index, count, encoding, part, bytes], seq) => {
        const got = r.accept({ channel: "ch", seq, epoch: "e1", kind: "k", data: { $chunk: { message, index, count, encoding, bytes }, part } });
        for (const lost of [...r.takeEvicted(), ...(got.type === "lost" ? [got.lost] : [])]) {
          assert.ok(new TextEncoder().encode(lost.id).length <= MAX_RECEIVED_ID_BYTES);
        }
        assert.ok(r.partial <= 8);
        assert.ok(r.held <= 16_000);
      });
    }),
    { numRuns: 200 },
  );
});

test("more messages in progress than the bound: the oldest is lost as too_large", async () => {
  const { server, client, conn, chans } = await connected({ maxPartialMessages: 2 }, ["agent-1"]);
  try {
    const items = chans[0]!.stream();
    const chunk = (seq: number, message: string, index: number) => ({
      channel: "agent-1", epoch: "e1", seq, id: `${message}#${index}`, kind: "k", ts: "t",
      data: { $chunk: { message, index, count: 2, encoding: "utf8", bytes: 2 }, part: "a" },
    });
    conn.ws.send(JSON.stringify({ type: "batch", events: [chunk(1, "a", 0), chunk(2, "b", 0), chunk(3, "c", 0), chunk(4, "c", 1), chunk(5, "b", 1)] }));
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push((await within(items.next(), `item ${i}`)).value);
    assert.deepEqual(seen.map((i) => [i!.type, (i as { id: string }).id]), [["message_lost", "a"], ["message", "c"], ["message", "b"]]);
    assert.equal((seen[0] as { reason: string }).reason, "too_large");
  } finally {
    await client.close();
    await server.stop();
  }
});

test("stream() is bounded: a consumer that does not pull stops the channel, acks stop at what it took, and it goes on from there", async () => {
  const { server, client, conn, chans } = await connected({ ackDebounce: 1 }, ["agent-1"]);
  try {
    const items = chans[0]!.stream({ highWaterMark: 4 });
    const ev = (seq: number) => ({ channel: "agent-1", epoch: "e1", seq, id: `i${seq}`, kind: "k", data: { n: seq }, ts: "t" });
    const delivered: number[] = [];
    const fourth = new Promise<void>((resolve) => chans[0]!.on("event", (e) => { delivered.push(e.seq); if (e.seq === 4) resolve(); }));
    conn.ws.send(JSON.stringify({ type: "batch", events: Array.from({ length: 10 }, (_, i) => ev(i + 1)) }));
    await fourth;
    // The same frame went on to seq 10, but the stream was full at 4: nothing after it was taken.
    assert.deepEqual(delivered, [1, 2, 3, 4]);
    // Nothing taken yet: no ack may cover a queued event. Take two: the ack is for 2 at most.
    assert.equal(((await within(items.next(), "seq 1")).value as { seq: number }).seq, 1);
    assert.equal(((await within(items.next(), "seq 2")).value as { seq: number }).seq, 2);
    // Seqs 5..10 were not queued (the stream held 4): draining to half re-joins from 4.
    const got: number[] = [];
    const acks: number[] = [];
    let rejoin: Record<string, unknown> | undefined;
    while (!rejoin || acks.length === 0) {
      const next = await conn.frames.next(STEP, "the re-join after the drain and the ack of what was taken");
      if (next.action === "join") rejoin = next;
      if (next.action === "ack") acks.push(next.seq as number);
    }
    assert.ok(acks.every((a) => a <= 2), `acked ${acks.join(",")} with 2 taken`);
    assert.deepEqual(rejoin.channels, [{ name: "agent-1", since: { epoch: "e1", seq: 4 } }]);
    // The gateway answers each re-join with the replay after its `since` (the stream
    // may fill again and re-join again, from further on each time).
    const answer = (join: Record<string, unknown>) => {
      const from = (join.channels as { since: { seq: number } }[])[0]!.since.seq;
      conn.ws.send(JSON.stringify({ type: "joined", id: join.id, channels: [{ name: "agent-1", epoch: "e1", head: 10, replayed: 10 - from, recovered: true }] }));
      conn.ws.send(JSON.stringify({ type: "batch", events: Array.from({ length: 10 - from }, (_, i) => ev(from + 1 + i)) }));
    };
    answer(rejoin);
    let serving = true;
    const gateway = (async () => {
      while (serving) {
        const next = await conn.frames.next(STEP, "a frame").catch(() => undefined);
        if (next?.action === "join") answer(next);
        if (next?.action === "ack") acks.push(next.seq as number);
      }
    })();
    while (got.length < 8) got.push(((await within(items.next(), `item ${got.length + 3}`)).value as { seq: number }).seq);
    serving = false;
    conn.ws.send(JSON.stringify({ type: "pong" }));
    void gateway;
    assert.deepEqual(got, [3, 4, 5, 6, 7, 8, 9, 10]);
  } finally {
    await client.close();
    await server.stop();
  }
});

test("a live hole filled within the grace is not re-joined; one left open is, after the grace", async () => {
  const { server, client, conn } = await connected({ holeGrace: 200 }, ["agent-1"]);
  try {
    const ev = (seq: number) => JSON.stringify({ type: "event", channel: "agent-1", epoch: "e1", seq, id: `i${seq}`, kind: "k", data: {}, ts: "t" });
    conn.ws.send(ev(1));
    conn.ws.send(ev(3));
    conn.ws.send(ev(2));
    const t0 = performance.now();
    conn.ws.send(ev(5));
    const join = await conn.frames.next(STEP, "the re-join for the hole at 4");
    assert.equal(join.action, "join");
    assert.deepEqual(join.channels, [{ name: "agent-1", since: { epoch: "e1", seq: 3 } }]);
    assert.ok(performance.now() - t0 >= 150, "not before the grace");
  } finally {
    await client.close();
    await server.stop();
  }
});
