// The console as a person uses it: headless Chromium (Debian's, through
// playwright-core) opens the dev gateway's /console/ from a link, and events
// are published for real by the CLI (`agentwire run`, `agentwire publish`,
// `--stream`) and the TypeScript client (publish, publishBatch, openStream).
// Every assertion is on what the page shows. Screenshots go to
// test-artifacts/. Skipped, with a message, without the local endpoint,
// chromium, the binaries or dist/.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import { channelInfo, openStream, publish, publishBatch } from "@agentwire/client";
import type { Browser, Page } from "playwright-core";
import {
  cli,
  cliPublish,
  cliRun,
  cliStream,
  consoleUrl,
  ENDPOINT,
  launch,
  openConsole,
  panel,
  screenshot,
  skip,
  startGateway,
  TENANT,
  token,
  unique,
  until,
  terminalHas,
  countIs,
  textHas,
  waitLive,
  type Gateway,
} from "./harness.js";

/** A test's limit, and the wait for what a publish makes the page show: the
 * local endpoint (moto, one Python process shared by every test run on the
 * machine) can take many seconds per commit under load. */
const T = 300_000;
const W = 90_000;

describe("the console in headless Chromium", { skip }, () => {
  let gw: Gateway;
  let browser: Browser;
  let viewer: string;
  let agent: string;

  before(async () => {
    gw = await startGateway();
    browser = await launch();
    viewer = await token("viewer", { channels: "agent-*" });
    agent = await token("agent", { publish: "agent-*" });
  });

  afterEach(async () => {
    // What every page of the test last showed (kept when a test failed).
    for (const ctx of browser?.contexts() ?? []) {
      for (const p of ctx.pages()) {
        await screenshot(p, `last-${Date.now().toString(36)}`).catch(() => undefined);
        await p.close().catch(() => undefined);
      }
    }
  });

  after(async () => {
    await browser?.close();
    await gw?.stop();
  });

  const open = (channels: string[], extra: Record<string, string> = {}, onPage?: (page: Page) => void) =>
    openConsole(browser, consoleUrl(gw, { url: gw.ws, token: viewer, channels: channels.join(","), ...extra }), channels, onPage);

  /** Waits (polling the HTTP read) until the channel's log reaches `n`. */
  const headAtLeast = async (channel: string, n: number) => {
    const deadline = Date.now() + W;
    for (;;) {
      const info = await channelInfo({ url: gw.http, token: viewer, channel }).catch(() => ({ head: 0 }));
      if (info.head >= n) return;
      if (Date.now() > deadline) throw new Error(`${channel}: head ${info.head} < ${n} after ${W} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const text = (page: Page, sel: string) => page.locator(sel).first().textContent();

  const aguiBatch = (channel: string, events: Record<string, unknown>[]) =>
    publishBatch({ url: gw.http, token: agent, channel, events: events.map((e) => ({ kind: String(e.type), data: e })) });

  test("opens from a link, moves the token out of the address bar, shows two agents side by side with `agentwire run`", { timeout: T }, async () => {
    const a = unique("agent-run");
    const b = unique("agent-side");
    const { page, logs } = await open([a, b]);
    // The token is gone from the address bar and from history; the tab keeps it.
    assert.ok(!page.url().includes("token="), page.url());
    assert.ok(!page.url().includes(viewer));
    assert.equal(await page.evaluate(() => sessionStorage.getItem("agentwire-console:token")), viewer);
    // History holds no entry with the token (replaced, not pushed).
    const cdp = await page.context().newCDPSession(page);
    const nav = (await cdp.send("Page.getNavigationHistory")) as { entries: { url: string }[] };
    assert.ok(nav.entries.some((e) => e.url.includes("/console/")), JSON.stringify(nav.entries));
    assert.deepEqual(nav.entries.filter((e) => e.url.includes("token")), []);
    await cdp.detach();
    // Side by side: same row, a left of b.
    const boxA = (await page.locator(panel(a)).boundingBox())!;
    const boxB = (await page.locator(panel(b)).boundingBox())!;
    assert.ok(boxA.x + boxA.width <= boxB.x && Math.abs(boxA.y - boxB.y) < 2, `${JSON.stringify(boxA)} ${JSON.stringify(boxB)}`);
    assert.equal(await text(page, `${panel(a)} .status`), "idle");

    // A command that reports progress, then waits for the test (a fifo).
    const dir = mkdtempSync(join(tmpdir(), "console-run-"));
    const fifo = join(dir, "go");
    await new Promise<void>((resolve, reject) => {
      const p = spawn("mkfifo", [fifo]);
      p.once("exit", (c) => (c === 0 ? resolve() : reject(new Error(`mkfifo: ${c}`))));
    });
    const script = [
      'printf "\\033[32mcompiling\\033[0m ok\\n"',
      'printf "\\033[1;31mwarning: careful\\033[0m\\n" >&2',
      "for i in 1 2 3; do echo \"Analyzing code... $i/10 files\"; sleep 0.4; done",
      `read go < ${fifo}`,
      "for i in 4 5 6 7 8 9 10; do echo \"Analyzing code... $i/10 files\"; done",
      "echo done-marker",
    ].join("\n");
    const running = cliRun(gw, agent, a, ["sh", "-c", script], ["--progress-regex", String.raw`(?P<label>Analyzing code\.\.\. (?P<done>\d+)/(?P<total>\d+) files)`]);
    try {
    // The other agent, at the same time, by the TypeScript client.
    await aguiBatch(b, [
      { type: "RUN_STARTED", threadId: b, runId: "side-1" },
      { type: "STEP_STARTED", stepName: "reading" },
    ]);

    await page.waitForSelector(`${panel(a)} .status[data-status="working"]`, { timeout: W });
    await page.waitForSelector(`${panel(a)} .progress[data-done="3"]`, { timeout: W });
    assert.equal(await text(page, `${panel(a)} .progress-text`), "Analyzing code... 3/10 files");
    const width = await page.locator(`${panel(a)} .progress .fill`).evaluate((el) => (el as HTMLElement).style.width);
    assert.equal(parseFloat(width), 30);
    // Three updates about 0.4 s apart: an ETA for the 7 files left, a few seconds.
    await page.waitForSelector(`${panel(a)} .eta[data-ms]`, { timeout: 10_000 });
    const eta = await text(page, `${panel(a)} .eta`);
    assert.match(eta ?? "", /^ETA \d+ s$/);
    const etaMs = Number(await page.locator(`${panel(a)} .eta`).getAttribute("data-ms"));
    assert.ok(etaMs > 0 && etaMs < 60_000, `ETA ${etaMs} ms`);
    assert.equal(await page.locator(`${panel(a)} .online`).isVisible(), true);
    // Terminal: stdout and stderr with their colours.
    await terminalHas(page, a, "warning: careful");
    const term = await page.evaluate((c) => window.__agentwireConsole!.terminalText(c), a);
    assert.match(term, /compiling ok/);
    assert.deepEqual(await page.evaluate((c) => window.__agentwireConsole!.terminalColour(c, "compiling"), a), { palette: 2 });
    assert.deepEqual(await page.evaluate((c) => window.__agentwireConsole!.terminalColour(c, "warning"), a), { palette: 1 });
    // The DOM renderer draws them in those colours.
    await page.waitForSelector(`${panel(a)} .xterm-rows span.xterm-fg-2`, { timeout: 10_000 });
    assert.match((await page.locator(`${panel(a)} .xterm-rows span.xterm-fg-2`).first().textContent()) ?? "", /compiling/);
    // The other agent, in its own panel.
    await page.waitForSelector(`${panel(b)} .status[data-status="working"]`);
    assert.equal(await text(page, `${panel(b)} .step`), "step: reading");
    await screenshot(page, "run-working-two-agents");
    } catch (e) {
      running.kill();
      await screenshot(page, "run-working-two-agents-failed");
      throw e;
    }

    await writeFile(fifo, "go\n");
    const done = await running.done;
    assert.equal(done.code, 0, done.stderr);
    await page.waitForSelector(`${panel(a)} .status[data-status="completed"]`, { timeout: W });
    await page.waitForSelector(`${panel(a)} .progress[data-done="10"]`);
    assert.equal(await text(page, `${panel(a)} .eta`), "");
    await terminalHas(page, a, "done-marker");

    // A failing command: RUN_ERROR with its status.
    const failed = await cliRun(gw, agent, a, ["sh", "-c", "echo failing; exit 3"]).done;
    assert.equal(failed.code, 3);
    await page.waitForSelector(`${panel(a)} .status[data-status="failed"]`, { timeout: W });
    assert.match((await text(page, `${panel(a)} .run-error`)) ?? "", /exited with status 3/);
    await screenshot(page, "run-failed");
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("AG-UI events from the TypeScript client and the CLI: messages, tool calls, state, steps; invalid ones raw, never breaking the page", { timeout: T }, async () => {
    const c = unique("agent-agui");
    const { page, logs } = await open([c]);
    await aguiBatch(c, [
      { type: "RUN_STARTED", threadId: c, runId: "r-agui" },
      { type: "TEXT_MESSAGE_START", messageId: "m1", role: "assistant" },
      { type: "TEXT_MESSAGE_CONTENT", messageId: "m1", delta: "Hello, " },
      { type: "TEXT_MESSAGE_CONTENT", messageId: "m1", delta: "world" },
      { type: "TEXT_MESSAGE_END", messageId: "m1" },
      { type: "TOOL_CALL_START", toolCallId: "t1", toolCallName: "search" },
      { type: "TOOL_CALL_ARGS", toolCallId: "t1", delta: '{"q":' },
      { type: "TOOL_CALL_ARGS", toolCallId: "t1", delta: '"agentwire"}' },
      { type: "TOOL_CALL_END", toolCallId: "t1" },
      { type: "TOOL_CALL_RESULT", messageId: "m2", toolCallId: "t1", content: "3 hits" },
    ]);
    // The step by the CLI, the state by the client (one event each).
    await cliPublish(gw, agent, c, "STEP_STARTED", { type: "STEP_STARTED", stepName: "searching" });
    await publish({ url: gw.http, token: agent, channel: c, kind: "STATE_SNAPSHOT", data: { type: "STATE_SNAPSHOT", snapshot: { files: [], count: 0 } } });
    await publish({
      url: gw.http,
      token: agent,
      channel: c,
      kind: "STATE_DELTA",
      data: { type: "STATE_DELTA", delta: [{ op: "replace", path: "/count", value: 2 }, { op: "add", path: "/files/-", value: "src/main.rs" }] },
    });
    // Claims to be AG-UI, is not: shown raw with a marker.
    await cliPublish(gw, agent, c, "TEXT_MESSAGE_CONTENT", { type: "TEXT_MESSAGE_CONTENT", messageId: 5 });
    await cliPublish(gw, agent, c, "RUN_FINISHED", "not an event");
    await cliPublish(gw, agent, c, "STATE_DELTA", { type: "STATE_DELTA", delta: "<script>alert(1)</script>" });
    // An application's own kind: raw, without the marker.
    await cliPublish(gw, agent, c, "note", { text: "<b>not html</b>" });
    // And the page goes on.
    await cliPublish(gw, agent, c, "STEP_FINISHED", { type: "STEP_FINISHED", stepName: "searching" });
    await cliPublish(gw, agent, c, "RUN_FINISHED", { type: "RUN_FINISHED", threadId: c, runId: "r-agui", result: { ok: true } });

    await page.waitForSelector(`${panel(c)} .status[data-status="completed"]`, { timeout: W });
    assert.equal(await text(page, `${panel(c)} .item.message[data-id="m1"] .text`), "Hello, world");
    assert.equal(await text(page, `${panel(c)} .item.tool[data-id="t1"] .tool-name`), "tool search");
    assert.equal(await text(page, `${panel(c)} .item.tool[data-id="t1"] .args`), '{"q":"agentwire"}');
    assert.equal(await text(page, `${panel(c)} .item.tool[data-id="t1"] .result`), "→ 3 hits");
    const state = JSON.parse((await text(page, `${panel(c)} .state-json`)) ?? "null");
    assert.deepEqual(state, { files: ["src/main.rs"], count: 2 });
    assert.equal(await page.locator(`${panel(c)} .stale`).isVisible(), false);
    assert.equal(await text(page, `${panel(c)} .step`), "");
    assert.ok(await page.locator(`${panel(c)} .item.lifecycle`, { hasText: "step searching" }).count());
    const invalid = page.locator(`${panel(c)} .item.raw.invalid`);
    assert.equal(await invalid.count(), 3);
    assert.deepEqual(await invalid.locator(".kind").allTextContents(), ["TEXT_MESSAGE_CONTENT", "RUN_FINISHED", "STATE_DELTA"]);
    assert.deepEqual(await invalid.locator(".marker").allTextContents(), ["invalid AG-UI", "invalid AG-UI", "invalid AG-UI"]);
    assert.match((await invalid.first().locator(".why").textContent()) ?? "", /messageId|delta/);
    // Shown as text, never as markup.
    assert.equal(await page.locator(`${panel(c)} .item.raw b, ${panel(c)} script`).count(), 0);
    const note = page.locator(`${panel(c)} .item.raw:not(.invalid)`, { hasText: "not html" });
    assert.equal(await note.locator(".kind").textContent(), "note");
    assert.equal(await page.locator(`${panel(c)} .item.raw[data-kind="note"] .marker`).count(), 0);
    await screenshot(page, "agui-events");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("terminal output is untrusted: no javascript: links, no title changes, queries unanswered", { timeout: T }, async () => {
    const c = unique("agent-hostile");
    // Every frame the page sends, from its first.
    const sent: string[] = [];
    const { page, logs } = await open([c], {}, (p) =>
      p.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(typeof f.payload === "string" ? f.payload : f.payload.toString()))),
    );
    const title = await page.title();
    const ESC = "\x1b";
    const link = (uri: string, label: string) => `${ESC}]8;;${uri}${ESC}\\${label}${ESC}]8;;${ESC}\\`;
    const stream = openStream({ url: gw.http, token: agent, channel: c, kind: "stdout" });
    stream.write(`${ESC}]0;pwned-title${ESC}\\${ESC}]2;pwned-title-2\x07`);
    stream.write(`${ESC}[6n${ESC}[5n${ESC}[c${ESC}[>c${ESC}[=c${ESC}[14t${ESC}[18t${ESC}]11;?\x07${ESC}]4;1;?\x07${ESC}P$qm${ESC}\\`);
    stream.write(`evil: ${link("javascript:window.__pwned=1", "EVILLINK")}\r\n`);
    stream.write(`good: ${link("http://127.0.0.1:9/ok", "GOODLINK")}\r\n`);
    stream.write(`${ESC}[35mmagenta-text${ESC}[0m end-of-hostile\r\n`);
    await stream.close();
    await terminalHas(page, c, "end-of-hostile");
    const t = await page.evaluate((ch) => window.__agentwireConsole!.terminal(ch), c);
    assert.equal(t.replies, 0, "the terminal answered a query");
    assert.equal(await page.title(), title);
    assert.equal(title, "agentwire console");
    assert.deepEqual(await page.evaluate((ch) => window.__agentwireConsole!.terminalColour(ch, "magenta-text"), c), { palette: 5 });
    // Click both links where the terminal draws them.
    const popups: string[] = [];
    page.on("popup", (p) => popups.push(p.url()));
    const clickText = async (needle: string) => {
      // The DOM renderer draws a row as spans; the link's text is in one of them.
      const span = page.locator(`${panel(c)} .xterm-rows span`, { hasText: needle }).first();
      // The row is drawn again as the pointer moves (link hover): look again until it is there.
      let box: { x: number; y: number; width: number; height: number } | null = null;
      for (let i = 0; i < 50 && !box; i++) {
        await span.waitFor({ state: "visible", timeout: W });
        box = await span.boundingBox();
      }
      assert.ok(box, `${needle} is not drawn`);
      await page.mouse.move(box.x + Math.min(box.width / 2, 20), box.y + box.height / 2);
      await page.mouse.down();
      await page.mouse.up();
    };
    await clickText("EVILLINK");
    await clickText("GOODLINK");
    const after = await until(
      page,
      "the good link opened",
      (ch: string) => {
        const t = window.__agentwireConsole!.terminal(ch);
        return t.opened.length ? t : false;
      },
      c,
      10_000,
    );
    assert.deepEqual(after.opened, ["http://127.0.0.1:9/ok"]);
    assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
    assert.ok(page.url().includes("/console/"));
    assert.ok(!popups.some((u) => u.startsWith("javascript")), popups.join());
    // Nothing the output asked for went to the gateway: only the client's own frames.
    assert.ok(sent.length > 0);
    for (const f of sent) {
      assert.ok(!f.includes("\x1b") && !f.toLowerCase().includes("\\u001b"), f);
      const frame = JSON.parse(f) as { type?: string; action?: string };
      assert.ok(["hello", "join", "ack", "ping", "leave", "refresh"].includes(frame.action ?? ""), f);
    }
    await screenshot(page, "hostile-output");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("a gap is marked where it happened; the state is stale until the next snapshot; pause and resume", { timeout: T }, async () => {
    const c = unique("agent-gap");
    // Events of this channel expire after 1 s (the gateway runs with AGENTWIRE_MIN_RETENTION=0s).
    await cli(["channel", "--endpoint", ENDPOINT, "--tenant", TENANT, "--channel", c, "--retention", "1s"]);
    const { page, logs } = await open([c]);
    await aguiBatch(c, [
      { type: "RUN_STARTED", threadId: c, runId: "r-gap" },
      { type: "STATE_SNAPSHOT", snapshot: { phase: "start", n: 1 } },
    ]);
    await page.waitForSelector(`${panel(c)} .status[data-status="working"]`, { timeout: W });
    await textHas(page, `${panel(c)} .state-json`, '"start"');
    // Pause: the channel is left, its position kept.
    await page.click(`${panel(c)} button.pause`);
    await page.waitForSelector(`${panel(c)} .conn[data-state="paused"]`);
    assert.equal(await text(page, `${panel(c)} button.pause`), "Resume");
    await aguiBatch(c, [
      { type: "STATE_DELTA", delta: [{ op: "replace", path: "/n", value: 2 }] },
      { type: "TEXT_MESSAGE_START", messageId: "lost-start", role: "assistant" },
    ]);
    // Wait until those two (seqs 3 and 4) have expired: nothing is retained.
    const deadline = Date.now() + W;
    for (;;) {
      const info = await channelInfo({ url: gw.http, token: viewer, channel: c });
      if (info.head >= 4 && info.oldest === null) break;
      if (Date.now() > deadline) throw new Error(`seqs 3..4 did not expire: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await cli(["channel", "--endpoint", ENDPOINT, "--tenant", TENANT, "--channel", c, "--default-retention"]);
    await aguiBatch(c, [
      { type: "TEXT_MESSAGE_CONTENT", messageId: "lost-start", delta: "orphan text" },
      { type: "STATE_DELTA", delta: [{ op: "replace", path: "/n", value: 99 }] },
      { type: "TEXT_MESSAGE_START", messageId: "after-gap", role: "assistant" },
      { type: "TEXT_MESSAGE_CONTENT", messageId: "after-gap", delta: "after the gap" },
      { type: "TEXT_MESSAGE_END", messageId: "after-gap" },
    ]);
    for (;;) {
      const info = await channelInfo({ url: gw.http, token: viewer, channel: c });
      if (info.head >= 9) break;
      if (Date.now() > deadline + W) throw new Error(`not committed: ${JSON.stringify(info)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // Resume: the replay starts with the gap.
    await page.click(`${panel(c)} button.pause`);
    await page.waitForSelector(`${panel(c)} .item.gap`, { timeout: W });
    await page.waitForSelector(`${panel(c)} .item.message[data-id="after-gap"]`, { timeout: W });
    const gap = page.locator(`${panel(c)} .item.gap`);
    assert.equal(await gap.count(), 1);
    assert.deepEqual([await gap.getAttribute("data-from"), await gap.getAttribute("data-to")], ["3", "4"]);
    // Where it happened: after the snapshot's run start, before the message that followed.
    const order = await page.locator(`${panel(c)} .items > li`).evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.type));
    assert.deepEqual(order, ["lifecycle", "gap", "message"]);
    assert.equal(await text(page, `${panel(c)} .item.message .text`), "after the gap");
    assert.equal(await page.locator(`${panel(c)}`, { hasText: "orphan text" }).count(), 0);
    // The state: stale, the delta after the gap not applied.
    assert.equal(await page.locator(`${panel(c)} .stale`).isVisible(), true);
    assert.deepEqual(JSON.parse((await text(page, `${panel(c)} .state-json`)) ?? "null"), { phase: "start", n: 1 });
    await terminalHas(page, c, "gap: seqs 3–4 are gone");
    await screenshot(page, "gap-stale-state");
    // The next snapshot makes it current again.
    await cliPublish(gw, agent, c, "STATE_SNAPSHOT", { type: "STATE_SNAPSHOT", snapshot: { phase: "fresh", n: 3 } });
    await textHas(page, `${panel(c)} .state-json`, '"fresh"');
    assert.equal(await page.locator(`${panel(c)} .stale`).isVisible(), false);
    assert.equal(await text(page, `${panel(c)} .conn`), "live");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("older history loads over HTTP when the timeline is scrolled to the top", { timeout: T }, async () => {
    const c = unique("agent-older");
    for (let i = 0; i < 45; i += 9) {
      await aguiBatch(c, Array.from({ length: 9 }, (_, k) => ({ type: "STEP_STARTED", stepName: `s-${i + k + 1}` })));
    }
    await headAtLeast(c, 45);
    const { page, logs } = await open([c], { backlog: "5", olderPage: "20" });
    const seqs = () => page.locator(`${panel(c)} .items > li`).evaluateAll((els) => els.map((e) => Number((e as HTMLElement).dataset.seq)));
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    await countIs(page, `${panel(c)} .items > li`, 5);
    assert.deepEqual(await seqs(), range(41, 45));
    const toTop = () =>
      page.locator(`${panel(c)} .timeline`).evaluate((el) => {
        el.scrollTop = 0;
        el.dispatchEvent(new Event("scroll"));
      });
    // Scroll to the top: the 20 before.
    await toTop();
    await countIs(page, `${panel(c)} .items > li`, 25);
    assert.deepEqual(await seqs(), range(21, 45));
    assert.equal(await text(page, `${panel(c)} .items > li:first-child .text`), "step s-21");
    await toTop();
    await countIs(page, `${panel(c)} .items > li`, 45);
    assert.deepEqual(await seqs(), range(1, 45));
    await page.waitForSelector(`${panel(c)} button.older.start`);
    assert.equal(await text(page, `${panel(c)} button.older`), "Start of the channel's history");
    // Live events still arrive at the bottom.
    await cliPublish(gw, agent, c, "STEP_STARTED", { type: "STEP_STARTED", stepName: "live-46" });
    await page.waitForSelector(`${panel(c)} .items > li[data-seq="46"]`, { timeout: W });
    assert.equal(await text(page, `${panel(c)} .items > li:last-child .text`), "step live-46");
    await screenshot(page, "older-history");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("a reload resumes from where the page was, without duplicates", { timeout: T }, async () => {
    const c = unique("agent-reload");
    const { page, logs } = await open([c]);
    const say = (id: string, words: string) => [
      { type: "TEXT_MESSAGE_START", messageId: id, role: "assistant" },
      { type: "TEXT_MESSAGE_CONTENT", messageId: id, delta: words },
      { type: "TEXT_MESSAGE_END", messageId: id },
    ];
    await aguiBatch(c, [{ type: "RUN_STARTED", threadId: c, runId: "r-reload" }, ...say("a", "first"), ...say("b", "second")]);
    const stdout = openStream({ url: gw.http, token: agent, channel: c, kind: "stdout", id: "r-reload.stdout" });
    stdout.write("line-before-reload\r\n");
    await stdout.flush();
    await page.waitForSelector(`${panel(c)} .item.message[data-id="b"]`, { timeout: W });
    await terminalHas(page, c, "line-before-reload");
    // The position is saved as events arrive.
    const posKey = `agentwire-console:pos:${gw.ws}:${c}`;
    await until(page, "the saved position", (key: string) => (JSON.parse(sessionStorage.getItem(key) ?? "null") as { seq?: number } | null)?.seq === 8, posKey);
    // Away (the same tab), while the agent goes on; then back, without the token in the link.
    await page.goto("about:blank");
    await aguiBatch(c, [...say("c", "third")]);
    stdout.write("line-while-away\r\n");
    await stdout.close();
    await headAtLeast(c, 13);
    await page.goto(consoleUrl(gw, { url: gw.ws, channels: c }));
    await waitLive(page, [c], logs);
    await page.waitForSelector(`${panel(c)} .item.message[data-id="c"]`, { timeout: W });
    // Joined from the saved position (after history up to it was shown again).
    assert.equal(await page.locator(panel(c)).getAttribute("data-since"), "8");
    const messages = await page.locator(`${panel(c)} .item.message .text`).allTextContents();
    assert.deepEqual(messages, ["first", "second", "third"]);
    assert.equal(await page.locator(`${panel(c)} .item.lifecycle`).count(), 1);
    await terminalHas(page, c, "line-while-away");
    const term = await page.evaluate((ch) => window.__agentwireConsole!.terminalText(ch), c);
    assert.deepEqual(term.split("\n").filter((l) => l.startsWith("line-")), ["line-before-reload", "line-while-away"]);
    // A plain reload too.
    await page.reload();
    await waitLive(page, [c], logs);
    await page.waitForSelector(`${panel(c)} .item.message[data-id="c"]`, { timeout: W });
    assert.deepEqual(await page.locator(`${panel(c)} .item.message .text`).allTextContents(), ["first", "second", "third"]);
    assert.equal(await page.locator(panel(c)).getAttribute("data-since"), "13");
    await screenshot(page, "reloaded");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("presence: the online badge and who is watching", { timeout: T }, async () => {
    const c = unique("agent-presence");
    const { page, logs } = await open([c], { presenceMs: "300" });
    await until(page, "this page watching", (sel: string) => (document.querySelector(sel) as HTMLElement | null)?.dataset.count === "1", `${panel(c)} .watching`);
    assert.equal(await text(page, `${panel(c)} .watching`), "watching: 1 (viewer)");
    // Nobody else and nothing happening: not online.
    assert.equal(await page.locator(`${panel(c)} .online`).isVisible(), false);
    const other = await token("ops-bob", { channels: "agent-*" });
    const second = await openConsole(browser, consoleUrl(gw, { url: gw.ws, token: other, channels: c }), [c]);
    await until(page, "the second watcher", (sel: string) => (document.querySelector(sel) as HTMLElement | null)?.dataset.count === "2", `${panel(c)} .watching`);
    assert.equal(await text(page, `${panel(c)} .watching`), "watching: 2 (ops-bob, viewer)");
    assert.equal(await page.locator(`${panel(c)} .online`).isVisible(), true);
    await screenshot(page, "presence");
    await second.page.close();
    await until(page, "the second watcher gone", (sel: string) => (document.querySelector(sel) as HTMLElement | null)?.dataset.count === "1", `${panel(c)} .watching`);
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });

  test("a token provider URL (tokenUrl): fetched with credentials, never in the address bar", { timeout: T }, async () => {
    const c = unique("agent-provider");
    let asked = 0;
    let cookie = "";
    const origin = gw.http;
    const server: Server = createServer((req, res) => {
      asked++;
      cookie = req.headers.cookie ?? cookie;
      res.writeHead(200, {
        "content-type": "text/plain",
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "cache-control": "no-store",
      });
      res.end(viewer);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const port = (server.address() as AddressInfo).port;
      const page = await browser.newPage();
      const logs: string[] = [];
      page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
      await page.context().addCookies([{ name: "session", value: "s3cret", domain: "127.0.0.1", path: "/" }]);
      await page.goto(consoleUrl(gw, { url: gw.ws, channels: c, tokenUrl: `http://127.0.0.1:${port}/token` }));
      await waitLive(page, [c], logs);
      assert.ok(asked >= 1);
      assert.equal(cookie, "session=s3cret");
      assert.ok(!page.url().includes("token="));
      await cliPublish(gw, agent, c, "RUN_STARTED", { type: "RUN_STARTED", threadId: c, runId: "r-provider" });
      await page.waitForSelector(`${panel(c)} .status[data-status="working"]`, { timeout: W });
      assert.deepEqual(logs, []);
      await page.close();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test("a form when the link lacks what the console needs", { timeout: T }, async () => {
    const c = unique("agent-form");
    const page = await browser.newPage();
    const logs: string[] = [];
    page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(`${gw.http}/console`); // redirected to /console/
    await page.waitForSelector("form.connect");
    assert.equal(await page.inputValue('input[name="url"]'), `${gw.ws}/`);
    await page.fill('input[name="channels"]', c);
    await page.fill('input[name="token"]', viewer);
    await screenshot(page, "form");
    await page.click('form.connect button[type="submit"]');
    await waitLive(page, [c], logs);
    assert.ok(!page.url().includes("token="), page.url());
    assert.ok(page.url().includes(`channels=${c}`), page.url());
    assert.deepEqual(logs, []);
    await page.close();
  });

  test("flow control: the channel pauses while the terminal is behind and resumes when it catches up, losing nothing", { timeout: T }, async () => {
    const c = unique("agent-flow");
    const { page, logs } = await open([c], { flowHigh: "2048", flowLow: "512", scrollback: "100000" });
    const lines = 6000;
    const stream = openStream({ url: gw.http, token: agent, channel: c, kind: "stdout" });
    for (let i = 1; i <= lines; i++) stream.write(`\x1b[3${i % 8}mline ${String(i).padStart(5, "0")}\x1b[0m ${"x".repeat(40)}\r\n`);
    await stream.close();
    await terminalHas(page, c, `line ${String(lines).padStart(5, "0")}`, 90_000, 200_000);
    const flow = await page.evaluate((ch) => window.__agentwireConsole!.panel(ch), c);
    assert.ok(flow.flowPauses >= 1, `flow pauses: ${flow.flowPauses}`);
    assert.equal(flow.paused, false);
    const term = await page.evaluate((ch) => window.__agentwireConsole!.terminalText(ch, 200000), c);
    const numbers = term.split("\n").filter((l) => l.startsWith("line ")).map((l) => Number(l.slice(5, 10)));
    assert.equal(numbers.length, lines);
    assert.ok(numbers.every((n, i) => n === i + 1), "every line once, in order");
    await screenshot(page, "flow-control");
    assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), []);
    await page.close();
  });
});
