// The browser example (examples/browser) in headless Chromium against the
// local stack: the page connects with the browser's own WebSocket (token in
// the query string), an event is published over the HTTP route, and the page
// shows it. Debian's chromium (/usr/bin/chromium, installed by .ci/run) is
// driven by playwright-core; no browser is downloaded. Skipped, with a
// message, when the endpoint does not answer or chromium is not installed.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, normalize } from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium, type Browser } from "playwright-core";
import { publish } from "../src/index.js";
import { CHROMIUM, CHROMIUM_ARGS, Gateway, PACKAGE, chromiumSkip, endpointSkip, freePort, token } from "./stack.js";

const skip =
  (await endpointSkip()) ||
  chromiumSkip() ||
  (existsSync(join(PACKAGE, "dist", "index.js")) ? false : "dist/index.js is missing: npm run build first");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".cjs": "text/javascript; charset=utf-8",
  ".map": "application/json",
};

/** Serves clients/ts read-only (the page and the ESM build it imports). */
async function serveStatic(): Promise<Server> {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    const file = join(PACKAGE, path);
    if (!file.startsWith(PACKAGE) || !existsSync(file) || path.endsWith("/")) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

describe("the browser example in headless Chromium", { skip }, () => {
  let gw: Gateway;
  let web: Server;
  let browser: Browser;

  before(async () => {
    gw = new Gateway(await freePort());
    await gw.start();
    web = await serveStatic();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });

  after(async () => {
    await browser?.close();
    await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
    await gw?.stop();
  });

  test("the page shows an event published while it is open", { timeout: 60_000 }, async () => {
    const channel = `agent-browser-${Date.now().toString(36)}`;
    const reader = await token("viewer", { channels: "agent-*" });
    const agent = await token("agent", { publish: "agent-*" });
    const page = await browser.newPage();
    const logs: string[] = [];
    page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    const { port } = web.address() as AddressInfo;
    const q = new URLSearchParams({ url: gw.ws, token: reader, channel });
    await page.goto(`http://127.0.0.1:${port}/examples/browser/index.html?${q}`);
    // Joined (the answer to the page's join): only then is a live event its.
    await page.waitForSelector("body[data-joined]", { timeout: 20_000 }).catch((e) => {
      throw new Error(`${e}\npage console:\n${logs.join("\n")}`);
    });
    assert.equal(await page.getAttribute("#state", "data-state"), "connected");
    const sent = await publish({ url: gw.http, token: agent, channel, kind: "status", data: { text: "hello, browser" } });
    const item = await page.waitForSelector('#events li[data-seq="1"]', { timeout: 20_000 });
    assert.equal(await item.textContent(), 'status: {"text":"hello, browser"}');
    assert.ok(sent.id);
    await page.screenshot({ path: join(PACKAGE, "examples", "browser", "last-run.png") });
    await page.close();
  });
});
