// A port of the unit tests in clients/rust/src/sequencer.rs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sequencer, type Delivery } from "../src/sequencer.js";
import type { AgentWireEvent } from "../src/types.js";

const ev = (seq: number, data: unknown = null): AgentWireEvent => ({
  channel: "c",
  epoch: "e1",
  seq,
  id: `i${seq}`,
  kind: "k",
  data,
  ts: "t",
});

/** Delivered seqs, with gaps as negative markers (-from). */
const flat = (ds: Delivery[]): number[] => ds.map((d) => (d.type === "event" ? d.event.seq : -d.gap.from));

test("a live event that overtakes the replay waits for it", () => {
  const s = Sequencer.resuming("c", "e1", 5);
  const out: number[] = [];
  out.push(...flat(s.event(ev(11))));
  out.push(...flat(s.joined("e1", 10, 5)));
  for (let seq = 6; seq <= 10; seq++) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [6, 7, 8, 9, 10, 11]);
  assert.equal(s.last, 11);
  assert.equal(s.pending, 0);
});

test("a gap frame never covers what was already delivered or is held", () => {
  let s = Sequencer.resuming("c", "e1", 21);
  s.rejoining();
  let out = flat(s.event(ev(22)));
  out.push(...flat(s.joined("e1", 22, 0)));
  out.push(...flat(s.gap(22, 22)));
  assert.deepEqual(out, [22], "22 arrived: no gap");
  out = flat(s.gap(20, 25));
  out.push(...flat(s.event(ev(26))));
  assert.deepEqual(out, [-23, 26]);
  s = Sequencer.resuming("c", "e1", 5);
  s.joined("e1", 10, 0);
  assert.deepEqual(s.event(ev(9)), [], "held: the replay has not reached it");
  assert.deepEqual(flat(s.gap(6, 9)), [-6, 9]);
});

test("the gap delivery names the range and its reason", () => {
  const s = Sequencer.resuming("c", "e1", 2);
  s.joined("e1", 8, 3);
  assert.deepEqual(s.gap(3, 5), [{ type: "gap", gap: { channel: "c", from: 3, to: 5, reason: "expired" } }]);
});

test("live events that overtake the joined are not taken for a reset", () => {
  const s = Sequencer.resuming("c", "e1", 21);
  s.rejoining();
  const out = flat(s.event(ev(22)));
  out.push(...flat(s.joined("e1", 21, 0)));
  out.push(...flat(s.event(ev(23))));
  assert.deepEqual(out, [22, 23], "no gap, no repeat");
});

test("a channel joined before it had a log adopts the first epoch", () => {
  const s = new Sequencer("c");
  assert.deepEqual(s.joined("", 0, 0), []);
  const out = flat(s.event(ev(1)));
  out.push(...flat(s.event(ev(2))));
  assert.deepEqual(out, [1, 2]);
  assert.equal(s.epoch, "e1");
});

test("duplicates are delivered once", () => {
  const s = Sequencer.resuming("c", "e1", 0);
  s.joined("e1", 3, 3);
  const out: number[] = [];
  for (const seq of [1, 2, 2, 1, 3, 3]) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [1, 2, 3]);
});

test("the server's gap frame is surfaced and what follows delivered", () => {
  const s = Sequencer.resuming("c", "e1", 2);
  s.joined("e1", 8, 3);
  const out = flat(s.gap(3, 5));
  for (let seq = 6; seq <= 8; seq++) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [-3, 6, 7, 8]);
});

test("a hole in the live stream asks for a rejoin, never a gap", () => {
  const s = Sequencer.resuming("c", "e1", 4);
  s.joined("e1", 4, 0);
  assert.deepEqual(flat(s.event(ev(5))), [5]);
  assert.equal(s.wantsRejoin(), false);
  assert.deepEqual(s.event(ev(8)), [], "held, not a gap");
  assert.equal(s.wantsRejoin(), true, "6 and 7 are in the log: join again from 5");
  assert.equal(s.last, 5);
  s.rejoining();
  assert.equal(s.wantsRejoin(), false, "a join is under way");
  assert.deepEqual(s.event(ev(9)), []);
  const out = flat(s.joined("e1", 8, 3));
  for (let q = 6; q <= 8; q++) out.push(...flat(s.event(ev(q))));
  assert.deepEqual(out, [6, 7, 8, 9]);
  assert.equal(s.wantsRejoin(), false);
  assert.equal(s.pending, 0);
});

test("a replay that stops short of the head continues from its end", () => {
  const s = Sequencer.resuming("c", "e1", 0);
  const out = flat(s.joined("e1", 10, 4, 4));
  for (let q = 1; q <= 3; q++) out.push(...flat(s.event(ev(q))));
  assert.equal(s.wantsRejoin(), false, "the page is not complete yet");
  out.push(...flat(s.event(ev(4))));
  assert.equal(s.wantsRejoin(), true, "5..=10 are still to come");
  s.rejoining();
  out.push(...flat(s.joined("e1", 10, 6)));
  for (let q = 5; q <= 10; q++) out.push(...flat(s.event(ev(q))));
  assert.deepEqual(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(s.wantsRejoin(), false);
});

test("a new client starts where the replay starts", () => {
  let s = new Sequencer("c");
  s.joined("e1", 20, 0);
  assert.deepEqual(flat(s.event(ev(21))), [21]);
  s = new Sequencer("c");
  s.joined("e1", 20, 5);
  const out: number[] = [];
  for (let seq = 16; seq <= 21; seq++) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [16, 17, 18, 19, 20, 21]);
});

test("another epoch restarts the count", () => {
  const s = Sequencer.resuming("c", "old", 50);
  s.joined("e1", 3, 3);
  const out: number[] = [];
  for (let seq = 1; seq <= 3; seq++) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [1, 2, 3]);
  assert.equal(s.epoch, "e1");
});

test("held events are bounded by count and dropped for a rejoin", () => {
  const s = Sequencer.resuming("c", "e1", 0, { maxPending: 3 });
  s.joined("e1", 0, 0);
  const out: number[] = [];
  for (const seq of [50, 51, 52]) out.push(...flat(s.event(ev(seq))));
  assert.equal(out.length, 0);
  assert.equal(s.pending, 3);
  out.push(...flat(s.event(ev(53))));
  assert.deepEqual(out, [], "no gap: the log still has 1..=53");
  assert.deepEqual([s.pending, s.pendingBytes], [0, 0]);
  assert.equal(s.wantsRejoin(), true);
});

test("held events are bounded by bytes", () => {
  const big = (seq: number) => ev(seq, "x".repeat(1000));
  const s = Sequencer.resuming("c", "e1", 0, { maxPendingBytes: 3500 });
  s.joined("e1", 0, 0);
  for (let seq = 2; seq <= 4; seq++) assert.deepEqual(s.event(big(seq)), []);
  assert.equal(s.pending, 3);
  assert.ok(s.pendingBytes > 3000);
  assert.deepEqual(s.event(big(5)), []);
  assert.equal(s.pending, 0, "over 3500 bytes: dropped");
  assert.equal(s.wantsRejoin(), true);
  s.rejoining();
  const out = flat(s.joined("e1", 5, 5));
  for (let seq = 1; seq <= 5; seq++) out.push(...flat(s.event(big(seq))));
  assert.deepEqual(out, [1, 2, 3, 4, 5]);
});

test("after a reconnect early events wait for the new joined", () => {
  const s = Sequencer.resuming("c", "e1", 0);
  s.joined("e1", 2, 2);
  s.event(ev(1));
  s.event(ev(2));
  s.rejoining();
  assert.deepEqual(s.event(ev(9)), [], "held: the replay may bring 3..=8");
  const out = flat(s.joined("e1", 8, 6));
  for (let q = 3; q <= 8; q++) out.push(...flat(s.event(ev(q))));
  assert.deepEqual(out, [3, 4, 5, 6, 7, 8, 9]);
});

test("held events arriving in any order drain in order", () => {
  const s = Sequencer.resuming("c", "e1", 0);
  s.joined("e1", 0, 0);
  const out: number[] = [];
  for (const seq of [5, 3, 4, 2, 3, 1]) out.push(...flat(s.event(ev(seq))));
  assert.deepEqual(out, [1, 2, 3, 4, 5]);
  assert.equal(s.pending, 0);
  assert.equal(s.pendingBytes, 0);
});
