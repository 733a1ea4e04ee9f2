// Streams and large outputs end to end on the local stack: the dev gateway
// (target/debug/agentwire-local) against the endpoint on 127.0.0.1:4566, the
// TypeScript publisher over HTTP and the TypeScript client over WebSocket.
// Skipped, with a message, only when that endpoint does not answer.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { AgentWire, openStream, publish, publishMessage, type AgentWireMessage } from "../src/index.js";
import { Changes, Gateway, endpointSkip, freePort, token } from "./stack.js";

const skip = await endpointSkip();

describe("streams e2e on the local stack", { skip }, () => {
  let gw: Gateway;
  before(async () => {
    gw = new Gateway(await freePort());
    await gw.start();
  });
  after(async () => {
    await gw?.stop();
  });

  test("a 10 MB output arrives whole and in order within the client's bound", { timeout: 180_000 }, async () => {
    const channel = `build-${randomBytes(3).toString("hex")}`;
    const size = 10 * 1024 * 1024;
    const client = new AgentWire(gw.ws, {
      WebSocket,
      token: await token("viewer", { channels: "build-*" }),
      // Held at most: the message plus one part (base64 is 4/3 of the bytes).
      maxMessageBytes: size,
      maxHeldMessageBytes: Math.ceil((size * 4) / 3) + 128 * 1024,
    });
    const changes = new Changes();
    const messages: AgentWireMessage[] = [];
    const lost: string[] = [];
    let marker = false;
    const ch = client.channel(channel);
    ch.on("message", (m) => {
      messages.push(m);
      changes.poke();
    });
    ch.on("message_lost", (l) => {
      lost.push(`${l.id}: ${l.reason}`);
      changes.poke();
    });
    ch.on("event", (e) => {
      if (e.kind === "done") marker = true;
      else assert.fail(`a chunk surfaced as an event: seq ${e.seq}`);
      changes.poke();
    });
    let joined = false;
    ch.on("joined", () => {
      joined = true;
      changes.poke();
    });
    client.connect();
    await changes.until(() => joined, 20_000, () => "joined");
    const bytes = Uint8Array.from({ length: size }, (_, i) => (Math.imul(i, 2654435761) >>> 24) & 0xff);
    const publisher = await token("bot", { publish: "build-*" });
    const sent = await publishMessage({ url: gw.http, token: publisher, channel, kind: "output", id: "ts-10mb", payload: { bytes } });
    assert.ok(sent.events >= 200, `${sent.events} chunk events`);
    const done = await publish({ url: gw.http, token: publisher, channel, kind: "done", data: {} });
    assert.equal(done.seq, sent.events + 1, "committed (201) after the chunks");
    await changes.until(() => marker || lost.length > 0, 150_000, () => `the marker (${messages.length} messages)`);
    assert.deepEqual(lost, []);
    assert.equal(messages.length, 1);
    const m = messages[0]!;
    assert.equal(m.id, "ts-10mb");
    assert.equal(m.encoding, "base64");
    const got = m.data as Uint8Array;
    assert.equal(got.length, size);
    assert.ok(Buffer.from(got).equals(Buffer.from(bytes)), "the bytes differ");
    await client.close();
  });

  test("a stream of tokens is coalesced and joined back in order", { timeout: 60_000 }, async () => {
    const channel = `build-${randomBytes(3).toString("hex")}`;
    const client = new AgentWire(gw.ws, { WebSocket, token: await token("viewer", { channels: "build-*" }) });
    const changes = new Changes();
    let text = "";
    const indexes: number[] = [];
    let ended = false;
    let joined = false;
    const ch = client.channel(channel);
    ch.on("joined", () => {
      joined = true;
      changes.poke();
    });
    ch.on("event", (e) => {
      const d = e.data as { index: number; text?: string; end?: boolean };
      indexes.push(d.index);
      if (d.end) ended = true;
      else text += d.text ?? "";
      changes.poke();
    });
    client.connect();
    await changes.until(() => joined, 20_000, () => "joined");
    const s = openStream({ url: gw.http, token: await token("bot", { publish: "build-*" }), channel, kind: "answer" });
    let written = "";
    for (let i = 0; i < 500; i++) {
      const piece = `tok${i} `;
      written += piece;
      s.write(piece);
    }
    await s.close();
    await changes.until(() => ended, 30_000, () => `the end marker (${indexes.length} events)`);
    assert.equal(text, written);
    assert.deepEqual(indexes, indexes.map((_, i) => i));
    assert.ok(indexes.length < 10, `${indexes.length} events for 500 tokens`);
    await client.close();
  });
});
