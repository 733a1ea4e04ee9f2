// End to end on the local stack: the dev gateway (target/debug/agentwire-local)
// on a free port against the LocalStack-compatible endpoint on 127.0.0.1:4566
// (scripts/test brings it up; `localstack/up` by hand). Skipped, with a
// message, only when that endpoint does not answer.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync } from "node:fs";
import { createConnection, createServer, type AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { WebSocket } from "ws";
import {
  AgentWire,
  AgentWireError,
  ProtocolError,
  UnauthorizedError,
  publish,
  type StateChange,
  type StreamItem,
} from "../src/index.js";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const BIN = join(REPO, "target", "debug");
const ENDPOINT = process.env.AGENTWIRE_TEST_ENDPOINT ?? "http://127.0.0.1:4566";
const SECRET = `ts-e2e-${randomBytes(24).toString("hex")}`;
const TENANT = `ts-e2e-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
const AWS_ENV = {
  AWS_ENDPOINT_URL: ENDPOINT,
  AWS_REGION: process.env.AWS_REGION ?? "us-east-1",
  AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? "test",
  AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? "test",
};
const run = promisify(execFile);
const debug = (...a: unknown[]) => appendFileSync(process.env.E2E_DEBUG!, a.map(String).join(" ") + "\n");

async function endpointAnswers(): Promise<boolean> {
  try {
    await fetch(`${ENDPOINT}/`, { signal: AbortSignal.timeout(2_000) });
    return true; // any HTTP answer
  } catch {
    return false;
  }
}

const skip = (await endpointAnswers())
  ? false
  : `the local AWS endpoint ${ENDPOINT} does not answer: run localstack/up (scripts/test does) to run the e2e tests`;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** The dev gateway, started and stopped on one port. */
class Gateway {
  proc: ChildProcess | undefined;
  log = "";
  constructor(readonly port: number) {}

  get ws(): string {
    return `ws://127.0.0.1:${this.port}`;
  }
  get http(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const proc = spawn(join(BIN, "agentwire-local"), ["--port", String(this.port)], {
      env: { ...process.env, ...AWS_ENV, AGENTWIRE_JWT_SECRET: SECRET, RUST_LOG: process.env.RUST_LOG ?? "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    const keep = (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20_000);
    };
    proc.stdout!.on("data", keep);
    proc.stderr!.on("data", keep);
    let exited = false;
    proc.once("exit", () => {
      exited = true;
    });
    const deadline = Date.now() + 30_000;
    // Poll the port (the gateway binds it once its queues and tables answer).
    while (!(await portOpen(this.port))) {
      if (exited) throw new Error(`agentwire-local exited before listening:\n${this.log}`);
      if (Date.now() > deadline) throw new Error(`agentwire-local did not listen within 30 s:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    // Ctrl-C: the gateway stops gracefully, finishing the queue receive it
    // has under way (a killed one would leave those messages invisible for
    // the queue's 60 s visibility timeout, holding up their FIFO group).
    proc.kill("SIGINT");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(timer);
    this.proc = undefined;
  }
}

async function token(sub: string, grants: { channels?: string; publish?: string }, secret = SECRET): Promise<string> {
  const args = ["token", "--tenant", TENANT, "--sub", sub];
  if (grants.channels) args.push("--channels", grants.channels);
  if (grants.publish) args.push("--publish", grants.publish);
  const { stdout } = await run(join(BIN, "agentwire"), args, { env: { ...process.env, AGENTWIRE_JWT_SECRET: secret } });
  return stdout.trim();
}

/** Publishes straight to the events queue (SQS), as when the gateway is down. */
async function publishToQueue(channel: string, n: number): Promise<void> {
  await run(
    join(BIN, "agentwire"),
    ["publish", "--endpoint", ENDPOINT, "--tenant", TENANT, "--channel", channel, "--kind", "status", "--data", JSON.stringify({ n }), "--id", `sqs-${n}`],
    { env: { ...process.env, ...AWS_ENV } },
  );
}

/** Wakes waiters whenever something happened; they re-check their condition. */
class Changes {
  #waiters = new Set<() => void>();
  poke(): void {
    for (const w of [...this.#waiters]) w();
  }
  until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`waited ${ms} ms for ${what()}`));
      }, ms);
      const cleanup = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
    });
  }
}

describe("e2e on the local stack", { skip }, () => {
  let gw: Gateway;

  before(async () => {
    for (const bin of ["agentwire-local", "agentwire"]) {
      assert.ok(
        existsSync(join(BIN, bin)),
        `${join(BIN, bin)} is missing: cargo build -p agentwire-local -p agentwire-cli`,
      );
    }
    gw = new Gateway(await freePort());
    await gw.start();
  });

  after(async () => {
    await gw?.stop();
  });

  test("a client tails a channel across a gateway restart: every seq once, in order, no gap", { timeout: 120_000 }, async () => {
    const channel = `agent-restart-${randomBytes(3).toString("hex")}`;
    const reader = await token("reader", { channels: "agent-*" });
    const agent = await token("agent", { publish: "agent-*" });
    const client = new AgentWire(gw.ws, {
      WebSocket,
      getToken: () => token("reader", { channels: "agent-*" }),
      minReconnectDelay: 50,
      maxReconnectDelay: 400,
    });
    assert.ok(reader);
    const changes = new Changes();
    const states: StateChange[] = [];
    const errors: AgentWireError[] = [];
    client.on("state", (s) => {
      if (process.env.E2E_DEBUG) debug("state", s.current, s.reason);
      states.push(s);
      changes.poke();
    });
    client.on("error", (e) => errors.push(e));
    const ch = client.channel(channel, { since: "head" });
    const items: StreamItem[] = [];
    const gaps: unknown[] = [];
    ch.on("gap", (g) => gaps.push(g));
    const consumed = (async () => {
      for await (const item of ch.stream()) {
        items.push(item);
        changes.poke();
      }
    })();
    const seqs = () => items.filter((i) => i.type === "event").map((i) => (i.type === "event" ? i.seq : 0));
    const joined: unknown[] = [];
    ch.on("joined", (j) => {
      if (process.env.E2E_DEBUG) debug("joined", JSON.stringify(j));
      joined.push(j);
      changes.poke();
    });
    client.connect();
    try {
    await client.ready();
    await changes.until(() => joined.length >= 1, 10_000, () => "the first joined");

    for (let n = 1; n <= 3; n++) {
      const r = await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `http-${n}` });
      assert.equal(r.channel, channel);
    }
    await changes.until(() => seqs().length >= 3, 20_000, () => `seqs 1..=3, got ${JSON.stringify(seqs())}`);

    await gw.stop();
    await changes.until(() => client.state === "reconnecting", 20_000, () => `reconnecting, state ${client.state}`);
    for (let n = 4; n <= 6; n++) await publishToQueue(channel, n);
    const connectedBefore = states.filter((s) => s.current === "connected").length;
    await gw.start();
    await changes.until(
      () => states.filter((s) => s.current === "connected").length > connectedBefore,
      30_000,
      () => `a reconnect, states ${JSON.stringify(states.map((s) => s.current))}`,
    );
    for (let n = 7; n <= 8; n++) {
      await publish({ url: gw.http, token: agent, channel, kind: "status", data: { n }, idempotencyKey: `http-${n}` });
    }
    await changes.until(() => seqs().length >= 8, 30_000, () => `seqs 1..=8, got ${JSON.stringify(seqs())}\n${gw.log}`);

    assert.deepEqual(seqs(), [1, 2, 3, 4, 5, 6, 7, 8], "every seq once, in order");
    assert.deepEqual(
      items.map((i) => (i.type === "event" ? (i.data as { n: number }).n : -1)),
      [1, 2, 3, 4, 5, 6, 7, 8],
      "in publish order",
    );
    assert.deepEqual(gaps, [], "no gap");
    assert.ok(items.every((i) => i.type === "event"), "no gap in the stream");
    assert.deepEqual(ch.position, { epoch: (items[7] as { epoch: string }).epoch, seq: 8 });
    } finally {
      await client.close();
    }
    await consumed;
    assert.equal(client.state, "closed");
    assert.deepEqual(
      errors.filter((e) => e.code !== "listener"),
      [],
      "no error on the way",
    );
  });

  test("a forbidden channel gives a typed `forbidden` error on the channel; the client carries on", { timeout: 30_000 }, async () => {
    const client = new AgentWire(gw.ws, { WebSocket, token: await token("reader", { channels: "agent-*" }) });
    const ok = client.channel("agent-allowed", { since: "head" });
    const secret = client.channel("secret-1", { since: "head" });
    const changes = new Changes();
    let refused: AgentWireError | undefined;
    let clientError: AgentWireError | undefined;
    let joinedOk = false;
    secret.on("error", (e) => {
      refused = e;
      changes.poke();
    });
    client.on("error", (e) => {
      clientError = e;
      changes.poke();
    });
    ok.on("joined", () => {
      joinedOk = true;
      changes.poke();
    });
    // The refusal also ends the channel's stream with the error.
    const streamEnd = (async () => {
      try {
        for await (const _ of secret.stream()) {
          // nothing arrives on a refused channel
        }
        return undefined;
      } catch (e) {
        return e;
      }
    })();
    client.connect();
    await changes.until(() => refused !== undefined, 15_000, () => "the refusal of secret-1");
    assert.ok(refused instanceof ProtocolError, `a ProtocolError: ${refused}`);
    assert.ok(refused instanceof AgentWireError);
    assert.equal(refused.code, "forbidden");
    assert.equal(refused.retryable, false);
    assert.equal(clientError?.code, "forbidden");
    assert.equal(await streamEnd, refused);
    // A join is all or nothing: agent-allowed shared the refused frame only if
    // both were sent together; joining it again by itself works.
    if (!joinedOk) {
      assert.ok(!client.channels.some((c) => c.name === "agent-allowed"));
      const again = client.channel("agent-allowed", { since: "head" });
      again.on("joined", () => {
        joinedOk = true;
        changes.poke();
      });
    }
    await changes.until(() => joinedOk, 15_000, () => "agent-allowed joined");
    assert.equal(client.state, "connected");
    await client.close();
  });

  test("a refused token (wrong secret) gives UnauthorizedError and the client ends", { timeout: 30_000 }, async () => {
    const bad = await token("reader", { channels: "agent-*" }, `another-secret-${randomBytes(16).toString("hex")}`);
    const client = new AgentWire(gw.ws, { WebSocket, token: bad, minReconnectDelay: 10, maxReconnectDelay: 40 });
    const states: StateChange[] = [];
    client.on("state", (s) => states.push(s));
    client.channel("agent-1");
    client.connect();
    await assert.rejects(client.ready(), (e: unknown) => {
      assert.ok(e instanceof UnauthorizedError, `UnauthorizedError: ${e}`);
      assert.equal(e.code, "unauthorized");
      return true;
    });
    assert.equal(client.state, "closed");
    const last = states.at(-1)!;
    assert.equal(last.current, "closed");
    assert.ok(last.error instanceof UnauthorizedError);
    assert.equal(states.filter((s) => s.current === "reconnecting").length, 0, "a fixed token is not retried");

    // A token provider is asked again once; refused twice in a row, the client ends.
    let asked = 0;
    const provided = new AgentWire(gw.ws, {
      WebSocket,
      getToken: () => {
        asked += 1;
        return bad;
      },
      minReconnectDelay: 10,
      maxReconnectDelay: 40,
    });
    provided.connect();
    await assert.rejects(provided.ready(), UnauthorizedError);
    assert.equal(asked, 2);
  });

  test("publish maps the HTTP API's errors to typed errors", { timeout: 30_000 }, async () => {
    const reader = await token("reader", { channels: "agent-*" });
    await assert.rejects(
      publish({ url: gw.http, token: reader, channel: "agent-1", kind: "status", data: {} }),
      (e: unknown) => e instanceof ProtocolError && e.code === "forbidden" && e.status === 403,
    );
    await assert.rejects(
      publish({ url: gw.http, token: "not-a-token", channel: "agent-1", kind: "status", data: {} }),
      (e: unknown) => e instanceof UnauthorizedError && e.status === 401,
    );
    const agent = await token("agent", { publish: "agent-*" });
    await assert.rejects(
      publish({ url: gw.http, token: agent, channel: "agent-1", kind: "status", data: { big: "x".repeat(300_000) } }),
      (e: unknown) => e instanceof AgentWireError && e.code === "message_too_large" && e.status === 413,
    );
    const key = `idem-${randomBytes(4).toString("hex")}`;
    const a = await publish({ url: gw.http, token: agent, channel: "agent-idem", kind: "status", data: 1, idempotencyKey: key });
    const b = await publish({ url: gw.http, token: agent, channel: "agent-idem", kind: "status", data: 1, idempotencyKey: key });
    assert.equal(a.id, b.id);
  });
});
