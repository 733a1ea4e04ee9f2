// The console in headless Chromium against the local stack: the dev gateway
// (clients/ts/test/stack.ts: its Gateway, tokens and endpoint check, reused)
// serving clients/console/dist at /console/, Debian's chromium driven by
// playwright-core (never a downloaded browser), events published for real by
// the CLI (target/debug/agentwire) and the TypeScript client.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium, type Browser, type Page } from "playwright-core";
import { AWS_ENV, BIN, CHROMIUM, CHROMIUM_ARGS, ENDPOINT, Gateway, SECRET, TENANT, chromiumSkip, endpointSkip, freePort, token } from "../../ts/test/stack.js";

export { BIN, ENDPOINT, Gateway, SECRET, TENANT, token };

export const CONSOLE = join(dirname(fileURLToPath(import.meta.url)), "..");
export const ARTIFACTS = join(CONSOLE, "test-artifacts");
const execFileP = promisify(execFile);

export const skip: string | false =
  (await endpointSkip()) ||
  chromiumSkip() ||
  (existsSync(join(BIN, "agentwire-local")) && existsSync(join(BIN, "agentwire"))
    ? false
    : `${BIN}/agentwire-local or agentwire is missing: cargo build -p agentwire-local -p agentwire-cli`) ||
  (existsSync(join(CONSOLE, "dist", "index.html")) ? false : "clients/console/dist is missing: npm run build first");

if (skip) console.log(`# skipped: ${skip}`);

/** The dev gateway with the retention floor lowered (a test shortens one
 * channel's retention to see events expire; the 2 h floor protects
 * deployments, not this test). stack.ts's Gateway passes process.env on. */
export async function startGateway(): Promise<Gateway & { removeQueue(): Promise<void> }> {
  process.env.AGENTWIRE_MIN_RETENTION = "0s";
  const queue = await ownQueue();
  process.env.AGENTWIRE_EVENTS_QUEUE = queue.name;
  const tables = await ownTables();
  const gw = new Gateway(await freePort());
  await gw.start();
  const stop = gw.stop.bind(gw);
  return Object.assign(gw, {
    removeQueue: queue.remove,
    stop: async () => {
      await stop();
      await queue.remove().catch(() => undefined);
      await tables.remove().catch(() => undefined);
    },
  });
}

export async function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** The CLI with the local stack's environment. */
export async function cli(args: string[], env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await execFileP(join(BIN, "agentwire"), args, {
    env: { ...process.env, ...AWS_ENV, AGENTWIRE_JWT_SECRET: SECRET, AGENTWIRE_MIN_RETENTION: "0s", ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout.trim();
}

/** `agentwire publish --url … --token … --channel … --kind … --data …`. */
export function cliPublish(gw: Gateway, tok: string, channel: string, kind: string, data: unknown): Promise<string> {
  return cli(["publish", "--url", gw.http, "--token", tok, "--channel", channel, "--kind", kind, "--data", JSON.stringify(data)]);
}

/** `agentwire publish --stream` with `text` on stdin. */
export function cliStream(gw: Gateway, tok: string, channel: string, kind: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(join(BIN, "agentwire"), ["publish", "--url", gw.http, "--token", tok, "--channel", channel, "--kind", kind, "--stream"], {
      env: { ...process.env, ...AWS_ENV, AGENTWIRE_JWT_SECRET: SECRET },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    p.once("error", reject);
    p.once("exit", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`agentwire publish --stream: ${code}: ${err}`))));
    p.stdin.end(text);
  });
}

export interface Running {
  /** Ends the command (SIGTERM, forwarded by `agentwire run`) if it still runs. */
  kill(): void;
  done: Promise<{ code: number; stdout: string; stderr: string }>;
}

/** `agentwire run --channel C --url U --token T [--progress-regex RE] -- CMD ARGS`. */
export function cliRun(gw: Gateway, tok: string, channel: string, command: string[], extra: string[] = []): Running {
  const p = spawn(join(BIN, "agentwire"), ["run", "--channel", channel, "--url", gw.http, "--token", tok, ...extra, "--", ...command], {
    env: { ...process.env, AGENTWIRE_JWT_SECRET: SECRET },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    p.once("error", reject);
    p.once("exit", (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr }));
  });
  return {
    done,
    kill: () => {
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
    },
  };
}

export interface Opened {
  page: Page;
  logs: string[];
}

/** The console's link on the gateway. */
export function consoleUrl(gw: Gateway, params: Record<string, string>): string {
  return `${gw.http}/console/?${new URLSearchParams(params)}`;
}

/** Opens the console and waits until every channel is live (joined). */
export async function openConsole(browser: Browser, url: string, channels: string[], onPage?: (page: Page) => void): Promise<Opened> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  onPage?.(page);
  const logs: string[] = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(url);
  await waitLive(page, channels, logs);
  return { page, logs };
}

export async function waitLive(page: Page, channels: string[], logs: string[] = []): Promise<void> {
  for (const c of channels) {
    await page
      .waitForSelector(`section.agent[data-channel="${c}"] .conn[data-state="live"]`, { timeout: 90_000 })
      .catch((e: unknown) => {
        throw new Error(`${String(e)}\npage console:\n${logs.join("\n")}`);
      });
  }
}

export function panel(channel: string): string {
  return `section.agent[data-channel="${channel}"]`;
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Waits until `fn(arg)`, run in the page, is truthy (a function, not a
 * string: the gateway's CSP has no 'unsafe-eval'); says what it waited for. */
export async function until<T, A = undefined>(page: Page, what: string, fn: (arg: A) => T | false | undefined | null, arg?: A, ms = 90_000): Promise<T> {
  try {
    const h = await page.waitForFunction(fn as (arg: unknown) => unknown, arg as unknown, { timeout: ms, polling: 100 });
    return (await h.jsonValue()) as T;
  } catch (e) {
    throw new Error(`waited ${ms} ms for ${what}: ${String(e).split("\n")[0]}`);
  }
}

/** Waits until the channel's terminal (its last `lines` lines) holds `needle`. */
export function terminalHas(page: Page, channel: string, needle: string, ms = 90_000, lines = 10_000): Promise<boolean> {
  return until(
    page,
    `${JSON.stringify(needle)} in the terminal of ${channel}`,
    (a: { channel: string; needle: string; lines: number }) => window.__agentwireConsole?.terminalText(a.channel, a.lines).includes(a.needle) ?? false,
    { channel, needle, lines },
    ms,
  );
}

/** Waits until `selector` matches exactly `n` elements. */
export function countIs(page: Page, selector: string, n: number, ms = 90_000): Promise<boolean> {
  return until(page, `${n} × ${selector}`, (a: { selector: string; n: number }) => document.querySelectorAll(a.selector).length === a.n, { selector, n }, ms);
}

/** Waits until the text of `selector` includes `needle`. */
export function textHas(page: Page, selector: string, needle: string, ms = 90_000): Promise<boolean> {
  return until(page, `${JSON.stringify(needle)} in ${selector}`, (a: { selector: string; needle: string }) => document.querySelector(a.selector)?.textContent?.includes(a.needle) ?? false, { selector, needle }, ms);
}

const TABLES: [env: string, suffix: string, range?: [string, "S" | "N"]][] = [
  ["AGENTWIRE_CONNECTIONS_TABLE", "connections"],
  ["AGENTWIRE_SUBSCRIPTIONS_TABLE", "subscriptions", ["sk", "S"]],
  ["AGENTWIRE_CHANNELS_TABLE", "channels"],
  ["AGENTWIRE_EVENTS_TABLE", "events", ["sk", "N"]],
  ["AGENTWIRE_CURSORS_TABLE", "cursors", ["sk", "S"]],
  ["AGENTWIRE_LIMITS_TABLE", "limits"],
];

async function dynamo(target: string, body: unknown): Promise<void> {
  const r = await fetch(`${ENDPOINT}/`, {
    method: "POST",
    headers: {
      "content-type": "application/x-amz-json-1.0",
      "x-amz-target": `DynamoDB_20120810.${target}`,
      authorization: "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
    },
    body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`DynamoDB ${target}: ${r.status} ${await r.text()}`);
}

/** Tables of this test run's own (localstack/resources.json's, under a
 * prefix), named to the gateway and the CLI by their environment: moto
 * copies a whole table on every transactional write, so the shared tables,
 * grown by every test run of the day, make each commit slow. */
export async function ownTables(): Promise<{ remove(): Promise<void> }> {
  const prefix = `aw-console-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const names: string[] = [];
  for (const [env, suffix, range] of TABLES) {
    const name = `${prefix}-${suffix}`;
    const attrs = [{ AttributeName: "pk", AttributeType: "S" }];
    const keys = [{ AttributeName: "pk", KeyType: "HASH" }];
    if (range) {
      attrs.push({ AttributeName: range[0], AttributeType: range[1] });
      keys.push({ AttributeName: range[0], KeyType: "RANGE" });
    }
    await dynamo("CreateTable", { TableName: name, AttributeDefinitions: attrs, KeySchema: keys, BillingMode: "PAY_PER_REQUEST" });
    await dynamo("UpdateTimeToLive", { TableName: name, TimeToLiveSpecification: { Enabled: true, AttributeName: "expires_at" } });
    process.env[env] = name;
    names.push(name);
  }
  return {
    remove: async () => {
      for (const n of names) await dynamo("DeleteTable", { TableName: n }).catch(() => undefined);
    },
  };
}

/** An events queue of this test run's own (like localstack/up's): a gateway
 * of another test run on the shared queue would take, and commit, these
 * events, and this gateway's connections would never see them. */
export async function ownQueue(): Promise<{ name: string; remove(): Promise<void> }> {
  const name = `agentwire-console-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}.fifo`;
  const sqs = async (params: Record<string, string>) => {
    const r = await fetch(`${ENDPOINT}/`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
      },
      body: new URLSearchParams({ Version: "2012-11-05", ...params }),
    });
    if (r.status !== 200) throw new Error(`SQS ${params.Action}: ${r.status} ${await r.text()}`);
  };
  const attrs: [string, string][] = [
    ["FifoQueue", "true"],
    ["VisibilityTimeout", "2"],
    ["DeduplicationScope", "messageGroup"],
    ["FifoThroughputLimit", "perMessageGroupId"],
  ];
  const params: Record<string, string> = { Action: "CreateQueue", QueueName: name };
  attrs.forEach(([k, v], i) => {
    params[`Attribute.${i + 1}.Name`] = k;
    params[`Attribute.${i + 1}.Value`] = v;
  });
  await sqs(params);
  return { name, remove: () => sqs({ Action: "DeleteQueue", QueueUrl: `${ENDPOINT}/123456789012/${name}` }) };
}

export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
}

export { freePort };
