// A port of the unit tests in clients/rust/src/backoff.rs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../src/backoff.js";

test("ceilings double from half a second to thirty", () => {
  const b = new Backoff();
  const ceilings: number[] = [];
  for (let i = 0; i < 9; i++) {
    ceilings.push(b.ceiling());
    b.nextDelay(0.5);
  }
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

test("full jitter spans zero to the ceiling", () => {
  const b = new Backoff();
  assert.equal(b.nextDelay(0), 0);
  assert.equal(b.nextDelay(1), 1000);
  assert.equal(b.nextDelay(0.25), 500);
  assert.equal(b.nextDelay(7), 4000, "clamped to the ceiling");
});

test("an attempt cap ends the schedule", () => {
  const b = new Backoff({ maxAttempts: 2 });
  assert.notEqual(b.nextDelay(0.5), undefined);
  assert.notEqual(b.nextDelay(0.5), undefined);
  assert.equal(b.nextDelay(0.5), undefined);
});

test("only a stable connection resets the schedule", () => {
  const b = new Backoff();
  for (let i = 0; i < 4; i++) b.nextDelay(0.5);
  b.connectionEnded(5_000);
  assert.equal(b.attempt, 4, "a short-lived connection keeps backing off");
  b.connectionEnded(61_000);
  assert.equal(b.attempt, 0);
  assert.equal(b.ceiling(), 500);
});

test("delays stay inside [0, ceiling] for any draw", () => {
  const b = new Backoff({ min: 10, max: 40 });
  for (let n = 1; n <= 50; n++) {
    const ceiling = Math.min(40, 10 * 2 ** (n - 1));
    assert.equal(b.ceiling(), ceiling);
    const d = b.nextDelay(Math.random())!;
    assert.ok(d >= 0 && d <= ceiling, `attempt ${n}: ${d} within [0, ${ceiling}]`);
  }
});
