// The local stack for the e2e and browser tests: the dev gateway
// (target/debug/agentwire-local) on a free port against the LocalStack-
// compatible endpoint on 127.0.0.1:4566, tokens from the CLI.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync } from "node:fs";
import { createConnection, createServer, type AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export const PACKAGE = join(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = join(PACKAGE, "..", "..");
export const BIN = join(REPO, "target", "debug");
export const ENDPOINT = process.env.AGENTWIRE_TEST_ENDPOINT ?? "http://127.0.0.1:4566";
export const SECRET = `ts-e2e-${randomBytes(24).toString("hex")}`;
export const TENANT = `ts-e2e-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
export const AWS_ENV = {
  AWS_ENDPOINT_URL: ENDPOINT,
  AWS_REGION: process.env.AWS_REGION ?? "us-east-1",
  AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? "test",
  AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? "test",
};
export const run = promisify(execFile);
export const debug = (...a: unknown[]) => appendFileSync(process.env.E2E_DEBUG!, a.map(String).join(" ") + "\n");

export async function endpointAnswers(): Promise<boolean> {
  try {
    await fetch(`${ENDPOINT}/`, { signal: AbortSignal.timeout(2_000) });
    return true; // any HTTP answer
  } catch {
    return false;
  }
}

/** `false` when the local endpoint answers, else why the tests skip. */
export async function endpointSkip(): Promise<string | false> {
  return (await endpointAnswers())
    ? false
    : `the local AWS endpoint ${ENDPOINT} does not answer: run localstack/up (scripts/test does) to run the e2e tests`;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Debian's chromium for the browser tests (never a downloaded browser),
 * launched with these arguments: headless, as root, on a machine whose
 * network is closed (the background-networking flags keep it from
 * calling out). */
export const CHROMIUM = process.env.AGENTWIRE_CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
];

/** `false` when chromium is installed, else why the browser tests skip. */
export function chromiumSkip(): string | false {
  return existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run does)`;
}

/** The dev gateway, started and stopped on one port. */
export class Gateway {
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

export async function token(sub: string, grants: { channels?: string; publish?: string }, secret = SECRET): Promise<string> {
  const args = ["token", "--tenant", TENANT, "--sub", sub];
  if (grants.channels) args.push("--channels", grants.channels);
  if (grants.publish) args.push("--publish", grants.publish);
  const { stdout } = await run(join(BIN, "agentwire"), args, { env: { ...process.env, AGENTWIRE_JWT_SECRET: secret } });
  return stdout.trim();
}

/** Publishes straight to the events queue (SQS), as when the gateway is down. */
export async function publishToQueue(channel: string, n: number): Promise<void> {
  await run(
    join(BIN, "agentwire"),
    ["publish", "--endpoint", ENDPOINT, "--tenant", TENANT, "--channel", channel, "--kind", "status", "--data", JSON.stringify({ n }), "--id", `sqs-${n}`],
    { env: { ...process.env, ...AWS_ENV } },
  );
}

/** Wakes waiters whenever something happened; they re-check their condition. */
export class Changes {
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

