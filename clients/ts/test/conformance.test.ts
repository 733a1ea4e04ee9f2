// Runs every conformance scenario (../../conformance/scenarios/*.json) against
// an in-process scripted gateway, exactly as conformance/README.md says, and
// checks the reconnect schedule in conformance/backoff.json.
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { toBase64 } from "../src/chunks.js";
import { AgentWire, Backoff, type AgentWireOptions, type Channel, type Since } from "../src/index.js";
import { ScriptedServer, Waitable, arrivedAt, mismatch, substitute, type Connection } from "./scripted.js";

// AGENTWIRE_CONFORMANCE_DIR points the runner at another copy (to check the runner itself).
const ROOT =
  process.env.AGENTWIRE_CONFORMANCE_DIR ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "conformance");
const STEP_TIMEOUT_MS = 5_000;

interface Scenario {
  name: string;
  description?: string;
  client: {
    channels: { name: string; since?: Since | null }[];
    token?: string;
    tokens?: string[];
    ackDebounceMs?: number | null;
    minReconnectMs?: number;
    maxReconnectMs?: number;
    maxAttempts?: number;
    jitter?: number;
    holeGraceMs?: number;
  };
  script: Record<string, unknown>[];
}

type Observation = Record<string, Record<string, unknown>>;

async function run(s: Scenario): Promise<void> {
  const server = await ScriptedServer.start();
  const observations = new Waitable<Observation>();
  // State changes: a sequence of their own (conformance/README.md).
  const states = new Waitable<Observation>();
  const tokens = s.client.tokens ? [...s.client.tokens] : undefined;
  const options: AgentWireOptions = {
    WebSocket,
    minReconnectDelay: s.client.minReconnectMs ?? 10,
    maxReconnectDelay: s.client.maxReconnectMs ?? 40,
    pingInterval: 60_000,
    maxConnectionAge: null,
    ackDebounce: s.client.ackDebounceMs ?? null,
  };
  if (s.client.maxAttempts !== undefined) options.maxAttempts = s.client.maxAttempts;
  if (s.client.jitter !== undefined) options.jitter = s.client.jitter;
  if (s.client.holeGraceMs !== undefined) options.holeGrace = s.client.holeGraceMs;
  if (tokens) {
    options.getToken = () => {
      const t = tokens.shift();
      if (t === undefined) throw new Error("the scenario's token list is used up");
      return t;
    };
  } else {
    options.token = s.client.token ?? "t";
  }
  const client = new AgentWire(server.url, options);
  let ended = false;
  client.on("state", (st) => {
    const o: Record<string, unknown> = { previous: st.previous, current: st.current, reason: st.reason };
    if (st.attempt !== undefined) o.attempt = st.attempt;
    if (st.delay !== undefined) o.delay_ms = st.delay;
    if (st.error) o.error = { code: st.error.code };
    states.push({ state: o });
    if (st.current !== "closed") return;
    ended = true;
    if (st.error) observations.push({ fatal: { code: st.error.code, message: st.error.message } });
  });
  const channels = new Map<string, Channel>();
  const join = (name: string, since: Since | null | undefined) => {
    const ch = client.channel(name, since == null ? {} : { since });
    channels.set(name, ch);
    ch.on("joined", (j) => observations.push({ joined: { ...j } }));
    ch.on("event", (e) => observations.push({ event: { ...e } }));
    ch.on("gap", (g) => observations.push({ gap: { ...g } }));
    ch.on("message", (m) =>
      observations.push({
        message: { ...m, data: m.data instanceof Uint8Array ? toBase64(m.data) : m.data },
      }),
    );
    ch.on("message_lost", (l) => observations.push({ message_lost: { ...l } }));
    ch.on("resync", (r) => observations.push({ resync: { ...r } }));
  };
  for (const c of s.client.channels) join(c.name, c.since);
  let conn: Connection | undefined;
  let lastId: string | undefined;
  // When the previous step completed, for `notBeforeMs`.
  let previousDone = performance.now();
  client.connect();
  try {
    for (const [i, step] of s.script.entries()) {
      const entries = Object.entries(step).filter(([k]) => k !== "notBeforeMs");
      assert.equal(entries.length, 1, `step ${i + 1}: one operation per step`);
      const [op, arg] = entries[0] as [string, Record<string, unknown>];
      const notBefore = step.notBeforeMs as number | undefined;
      assert.ok(notBefore === undefined || op === "expect", `step ${i + 1}: notBeforeMs belongs to an expect`);
      const where = `step ${i + 1} ${JSON.stringify(step)}`;
      switch (op) {
        case "accept": {
          const u = await server.upgrades.next(STEP_TIMEOUT_MS, `an upgrade (${where})`);
          assert.ok(u.offered.includes("agentwire.v1"), `${where}: the upgrade offers ${JSON.stringify(u.offered)}`);
          if (arg.token !== undefined) assert.equal(u.token, arg.token, `${where}: the upgrade's token`);
          conn = await server.accept(u);
          break;
        }
        case "refuse": {
          const u = await server.upgrades.next(STEP_TIMEOUT_MS, `an upgrade (${where})`);
          server.refuse(u, arg.status as number, arg.body);
          break;
        }
        case "expect": {
          assert.ok(conn, `${where}: no connection`);
          let frame: Record<string, unknown>;
          do frame = await conn.frames.next(STEP_TIMEOUT_MS, `a frame from the client (${where})`);
          while (frame.action === "ping" && arg.action !== "ping");
          const m = mismatch(arg, frame);
          assert.equal(m, undefined, `${where}: the client sent ${JSON.stringify(frame)}: ${m}`);
          if (notBefore !== undefined) {
            const after = (arrivedAt.get(frame) ?? performance.now()) - previousDone;
            assert.ok(after >= notBefore, `${where}: the frame came ${after.toFixed(1)} ms after the previous step`);
          }
          if (typeof frame.id === "string") lastId = frame.id;
          break;
        }
        case "send":
          assert.ok(conn, `${where}: no connection`);
          conn.ws.send(JSON.stringify(substitute(arg, lastId)));
          break;
        case "drop":
          assert.ok(conn, `${where}: no connection`);
          conn.ws.terminate();
          conn = undefined;
          break;
        case "close":
          assert.ok(conn, `${where}: no connection`);
          conn.ws.close((arg.code as number | undefined) ?? 1000, (arg.reason as string | undefined) ?? "");
          break;
        case "observe": {
          const [kind, pattern] = Object.entries(arg)[0]!;
          const o = await (kind === "state" ? states : observations).next(STEP_TIMEOUT_MS, `an observation (${where})`);
          assert.ok(kind in o, `${where}: observed ${JSON.stringify(o)}`);
          const m = mismatch(pattern, o[kind]);
          assert.equal(m, undefined, `${where}: observed ${JSON.stringify(o)}: ${m}`);
          if (kind === "fatal") {
            assert.ok(ended, `${where}: the client did not stop`);
            assert.equal(client.state, "closed");
          }
          break;
        }
        case "act":
          if ("close" in arg) void client.close();
          else if ("leave" in arg) {
            const name = (arg.leave as { channel: string }).channel;
            const ch = channels.get(name);
            assert.ok(ch, `${where}: no channel ${name}`);
            void ch.leave();
          } else if ("pause" in arg || "resume" in arg) {
            const name = ((arg.pause ?? arg.resume) as { channel: string }).channel;
            const ch = channels.get(name);
            assert.ok(ch, `${where}: no channel ${name}`);
            if ("pause" in arg) void ch.pause();
            else ch.resume();
          } else if ("resync" in arg) {
            const name = (arg.resync as { channel?: string }).channel;
            if (name === undefined) client.resync();
            else {
              const ch = channels.get(name);
              assert.ok(ch, `${where}: no channel ${name}`);
              ch.resync();
            }
          } else if ("join" in arg) {
            const j = arg.join as { channel: string; since?: Since | null };
            join(j.channel, j.since);
          } else assert.fail(`${where}: unknown act`);
          break;
        case "no_connection":
          assert.ok(ended, `${where}: the client has not stopped`);
          assert.equal(server.upgrades.size, 0, `${where}: the client opened another connection`);
          break;
        default:
          assert.fail(`${where}: unknown step ${op}`);
      }
      previousDone = performance.now();
    }
    if (ended) {
      assert.equal(observations.size, 0, `nothing after the end: ${JSON.stringify(observations.peekAll())}`);
    }
  } finally {
    await client.close();
    await server.stop();
  }
}

const scenarioDir = join(ROOT, "scenarios");
const files = existsSync(scenarioDir) ? readdirSync(scenarioDir).filter((f) => f.endsWith(".json")).sort() : [];

test("conformance scenarios exist", () => {
  assert.ok(files.length > 0, `no scenario in ${scenarioDir}`);
});

for (const file of files) {
  const scenario = JSON.parse(readFileSync(join(scenarioDir, file), "utf8")) as Scenario;
  test(file, { timeout: 60_000 }, () => run(scenario));
}

test("backoff.json", () => {
  const b = JSON.parse(readFileSync(join(ROOT, "backoff.json"), "utf8")) as {
    min_ms: number;
    max_ms: number;
    ceilings_ms: number[];
    draws?: { attempt: number; unit: number; delay_ms: number }[];
    jitter_draws: { attempt: number; unit: number; jitter: number; delay_ms: number }[];
  };
  const schedule = new Backoff({ min: b.min_ms, max: b.max_ms });
  const ceilings = b.ceilings_ms.map(() => {
    const c = schedule.ceiling();
    schedule.nextDelay(0.5);
    return c;
  });
  assert.deepEqual(ceilings, b.ceilings_ms);
  for (const d of b.draws ?? []) {
    const s = new Backoff({ min: b.min_ms, max: b.max_ms });
    for (let n = 1; n < d.attempt; n++) s.nextDelay(0);
    assert.equal(s.nextDelay(d.unit), d.delay_ms, `attempt ${d.attempt}, unit ${d.unit}`);
  }
  assert.ok(b.jitter_draws.length > 0);
  for (const d of b.jitter_draws) {
    const s = new Backoff({ min: b.min_ms, max: b.max_ms, jitter: d.jitter });
    for (let n = 1; n < d.attempt; n++) s.nextDelay(0);
    assert.equal(s.nextDelay(d.unit), d.delay_ms, `attempt ${d.attempt}, unit ${d.unit}, jitter ${d.jitter}`);
  }
  // Every draw stays inside [0, ceiling].
  const s = new Backoff({ min: b.min_ms, max: b.max_ms });
  for (let n = 1; n <= b.ceilings_ms.length; n++) {
    const d = s.nextDelay(Math.random())!;
    assert.ok(d >= 0 && d <= b.ceilings_ms[n - 1]!, `attempt ${n}: ${d}`);
  }
});
